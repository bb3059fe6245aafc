"""ONNX models with random weights for the search tests and the benchmarks (no TensorFlow):
an encoder written node by node like the exported one, and the exported decoder step."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from export.step_graph import OPSET, DecoderWeights, decoder_step_graph, onnx_lstm_weights


def random_decoder_weights(
    num_layers: int,
    hidden: int,
    embedding: int,
    vocabulary: int,
    attention: bool = False,
    seed: int = 0,
    scale: float = 0.08,
) -> DecoderWeights:
    """U(-scale, scale) weights of the given shape (for benchmarks and tests)."""
    rng = np.random.default_rng(seed)

    def uniform(*shape):
        return rng.uniform(-scale, scale, shape).astype(np.float32)

    return DecoderWeights(
        embedding=uniform(vocabulary, embedding),
        lstm=[
            (uniform(embedding if i == 0 else hidden, 4 * hidden), uniform(hidden, 4 * hidden), uniform(4 * hidden))
            for i in range(num_layers)
        ],
        logits_kernel=uniform(hidden, vocabulary),
        logits_bias=uniform(vocabulary),
        attention=uniform(hidden, hidden) if attention else None,
        attention_combine=uniform(2 * hidden, hidden) if attention else None,
    )


def random_encoder_graph(
    num_layers: int, hidden: int, embedding: int, vocabulary: int, attention: bool, seed: int = 0, scale: float = 0.08
) -> onnx.ModelProto:
    """`source_ids`, `source_lengths` -> `states` (and `encoder_outputs`), with
    U(-scale, scale) weights and fused LSTMs that read `sequence_lens`, as the export writes."""
    rng = np.random.default_rng(seed)

    def uniform(*shape):
        return rng.uniform(-scale, scale, shape).astype(np.float32)

    init = [
        numpy_helper.from_array(uniform(vocabulary, embedding), "source_embedding"),
        numpy_helper.from_array(np.array([1], np.int64), "axis_1"),
    ]
    nodes = [
        helper.make_node("Gather", ["source_embedding", "source_ids"], ["embedded"]),
        helper.make_node("Transpose", ["embedded"], ["x_0"], perm=[1, 0, 2]),
        helper.make_node("Cast", ["source_lengths"], ["lengths"], to=TensorProto.INT32),
    ]
    finals, x = [], "x_0"
    for index in range(num_layers):
        inputs = embedding if index == 0 else hidden
        w, r, b = onnx_lstm_weights(uniform(inputs, 4 * hidden), uniform(hidden, 4 * hidden), uniform(4 * hidden))
        for suffix, array in (("W", w), ("R", r), ("B", b)):
            init.append(numpy_helper.from_array(array, f"lstm_{index}_{suffix}"))
        nodes.append(
            helper.make_node(
                "LSTM",
                [x, f"lstm_{index}_W", f"lstm_{index}_R", f"lstm_{index}_B", "lengths"],
                [f"y_{index}", f"h_{index}", f"c_{index}"],
                hidden_size=hidden,
            )
        )
        nodes.append(helper.make_node("Squeeze", [f"y_{index}", "axis_1"], [f"x_{index + 1}"]))
        finals += [f"h_{index}", f"c_{index}"]
        x = f"x_{index + 1}"
    nodes.append(helper.make_node("Concat", finals, ["states"], axis=0))
    outputs = [helper.make_tensor_value_info("states", TensorProto.FLOAT, [2 * num_layers, "batch", hidden])]
    if attention:
        nodes.append(helper.make_node("Transpose", [x], ["encoder_outputs"], perm=[1, 0, 2]))
        outputs.append(helper.make_tensor_value_info("encoder_outputs", TensorProto.FLOAT, ["batch", "time", hidden]))
    graph = helper.make_graph(
        nodes,
        "encoder",
        [
            helper.make_tensor_value_info("source_ids", TensorProto.INT32, ["batch", "time"]),
            helper.make_tensor_value_info("source_lengths", TensorProto.INT32, ["batch"]),
        ],
        outputs,
        init,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    return model


def random_models(
    attention: bool,
    num_layers: int = 2,
    hidden: int = 16,
    embedding: int = 8,
    vocabulary: int = 12,
    seed: int = 0,
    scale: float = 0.08,
):
    """`(encoder, decoder_step)` ONNX models of one random model."""
    encoder = random_encoder_graph(num_layers, hidden, embedding, vocabulary, attention, seed, scale)
    weights = random_decoder_weights(num_layers, hidden, embedding, vocabulary, attention, seed + 1, scale)
    return encoder, decoder_step_graph(weights)
