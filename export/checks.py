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
        raise ExportError(
            f"{name}: the graph contains {', '.join(forbidden)}; every LSTM must be one fused LSTM node"
        )
    custom = sorted({node.op_type for node in model_proto.graph.node if node.domain not in ("", "ai.onnx")})
    if custom:
        raise ExportError(f"{name}: unconverted or non-standard ops: {', '.join(custom)}")
    if counts.get("LSTM", 0) != expected:
        raise ExportError(
            f"{name}: expected {expected} fused LSTM node(s), found {counts.get('LSTM', 0)}"
        )
    onnx.checker.check_model(model_proto)
    return dict(counts)


def check_translator(model: onnx.ModelProto, encoder_lstms: int, decoder_lstms: int, name: str) -> dict:
    """Fails unless the graph is one `Loop` over a body in which every decoder LSTM is one
    fused node and nothing else loops, with the encoder's fused LSTMs outside it.

    Returns:
        `{"graph": op counts, "loop_body": op counts}`.
    """
    counts = collections.Counter(node.op_type for node in model.graph.node)
    loops = [node for node in model.graph.node if node.op_type == "Loop"]
    if len(loops) != 1 or counts.get("Scan") or counts.get("If"):
        raise ExportError(f"{name}: expected exactly one Loop (the search) and no Scan or If, found {dict(counts)}")
    body = helper.get_attribute_value(next(a for a in loops[0].attribute if a.name == "body"))
    body_counts = collections.Counter(node.op_type for node in body.node)
    forbidden = sorted(set(body_counts) & FORBIDDEN_OPS)
    if forbidden:
        raise ExportError(f"{name}: the search's loop body contains {', '.join(forbidden)}")
    found = {"encoder": sum(counts[op] for op in LSTM_OPS), "decoder": sum(body_counts[op] for op in LSTM_OPS)}
    if found != {"encoder": encoder_lstms, "decoder": decoder_lstms}:
        raise ExportError(f"{name}: expected {encoder_lstms} fused encoder and {decoder_lstms} fused decoder LSTM "
                          f"node(s), found {found['encoder']} and {found['decoder']}")
    domains = {node.domain for node in list(model.graph.node) + list(body.node)} - {"", "ai.onnx", "com.microsoft"}
    if domains:
        raise ExportError(f"{name}: operators from unexpected domains: {', '.join(sorted(domains))}")
    onnx.checker.check_model(model)
    return {"graph": dict(counts), "loop_body": dict(body_counts)}
