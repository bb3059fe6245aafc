"""What the export refuses to ship: checks on the ONNX graphs (only `onnx` needed)."""

from __future__ import annotations

import collections

import onnx
from onnx import helper

FORBIDDEN_OPS = {"Loop", "Scan", "If"}
LSTM_OPS = {"LSTM", "DynamicQuantizeLSTM"}


class ExportError(RuntimeError):
    """An export that produced a graph we refuse to ship."""


def check_fused_lstms(model_proto: onnx.ModelProto, expected: int, name: str) -> dict:
    """Fails unless the graph has exactly `expected` fused `LSTM` nodes and no
    `Loop`, `Scan` or `If`, and every op is a standard ONNX op.

    Returns:
        The op counts.
    """
    counts = collections.Counter(node.op_type for node in model_proto.graph.node)
    forbidden = sorted(set(counts) & FORBIDDEN_OPS)
    if forbidden:
        raise ExportError(f"{name}: the graph contains {', '.join(forbidden)}; every LSTM must be one fused LSTM node")
    custom = sorted({node.op_type for node in model_proto.graph.node if node.domain not in ("", "ai.onnx")})
    if custom:
        raise ExportError(f"{name}: unconverted or non-standard ops: {', '.join(custom)}")
    if counts.get("LSTM", 0) != expected:
        raise ExportError(f"{name}: expected {expected} fused LSTM node(s), found {counts.get('LSTM', 0)}")
    onnx.checker.check_model(model_proto)
    return dict(counts)


def _subgraphs(node: onnx.NodeProto) -> list:
    return [helper.get_attribute_value(a) for a in node.attribute if a.type == onnx.AttributeProto.GRAPH]


def check_translator(model: onnx.ModelProto, encoder_lstms: int, decoder_lstms: int, name: str) -> dict:
    """Fails unless the graph is one `Loop` (the search: an outer loop that drops done
    sentences around one loop of steps) whose step body runs every decoder LSTM as one
    fused node, and nothing else loops: the encoder's fused LSTMs are outside the loop, and
    the body's `If` branches (the rarely needed bookkeeping) hold no LSTM and no loop.

    Returns:
        `{"graph": op counts, "loop_body": op counts}`.
    """
    counts = collections.Counter(node.op_type for node in model.graph.node)
    loops = [node for node in model.graph.node if node.op_type == "Loop"]
    if len(loops) != 1 or counts.get("Scan") or counts.get("If"):
        raise ExportError(f"{name}: expected exactly one Loop (the search) and no Scan or If, found {dict(counts)}")
    # The search: an outer loop that drops done sentences, around the loop of steps.
    outer = _subgraphs(loops[0])[0]
    inner = [node for node in outer.node if node.op_type == "Loop"]
    outer_ops = {node.op_type for node in outer.node}
    if len(inner) != 1 or outer_ops & ({"Scan", "If"} | LSTM_OPS):
        raise ExportError(f"{name}: the search's outer loop must hold one Loop (the steps) and no LSTM, Scan or If")
    body = _subgraphs(inner[0])[0]
    body_counts = collections.Counter(node.op_type for node in body.node)
    forbidden = sorted(set(body_counts) & {"Loop", "Scan"})
    if forbidden:
        raise ExportError(f"{name}: the search's loop body contains {', '.join(forbidden)}")
    branch_nodes = [n for node in body.node if node.op_type == "If" for g in _subgraphs(node) for n in g.node]
    inside = sorted({n.op_type for n in branch_nodes} & (FORBIDDEN_OPS | LSTM_OPS))
    if inside:
        raise ExportError(f"{name}: the loop body's If branches contain {', '.join(inside)}")
    found = {"encoder": sum(counts[op] for op in LSTM_OPS), "decoder": sum(body_counts[op] for op in LSTM_OPS)}
    if found != {"encoder": encoder_lstms, "decoder": decoder_lstms}:
        raise ExportError(
            f"{name}: expected {encoder_lstms} fused encoder and {decoder_lstms} fused decoder LSTM "
            f"node(s), found {found['encoder']} and {found['decoder']}"
        )
    every = list(model.graph.node) + list(outer.node) + list(body.node) + branch_nodes
    domains = {node.domain for node in every} - {"", "ai.onnx", "com.microsoft"}
    if domains:
        raise ExportError(f"{name}: operators from unexpected domains: {', '.join(sorted(domains))}")
    onnx.checker.check_model(model)
    return {"graph": dict(counts), "loop_body": dict(body_counts)}


class GateError(RuntimeError):
    """The exported graphs do not decode like the trained model."""
