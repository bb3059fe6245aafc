"""INT8: onnxruntime's dynamic quantisation of the encoder and the decoder step."""

from __future__ import annotations

import contextlib
import logging


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


def quantize_int8(source: str, target: str, advice: bool = False) -> None:
    """onnxruntime dynamic INT8 quantisation (LSTM -> DynamicQuantizeLSTM, MatMul -> MatMulInteger);
    `advice` lets the quantiser's pre-processing advice through."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with contextlib.nullcontext() if advice else _without_preprocessing_advice():
        quantize_dynamic(source, target, weight_type=QuantType.QInt8, op_types_to_quantize=["LSTM", "MatMul", "Gemm"])
