"""INT8: onnxruntime's dynamic quantisation of the encoder and the decoder step."""

from __future__ import annotations

import contextlib
import logging

# The settings of a bundle's INT8 graphs (the manifest records them): s8 weights, u8
# activations, per-tensor scales, and `reduce_range`: 7-bit weights, so that the u8 x s8
# pairs that AVX2-only x86 CPUs add in 16 bits cannot saturate. The figures behind the
# choice, on the three CPU families: docs/export.md, "INT8 on every CPU".
INT8_SETTINGS = {"weight_type": "QInt8", "reduce_range": True, "per_channel": False}


class _NoPreprocessingAdvice(logging.Filter):
    """onnxruntime advises shape-inference pre-processing on every call; the export's graphs
    carry their shapes already (the gate checks the result), so the advice is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


@contextlib.contextmanager
def _without_preprocessing_advice():
    advice = _NoPreprocessingAdvice()
    root = logging.getLogger()
    root.addFilter(advice)
    try:
        yield
    finally:
        root.removeFilter(advice)


def quantize_int8(source: str, target: str, advice: bool = False, **settings) -> None:
    """onnxruntime dynamic INT8 quantisation (LSTM -> DynamicQuantizeLSTM, MatMul -> MatMulInteger);
    `settings` override `INT8_SETTINGS` (`weight_type` a `QuantType`); `advice` lets the
    quantiser's pre-processing advice through."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    chosen = {**INT8_SETTINGS, **settings}
    if isinstance(chosen["weight_type"], str):
        chosen["weight_type"] = getattr(QuantType, chosen["weight_type"])
    with contextlib.nullcontext() if advice else _without_preprocessing_advice():
        quantize_dynamic(source, target, op_types_to_quantize=["LSTM", "MatMul", "Gemm"], **chosen)
