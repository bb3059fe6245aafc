"""How fast `translator.onnx` could be at batch 1: onnxruntime's fixed costs, and the floor
they put under a beam search written as an ONNX `Loop`.

    python bench/loop_floor.py --bundles runs/g2p_small.bundle,runs/bible_small.bundle

At batch 1 the graph engine saves the steps engine's per-token Python (one session call and
the numpy search) but pays for the search's bookkeeping nodes in its loop body instead.
This measures both sides on one thread, in one process:

- onnxruntime's fixed costs, on synthetic graphs over a [5, 8] float tensor (the size of the
  search's per-beam values at beam 5): one `session.run` from Python, one `Loop` iteration,
  and each further small node in a loop body (the slope from 1 to 64 `Add` nodes);
- on the bundle, its sentences at batch 1, three graphs interleaved: the steps engine, the
  graph engine, and a step-only graph: the bundle's encoder, then a `Loop` of its decoder
  step on `beam` rows that only feeds each row's best token back, run for as many steps as
  the search took on that sentence. The step-only graph computes what the search computes,
  in one call, with no search: no one-graph search can be faster, and what each engine
  takes beyond it is its search's cost;
- the floor: the loop body's bookkeeping nodes (counted in `translator.onnx`, the step's own
  nodes excluded) at the measured cost per node and per iteration, and the batch-1 speedup
  over the steps engine that a graph at that floor would give;
- the budget: the most the search may cost per step, beyond the step-only graph, for the
  graph engine to be 1.5x faster than the steps engine at batch 1.

The steps engine's own session time is shown too: its `session.run` calls take longer than
the whole step-only graph, since each call converts and checks its inputs and outputs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import Timed, git_commit, machine, median, table, write_result  # noqa: E402
from bench.engines import _sources  # noqa: E402

SHAPE = [5, 8]
TARGET_SPEEDUP = 1.5  # BENCHMARKS.md's batch-1 target for the graph engine over the steps engine


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


def step_only_model(bundle: str, int8: bool, beam: int):
    """The bundle's encoder and `steps` decoder steps on `beam` rows in one graph, with no
    search: each row's best token is its next input, its states are not reordered.

    Inputs `source_ids`, `source_lengths` (as the encoder takes them) and the int64 scalar
    `steps`; output `tokens`. Every step sees the rows and shapes a beam search at batch 1
    gives it (`translator.onnx` also runs `beam` rows from the first step), so the graph's
    time is the search's compute and nothing else.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    from export.onnx_graph import Graph, opsets, renamed, tensor, vocabulary

    suffix = ".int8.onnx" if int8 else ".onnx"
    encoder = onnx.load(os.path.join(bundle, f"encoder{suffix}"))
    step = onnx.load(os.path.join(bundle, f"decoder_step{suffix}"))
    attention = "encoder_outputs" in {i.name for i in step.graph.input}
    main = Graph("")
    outputs = {"states": "encoder_states", "encoder_outputs": "encoder_outputs"}
    nodes, initializers = renamed(
        encoder.graph, "encoder/", {"source_ids": "source_ids", "source_lengths": "source_lengths", **outputs}
    )
    main.nodes += nodes
    main.initializers += initializers
    first = main.const(np.zeros(beam, np.int64), np.int64, "first_sentence")  # every row reads sentence 0
    states = main.op("Gather", ["encoder_states", first], "states_0", axis=1)
    if attention:
        main.op("Gather", ["encoder_outputs", first], "rows_encoder_outputs", axis=0)
        main.op("Gather", ["source_lengths", first], "rows_source_lengths", axis=0)
    main.const([min(2 * beam, vocabulary(step))], np.int64, "top_k")  # k as the search asks for it

    body = Graph("body/")
    interface = {
        "token_ids": "tokens_in",
        "states": "states_in",
        "top_k": "top_k",
        "top_ids": "body/ids",
        "next_states": "states_out",
    }
    if attention:
        interface.update(encoder_outputs="rows_encoder_outputs", source_lengths="rows_source_lengths")
    body.nodes, body.initializers = renamed(step.graph, "body/step/", interface)
    best = body.op("Gather", ["body/ids", body.const(0, np.int64)], axis=1)
    body.named("Cast", [best], "tokens_out", to=TensorProto.INT32)
    body.named("Identity", ["cond_in"], "cond_out")
    state_shape = ["layers2", "rows", "hidden"]
    body_graph = helper.make_graph(
        body.nodes,
        "steps",
        [
            tensor("iteration", TensorProto.INT64, []),
            tensor("cond_in", TensorProto.BOOL, []),
            tensor("tokens_in", TensorProto.INT32, ["rows"]),
            tensor("states_in", TensorProto.FLOAT, state_shape),
        ],
        [
            tensor("cond_out", TensorProto.BOOL, []),
            tensor("tokens_out", TensorProto.INT32, ["rows"]),
            tensor("states_out", TensorProto.FLOAT, state_shape),
        ],
        body.initializers,
    )
    tokens = main.const(np.zeros(beam, np.int32), np.int32, "tokens_0")
    always = main.const(True, bool, "always")
    main.nodes.append(
        helper.make_node("Loop", ["steps", always, tokens, states], ["tokens", "final_states"], body=body_graph)
    )
    graph = helper.make_graph(
        main.nodes,
        "step_only",
        [
            tensor("source_ids", TensorProto.INT32, ["batch", "time"]),
            tensor("source_lengths", TensorProto.INT32, ["batch"]),
            tensor("steps", TensorProto.INT64, []),
        ],
        [tensor("tokens", TensorProto.INT32, ["rows"])],
        main.initializers,
    )
    model = helper.make_model(graph, opset_imports=opsets(encoder, step))
    model.ir_version = max(encoder.ir_version, step.ir_version)
    return model


def batch1_split(bundle: str, int8: bool, sentences: int, repeats: int, beam: int) -> dict:
    """Per sentence at batch 1 (means, ms): both engines' latency, the steps engine's time in
    its encoder and decoder-step `session.run` calls, and the step-only graph's time for the
    same sentence and number of steps."""
    import numpy as np

    from serving.translator import Translator

    sources = _sources(bundle, sentences)
    graph = Translator.from_bundle(bundle, num_threads=1, int8=int8, engine="graph")
    steps = Translator.from_bundle(bundle, num_threads=1, int8=int8, engine="steps")
    # The sessions' own `run`, timed: the compute both engines share, and one call each.
    encode = steps.encoder.session.run = Timed(steps.encoder.session.run)
    step = steps.decoder_step.session.run = Timed(steps.decoder_step.session.run)
    step_only_feeds = []
    for source in sources:  # warm-up: every shape seen once; each sentence's encoder input and steps
        graph.translate_ids([source], beam_size=beam, batch_size=1)
        calls = step.calls
        steps.translate_ids([source], beam_size=beam, batch_size=1)
        step_only_feeds.append({**encode.last[1], "steps": np.array(step.calls - calls, np.int64)})
    with tempfile.TemporaryDirectory() as directory:
        step_only = _session(step_only_model(bundle, int8, beam), directory, "step_only")
    for feeds in step_only_feeds:
        step_only.run(None, feeds)
    encode.seconds = step.seconds = encode.calls = step.calls = 0
    times = {"graph": [], "steps": [], "step_only": []}
    runs = {
        "graph": lambda index: graph.translate_ids([sources[index]], beam_size=beam, batch_size=1),
        "steps": lambda index: steps.translate_ids([sources[index]], beam_size=beam, batch_size=1),
        "step_only": lambda index: step_only.run(None, step_only_feeds[index]),
    }
    for index in range(len(sources)):
        for _ in range(repeats):
            for name, run in runs.items():
                started = time.perf_counter()
                run(index)
                times[name].append(time.perf_counter() - started)
    count = len(times["steps"])
    result = {f"{name}_ms": 1e3 * sum(values) / count for name, values in times.items()}
    return {
        **result,
        "encoder_run_ms": 1e3 * encode.seconds / count,
        "step_runs_ms": 1e3 * step.seconds / count,
        "steps_per_sentence": step.calls / count,
    }


def floor(costs: dict, nodes: dict, split: dict, target: float = TARGET_SPEEDUP) -> dict:
    """Per step (µs): what each engine spends beyond the step-only graph (the compute both
    share), the graph's floor by its node count, the most its search may cost for the
    batch-1 target (negative: out of reach even at no cost), and the batch-1 speedups over
    the steps engine: as measured, with the bookkeeping at its floor, and with none at all
    (the step-only graph)."""
    n = split["steps_per_sentence"]
    compute_ms = split["step_only_ms"]
    floor_us = costs["loop_iteration_us"] + nodes["bookkeeping_nodes"] * costs["body_node_us"]
    return {
        "steps_engine_sessions_ms": split["encoder_run_ms"] + split["step_runs_ms"],
        "steps_engine_extra_us_per_step": (split["steps_ms"] - compute_ms) * 1e3 / n,
        "graph_engine_extra_us_per_step": (split["graph_ms"] - compute_ms) * 1e3 / n,
        "graph_floor_us_per_step": floor_us,
        "budget_us_per_step": (split["steps_ms"] / target - compute_ms) * 1e3 / n,
        "measured_speedup": split["steps_ms"] / split["graph_ms"],
        "speedup_at_floor": split["steps_ms"] / (compute_ms + n * floor_us / 1e3),
        "speedup_with_no_bookkeeping": split["steps_ms"] / compute_ms,
    }


COLUMNS = [
    "bundle",
    "precision",
    "steps_ms",
    "graph_ms",
    "step_only_ms",
    "steps_engine_sessions_ms",
    "steps_per_sentence",
    "steps_engine_extra_us_per_step",
    "graph_engine_extra_us_per_step",
    "graph_floor_us_per_step",
    "budget_us_per_step",
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
                "with_no_bookkeeping": float32_row["step_only_ms"] / int8_row["step_only_ms"],
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
