"""Paper-shaped ONNX graphs with random weights, built directly with `onnx.helper`.

tf2onnx needs more than 22 GB of memory to convert a 4 x 1000 model with 32k vocabularies
(it was killed by the kernel's OOM killer on this 24 GB machine), so the decoding
benchmark builds the same graphs the exporter writes from random U(-0.08, 0.08) weights:
the encoder as tf2onnx writes it (fused `LSTM` nodes with `sequence_lens`, the stacked
`states` layout) and the decoder step with the exporter's own builder
(`export/step_graph.py`): the speed of a graph does not depend on its weights.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from export.step_graph import decoder_step_graph
from tests.graphs import random_decoder_weights


def _weight(rng, name, shape, scale=0.08):
    return numpy_helper.from_array(rng.uniform(-scale, scale, shape).astype(np.float32), name)


def _lstm_weights(rng, prefix, input_size, hidden):
    return [
        _weight(rng, f"{prefix}_W", (1, 4 * hidden, input_size)),
        _weight(rng, f"{prefix}_R", (1, 4 * hidden, hidden)),
        _weight(rng, f"{prefix}_B", (1, 8 * hidden)),
    ]


def _save(graph, path):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def build(
    directory: str,
    num_layers: int,
    hidden: int,
    embedding: int,
    source_vocabulary: int,
    target_vocabulary: int,
    seed: int = 0,
) -> None:
    """Writes `encoder.onnx` and `decoder_step.onnx` (no attention) into `directory`."""
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(seed)
    one = numpy_helper.from_array(np.array([1], np.int64), "axis_1")

    # Encoder: source_ids [B, T], source_lengths [B] -> states [2L, B, H].
    init = [_weight(rng, "source_embedding", (source_vocabulary, embedding)), one]
    nodes = [
        helper.make_node("Gather", ["source_embedding", "source_ids"], ["embedded"]),
        helper.make_node("Transpose", ["embedded"], ["x_0"], perm=[1, 0, 2]),
    ]
    finals = []
    for layer in range(num_layers):
        init += _lstm_weights(rng, f"enc{layer}", embedding if layer == 0 else hidden, hidden)
        nodes.append(
            helper.make_node(
                "LSTM",
                [f"x_{layer}", f"enc{layer}_W", f"enc{layer}_R", f"enc{layer}_B", "source_lengths"],
                [f"y_{layer}", f"h_{layer}", f"c_{layer}"],
                hidden_size=hidden,
                name=f"encoder_lstm_{layer}",
            )
        )
        nodes.append(helper.make_node("Squeeze", [f"y_{layer}", "axis_1"], [f"x_{layer + 1}"]))
        finals += [f"h_{layer}", f"c_{layer}"]
    nodes.append(helper.make_node("Concat", finals, ["states"], axis=0))
    graph = helper.make_graph(
        nodes,
        "encoder",
        [
            helper.make_tensor_value_info("source_ids", TensorProto.INT32, ["batch", "time"]),
            helper.make_tensor_value_info("source_lengths", TensorProto.INT32, ["batch"]),
        ],
        [helper.make_tensor_value_info("states", TensorProto.FLOAT, [2 * num_layers, "batch", hidden])],
        init,
    )
    _save(graph, os.path.join(directory, "encoder.onnx"))

    # Decoder step: the exporter's own graph builder, from random weights.
    step = decoder_step_graph(random_decoder_weights(num_layers, hidden, embedding, target_vocabulary, seed=seed + 1))
    onnx.save(step, os.path.join(directory, "decoder_step.onnx"))
