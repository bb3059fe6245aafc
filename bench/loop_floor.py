"""How fast `translator.onnx` could be at batch 1: onnxruntime's fixed costs, and the floor
they put under a beam search written as an ONNX `Loop`.

    python bench/loop_floor.py --bundles runs/g2p_small.bundle,runs/bible_small.bundle

At batch 1 the graph engine saves the steps engine's per-token Python (one session call and
the numpy search) but pays for the search's bookkeeping nodes in its loop body instead.
This measures both sides on one thread, in one process:

- onnxruntime's fixed costs, on synthetic graphs over a [5, 8] float tensor (the size of the
  search's per-beam values at beam 5): one `session.run` from Python, one `Loop` iteration,
  and each further small node in a loop body (the slope from 1 to 64 `Add` nodes);
- on the bundle, its sentences at batch 1, the two engines interleaved: the steps engine's
  time split into the encoder, the decoder-step calls and the rest (the numpy search); the
  graph engine's time less the same encoder and step compute (its loop's bookkeeping);
- the floor: the loop body's bookkeeping nodes (counted in `translator.onnx`, the step's own
  nodes excluded) at the measured cost per node and per iteration, and the batch-1 speedup
  over the steps engine that a graph at that floor would give.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import git_commit, machine, median, table, write_result  # noqa: E402
from bench.engines import _sources  # noqa: E402

SHAPE = [5, 8]


def _call_model():
    """One `Identity`: what a bare `session.run` from Python costs."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, SHAPE)
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "call", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _loop_model(body_nodes: int):
    """A `Loop` whose body is a chain of `body_nodes` `Add` nodes on one carried value."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    nodes, value = [helper.make_node("Identity", ["cond_in"], ["cond_out"])], "x_in"
    for index in range(body_nodes):
        nodes.append(helper.make_node("Add", [value, "one"], [f"add_{index}"]))
        value = f"add_{index}"
    nodes.append(helper.make_node("Identity", [value], ["x_out"]))
    body = helper.make_graph(
        nodes,
        "body",
        [
            helper.make_tensor_value_info("iteration", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x_in", TensorProto.FLOAT, SHAPE),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x_out", TensorProto.FLOAT, SHAPE),
        ],
        initializer=[numpy_helper.from_array(np.ones(SHAPE, np.float32), "one")],
    )
    loop = helper.make_graph(
        [helper.make_node("Loop", ["trips", "cond", "x"], ["y"], body=body)],
        "loop",
        [
            helper.make_tensor_value_info("trips", TensorProto.INT64, []),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, SHAPE)],
        initializer=[numpy_helper.from_array(np.array(True), "cond")],
    )
    return helper.make_model(loop, opset_imports=[helper.make_opsetid("", 17)])


def _session(model, directory: str, name: str):
    import onnx

    from serving.sessions import open_session

    path = os.path.join(directory, f"{name}.onnx")
    onnx.save(model, path)
    return open_session(path, ["CPUExecutionProvider"], 1)


def _timed(session, feeds: dict, calls: int) -> float:
    """Median seconds of one `session.run`, after a warm-up."""
    times = []
    for index in range(calls + 20):
        started = time.perf_counter()
        session.run(None, feeds)
        if index >= 20:
            times.append(time.perf_counter() - started)
    return median(times)


def fixed_costs(calls: int, trips: int = 65) -> dict:
    """onnxruntime's cost of a session call from Python, a loop iteration and a body node (µs)."""
    import numpy as np

    x = np.zeros(SHAPE, np.float32)
    per_iteration = {}
    with tempfile.TemporaryDirectory() as directory:
        for body_nodes in (1, 64):
            session = _session(_loop_model(body_nodes), directory, f"loop_{body_nodes}")
            many = _timed(session, {"trips": np.array(trips, np.int64), "x": x}, calls)
            once = _timed(session, {"trips": np.array(1, np.int64), "x": x}, calls)
            per_iteration[body_nodes] = (many - once) / (trips - 1)
        call_s = _timed(_session(_call_model(), directory, "call"), {"x": x}, calls)
    per_node = (per_iteration[64] - per_iteration[1]) / 63
    return {
        "session_call_us": call_s * 1e6,
        "loop_iteration_us": (per_iteration[1] - per_node) * 1e6,
        "body_node_us": per_node * 1e6,
    }


def body_nodes(bundle: str, int8: bool) -> dict:
    """Nodes of `translator.onnx`'s innermost loop body: all, the step's own, and the
    bookkeeping (the rest, with the `If` branch taken on steps that finish no hypothesis)."""
    import onnx

    suffix = ".int8.onnx" if int8 else ".onnx"
    step = len(onnx.load(os.path.join(bundle, f"decoder_step{suffix}")).graph.node)
    graph = onnx.load(os.path.join(bundle, f"translator{suffix}")).graph

    def loop_bodies(g):
        for node in g.node:
            if node.op_type == "Loop":
                body = next(a.g for a in node.attribute if a.name == "body")
                yield body
                yield from loop_bodies(body)

    inner = list(loop_bodies(graph))[-1]
    branches = [len(a.g.node) for node in inner.node if node.op_type == "If" for a in node.attribute]
    return {
        "body_nodes": len(inner.node),
        "step_nodes": step,
        "bookkeeping_nodes": len(inner.node) - step + min(branches, default=0),
        "finish_branch_nodes": max(branches, default=0),
    }


class _Timing:
    """Wraps a callable; adds up its seconds and calls."""

    def __init__(self, function):
        self.function, self.seconds, self.calls = function, 0.0, 0

    def __call__(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return self.function(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - started
            self.calls += 1


def batch1_split(bundle: str, int8: bool, sentences: int, repeats: int, beam: int) -> dict:
    """Per sentence at batch 1 (means, ms): both engines' latency, and the steps engine's
    time in its encoder and decoder-step `session.run` calls."""
    from serving.translator import Translator

    sources = _sources(bundle, sentences)
    graph = Translator.from_bundle(bundle, num_threads=1, int8=int8, engine="graph")
    steps = Translator.from_bundle(bundle, num_threads=1, int8=int8, engine="steps")
    for source in sources:  # warm-up: every shape seen once
        for translator in (graph, steps):
            translator.translate_ids([source], beam_size=beam, batch_size=1)
    # The sessions' own `run`, timed: the compute both engines share, and one call each.
    encode = steps.encoder.session.run = _Timing(steps.encoder.session.run)
    step = steps.decoder_step.session.run = _Timing(steps.decoder_step.session.run)
    graph_times, steps_times = [], []
    for source in sources:
        for _ in range(repeats):
            started = time.perf_counter()
            graph.translate_ids([source], beam_size=beam, batch_size=1)
            graph_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            steps.translate_ids([source], beam_size=beam, batch_size=1)
            steps_times.append(time.perf_counter() - started)
    runs = len(steps_times)
    return {
        "graph_ms": 1e3 * sum(graph_times) / runs,
        "steps_ms": 1e3 * sum(steps_times) / runs,
        "encoder_run_ms": 1e3 * encode.seconds / runs,
        "step_runs_ms": 1e3 * step.seconds / runs,
        "steps_per_sentence": step.calls / runs,
    }


def floor(costs: dict, nodes: dict, split: dict) -> dict:
    """Per step (µs): what each engine spends besides the encoder's and the steps' compute
    (their `session.run` time less one call's cost each), the graph's floor by its node
    count, and the batch-1 speedups over the steps engine: as measured, with the graph at
    its floor, and with no bookkeeping at all (one call: the encoder and the steps only)."""
    n = split["steps_per_sentence"]
    call_ms = costs["session_call_us"] / 1e3
    compute_ms = split["encoder_run_ms"] + split["step_runs_ms"] - (n + 1) * call_ms
    floor_us = costs["loop_iteration_us"] + nodes["bookkeeping_nodes"] * costs["body_node_us"]
    return {
        "compute_ms": compute_ms,
        "steps_engine_extra_us_per_step": (split["steps_ms"] - compute_ms) * 1e3 / n,
        "graph_engine_extra_us_per_step": (split["graph_ms"] - compute_ms) * 1e3 / n,
        "graph_floor_us_per_step": floor_us,
        "measured_speedup": split["steps_ms"] / split["graph_ms"],
        "speedup_at_floor": split["steps_ms"] / (compute_ms + call_ms + n * floor_us / 1e3),
        "speedup_with_no_bookkeeping": split["steps_ms"] / (compute_ms + call_ms),
    }


COLUMNS = [
    "bundle",
    "precision",
    "steps_ms",
    "graph_ms",
    "compute_ms",
    "steps_per_sentence",
    "steps_engine_extra_us_per_step",
    "graph_engine_extra_us_per_step",
    "graph_floor_us_per_step",
    "measured_speedup",
    "speedup_at_floor",
    "speedup_with_no_bookkeeping",
]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundles", default="runs/g2p_small.bundle,runs/bible_small.bundle")
    parser.add_argument("--sentences", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--calls", type=int, default=300, help="session calls per synthetic timing")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    print("[loop_floor] onnxruntime's fixed costs", file=sys.stderr)
    costs = fixed_costs(args.calls)
    rows, int8_ratios = [], []
    for bundle in args.bundles.split(","):
        name = os.path.basename(bundle.rstrip("/")).removesuffix(".bundle")
        for int8 in (False, True):
            nodes = body_nodes(bundle, int8)
            print(f"[loop_floor] {name} {'int8' if int8 else 'float32'}: batch 1, beam {args.beam}", file=sys.stderr)
            split = batch1_split(bundle, int8, args.sentences, args.repeats, args.beam)
            rows.append({"bundle": name, "precision": "int8" if int8 else "float32", **nodes, **split})
            rows[-1].update(floor(costs, nodes, split))
        float32_row, int8_row = rows[-2:]
        # INT8 against float32 through the graph, as measured and with no bookkeeping.
        int8_ratios.append(
            {
                "bundle": name,
                "measured": float32_row["graph_ms"] / int8_row["graph_ms"],
                "with_no_bookkeeping": float32_row["compute_ms"] / int8_row["compute_ms"],
            }
        )
    print(table([{"cost": key, "us": value} for key, value in costs.items()], ["cost", "us"]))
    print()
    print(table(rows, ["bundle", "precision", "body_nodes", "step_nodes", "bookkeeping_nodes", "finish_branch_nodes"]))
    print()
    print(table(rows, COLUMNS))
    print()
    print(table(int8_ratios, ["bundle", "measured", "with_no_bookkeeping"]))
    payload = {"machine": machine(), "commit": git_commit(), "beam": args.beam, "costs": costs, "rows": rows}
    path = write_result("loop_floor", {**payload, "int8_vs_float32": int8_ratios}, args.out)
    print(f"\nwritten: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
