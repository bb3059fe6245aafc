"""`translator.onnx`: the encoder and the whole batched beam search in one ONNX graph.

Any onnxruntime binding (Python, C/C++, Java, C#, Node.js, the browser) translates with
one `run` call on this file: no search code to port. The graph is assembled from the
bundle's own `encoder.onnx` and `decoder_step.onnx` (float32 or INT8): the encoder's
nodes run once, and the step graph's nodes, unchanged, form the body of one ONNX `Loop`
that also does the beam bookkeeping of `serving.search.beam_search`:

    rows = batch x beam; one live beam per sentence at the start
    loop until no sentence is live:
        values, ids = step(tokens, states)                  # TopK inside the step, k = 2 x beam
        candidates  = scores + values, per sentence [live, beam x k]; the best 2 x beam
        eos among the best beam candidates -> finished (score / length ** penalty)
        the best beam candidates that are not eos -> the new beams
        at the length limit a x source_length + b the live beams finish unfinished
        a sentence is done at its limit, with beam finished hypotheses, or when no live
        beam can beat its n_best-th finished one; done sentences leave the batch
    per sentence the n_best best finished hypotheses, best first

Ties are broken as the numpy search breaks them (ONNX `TopK` puts the lower index first,
as a stable sort does), scores are normalised in float64 as in Python, and done sentences
leave the batch exactly as in the numpy search, so the rows each step sees are the same:
this matters for INT8, whose activations are quantised over the whole batch.

The loop is two: an inner `Loop` runs steps until a sentence is done, and the outer one
then drops the done sentences and starts it again. The inner loop reads the entries that
are constant per sentence (the encoder outputs, the largest) from the outer loop's scope,
so they are copied only when sentences leave, as in the numpy search; and the work few
steps need (writing finished hypotheses) sits in an `If`. Every decoder LSTM is one fused
node in the inner loop's body (`export.checks.check_translator`).

Inputs: `source_ids` int32 [batch, time] (right-padded, not reversed: the graph reverses
the real tokens when the model was trained so), `source_lengths` int32 [batch], and the
scalars `beam_size`, `n_best`, `max_length_b` (int64), `length_penalty`, `max_length_a`
(float64). Outputs: `hypotheses` int32 [batch, n_best, length] (zero-padded, without
eos), `hypothesis_lengths` int64, `scores` and `log_probs` float32, `finished` bool (ended
with eos), each [batch, n_best]; slots a sentence has no hypothesis for have score -inf.

Only `onnx` and `numpy` are needed here.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from export.onnx_graph import Graph, opsets, renamed, tensor, vocabulary
from export.search_body import PER_SENTENCE, STATIC, steps_until_done, value_info

SCALAR_INPUTS = {
    "beam_size": TensorProto.INT64,
    "n_best": TensorProto.INT64,
    "length_penalty": TensorProto.DOUBLE,
    "max_length_a": TensorProto.DOUBLE,
    "max_length_b": TensorProto.INT64,
}
OUTPUTS = {
    "hypotheses": (TensorProto.INT32, ["batch", "n_best", "length"]),
    "hypothesis_lengths": (TensorProto.INT64, ["batch", "n_best"]),
    "scores": (TensorProto.FLOAT, ["batch", "n_best"]),
    "log_probs": (TensorProto.FLOAT, ["batch", "n_best"]),
    "finished": (TensorProto.BOOL, ["batch", "n_best"]),
}
I64, I32, F32, F64 = np.int64, np.int32, np.float32, np.float64


def translator_graph(
    encoder: onnx.ModelProto, step: onnx.ModelProto, *, reverse_source: bool, bos_id: int, eos_id: int
) -> onnx.ModelProto:
    """The one-file translator from a bundle's encoder and decoder-step graphs.

    Args:
        encoder: `encoder.onnx` (or its INT8 copy): `source_ids`, `source_lengths` ->
            `states` (and `encoder_outputs` with attention).
        step: `decoder_step.onnx` (or its INT8 copy), with the `top_k` input.
        reverse_source: bool. Whether the model reads the real source tokens reversed.
        bos_id: int. The decoder's first input token.
        eos_id: int. The end token.

    Returns:
        The model; `check_translator` checks it.
    """
    step_inputs = {i.name for i in step.graph.input}
    if "top_k" not in step_inputs:
        raise ValueError("decoder step graph: no top_k input (export/top_k.py adds it)")
    attention = "encoder_outputs" in step_inputs
    states_type = next(i for i in step.graph.input if i.name == "states").type.tensor_type
    layers2, hidden = (int(d.dim_value) for d in (states_type.shape.dim[0], states_type.shape.dim[2]))

    main = Graph("")
    _encode(main, encoder, reverse_source)
    longest = _limits(main)
    _sizes(main, vocabulary(step), longest)
    carried = _start(main, attention, bos_id)
    body = _search_step(step, list(carried), attention=attention, eos_id=eos_id, layers2=layers2, hidden=hidden)
    final = {name: f"final_{name}" for name in carried}
    any_sentence = main.op("Greater", ["batch", main.const(0, I64)], "any_sentence")
    loop_inputs = [longest, any_sentence] + list(carried.values())
    main.nodes.append(helper.make_node("Loop", loop_inputs, list(final.values()), name="beam_search", body=body))
    _n_best(main, final["finished_info"], final["finished_tokens"])

    inputs = [
        tensor("source_ids", TensorProto.INT32, ["batch", "time"]),
        tensor("source_lengths", TensorProto.INT32, ["batch"]),
    ]
    inputs += [tensor(name, elem_type, []) for name, elem_type in SCALAR_INPUTS.items()]
    outputs = [tensor(name, elem_type, shape) for name, (elem_type, shape) in OUTPUTS.items()]
    graph = helper.make_graph(main.nodes, "translator", inputs, outputs, main.initializers)
    model = helper.make_model(graph, opset_imports=opsets(encoder, step), producer_name="keras-s2s")
    model.ir_version = max(encoder.ir_version, step.ir_version)
    return model


def _encode(main: Graph, encoder: onnx.ModelProto, reverse_source: bool) -> None:
    """The encoder's nodes, on the source as the model reads it: `encoder_states` (and
    `encoder_outputs`)."""
    lengths64 = main.op("Cast", ["source_lengths"], "source_lengths_64", to=TensorProto.INT64)
    ids = "source_ids"
    if reverse_source:
        ids = main.op("ReverseSequence", [ids, lengths64], "reversed_source_ids", batch_axis=0, time_axis=1)
    interface = {
        "source_ids": ids,
        "source_lengths": "source_lengths",
        "states": "encoder_states",
        "encoder_outputs": "encoder_outputs",
    }
    nodes, initializers = renamed(encoder.graph, "encoder/", interface)
    main.nodes += nodes
    main.initializers += initializers


def _limits(main: Graph) -> str:
    """Per sentence the output limit `max(1, floor(a * length + b))` (`max_lengths`) and the
    divisor `limit ** penalty` (`limit_divisor`); returns the longest limit."""
    lengths = main.op("Cast", ["source_lengths"], "source_lengths_f64", to=TensorProto.DOUBLE)
    b = main.op("Cast", ["max_length_b"], to=TensorProto.DOUBLE)
    limit = main.op("Add", [main.op("Mul", ["max_length_a", lengths]), b])
    limit = main.op("Max", [main.op("Floor", [limit]), main.const(1.0, F64, "one_f64")])
    max_lengths = main.op("Cast", [limit], "max_lengths", to=TensorProto.INT64)
    main.op("Pow", [limit, "length_penalty"], "limit_divisor")
    longest = main.op("Concat", [main.const([0], I64), max_lengths], axis=0)
    return main.op("ReduceMax", [longest], "longest_limit", keepdims=0)


def _sizes(main: Graph, vocabulary_size: int, longest: str) -> None:
    """What every step uses and no step changes: the batch, the beam, k = min(2 x beam,
    vocabulary), the finished slots (3 x beam), the candidates' positions."""
    zero, one, shape_1 = main.const(0, I64, "zero"), main.const(1, I64, "one"), main.const([1], I64, "shape_1")
    main.op("Reshape", [longest, shape_1], "longest_limit_1d")
    batch = main.op("Gather", [main.op("Shape", ["source_ids"]), zero], "batch", axis=0)
    main.op("Reshape", [batch, shape_1], "batch_1d")
    beam_1d = main.op("Reshape", ["beam_size", shape_1], "beam_1d")
    two_beam = main.op("Mul", [beam_1d, main.const([2], I64, "two")], "two_beam")
    top_k = main.op("Min", [two_beam, main.const([vocabulary_size], I64, "vocabulary")], "step_top_k")
    main.op("Mul", [beam_1d, main.const([3], I64, "three")], "finished_slots")
    main.op("Reshape", ["n_best", shape_1], "n_best_1d")
    main.op("Mul", [beam_1d, top_k], "beam_k")
    candidate_rank = main.op("Range", [zero, main.op("Squeeze", [two_beam, main.const([0], I64)]), one])
    main.op("Cast", [candidate_rank], "candidate_position", to=TensorProto.FLOAT)
    main.op("Mul", [main.op("Cast", [beam_1d], to=TensorProto.FLOAT), main.const([2.0], F32)], "two_beam_f")
    main.op("Sub", ["n_best", one], "n_best_index")
    main.op("Range", [zero, longest, one], "history_columns")
    main.op("Cast", [main.op("Less", [candidate_rank, "beam_size"])], "eos_then_not", to=TensorProto.DOUBLE)


def _filled(main: Graph, shape: list, value, dtype, hint: str) -> str:
    shape = main.op("Concat", shape, axis=0) if len(shape) > 1 else shape[0]
    return main.op("ConstantOfShape", [shape], hint, value=numpy_helper.from_array(np.full(1, value, dtype)))


def _start(main: Graph, attention: bool, bos_id: int) -> dict:
    """The search's start, the outer loop's carried values: every sentence gets `beam` rows,
    only the first beam is live, nothing is finished."""
    zero, one = main.const(0, I64), main.const(1, I64)
    rows = main.op("Mul", ["batch", "beam_size"], "rows")
    row_sentence = main.op("Div", [main.op("Range", [zero, rows, one]), "beam_size"], "row_sentence")
    rows_1d = main.op("Reshape", [rows, "shape_1"], "rows_1d")
    carried = {
        "tokens": main.op("Expand", [main.const([bos_id], I32, "bos"), rows_1d], "tokens_0"),
        "states": main.op("Gather", ["encoder_states", row_sentence], "states_0", axis=1),
    }
    if attention:
        carried["encoder_outputs"] = main.op("Gather", ["encoder_outputs", row_sentence], "encoder_outputs_0", axis=0)
        carried["source_lengths"] = main.op("Gather", ["source_lengths", row_sentence], "source_lengths_0", axis=0)
    first_beam = main.op("Equal", [main.op("Range", [zero, "beam_size", one]), zero])
    beam_scores = main.op("Where", [first_beam, main.const(0.0, F32), main.const(-np.inf, F32, "minus_inf")])
    carried["scores"] = main.op("Expand", [beam_scores, main.op("Concat", ["batch_1d", "beam_1d"], axis=0)], "scores_0")
    carried["sentences"] = main.op("Range", [zero, "batch", one], "sentences_0")
    carried["history"] = _filled(main, [rows_1d, "longest_limit_1d"], 0, I32, "history_0")
    # Per live sentence: its finished hypotheses so far, and the n_best-th best score.
    carried["count"] = _filled(main, ["batch_1d"], 0, I64, "count_0")
    carried["nth"] = _filled(main, ["batch_1d"], -np.inf, F64, "nth_0")
    # Per sentence and slot, a finished hypothesis: its tokens, and (score, log_prob,
    # length, ended with eos) as float64, which holds each exactly.
    carried["finished_tokens"] = _filled(
        main, ["batch_1d", "finished_slots", "longest_limit_1d"], 0, I32, "finished_tokens_0"
    )
    empty_slot = main.const(np.array([-np.inf, 0.0, 0.0, 0.0]), F64, "empty_slot")
    info_shape = main.op("Concat", ["batch_1d", "finished_slots", main.const([4], I64)], axis=0)
    carried["finished_info"] = main.op("Expand", [empty_slot, info_shape], "finished_info_0")
    carried["length"] = main.const(0, I64, "length_0")
    return carried


def _n_best(main: Graph, info: str, tokens: str) -> None:
    """The graph's outputs: the n_best best finished hypotheses of each sentence, best first
    (ties: the one found first)."""
    slot_scores = main.op("Gather", [info, main.const(0, I64)], "slot_scores", axis=2)  # [batch, slots]
    _, best = main.op("TopK", [slot_scores, "n_best_1d"], "best", outputs=2, axis=1)
    best_column = main.op("Unsqueeze", [best, main.const([2], I64, "axis_2")])
    info_index = main.op(
        "Expand", [best_column, main.op("Concat", ["batch_1d", "n_best_1d", main.const([4], I64)], axis=0)]
    )
    best_info = main.op("GatherElements", [info, info_index], "best_info", axis=1)
    fields = [main.op("Gather", [best_info, main.const(index, I64)], axis=2) for index in range(4)]
    main.named("Cast", [fields[0]], "scores", to=TensorProto.FLOAT)
    main.named("Cast", [fields[1]], "log_probs", to=TensorProto.FLOAT)
    lengths = main.named("Cast", [fields[2]], "hypothesis_lengths", to=TensorProto.INT64)
    main.named("Cast", [fields[3]], "finished", to=TensorProto.BOOL)
    token_index = main.op(
        "Expand", [best_column, main.op("Concat", ["batch_1d", "n_best_1d", "longest_limit_1d"], axis=0)]
    )
    best_tokens = main.op("GatherElements", [tokens, token_index], "best_tokens", axis=1)
    all_lengths = main.op(
        "Concat", [main.const([0], I64), main.op("Reshape", [lengths, main.const([-1], I64)])], axis=0
    )
    width = main.op("ReduceMax", [all_lengths], "width", keepdims=1)
    main.named("Slice", [best_tokens, main.const([0], I64), width, main.const([2], I64)], "hypotheses")


def _search_step(
    step: onnx.ModelProto, carried: list, *, attention: bool, eos_id: int, layers2: int, hidden: int
) -> onnx.GraphProto:
    """The outer `Loop`'s body: steps until a sentence is done (an inner `Loop`), then the
    done sentences leave the batch.

    The entries that are constant per sentence (`encoder_outputs`, the largest) are read
    by the inner loop from this scope, so they are copied only when sentences leave, as the
    numpy search moves them only then; so is what depends only on which sentences are live."""
    g = Graph("search/")
    zero, one = g.const(0, I64, "zero"), g.const(1, I64, "one")
    axis1, flat = g.const([1], I64, "axis_1"), g.const([-1], I64, "flat")
    static = [name for name in STATIC if name in carried]
    stepped = [name for name in carried if name not in static and name != "sentences"]

    live = g.op("Shape", ["sentences_in"], "live")  # [1]
    g.named("Concat", [live, "beam_k"], "by_sentence", axis=0)
    start = g.op("Mul", [g.op("Range", [zero, g.op("Squeeze", [live, g.const([0], I64)]), one]), "beam_size"])
    start = g.named("Unsqueeze", [start, axis1], "sentence_start")  # [live, 1]
    beams = g.op("Unsqueeze", [g.op("Range", [zero, "beam_size", one]), zero])
    g.named("Add", [beams, start], "beam_rows")
    g.named("Gather", ["max_lengths", "sentences_in"], "live_max_lengths", axis=0)
    g.named("Gather", ["limit_divisor", "sentences_in"], "live_limit_divisor", axis=0)

    inner = steps_until_done(step, stepped, attention=attention, eos_id=eos_id, layers2=layers2, hidden=hidden)
    started = {name: f"{name}_in" for name in stepped}
    started["done"] = g.op("ConstantOfShape", [live], "not_done", value=numpy_helper.from_array(np.zeros(1, bool)))
    names = stepped + ["done"]
    loop_inputs = ["longest_limit", g.const(True, bool)] + [started[name] for name in names]
    stepped_out = dict(zip(names, g.op("Loop", loop_inputs, "steps", outputs=len(names), body=inner)))

    # Done sentences leave the batch.
    kept = g.op("Reshape", [g.op("NonZero", [g.op("Not", [stepped_out["done"]])]), flat], "kept")
    kept_starts = g.op("Unsqueeze", [g.op("Mul", [kept, "beam_size"]), axis1])
    kept_rows = g.op("Reshape", [g.op("Add", [kept_starts, beams]), flat], "kept_rows")
    out = {name: stepped_out[name] for name in stepped}
    for name in ("tokens", "history"):
        out[name] = g.op("Gather", [stepped_out[name], kept_rows], axis=0)
    out["states"] = g.op("Gather", [stepped_out["states"], kept_rows], axis=1)
    for name in PER_SENTENCE:
        out[name] = g.op("Gather", [stepped_out[name], kept], axis=0)
    out["sentences"] = g.op("Gather", ["sentences_in", kept], axis=0)
    out.update({name: g.op("Gather", [f"{name}_in", kept_rows], axis=0) for name in static})
    g.named("Greater", [g.op("Size", [kept]), zero], "cond_out")
    for name in carried:
        g.named("Identity", [out[name]], f"{name}_out")
    inputs = [tensor("iteration", TensorProto.INT64, []), tensor("cond_in", TensorProto.BOOL, [])]
    inputs += [value_info(name, f"{name}_in", layers2, hidden) for name in carried]
    outputs = [tensor("cond_out", TensorProto.BOOL, [])]
    outputs += [value_info(name, f"{name}_out", layers2, hidden) for name in carried]
    return helper.make_graph(g.nodes, "search", inputs, outputs, g.initializers)
