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

import collections

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SCALAR_INPUTS = {
    "beam_size": TensorProto.INT64,
    "n_best": TensorProto.INT64,
    "length_penalty": TensorProto.DOUBLE,
    "max_length_a": TensorProto.DOUBLE,
    "max_length_b": TensorProto.INT64,
}


class _Graph:
    """Nodes and constants of one ONNX graph, with unique value names."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.nodes: list = []
        self.initializers: list = []
        self._count = collections.Counter()

    def _name(self, hint: str) -> str:
        self._count[hint] += 1
        count = self._count[hint]
        return f"{self.prefix}{hint}" if count == 1 else f"{self.prefix}{hint}_{count}"

    def const(self, value, dtype, hint: str = "const") -> str:
        name = self._name(hint)
        self.initializers.append(numpy_helper.from_array(np.array(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs, hint: str | None = None, outputs: int = 1, **attributes):
        names = [self._name(hint or op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, name=names[0], **attributes))
        return names[0] if outputs == 1 else names

    def named(self, op_type: str, inputs, output: str, **attributes) -> str:
        """A node whose output has a fixed name (a graph output or loop-carried value)."""
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], name=self.prefix + output, **attributes))
        return output


def _renamed(graph: onnx.GraphProto, prefix: str, keep: dict) -> tuple[list, list]:
    """The nodes and initializers of `graph` with every value name prefixed, except the
    names in `keep`, which are mapped to the given names (the graph's interface)."""

    def rename(name: str) -> str:
        if not name:
            return name
        return keep.get(name, prefix + name)

    nodes = []
    for node in graph.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.name = prefix + (node.name or node.output[0])
        copy.input[:] = [rename(name) for name in node.input]
        copy.output[:] = [rename(name) for name in node.output]
        nodes.append(copy)
    initializers = []
    for initializer in graph.initializer:
        copy = onnx.TensorProto()
        copy.CopyFrom(initializer)
        copy.name = rename(initializer.name)
        initializers.append(copy)
    return nodes, initializers


def _vocabulary(step: onnx.ModelProto) -> int:
    for output in step.graph.output:
        if output.name == "log_probs":
            return int(output.type.tensor_type.shape.dim[1].dim_value)
    raise ValueError("decoder step graph: no log_probs output")


def _opsets(*models: onnx.ModelProto) -> list:
    versions: dict = {}
    for model in models:
        for opset in model.opset_import:
            versions[opset.domain] = max(versions.get(opset.domain, 0), opset.version)
    return [helper.make_opsetid(domain, version) for domain, version in sorted(versions.items())]


def _tensor(name: str, elem_type: int, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, shape)


def translator_graph(encoder: onnx.ModelProto, step: onnx.ModelProto, *, reverse_source: bool,
                     bos_id: int, eos_id: int) -> onnx.ModelProto:
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
    vocabulary = _vocabulary(step)
    states_type = next(i for i in step.graph.input if i.name == "states").type.tensor_type
    layers2, hidden = (int(d.dim_value) for d in (states_type.shape.dim[0], states_type.shape.dim[2]))

    main = _Graph("")
    i64, i32, f32, f64 = np.int64, np.int32, np.float32, np.float64
    one = main.const(1, i64, "one")
    zero = main.const(0, i64, "zero")

    # --- The encoder, on the source as the model reads it.
    lengths64 = main.op("Cast", ["source_lengths"], "source_lengths_64", to=TensorProto.INT64)
    ids = "source_ids"
    if reverse_source:
        ids = main.op("ReverseSequence", [ids, lengths64], "reversed_source_ids", batch_axis=0, time_axis=1)
    encoder_nodes, encoder_initializers = _renamed(
        encoder.graph, "encoder/",
        {"source_ids": ids, "source_lengths": "source_lengths", "states": "encoder_states",
         "encoder_outputs": "encoder_outputs"})
    main.nodes += encoder_nodes
    main.initializers += encoder_initializers

    # --- Per-sentence limits: max(1, floor(a * length + b)), and the divisor length ** penalty.
    lengths_f = main.op("Cast", [lengths64], "source_lengths_f64", to=TensorProto.DOUBLE)
    limit = main.op("Add", [main.op("Mul", ["max_length_a", lengths_f]),
                            main.op("Cast", ["max_length_b"], to=TensorProto.DOUBLE)])
    limit = main.op("Max", [main.op("Floor", [limit]), main.const(1.0, f64, "one_f64")])
    max_lengths = main.op("Cast", [limit], "max_lengths", to=TensorProto.INT64)
    main.op("Pow", [limit, "length_penalty"], "limit_divisor")
    longest = main.op("ReduceMax", [main.op("Concat", [main.const([0], i64), max_lengths], axis=0)],
                      "longest_limit", keepdims=0)
    shape_1 = main.const([1], i64, "shape_1")
    longest_1d = main.op("Reshape", [longest, shape_1], "longest_limit_1d")

    # --- Sizes: batch, rows = batch x beam, k = min(2 x beam, vocabulary), the finished slots.
    batch = main.op("Gather", [main.op("Shape", ["source_ids"]), zero], "batch", axis=0)
    batch_1d = main.op("Reshape", [batch, "shape_1"], "batch_1d")
    beam_1d = main.op("Reshape", ["beam_size", "shape_1"], "beam_1d")
    two_beam = main.op("Mul", [beam_1d, main.const([2], i64, "two")], "two_beam")
    top_k = main.op("Min", [two_beam, main.const([vocabulary], i64, "vocabulary")], "step_top_k")
    slots = main.op("Mul", [beam_1d, main.const([3], i64, "three")], "finished_slots")
    n_best_1d = main.op("Reshape", ["n_best", "shape_1"], "n_best_1d")
    # What every step uses and no step changes.
    main.op("Mul", [beam_1d, top_k], "beam_k")
    candidate_rank = main.op("Range", [zero, main.op("Squeeze", [two_beam, main.const([0], i64)]), one])
    main.op("Cast", [candidate_rank], "candidate_position", to=TensorProto.FLOAT)
    main.op("Mul", [main.op("Cast", [beam_1d], to=TensorProto.FLOAT), main.const([2.0], f32)], "two_beam_f")
    main.op("Sub", ["n_best", one], "n_best_index")
    main.op("Range", [zero, longest, one], "history_columns")
    main.op("Cast", [main.op("Less", [candidate_rank, "beam_size"])], "eos_then_not", to=TensorProto.DOUBLE)

    # --- The search's start: every sentence gets `beam` rows; only the first beam is live.
    rows = main.op("Mul", [batch, "beam_size"], "rows")
    row_sentence = main.op("Div", [main.op("Range", [zero, rows, one]), "beam_size"], "row_sentence")
    states0 = main.op("Gather", ["encoder_states", row_sentence], "states_0", axis=1)
    carried = {"tokens": None, "states": states0}
    if attention:
        carried["encoder_outputs"] = main.op("Gather", ["encoder_outputs", row_sentence], "encoder_outputs_0", axis=0)
        carried["source_lengths"] = main.op("Gather", ["source_lengths", row_sentence], "source_lengths_0", axis=0)
    rows_1d = main.op("Reshape", [rows, "shape_1"], "rows_1d")
    carried["tokens"] = main.op("Expand", [main.const([bos_id], i32, "bos"), rows_1d], "tokens_0")
    first_beam = main.op("Equal", [main.op("Range", [zero, "beam_size", one]), zero])
    beam_scores = main.op("Where", [first_beam, main.const(0.0, f32), main.const(-np.inf, f32, "minus_inf")])
    carried["scores"] = main.op("Expand", [beam_scores, main.op("Concat", [batch_1d, beam_1d], axis=0)], "scores_0")
    carried["sentences"] = main.op("Range", [zero, batch, one], "sentences_0")
    carried["history"] = main.op("ConstantOfShape", [main.op("Concat", [rows_1d, longest_1d], axis=0)], "history_0",
                                 value=numpy_helper.from_array(np.zeros(1, i32)))
    batch_slots = main.op("Concat", [batch_1d, slots], axis=0)
    # Per live sentence: its finished hypotheses so far, and the n_best-th best score.
    carried["count"] = main.op("ConstantOfShape", [batch_1d], "count_0",
                               value=numpy_helper.from_array(np.zeros(1, i64)))
    carried["nth"] = main.op("ConstantOfShape", [batch_1d], "nth_0",
                             value=numpy_helper.from_array(np.full(1, -np.inf, f64)))
    # Per sentence and slot, a finished hypothesis: its tokens, and (score, log_prob,
    # length, ended with eos) as float64, which holds each exactly.
    carried["finished_tokens"] = main.op(
        "ConstantOfShape", [main.op("Concat", [batch_slots, longest_1d], axis=0)], "finished_tokens_0",
        value=numpy_helper.from_array(np.zeros(1, i32)))
    empty_slot = main.const(np.array([-np.inf, 0.0, 0.0, 0.0]), f64, "empty_slot")
    carried["finished_info"] = main.op("Expand", [empty_slot, main.op("Concat", [batch_slots, main.const([4], i64)],
                                                                      axis=0)], "finished_info_0")
    carried["length"] = main.const(0, i64, "length_0")
    any_sentence = main.op("Greater", [batch, zero], "any_sentence")

    body = _search_step(step, list(carried), attention=attention, eos_id=eos_id, layers2=layers2, hidden=hidden)
    names = list(carried)
    final = [f"final_{name}" for name in names]
    main.nodes.append(helper.make_node("Loop", [longest, any_sentence] + [carried[n] for n in names], final,
                                       name="beam_search", body=body))
    finals = dict(zip(names, final))

    # --- The n_best best finished hypotheses of each sentence, best first (ties: the earlier found).
    info = finals["finished_info"]
    slot_scores = main.op("Gather", [info, main.const(0, i64)], "slot_scores", axis=2)  # [batch, slots]
    _, best = main.op("TopK", [slot_scores, n_best_1d], "best", outputs=2, axis=1)
    best_info = main.op("GatherElements", [info, main.op("Expand", [
        main.op("Unsqueeze", [best, main.const([2], i64)]),
        main.op("Concat", [batch_1d, n_best_1d, main.const([4], i64)], axis=0)])], "best_info", axis=1)

    def field(index):
        return main.op("Gather", [best_info, main.const(index, i64)], axis=2)

    main.named("Cast", [field(0)], "scores", to=TensorProto.FLOAT)
    main.named("Cast", [field(1)], "log_probs", to=TensorProto.FLOAT)
    lengths = main.named("Cast", [field(2)], "hypothesis_lengths", to=TensorProto.INT64)
    main.named("Cast", [field(3)], "finished", to=TensorProto.BOOL)
    token_index = main.op("Expand", [main.op("Unsqueeze", [best, main.const([2], i64, "axis_2")]),
                                     main.op("Concat", [batch_1d, n_best_1d, longest_1d], axis=0)])
    tokens = main.op("GatherElements", [finals["finished_tokens"], token_index], "best_tokens", axis=1)
    width = main.op("ReduceMax", [main.op("Concat", [main.const([0], i64), main.op("Reshape", [lengths, main.const([-1], i64)])],
                                          axis=0)], "width", keepdims=1)
    main.named("Slice", [tokens, main.const([0], i64), width, main.const([2], i64)], "hypotheses")

    inputs = [_tensor("source_ids", TensorProto.INT32, ["batch", "time"]),
              _tensor("source_lengths", TensorProto.INT32, ["batch"])]
    inputs += [_tensor(name, elem_type, []) for name, elem_type in SCALAR_INPUTS.items()]
    outputs = [_tensor("hypotheses", TensorProto.INT32, ["batch", "n_best", "length"]),
               _tensor("hypothesis_lengths", TensorProto.INT64, ["batch", "n_best"]),
               _tensor("scores", TensorProto.FLOAT, ["batch", "n_best"]),
               _tensor("log_probs", TensorProto.FLOAT, ["batch", "n_best"]),
               _tensor("finished", TensorProto.BOOL, ["batch", "n_best"])]
    graph = helper.make_graph(main.nodes, "translator", inputs, outputs, main.initializers)
    model = helper.make_model(graph, opset_imports=_opsets(encoder, step), producer_name="keras-s2s")
    model.ir_version = max(encoder.ir_version, step.ir_version)
    return model


TYPES = {"tokens": TensorProto.INT32, "states": TensorProto.FLOAT, "encoder_outputs": TensorProto.FLOAT,
         "source_lengths": TensorProto.INT32, "scores": TensorProto.FLOAT, "sentences": TensorProto.INT64,
         "history": TensorProto.INT32, "count": TensorProto.INT64, "nth": TensorProto.DOUBLE,
         "finished_tokens": TensorProto.INT32, "finished_info": TensorProto.DOUBLE,
         "length": TensorProto.INT64, "done": TensorProto.BOOL}
BUFFERS = ("count", "nth", "finished_tokens", "finished_info")


def _any(g: _Graph, mask: str, hint: str) -> str:
    """A scalar bool: whether any element of `mask` is true (false when it is empty)."""
    total = g.op("ReduceSum", [g.op("Cast", [mask], to=TensorProto.INT64)], keepdims=0)
    return g.op("Greater", [total, g.const(0, np.int64)], hint)


def _if(g: _Graph, condition: str, branch, passthrough: dict, outputs: dict) -> None:
    """`If(condition)`: the values `branch(graph)` returns, else `passthrough`'s, under
    the names `outputs` (`{name: output name}`).

    The rarely needed parts of a step (finishing hypotheses) run only on the steps that
    need them, as in the numpy search."""
    names = list(outputs)
    then_graph = _Graph(f"{g.prefix}then/")
    produced = branch(then_graph)
    then_names = [then_graph.named("Identity", [produced[name]], f"then/{name}") for name in names]
    else_graph = _Graph(f"{g.prefix}else/")
    else_names = [else_graph.named("Identity", [passthrough[name]], f"else/{name}") for name in names]

    def subgraph(graph, values, label):
        return helper.make_graph(graph.nodes, label, [], [_tensor(v, TYPES[n], None) for v, n in zip(values, names)],
                                 graph.initializers)

    g.nodes.append(helper.make_node("If", [condition], [outputs[name] for name in names], name=g.prefix + "finish",
                                    then_branch=subgraph(then_graph, then_names, "finish"),
                                    else_branch=subgraph(else_graph, else_names, "no_finish")))


STATIC = ("encoder_outputs", "source_lengths")
SHAPES = {"tokens": ["rows"], "states": ["layers2", "rows", "hidden"], "encoder_outputs": ["rows", "time", "hidden"],
          "source_lengths": ["rows"], "scores": ["live", "beam"], "sentences": ["live"], "history": ["rows", "limit"],
          "length": [], "done": ["live"], "count": ["live"], "nth": ["live"],
          "finished_tokens": ["batch", "slots", "limit"], "finished_info": ["batch", "slots", 4]}
PER_SENTENCE = ("scores", "count", "nth")  # one row per live sentence; the rest of `stepped` one per row


def _value(name: str, value: str, layers2: int, hidden: int) -> onnx.ValueInfoProto:
    shape = [layers2 if d == "layers2" else hidden if d == "hidden" else d for d in SHAPES[name]]
    return _tensor(value, TYPES[name], shape)


def _search_step(step: onnx.ModelProto, carried: list, *, attention: bool, eos_id: int, layers2: int,
                 hidden: int) -> onnx.GraphProto:
    """The outer `Loop`'s body: steps until a sentence is done (an inner `Loop`), then the
    done sentences leave the batch.

    The entries that are constant per sentence (`encoder_outputs`, the largest) are read
    by the inner loop from this scope, so they are copied only when sentences leave, as the
    numpy search moves them only then; so is what depends only on which sentences are live."""
    g = _Graph("search/")
    i64 = np.int64
    zero, one = g.const(0, i64, "zero"), g.const(1, i64, "one")
    axis1, flat = g.const([1], i64, "axis_1"), g.const([-1], i64, "flat")
    static = [name for name in STATIC if name in carried]
    stepped = [name for name in carried if name not in static and name != "sentences"]

    live = g.op("Shape", ["sentences_in"], "live")  # [1]
    g.named("Concat", [live, "beam_k"], "by_sentence", axis=0)
    start = g.op("Mul", [g.op("Range", [zero, g.op("Squeeze", [live, g.const([0], i64)]), one]), "beam_size"])
    start = g.named("Unsqueeze", [start, axis1], "sentence_start")  # [live, 1]
    g.named("Add", [g.op("Unsqueeze", [g.op("Range", [zero, "beam_size", one]), zero]), start], "beam_rows")
    g.named("Gather", ["max_lengths", "sentences_in"], "live_max_lengths", axis=0)
    g.named("Gather", ["limit_divisor", "sentences_in"], "live_limit_divisor", axis=0)

    inner = _steps_until_done(step, stepped, attention=attention, eos_id=eos_id, layers2=layers2, hidden=hidden)
    started = {name: f"{name}_in" for name in stepped}
    started["done"] = g.op("ConstantOfShape", [live], "not_done", value=numpy_helper.from_array(np.zeros(1, bool)))
    names = stepped + ["done"]
    results = g.op("Loop", ["longest_limit", g.const(True, bool)] + [started[name] for name in names], "steps",
                   outputs=len(names), body=inner)
    stepped_out = dict(zip(names, results))

    # Done sentences leave the batch.
    kept = g.op("Reshape", [g.op("NonZero", [g.op("Not", [stepped_out["done"]])]), flat], "kept")
    kept_rows = g.op("Reshape", [g.op("Add", [g.op("Unsqueeze", [g.op("Mul", [kept, "beam_size"]), axis1]),
                                              g.op("Unsqueeze", [g.op("Range", [zero, "beam_size", one]), zero])]),
                                 flat], "kept_rows")
    out = {name: stepped_out[name] for name in stepped}
    for name in ("tokens", "history"):
        out[name] = g.op("Gather", [stepped_out[name], kept_rows], axis=0)
    out["states"] = g.op("Gather", [stepped_out["states"], kept_rows], axis=1)
    for name in PER_SENTENCE:
        out[name] = g.op("Gather", [stepped_out[name], kept], axis=0)
    out["sentences"] = g.op("Gather", ["sentences_in", kept], axis=0)
    out.update({name: g.op("Gather", [f"{name}_in", kept_rows], axis=0) for name in static})
    outputs = [g.named("Greater", [g.op("Size", [kept]), zero], "cond_out")]
    outputs += [g.named("Identity", [out[name]], f"{name}_out") for name in carried]
    inputs = [_tensor("iteration", TensorProto.INT64, []), _tensor("cond_in", TensorProto.BOOL, [])]
    inputs += [_value(name, f"{name}_in", layers2, hidden) for name in carried]
    return helper.make_graph(g.nodes, "search", inputs,
                             [_tensor("cond_out", TensorProto.BOOL, [])]
                             + [_value(name, f"{name}_out", layers2, hidden) for name in carried], g.initializers)


def _steps_until_done(step: onnx.ModelProto, carried: list, *, attention: bool, eos_id: int, layers2: int,
                      hidden: int) -> onnx.GraphProto:
    """The inner `Loop`'s body: one decoder step for every live row and the beam
    bookkeeping; it stops after the first step at which a sentence is done."""
    g = _Graph("search/step/")
    i64, f32 = np.int64, np.float32
    zero, one = g.const(0, i64, "zero"), g.const(1, i64, "one")
    minus_inf = g.const(-np.inf, f32, "minus_inf")
    axis1 = g.const([1], i64, "axis_1")
    flat = g.const([-1], i64, "flat")
    inp = {name: f"{name}_step_in" for name in carried}
    inp.update(sentences="sentences_in", encoder_outputs="encoder_outputs_in", source_lengths="source_lengths_in")
    out = {name: f"{name}_step_out" for name in list(carried) + ["done"]}

    # The decoder step, node for node the graph of decoder_step.onnx.
    interface = {"token_ids": inp["tokens"], "states": inp["states"], "top_k": "step_top_k",
                 "top_log_probs": "step/values", "top_ids": "step/ids", "next_states": "step/next_states"}
    if attention:
        interface.update(encoder_outputs=inp["encoder_outputs"], source_lengths=inp["source_lengths"])
    step_nodes, step_initializers = _renamed(step.graph, "step/", interface)
    g.nodes += step_nodes
    g.initializers += step_initializers

    length = g.named("Add", [inp["length"], one], out["length"])

    # The best 2 x beam extensions of each sentence among its beam x k candidates.
    candidates = g.op("Add", [g.op("Reshape", [inp["scores"], g.const([-1, 1], i64)]), "step/values"])
    candidates = g.op("Reshape", [candidates, "by_sentence"], "candidates")
    top_scores, top = g.op("TopK", [candidates, "two_beam"], "top", outputs=2, axis=1)
    words = g.op("GatherElements", [g.op("Reshape", ["step/ids", "by_sentence"]), top], "words", axis=1)
    parents = g.op("Div", [top, "step_top_k"], "parents")
    is_eos = g.op("Equal", [words, g.const(eos_id, i64, "eos")], "is_eos")

    # Candidates among the best `beam` that end with eos are finished hypotheses.
    head = [g.const([0], i64), "beam_1d", axis1]
    head_scores = g.op("Slice", [top_scores] + head, "head_scores")
    ends = g.op("And", [g.op("Slice", [is_eos] + head), g.op("Greater", [head_scores, minus_inf])], "ends")

    # The best `beam` candidates that do not end become the new beams (in descending order).
    order_key = g.op("Add", [g.op("Mul", [g.op("Cast", [is_eos], to=TensorProto.FLOAT), "two_beam_f"]),
                             "candidate_position"])
    _, keep = g.op("TopK", [order_key, "beam_1d"], "keep", outputs=2, axis=1, largest=0)
    new_scores = g.named("GatherElements", [top_scores, keep], out["scores"], axis=1)
    new_words = g.op("Cast", [g.op("GatherElements", [words, keep], axis=1)], "new_words", to=TensorProto.INT32)
    parent_rows = g.op("Add", [g.op("GatherElements", [parents, keep], axis=1), "sentence_start"], "parent_rows")
    flat_parents = g.op("Reshape", [parent_rows, flat], "flat_parent_rows")
    history = g.op("Gather", [inp["history"], flat_parents], "history", axis=0)
    column = g.op("Equal", ["history_columns", g.op("Sub", [length, one])])
    history = g.named("Where", [column, g.op("Reshape", [new_words, g.const([-1, 1], i64)]), history], out["history"])
    g.named("Reshape", [new_words, flat], out["tokens"])
    g.named("Gather", ["step/next_states", flat_parents], out["states"], axis=1)

    # At its length limit a sentence's live beams finish, unfinished.
    at_limit = g.op("GreaterOrEqual", [length, "live_max_lengths"], "at_limit")
    limited = g.op("And", [g.op("Unsqueeze", [at_limit, axis1]), g.op("Greater", [new_scores, minus_inf])], "limited")

    def finish(b: _Graph) -> dict:
        # This step's finished hypotheses, [live, 2 x beam]: first those that end with eos
        # among the best `beam` candidates, then, at the limit, the live beams (the order in
        # which the numpy search appends them). Their tokens: an eos one's parent's history
        # before this step, an unfinished one's history after it.
        f64 = TensorProto.DOUBLE
        mask = b.op("Concat", [ends, limited], "finishing", axis=1)
        values = b.op("Cast", [b.op("Concat", [head_scores, new_scores], axis=1)], to=f64)
        rows = b.op("Concat", [b.op("Add", [b.op("Slice", [parents] + head), "sentence_start"]),
                               b.op("Add", ["beam_rows", b.op("Shape", [inp["history"]], start=0, end=1)])], axis=1)
        histories = b.op("Concat", [inp["history"], history], axis=0)
        divisor = b.op("Pow", [b.op("Cast", [length], to=f64), "length_penalty"], "divisor")
        lengths = b.op("Cast", [b.op("Concat", [b.op("Expand", [b.op("Sub", [length, one]), "beam_1d"]),
                                               b.op("Expand", [length, "beam_1d"])], axis=0)], to=f64)
        info = [b.op("Div", [values, divisor]), values, b.op("Expand", [lengths, b.op("Shape", [values])]),
                b.op("Expand", ["eos_then_not", b.op("Shape", [values])])]
        info = b.op("Concat", [b.op("Unsqueeze", [x, b.const([2], i64)]) for x in info], "info", axis=2)
        slot = b.op("Add", [b.op("Unsqueeze", [inp["count"], axis1]),
                            b.op("Sub", [b.op("CumSum", [b.op("Cast", [mask], to=TensorProto.INT64), one]), one])])
        chosen = b.op("Transpose", [b.op("NonZero", [mask])], "chosen", perm=[1, 0])  # [n, (live index, column)]
        sentence = b.op("Gather", [inp["sentences"], b.op("Gather", [chosen, zero], axis=1)], axis=0)
        where = b.op("Concat", [b.op("Unsqueeze", [sentence, axis1]), b.op("Unsqueeze", [b.op("GatherND", [slot, chosen]),
                                                                                          axis1])], axis=1)
        buffers = {
            "finished_info": b.op("ScatterND", [inp["finished_info"], where, b.op("GatherND", [info, chosen])]),
            "finished_tokens": b.op("ScatterND", [inp["finished_tokens"], where, b.op(
                "Gather", [histories, b.op("GatherND", [rows, chosen])], axis=0)]),
            "count": b.op("Add", [inp["count"], b.op("ReduceSum", [b.op("Cast", [ends], to=TensorProto.INT64), axis1],
                                                     keepdims=0)]),
        }
        # The n_best-th best finished score (-inf while fewer); at-limit hypotheses only
        # join sentences that are done.
        scores = b.op("Gather", [b.op("Gather", [buffers["finished_info"], inp["sentences"]], axis=0), zero], axis=2)
        nth = b.op("TopK", [scores, "n_best_1d"], "nth", outputs=2, axis=1)[0]
        buffers["nth"] = b.op("Gather", [nth, "n_best_index"], "nth_score", axis=1)
        return buffers

    _if(g, _any(g, g.op("Or", [ends, limited]), "any_finish"), finish, {name: inp[name] for name in BUFFERS},
        {name: out[name] for name in BUFFERS})

    # Done: at the limit, with beam finished hypotheses, or when the best a live beam can
    # still reach (its score cannot rise; the longest length divides it most) is no better
    # than the n_best-th finished score (-inf while fewer: a live beam's score is finite).
    best_live = g.op("Gather", [new_scores, zero], "best_live", axis=1)
    bound = g.op("Div", [g.op("Cast", [best_live], to=TensorProto.DOUBLE), "live_limit_divisor"], "bound")
    early = g.op("LessOrEqual", [bound, out["nth"]], "early_stop")
    done = g.op("Or", [g.op("Or", [at_limit, g.op("GreaterOrEqual", [out["count"], "beam_size"])]), early])
    g.named("Identity", [done], out["done"])
    g.named("Not", [_any(g, done, "any_done")], "step_cond_out")

    names = list(carried) + ["done"]
    inputs = [_tensor("step_iteration", TensorProto.INT64, []), _tensor("step_cond_in", TensorProto.BOOL, [])]
    inputs += [_value(name, f"{name}_step_in", layers2, hidden) for name in names]
    return helper.make_graph(g.nodes, "steps", inputs,
                             [_tensor("step_cond_out", TensorProto.BOOL, [])]
                             + [_value(name, out[name], layers2, hidden) for name in names], g.initializers)
