"""The in-graph selection of the k best tokens per row (`top_log_probs`, `top_ids`).

Only `onnx` is needed here (no TensorFlow), so the benchmarks build the same nodes.

One `TopK` over a `[rows, vocabulary]` tensor is slow in onnxruntime's CPU kernel for
large vocabularies (about 8 ns per element: at 160 rows x 32k tokens it costs as much as
an LSTM layer's gate arithmetic). For a vocabulary that splits into blocks, the graph
selects in two stages instead, with the same result:

1. the vocabulary is viewed as `[rows, blocks, block]` and each block's maximum is taken
   (one vectorised pass, no copy);
2. the `min(k, blocks)` blocks with the largest maxima are gathered and `TopK` runs over
   their `k x block` tokens only.

Exact: every token among the k best lies in a block whose maximum is at least the k-th
best value, and at most k blocks have such a maximum, so the k best blocks hold the k best
tokens. When k is at least the number of blocks, every block is gathered and the second
stage is a `TopK` over the whole vocabulary.
"""

from __future__ import annotations

import math

import numpy as np
from onnx import TensorProto, helper, numpy_helper

# Below this vocabulary size one TopK is as fast as two stages.
TWO_STAGE_MIN_VOCABULARY = 1024


def block_size(vocabulary: int) -> int | None:
    """The block width for a two-stage selection, or None for a single `TopK`.

    The divisor of `vocabulary` closest to `sqrt(vocabulary / 8)` (which balances the
    two stages for the 2 x beam = 10 tokens a beam-5 search asks for), at least 8 wide
    and leaving at least 16 blocks; None for small vocabularies or when no such divisor
    exists (e.g. a prime vocabulary size).
    """
    if vocabulary < TWO_STAGE_MIN_VOCABULARY:
        return None
    target = math.sqrt(vocabulary / 8)
    divisors = [d for d in range(8, vocabulary // 16 + 1) if vocabulary % d == 0]
    if not divisors:
        return None
    return min(divisors, key=lambda d: (abs(d - target), d))


def top_k_nodes(source: str, vocabulary: int | None, prefix: str = "top_k"):
    """Nodes and initializers computing `top_log_probs` (float, `[rows, k]`, best first)
    and `top_ids` (int64) from the `[rows, vocabulary]` tensor `source` and the int64
    `[1]` input `top_k`.

    Returns:
        `(nodes, initializers)`.
    """
    width = block_size(vocabulary) if vocabulary else None
    if width is None:
        return [
            helper.make_node(
                "TopK",
                [source, "top_k"],
                ["top_log_probs", "top_ids"],
                axis=-1,
                largest=1,
                sorted=1,
                name=f"{prefix}_tokens",
            )
        ], []
    blocks = vocabulary // width

    def name(suffix):
        return f"{prefix}/{suffix}"

    def constant(suffix, value):
        return numpy_helper.from_array(np.array(value, np.int64), name(suffix))

    initializers = [
        constant("block_shape", [0, blocks, width]),
        constant("flat_shape", [0, -1]),
        constant("blocks", [blocks]),
        constant("width", width),
        constant("last_axis", [2]),
    ]
    nodes = [
        helper.make_node("Reshape", [source, name("block_shape")], [name("by_block")]),
        helper.make_node("ReduceMax", [name("by_block")], [name("block_max")], axes=[2], keepdims=0),
        helper.make_node("Min", ["top_k", name("blocks")], [name("block_k")]),
        helper.make_node(
            "TopK",
            [name("block_max"), name("block_k")],
            [name("best_max"), name("best_blocks")],
            axis=-1,
            largest=1,
            sorted=1,
        ),
        helper.make_node("Unsqueeze", [name("best_blocks"), name("last_axis")], [name("block_index")]),
        helper.make_node("GatherND", [name("by_block"), name("block_index")], [name("gathered")], batch_dims=1),
        helper.make_node("Reshape", [name("gathered"), name("flat_shape")], [name("candidates")]),
        helper.make_node(
            "TopK",
            [name("candidates"), "top_k"],
            ["top_log_probs", name("position")],
            axis=-1,
            largest=1,
            sorted=1,
            name=f"{prefix}_tokens",
        ),
        helper.make_node("Div", [name("position"), name("width")], [name("rank")]),
        helper.make_node("Mod", [name("position"), name("width")], [name("offset")]),
        helper.make_node("GatherElements", [name("best_blocks"), name("rank")], [name("block")], axis=1),
        helper.make_node("Mul", [name("block"), name("width")], [name("start")]),
        helper.make_node("Add", [name("start"), name("offset")], ["top_ids"]),
    ]
    return nodes, initializers


def add_top_k(model_proto, source: str = "log_probs") -> None:
    """Adds the k best tokens of each row as outputs `top_log_probs`, `top_ids`.

    `k` is the input `top_k` (int64 `[1]`). A beam search of width b needs only
    the 2b best tokens of each row, so the device translator asks for those: the
    selection runs in onnxruntime and only `rows x k` values leave the session,
    not `rows x vocabulary`. `log_probs` stays an output. The vocabulary size is
    read from the shape of the output `source`; a two-stage selection is used
    where `block_size` finds a block width.
    """
    graph = model_proto.graph
    vocabulary = None
    for output in graph.output:
        if output.name == source:
            dims = output.type.tensor_type.shape.dim
            if len(dims) == 2 and dims[1].HasField("dim_value"):
                vocabulary = dims[1].dim_value
    nodes, initializers = top_k_nodes(source, vocabulary)
    graph.input.append(helper.make_tensor_value_info("top_k", TensorProto.INT64, [1]))
    graph.node.extend(nodes)
    graph.initializer.extend(initializers)
    graph.output.extend(
        [
            helper.make_tensor_value_info("top_log_probs", TensorProto.FLOAT, ["rows", "k"]),
            helper.make_tensor_value_info("top_ids", TensorProto.INT64, ["rows", "k"]),
        ]
    )
