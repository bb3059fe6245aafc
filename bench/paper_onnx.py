"""Paper-shaped ONNX graphs with random weights, built directly with `onnx.helper`.

tf2onnx needs more than 22 GB of memory to convert a 4 x 1000 model with 32k vocabularies
(it was killed by the kernel's OOM killer on this 24 GB machine), so the decoding
benchmark builds the same graphs the exporter writes (fused `LSTM` nodes with
`sequence_lens`, the stacked `states` layout, log-softmax and the exporter's top-k
selection in the step) from
random U(-0.08, 0.08) weights: the speed of a graph does not depend on its weights.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from export.top_k import top_k_nodes


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


def build(directory: str, num_layers: int, hidden: int, embedding: int, source_vocabulary: int,
          target_vocabulary: int, seed: int = 0) -> None:
    """Writes `encoder.onnx` and `decoder_step.onnx` (no attention) into `directory`."""
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(seed)
    one = numpy_helper.from_array(np.array([1], np.int64), "axis_1")
    zero = numpy_helper.from_array(np.array([0], np.int64), "axis_0")

    # Encoder: source_ids [B, T], source_lengths [B] -> states [2L, B, H].
    init = [_weight(rng, "source_embedding", (source_vocabulary, embedding)), one]
    nodes = [
        helper.make_node("Gather", ["source_embedding", "source_ids"], ["embedded"]),
        helper.make_node("Transpose", ["embedded"], ["x_0"], perm=[1, 0, 2]),
    ]
    finals = []
    for layer in range(num_layers):
        init += _lstm_weights(rng, f"enc{layer}", embedding if layer == 0 else hidden, hidden)
        nodes.append(helper.make_node(
            "LSTM", [f"x_{layer}", f"enc{layer}_W", f"enc{layer}_R", f"enc{layer}_B", "source_lengths"],
            [f"y_{layer}", f"h_{layer}", f"c_{layer}"], hidden_size=hidden, name=f"encoder_lstm_{layer}"))
        nodes.append(helper.make_node("Squeeze", [f"y_{layer}", "axis_1"], [f"x_{layer + 1}"]))
        finals += [f"h_{layer}", f"c_{layer}"]
    nodes.append(helper.make_node("Concat", finals, ["states"], axis=0))
    graph = helper.make_graph(
        nodes, "encoder",
        [helper.make_tensor_value_info("source_ids", TensorProto.INT32, ["batch", "time"]),
         helper.make_tensor_value_info("source_lengths", TensorProto.INT32, ["batch"])],
        [helper.make_tensor_value_info("states", TensorProto.FLOAT, [2 * num_layers, "batch", hidden])],
        init)
    _save(graph, os.path.join(directory, "encoder.onnx"))

    # Decoder step: token_ids [B], states [2L, B, H], top_k [1] -> log_probs, next_states, TopK.
    init = [_weight(rng, "target_embedding", (target_vocabulary, embedding)), zero,
            _weight(rng, "logits_W", (hidden, target_vocabulary)),
            _weight(rng, "logits_b", (target_vocabulary,)),
            numpy_helper.from_array(np.array([1], np.int64), "axis_1")]
    nodes = [
        helper.make_node("Gather", ["target_embedding", "token_ids"], ["step_embedded"]),
        helper.make_node("Unsqueeze", ["step_embedded", "axis_0"], ["x_0"]),
    ]
    finals = []
    for layer in range(num_layers):
        init += _lstm_weights(rng, f"dec{layer}", embedding if layer == 0 else hidden, hidden)
        init += [numpy_helper.from_array(np.array([2 * layer], np.int64), f"h_index_{layer}"),
                 numpy_helper.from_array(np.array([2 * layer + 1], np.int64), f"c_index_{layer}")]
        nodes += [
            helper.make_node("Gather", ["states", f"h_index_{layer}"], [f"h0_{layer}"], axis=0),
            helper.make_node("Gather", ["states", f"c_index_{layer}"], [f"c0_{layer}"], axis=0),
            helper.make_node(
                "LSTM", [f"x_{layer}", f"dec{layer}_W", f"dec{layer}_R", f"dec{layer}_B", "",
                         f"h0_{layer}", f"c0_{layer}"],
                [f"y_{layer}", f"h_{layer}", f"c_{layer}"], hidden_size=hidden, name=f"decoder_lstm_{layer}"),
            helper.make_node("Squeeze", [f"y_{layer}", "axis_1"], [f"x_{layer + 1}"]),
        ]
        finals += [f"h_{layer}", f"c_{layer}"]
    last = f"x_{num_layers}"
    nodes += [
        helper.make_node("Concat", finals, ["next_states"], axis=0),
        helper.make_node("Squeeze", [last, "axis_0"], ["top_hidden"]),
        helper.make_node("MatMul", ["top_hidden", "logits_W"], ["logits_mm"]),
        helper.make_node("Add", ["logits_mm", "logits_b"], ["logits"]),
        helper.make_node("LogSoftmax", ["logits"], ["log_probs"], axis=-1),
    ]
    selection, selection_init = top_k_nodes("log_probs", target_vocabulary)
    nodes += selection
    init += selection_init
    graph = helper.make_graph(
        nodes, "decoder_step",
        [helper.make_tensor_value_info("token_ids", TensorProto.INT32, ["batch"]),
         helper.make_tensor_value_info("states", TensorProto.FLOAT, [2 * num_layers, "batch", hidden]),
         helper.make_tensor_value_info("top_k", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("log_probs", TensorProto.FLOAT, ["batch", target_vocabulary]),
         helper.make_tensor_value_info("next_states", TensorProto.FLOAT, [2 * num_layers, "batch", hidden]),
         helper.make_tensor_value_info("top_log_probs", TensorProto.FLOAT, ["batch", "k"]),
         helper.make_tensor_value_info("top_ids", TensorProto.INT64, ["batch", "k"])],
        init)
    _save(graph, os.path.join(directory, "decoder_step.onnx"))
