"""The inner `Loop` body of `translator.onnx`: one decoder step for every live row and the
beam bookkeeping of `serving.search.beam_search`, in the same named steps: `_select` the
best `2 x beam` extensions of each sentence, `_ended` (those among the best `beam` that end
with eos), `_continuing` (the best `beam` that do not), `_at_limit`, `_finish` (written into
the finished buffers, in an `If`: few steps finish anything) and `_done`.

Values the body reads from the enclosing graphs by name (computed once per search or once
per outer iteration): `beam_size`, `beam_1d`, `two_beam`, `two_beam_f`, `step_top_k`,
`by_sentence`, `candidate_position`, `sentence_start`, `beam_rows`, `history_columns`,
`live_max_lengths`, `live_limit_divisor`, `length_penalty`, `eos_then_not`, `n_best_1d`,
`n_best_index`, and the per-sentence entries `sentences_in`, `encoder_outputs_in`,
`source_lengths_in`.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from export.onnx_graph import Graph, any_true, if_then, renamed, tensor

TYPES = {
    "tokens": TensorProto.INT32,
    "states": TensorProto.FLOAT,
    "encoder_outputs": TensorProto.FLOAT,
    "source_lengths": TensorProto.INT32,
    "scores": TensorProto.FLOAT,
    "sentences": TensorProto.INT64,
    "history": TensorProto.INT32,
    "count": TensorProto.INT64,
    "nth": TensorProto.DOUBLE,
    "finished_tokens": TensorProto.INT32,
    "finished_info": TensorProto.DOUBLE,
    "length": TensorProto.INT64,
    "done": TensorProto.BOOL,
}
SHAPES = {
    "tokens": ["rows"],
    "states": ["layers2", "rows", "hidden"],
    "encoder_outputs": ["rows", "time", "hidden"],
    "source_lengths": ["rows"],
    "scores": ["live", "beam"],
    "sentences": ["live"],
    "history": ["rows", "limit"],
    "length": [],
    "done": ["live"],
    "count": ["live"],
    "nth": ["live"],
    "finished_tokens": ["batch", "slots", "limit"],
    "finished_info": ["batch", "slots", 4],
}
# The finished hypotheses and what stopping needs of them: written only when some finish.
BUFFERS = ("count", "nth", "finished_tokens", "finished_info")
STATIC = ("encoder_outputs", "source_lengths")  # constant per sentence
PER_SENTENCE = ("scores", "count", "nth")  # one row per live sentence; the others one per row

I64, F32, F64 = np.int64, np.float32, TensorProto.DOUBLE


def value_info(name: str, value: str, layers2: int, hidden: int) -> onnx.ValueInfoProto:
    shape = [layers2 if d == "layers2" else hidden if d == "hidden" else d for d in SHAPES[name]]
    return tensor(value, TYPES[name], shape)


def steps_until_done(
    step: onnx.ModelProto, carried: list, *, attention: bool, eos_id: int, layers2: int, hidden: int
) -> onnx.GraphProto:
    """The inner `Loop`'s body; it stops after the first step at which a sentence is done."""
    g = Graph("search/step/")
    inp = {name: f"{name}_step_in" for name in carried}
    inp.update(sentences="sentences_in", encoder_outputs="encoder_outputs_in", source_lengths="source_lengths_in")
    out = {name: f"{name}_step_out" for name in list(carried) + ["done"]}

    values, ids, next_states = _decoder_step(g, step, inp, attention)
    length = g.named("Add", [inp["length"], g.const(1, I64, "one")], out["length"])
    candidates = _select(g, inp["scores"], values, ids, eos_id)
    ends, head_scores = _ended(g, candidates)
    history = _continuing(g, candidates, inp, out, next_states, length)
    at_limit, limited = _at_limit(g, length, out["scores"])
    finishing = any_true(g, g.op("Or", [ends, limited]), "any_finish")
    if_then(
        g,
        finishing,
        lambda b: _finish(b, candidates, ends, limited, head_scores, out["scores"], inp, history, length),
        {name: inp[name] for name in BUFFERS},
        {name: out[name] for name in BUFFERS},
        TYPES,
    )
    _done(g, at_limit, out)

    names = list(carried) + ["done"]
    inputs = [tensor("step_iteration", TensorProto.INT64, []), tensor("step_cond_in", TensorProto.BOOL, [])]
    inputs += [value_info(name, f"{name}_step_in", layers2, hidden) for name in names]
    outputs = [tensor("step_cond_out", TensorProto.BOOL, [])]
    outputs += [value_info(name, out[name], layers2, hidden) for name in names]
    return helper.make_graph(g.nodes, "steps", inputs, outputs, g.initializers)


def _decoder_step(g: Graph, step: onnx.ModelProto, inp: dict, attention: bool) -> tuple[str, str, str]:
    """The decoder step, node for node the graph of decoder_step.onnx: `(values, ids,
    next_states)`, the `step_top_k` best tokens of each row."""
    interface = {
        "token_ids": inp["tokens"],
        "states": inp["states"],
        "top_k": "step_top_k",
        "top_log_probs": "step/values",
        "top_ids": "step/ids",
        "next_states": "step/next_states",
    }
    if attention:
        interface.update(encoder_outputs=inp["encoder_outputs"], source_lengths=inp["source_lengths"])
    nodes, initializers = renamed(step.graph, "step/", interface)
    g.nodes += nodes
    g.initializers += initializers
    return "step/values", "step/ids", "step/next_states"


def _select(g: Graph, scores: str, values: str, ids: str, eos_id: int) -> dict:
    """The best `2 x beam` extensions of each sentence among its `beam x k` candidates, best
    first: `{scores, words, parents, is_eos}`, each [live, 2 x beam]."""
    candidates = g.op("Add", [g.op("Reshape", [scores, g.const([-1, 1], I64)]), values])
    candidates = g.op("Reshape", [candidates, "by_sentence"], "candidates")
    top_scores, top = g.op("TopK", [candidates, "two_beam"], "top", outputs=2, axis=1)
    words = g.op("GatherElements", [g.op("Reshape", [ids, "by_sentence"]), top], "words", axis=1)
    return {
        "scores": top_scores,
        "words": words,
        "parents": g.op("Div", [top, "step_top_k"], "parents"),
        "is_eos": g.op("Equal", [words, g.const(eos_id, I64, "eos")], "is_eos"),
    }


def _head(g: Graph, value: str, hint: str | None = None) -> str:
    """The first `beam` columns of a [live, 2 x beam] value."""
    return g.op("Slice", [value, g.const([0], I64), "beam_1d", g.const([1], I64)], hint)


def _ended(g: Graph, candidates: dict) -> tuple[str, str]:
    """Which of the best `beam` candidates end with eos (finished hypotheses), and their scores."""
    head_scores = _head(g, candidates["scores"], "head_scores")
    live = g.op("Greater", [head_scores, g.const(-np.inf, F32, "minus_inf")])
    return g.op("And", [_head(g, candidates["is_eos"]), live], "ends"), head_scores


def _continuing(g: Graph, candidates: dict, inp: dict, out: dict, next_states: str, length: str) -> str:
    """The best `beam` candidates that do not end become the new beams, best first: their
    scores, tokens, states and histories (written to `out`); returns the new history."""
    is_eos = g.op("Cast", [candidates["is_eos"]], to=TensorProto.FLOAT)
    order_key = g.op("Add", [g.op("Mul", [is_eos, "two_beam_f"]), "candidate_position"])
    _, keep = g.op("TopK", [order_key, "beam_1d"], "keep", outputs=2, axis=1, largest=0)
    g.named("GatherElements", [candidates["scores"], keep], out["scores"], axis=1)
    new_words = g.op(
        "Cast", [g.op("GatherElements", [candidates["words"], keep], axis=1)], "new_words", to=TensorProto.INT32
    )
    parent_rows = g.op("Add", [g.op("GatherElements", [candidates["parents"], keep], axis=1), "sentence_start"])
    flat_parents = g.op("Reshape", [parent_rows, g.const([-1], I64, "flat")], "flat_parent_rows")
    history = g.op("Gather", [inp["history"], flat_parents], "history", axis=0)
    column = g.op("Equal", ["history_columns", g.op("Sub", [length, g.const(1, I64)])])
    word_column = g.op("Reshape", [new_words, g.const([-1, 1], I64)])
    history = g.named("Where", [column, word_column, history], out["history"])
    g.named("Reshape", [new_words, g.const([-1], I64)], out["tokens"])
    g.named("Gather", [next_states, flat_parents], out["states"], axis=1)
    return history


def _at_limit(g: Graph, length: str, new_scores: str) -> tuple[str, str]:
    """Sentences at their length limit, [live], and their live beams, which finish
    unfinished, [live, beam]."""
    at_limit = g.op("GreaterOrEqual", [length, "live_max_lengths"], "at_limit")
    live = g.op("Greater", [new_scores, g.const(-np.inf, F32)])
    return at_limit, g.op("And", [g.op("Unsqueeze", [at_limit, g.const([1], I64)]), live], "limited")


def _finish(
    b: Graph,
    candidates: dict,
    ends: str,
    limited: str,
    head_scores: str,
    new_scores: str,
    inp: dict,
    history: str,
    length: str,
) -> dict:
    """This step's finished hypotheses written into the buffers: `{count, nth,
    finished_tokens, finished_info}`.

    They are, per sentence, [live, 2 x beam]: first those that end with eos among the best
    `beam` candidates, then, at the limit, the live beams (the order in which the numpy
    search appends them). Their tokens: an eos one's parent's history before this step, an
    unfinished one's history after it."""
    zero, one, axis1 = b.const(0, I64), b.const(1, I64), b.const([1], I64)
    mask = b.op("Concat", [ends, limited], "finishing", axis=1)
    values = b.op("Cast", [b.op("Concat", [head_scores, new_scores], axis=1)], to=F64)
    eos_rows = b.op("Add", [_head(b, candidates["parents"]), "sentence_start"])
    live_rows = b.op("Add", ["beam_rows", b.op("Shape", [inp["history"]], start=0, end=1)])
    rows = b.op("Concat", [eos_rows, live_rows], axis=1)  # in `histories` below
    histories = b.op("Concat", [inp["history"], history], axis=0)
    divisor = b.op("Pow", [b.op("Cast", [length], to=F64), "length_penalty"], "divisor")
    lengths = b.op(
        "Concat", [b.op("Expand", [b.op("Sub", [length, one]), "beam_1d"]), b.op("Expand", [length, "beam_1d"])], axis=0
    )
    shape = b.op("Shape", [values])
    info = [
        b.op("Div", [values, divisor]),
        values,
        b.op("Expand", [b.op("Cast", [lengths], to=F64), shape]),
        b.op("Expand", ["eos_then_not", shape]),
    ]
    info = b.op("Concat", [b.op("Unsqueeze", [x, b.const([2], I64)]) for x in info], "info", axis=2)
    # Each finishing hypothesis' slot: after its sentence's earlier ones.
    rank = b.op("Sub", [b.op("CumSum", [b.op("Cast", [mask], to=TensorProto.INT64), one]), one])
    slot = b.op("Add", [b.op("Unsqueeze", [inp["count"], axis1]), rank])
    chosen = b.op("Transpose", [b.op("NonZero", [mask])], "chosen", perm=[1, 0])  # [n, (live index, column)]
    sentence = b.op("Gather", [inp["sentences"], b.op("Gather", [chosen, zero], axis=1)], axis=0)
    where = b.op(
        "Concat",
        [b.op("Unsqueeze", [sentence, axis1]), b.op("Unsqueeze", [b.op("GatherND", [slot, chosen]), axis1])],
        axis=1,
    )
    tokens = b.op("Gather", [histories, b.op("GatherND", [rows, chosen])], axis=0)
    ended = b.op("ReduceSum", [b.op("Cast", [ends], to=TensorProto.INT64), axis1], keepdims=0)
    buffers = {
        "finished_info": b.op("ScatterND", [inp["finished_info"], where, b.op("GatherND", [info, chosen])]),
        "finished_tokens": b.op("ScatterND", [inp["finished_tokens"], where, tokens]),
        "count": b.op("Add", [inp["count"], ended]),
    }
    # The n_best-th best finished score (-inf while fewer); at-limit hypotheses only join
    # sentences that are done.
    scores = b.op("Gather", [b.op("Gather", [buffers["finished_info"], inp["sentences"]], axis=0), zero], axis=2)
    nth = b.op("TopK", [scores, "n_best_1d"], "nth", outputs=2, axis=1)[0]
    buffers["nth"] = b.op("Gather", [nth, "n_best_index"], "nth_score", axis=1)
    return buffers


def _done(g: Graph, at_limit: str, out: dict) -> None:
    """Done sentences: at the limit, with `beam` finished hypotheses, or when the best a live
    beam can still reach (its score cannot rise; the longest length divides it most) is no
    better than the n_best-th finished score (-inf while fewer: a live beam's score is
    finite). The inner loop stops when any sentence is done."""
    best_live = g.op("Gather", [out["scores"], g.const(0, I64)], "best_live", axis=1)
    bound = g.op("Div", [g.op("Cast", [best_live], to=F64), "live_limit_divisor"], "bound")
    early = g.op("LessOrEqual", [bound, out["nth"]], "early_stop")
    full = g.op("GreaterOrEqual", [out["count"], "beam_size"])
    done = g.named("Or", [g.op("Or", [at_limit, full]), early], out["done"])
    g.named("Not", [any_true(g, done, "any_done")], "step_cond_out")
