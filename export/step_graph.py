"""The decoder-step graph, written directly in ONNX from the model's weights.

The step runs once per output token, so every node in it is paid for on every token. A
graph traced from the Keras decoder-step model by tf2onnx carries Keras' and
TensorFlow's shape handling with it: `Tensordot` becomes Shape/Gather/Concat/Cast/Reshape
around each `MatMul`, the embedding lookup gets negative-index arithmetic, each LSTM's
input and output get Transpose/Squeeze/Reshape, and boolean `where` becomes Casts and
Muls: 71 nodes for a 2-layer attention decoder (84 with the selection of the best
tokens), of which 7 do the products. onnxruntime's own graph optimisations fold most of
them, so on one thread the two graphs run at the same speed within this machine's noise;
with two threads fewer nodes mean fewer hand-offs between threads (BENCHMARKS.md, `bench/decode.py --compare-traced`). The step's graph is
also short enough to read, and its export needs no tracing.

This module writes the same function with only what it needs (for 2 layers with
attention: 27 nodes, then the selection of the best tokens of `export/top_k.py`):

    x      = Gather(target_embedding, token_ids)                      [1, B, E]
    h, c   = LSTM_l(x, states[2l], states[2l+1])    for each layer    [1, B, H]
    scores = encoder_outputs @ (h W_a)^T, -1e9 past source_lengths     [B, 1, T]
    ctx    = softmax(scores) @ encoder_outputs                         [B, 1, H]
    out    = tanh([h, ctx] W_c)                                        [B, H]
    log_probs = log_softmax(out W_o + b_o)                             [B, V]

with the file contract of DESIGN.md unchanged (`token_ids`, `states`, `encoder_outputs`,
`source_lengths`, `top_k` in; `log_probs`, `next_states`, `top_log_probs`, `top_ids`
out). Only `numpy` and `onnx` are needed here, so the benchmarks build the same graph
from random weights.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from export.top_k import top_k_nodes

OPSET = 17
MASKED_SCORE = -1e9  # the Keras attention layer's score for padding


@dataclasses.dataclass
class DecoderWeights:
    """The decoder's weights in Keras' layout (float32 numpy arrays).

    Attributes:
        embedding: `[vocabulary, embedding_dim]`.
        lstm: per layer `(kernel [input, 4H], recurrent_kernel [H, 4H], bias [4H])`,
            gates in Keras' order i, f, c, o.
        logits_kernel: `[H, vocabulary]`.
        logits_bias: `[vocabulary]`.
        attention: `[H, H]` Luong "general" matrix, or None without attention.
        attention_combine: `[2H, H]` (no bias), or None without attention.
    """

    embedding: np.ndarray
    lstm: list
    logits_kernel: np.ndarray
    logits_bias: np.ndarray
    attention: np.ndarray | None = None
    attention_combine: np.ndarray | None = None

    @property
    def hidden(self) -> int:
        return int(self.lstm[0][1].shape[0])

    @property
    def vocabulary(self) -> int:
        return int(self.embedding.shape[0])


def onnx_lstm_weights(kernel: np.ndarray, recurrent: np.ndarray, bias: np.ndarray):
    """Keras LSTM weights -> ONNX `LSTM` inputs `W [1, 4H, in]`, `R [1, 4H, H]`, `B [1, 8H]`.

    Keras stacks the gates i, f, c, o; ONNX wants i, o, f, c, and splits the bias into an
    input and a recurrent half (the recurrent half is zero here).
    """
    hidden = recurrent.shape[0]
    order = np.concatenate([np.arange(hidden) + g * hidden for g in (0, 3, 1, 2)])
    w = np.ascontiguousarray(kernel[:, order].T[None], dtype=np.float32)
    r = np.ascontiguousarray(recurrent[:, order].T[None], dtype=np.float32)
    b = np.concatenate([bias[order], np.zeros(4 * hidden, bias.dtype)])[None].astype(np.float32)
    return w, r, b


def decoder_step_graph(weights: DecoderWeights) -> onnx.ModelProto:
    """The decoder step as an ONNX model (opset `OPSET`), attention included when
    `weights.attention` is set. Unchecked: the export checks it with the encoder
    (`export.onnx_export.check_fused_lstms`)."""
    hidden, vocabulary = weights.hidden, weights.vocabulary
    layers = len(weights.lstm)
    attention = weights.attention is not None

    def const(name, array):
        init.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(op, inputs, outputs, **attributes):
        nodes.append(helper.make_node(op, inputs, outputs, name=outputs[0], **attributes))
        return outputs[0]

    init, nodes = [], []
    axis_0 = const("axis_0", np.array([0], np.int64))
    x = node("Gather", [const("target_embedding", weights.embedding.astype(np.float32)), "token_ids"], ["embedded"])
    x = node("Unsqueeze", [x, axis_0], ["x_0"])  # [time 1, B, E]
    halves = [f"state_{i}" for i in range(2 * layers)]
    node("Split", ["states"], halves, axis=0)  # each [1, B, H]
    finals = []
    for index, (kernel, recurrent, bias) in enumerate(weights.lstm):
        w, r, b = onnx_lstm_weights(kernel, recurrent, bias)
        inputs = [
            x,
            const(f"lstm_{index}_W", w),
            const(f"lstm_{index}_R", r),
            const(f"lstm_{index}_B", b),
            "",
            halves[2 * index],
            halves[2 * index + 1],
        ]
        outputs = [f"lstm_{index}_Y", f"lstm_{index}_h", f"lstm_{index}_c"]
        nodes.append(helper.make_node("LSTM", inputs, outputs, hidden_size=hidden, name=f"decoder_lstm_{index}"))
        finals += outputs[1:]
        x = outputs[1]  # [1, B, H]: the next layer's one-step input as it is
    node("Concat", finals, ["next_states"], axis=0)
    top = node("Squeeze", [x, axis_0], ["top_hidden"])  # [B, H]

    if attention:
        # scores[b, t] = encoder_outputs[b, t] . (W_a^T h[b])  (h^T W_a a_t, Luong "general")
        query = node("MatMul", [top, const("attention_W", weights.attention.astype(np.float32))], ["query"])
        query = node("Unsqueeze", [query, const("axis_2", np.array([2], np.int64))], ["query_column"])
        scores = node("MatMul", ["encoder_outputs", query], ["scores_column"])  # [B, T, 1]
        scores = node("Reshape", [scores, const("row_shape", np.array([0, 1, -1], np.int64))], ["scores"])
        # Real source positions: range(T) < source_lengths, as [B, 1, T].
        time = node("Shape", ["encoder_outputs"], ["source_time_1d"], start=1, end=2)
        time = node("Squeeze", [time, axis_0], ["source_time"])
        positions = node(
            "Range", [const("zero", np.array(0, np.int64)), time, const("one", np.array(1, np.int64))], ["positions"]
        )
        lengths = node("Cast", ["source_lengths"], ["lengths_64"], to=TensorProto.INT64)
        lengths = node("Unsqueeze", [lengths, const("axes_1_2", np.array([1, 2], np.int64))], ["lengths_column"])
        mask = node("Less", [positions, lengths], ["source_mask"])
        scores = node(
            "Where", [mask, scores, const("masked_score", np.array(MASKED_SCORE, np.float32))], ["masked_scores"]
        )
        attention_weights = node("Softmax", [scores], ["attention_weights"], axis=-1)
        context = node("MatMul", [attention_weights, "encoder_outputs"], ["context_row"])  # [B, 1, H]
        context = node("Reshape", [context, const("flat_shape", np.array([0, -1], np.int64))], ["context"])
        combined = node("Concat", [top, context], ["query_and_context"], axis=1)
        combined = node(
            "MatMul",
            [combined, const("attention_combine_W", weights.attention_combine.astype(np.float32))],
            ["combined_linear"],
        )
        top = node("Tanh", [combined], ["attentional_hidden"])

    logits = node("MatMul", [top, const("logits_W", weights.logits_kernel.astype(np.float32))], ["logits_linear"])
    logits = node("Add", [logits, const("logits_b", weights.logits_bias.astype(np.float32))], ["logits"])
    node("LogSoftmax", [logits], ["log_probs"], axis=-1)
    selection, selection_init = top_k_nodes("log_probs", vocabulary)
    nodes += selection
    init += selection_init

    inputs = [
        helper.make_tensor_value_info("token_ids", TensorProto.INT32, ["batch"]),
        helper.make_tensor_value_info("states", TensorProto.FLOAT, [2 * layers, "batch", hidden]),
    ]
    if attention:
        inputs += [
            helper.make_tensor_value_info("encoder_outputs", TensorProto.FLOAT, ["batch", "time", hidden]),
            helper.make_tensor_value_info("source_lengths", TensorProto.INT32, ["batch"]),
        ]
    inputs.append(helper.make_tensor_value_info("top_k", TensorProto.INT64, [1]))
    outputs = [
        helper.make_tensor_value_info("log_probs", TensorProto.FLOAT, ["batch", vocabulary]),
        helper.make_tensor_value_info("next_states", TensorProto.FLOAT, [2 * layers, "batch", hidden]),
        helper.make_tensor_value_info("top_log_probs", TensorProto.FLOAT, ["batch", "k"]),
        helper.make_tensor_value_info("top_ids", TensorProto.INT64, ["batch", "k"]),
    ]
    graph = helper.make_graph(nodes, "decoder_step", inputs, outputs, init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="keras-s2s")
    model.ir_version = 8
    return model
