"""Building ONNX graphs node by node: unique value names, constants, subgraphs copied in
under a prefix, and the `If` of a value that only some iterations compute.

Only `onnx` and `numpy` are needed here.
"""

from __future__ import annotations

import collections

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class Graph:
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


def renamed(graph: onnx.GraphProto, prefix: str, keep: dict) -> tuple[list, list]:
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


def vocabulary(step: onnx.ModelProto) -> int:
    for output in step.graph.output:
        if output.name == "log_probs":
            return int(output.type.tensor_type.shape.dim[1].dim_value)
    raise ValueError("decoder step graph: no log_probs output")


def opsets(*models: onnx.ModelProto) -> list:
    versions: dict = {}
    for model in models:
        for opset in model.opset_import:
            versions[opset.domain] = max(versions.get(opset.domain, 0), opset.version)
    return [helper.make_opsetid(domain, version) for domain, version in sorted(versions.items())]


def tensor(name: str, elem_type: int, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, shape)


def any_true(g: Graph, mask: str, hint: str) -> str:
    """A scalar bool: whether any element of `mask` is true (false when it is empty)."""
    total = g.op("ReduceSum", [g.op("Cast", [mask], to=TensorProto.INT64)], keepdims=0)
    return g.op("Greater", [total, g.const(0, np.int64)], hint)


def if_then(g: Graph, condition: str, branch, passthrough: dict, outputs: dict, types: dict) -> None:
    """`If(condition)`: the values `branch(graph)` returns, else `passthrough`'s, under
    the names `outputs` (`{name: output name}`), of the element types `types` (`{name: type}`)."""
    names = list(outputs)
    then_graph = Graph(f"{g.prefix}then/")
    produced = branch(then_graph)
    then_names = [then_graph.named("Identity", [produced[name]], f"then/{name}") for name in names]
    else_graph = Graph(f"{g.prefix}else/")
    else_names = [else_graph.named("Identity", [passthrough[name]], f"else/{name}") for name in names]

    def subgraph(graph, values, label):
        return helper.make_graph(
            graph.nodes, label, [], [tensor(v, types[n], None) for v, n in zip(values, names)], graph.initializers
        )

    g.nodes.append(
        helper.make_node(
            "If",
            [condition],
            [outputs[name] for name in names],
            name=g.prefix + "finish",
            then_branch=subgraph(then_graph, then_names, "finish"),
            else_branch=subgraph(else_graph, else_names, "no_finish"),
        )
    )
