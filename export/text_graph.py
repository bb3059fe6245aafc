"""`translator.text.onnx`: strings in, n-best strings out.

The graph is `translator.onnx` with the tokenizer in front and the detokenizer behind,
written with standard ONNX string operators only (`StringSplit`, `StringConcat`,
`RegexFullMatch`, opset 20), which every onnxruntime binding runs, the browser's included.
It gives what `serving.translator.Translator.translate` gives for the same lines.

The tokenizers' nodes are in `export/tokenizer_graph.py`.

Only `onnx` and `numpy` are needed here.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from export.onnx_graph import Graph, tensor
from export.search_graph import SCALAR_INPUTS
from export.tokenizer_graph import EXTENSIONS_DOMAIN, PYTHON_WHITESPACE, detokenize, tokenize

TEXT_OPSET = 20
# The source limit of a bundle that names none: a line is cut to this many tokens.
DEFAULT_LIMIT = 256
# A line of only Python's whitespace is blank, and the translator returns one empty
# translation for it.
BLANK_LINE = "[" + "".join(f"\\x{{{ord(space):x}}}" for space in PYTHON_WHITESPACE) + "]*"


def text_translator_graph(
    translator: onnx.ModelProto, source: dict, target: dict, max_source_length: int
) -> onnx.ModelProto:
    """Wraps `translator.onnx` with symbol tokenizers.

    Args:
        translator: the id-level translator (`export.search_graph.translator_graph`).
        source: the source tokenizer: a symbol tokenizer file's content (`{"split",
            "lowercase", "symbols"}`), or `{"type": "sentencepiece", "model": bytes}` for
            onnxruntime-extensions' SentencePiece operators (no lower-casing).
        target: the target tokenizer, the same way.
        max_source_length: int. Longer sources are cut to this many tokens, as the
            translator does (0: `DEFAULT_LIMIT`).

    Inputs: `texts` string [batch] and the translator's scalar inputs. Outputs:
    `translations` string [batch, n_best] and `scores` float32 [batch, n_best] (-inf where
    a line has fewer hypotheses; a blank line has one empty translation with score 0), and
    `truncated` bool [batch]: the line had more tokens than the limit and was cut to it.
    Work per line is bounded by the limit (`export.tokenizer_graph`), whatever its length.
    """
    g = Graph("text/")
    limit = max_source_length or DEFAULT_LIMIT
    ids, lengths = tokenize(g, "texts", source, limit)
    cap = g.const([limit], np.int64, "max_source_length")
    cap32 = g.op("Cast", [cap], to=TensorProto.INT32)
    g.named("Greater", [lengths, cap32], "truncated")
    lengths = g.op("Min", [lengths, cap32], "truncated_lengths")
    ids = g.op("Slice", [ids, g.const([0], np.int64), cap, g.const([1], np.int64)], "truncated_ids")
    g.named("Identity", [ids], "source_ids")
    g.named("Identity", [lengths], "source_lengths")
    upgraded = onnx.GraphProto()
    upgraded.CopyFrom(translator.graph)
    _upgrade_to_opset_20(upgraded)
    nodes = list(g.nodes) + list(upgraded.node)
    initializers = list(g.initializers) + list(upgraded.initializer)

    d = Graph("detokenize/")
    texts = detokenize(d, "hypotheses", "hypothesis_lengths", target)
    # A blank line gives one empty translation with score 0, as `Translator.translate` does.
    blank = d.op(
        "Unsqueeze", [d.op("RegexFullMatch", ["texts"], "blank", pattern=BLANK_LINE), d.const([1], np.int64)]
    )  # [batch, 1]
    rank = d.op(
        "Range",
        [
            d.const(0, np.int64),
            d.op("Squeeze", [d.op("Shape", ["scores"], start=1, end=2), d.const([0], np.int64)]),
            d.const(1, np.int64),
        ],
    )
    first = d.op("Unsqueeze", [d.op("Equal", [rank, d.const(0, np.int64)]), d.const([0], np.int64)])  # [1, n]
    blank_scores = d.op("Where", [first, d.const(0.0, np.float32), d.const(-np.inf, np.float32)])
    d.named("Where", [blank, d.const("", object), texts], "translations")
    d.named("Where", [blank, blank_scores, "scores"], "text_scores")
    nodes += d.nodes
    initializers += d.initializers

    inputs = [tensor("texts", TensorProto.STRING, ["batch"])]
    inputs += [tensor(name, elem_type, []) for name, elem_type in SCALAR_INPUTS.items()]
    outputs = [
        tensor("translations", TensorProto.STRING, ["batch", "n_best"]),
        tensor("text_scores", TensorProto.FLOAT, ["batch", "n_best"]),
        tensor("truncated", TensorProto.BOOL, ["batch"]),
    ]
    graph = helper.make_graph(nodes, "text_translator", inputs, outputs, initializers)
    opsets = [
        helper.make_opsetid(o.domain, TEXT_OPSET if o.domain in ("", "ai.onnx") else o.version)
        for o in translator.opset_import
    ]
    if "sentencepiece" in (source.get("type"), target.get("type")):
        opsets.append(helper.make_opsetid(EXTENSIONS_DOMAIN, 1))
    model = helper.make_model(graph, opset_imports=opsets, producer_name="keras-s2s")
    model.ir_version = max(translator.ir_version, 9)
    return model


REDUCE_WITH_AXES_INPUT_FROM_18 = {
    "ReduceMax",
    "ReduceMin",
    "ReduceMean",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceSumSquare",
}


def _upgrade_to_opset_20(graph: onnx.GraphProto) -> None:
    """Rewrites, in place and in every subgraph, the nodes of the opset-17 graphs whose form
    changed by opset 20: `Split` names its output count, reductions take `axes` as an input."""
    for node in list(graph.node):
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                _upgrade_to_opset_20(attribute.g)
        if node.op_type == "Split" and len(node.input) < 2 and not any(a.name == "num_outputs" for a in node.attribute):
            node.attribute.append(helper.make_attribute("num_outputs", len(node.output)))
        if node.op_type in REDUCE_WITH_AXES_INPUT_FROM_18:
            axes = [a for a in node.attribute if a.name == "axes"]
            if axes:
                name = f"{node.name or node.output[0]}/axes"
                graph.initializer.append(onnx.numpy_helper.from_array(np.array(axes[0].ints, np.int64), name))
                node.attribute.remove(axes[0])
                node.input.append(name)
