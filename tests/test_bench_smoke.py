"""Each benchmark starts and prints its table on a tiny model (no timing is judged here)."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args, tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    out = str(tmp_path / "result.json")
    result = subprocess.run(
        [sys.executable, *args, "--out", out], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-4000:]
    with open(out, encoding="utf-8") as handle:
        return result.stdout, json.load(handle)


def test_decode_benchmark_prints_its_tables(tiny_bundle, tmp_path):
    run_dir, bundle_dir, _, _ = tiny_bundle
    stdout, payload = _run(
        [
            "bench/decode.py",
            "--bundle",
            bundle_dir,
            "--run-dir",
            run_dir,
            "--threads",
            "2",
            "--paper",
            "--quick",
            "--compare-traced",
            "--sentences",
            "4",
            "--latency-sentences",
            "2",
            "--repeats",
            "1",
            "--paper-sentences",
            "4",
            "--paper-latency-sentences",
            "2",
        ],
        tmp_path,
    )
    assert "| model | threads | engine | search | sent/s @32 |" in stdout
    engines = {row["engine"] for row in payload["rows"] if "engine" in row}
    assert {"onnxruntime float32", "onnxruntime INT8", "Keras on TensorFlow"} <= engines
    assert all(row["sent/s @32"] > 0 for row in payload["rows"] if "sent/s @32" in row)
    assert payload["ratios"] and "GFLOP/s @160" in stdout
    assert all(
        row["ms/step @1"] > 0
        for row in payload["rows"]
        if "sent/s @32" in row and row["engine"].startswith("onnxruntime ")
    )
    assert {row["model"] for row in payload["rows"]} == {"tiny", "paper shape", "tiny (traced step)"}
    # Two threads: the one-thread small steps against all threads, and the row sweep.
    latency = [row for row in payload["rows"] if "speed-up p50" in row]
    assert {row["engine"] for row in latency} == {"onnxruntime float32", "onnxruntime INT8"}
    assert all(row["p50 ms, all threads"] > 0 and row["one-thread below rows"] > 0 for row in latency)
    sweep = [row for row in payload["rows"] if "1 thread speed-up" in row]
    assert {(row["model"], row["variant"]) for row in sweep} == {
        (model, variant) for model in ("tiny", "paper shape") for variant in ("float32", "INT8")
    }
    assert "| model | threads | variant | rows | MFLOP/call |" in stdout
    assert all(row["f32 / INT8 @5"] > 0 for row in payload["rows"] if "f32 / INT8 @5" in row)


def test_footprint_benchmark_prints_its_tables(tiny_bundle, tmp_path):
    run_dir, bundle_dir, _, _ = tiny_bundle
    # The serving-only environment is the test's own python here (the smoke test
    # checks the benchmark runs; bench/.serving-venv is used for real numbers).
    stdout, payload = _run(
        [
            "bench/footprint.py",
            "--bundle",
            bundle_dir,
            "--run-dir",
            run_dir,
            "--repeats",
            "1",
            "--serving-python",
            sys.executable,
        ],
        tmp_path,
    )
    assert "| translator | cold start s (median) |" in stdout
    assert len(payload["translators"]) == 5  # graph and steps engines, float32 and INT8; Keras
    assert all(row["peak RSS MiB (median)"] > 10 for row in payload["translators"])
    assert payload["install"][0]["bytes"] < payload["install"][1]["bytes"]


def test_training_benchmark_prints_its_tables(tmp_path):
    stdout, payload = _run(
        [
            "bench/train.py",
            "--presets",
            "g2p_small,paper",
            "--quick",
            "--warmup",
            "1",
            "--steps",
            "2",
            "--paper-steps",
            "1",
        ],
        tmp_path,
    )
    assert "| preset | batching | tokens/s |" in stdout
    assert len(payload["rows"]) == 4 and all(row["tokens/s"] > 0 for row in payload["rows"])
    assert {r["preset"] for r in payload["ratios"]} == {"g2p_small", "paper"}
    assert "| preset | precision | LSTM step |" in stdout
    assert [row["LSTM step"] for row in payload["gates"]] == ["float32 gates and cell", "Keras (all bfloat16)"]
    assert all(row["step ms (median)"] > 0 for row in payload["gates"])
    assert [row["precision"][:4] for row in payload["precisions"]] == ["floa", "bflo", "auto"]
    assert all(row["step ms (median)"] > 0 for row in payload["precisions"])
    assert "auto: " in stdout


def test_gpu_training_step_script_runs_under_torch_on_the_cpu(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT, KERAS_BACKEND="torch")
    out = tmp_path / "gpu.json"
    result = subprocess.run(
        [
            sys.executable,
            "bench/gpu_train_step.py",
            "--quick",
            "--warmup",
            "1",
            "--steps",
            "2",
            "--batch",
            "8",
            "--length",
            "6",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    payload = json.loads(out.read_text())
    assert payload["backend"] == "torch" and payload["words/s"] > 0
    assert "keras_s2s, wait-free step, lean forward" in {row["variant"] for row in payload["rows"]}
    result = subprocess.run(
        [
            sys.executable,
            "bench/gpu_train_step.py",
            "--host-proxy",
            "--warmup",
            "1",
            "--steps",
            "2",
            "--batch",
            "8",
            "--length",
            "6",
            "--interleave",
            "--variants",
            "keras_s2s,wait_free_step,lean_forward",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "| variant | step ms (median) | words/s | vs keras_s2s |" in result.stdout
    payload = json.loads(out.read_text())
    rows = payload["rows"]
    assert payload["host_proxy"] and payload["shape"]["num_layers"] == 4 and payload["shape"]["hidden_dim"] == 16
    assert [len(row["step ms (all)"]) for row in rows] == [2, 2, 2] and all(row["interleaved"] for row in rows)


def test_engines_benchmark_prints_its_tables(tiny_bundle, tmp_path):
    bundle_dir = tiny_bundle[1]
    stdout, payload = _run(
        [
            "bench/engines.py",
            "--bundles",
            bundle_dir,
            "--threads",
            "1",
            "--sentences",
            "4",
            "--latency-sentences",
            "2",
            "--repeats",
            "1",
        ],
        tmp_path,
    )
    assert "| bundle | precision | threads | engine | batch1_p50_ms |" in stdout
    assert {(row["engine"], row["precision"]) for row in payload["python"]} == {
        (engine, precision) for engine in ("graph", "steps") for precision in ("float32", "int8")
    }
    assert all(row["batch1_p50_ms"] > 0 and row["batch32_sentences_per_s"] > 0 for row in payload["python"])
    assert payload["done_sentences"][0]["rows_keeping"] >= payload["done_sentences"][0]["rows_dropping"] > 0
    runtimes = {row["runtime"]: row for row in payload["javascript"]}
    assert len(runtimes) == 3 and all(row["p50_ms"] > 0 for row in runtimes.values())


def test_g2p_benchmark_scores_phonetisaurus_and_the_bundle_on_the_same_words(tiny_bundle, tmp_path):
    import shutil

    run_dir, bundle_dir, _, _ = tiny_bundle
    shutil.copytree(run_dir, tmp_path / "tiny")
    shutil.copytree(bundle_dir, tmp_path / "tiny.bundle")
    png = tmp_path / "g2p.png"
    stdout, payload = _run(
        [
            "bench/g2p.py",
            "--runs",
            str(tmp_path / "tiny"),
            "--limit",
            "30",
            "--beams",
            "1,2",
            "--threads",
            "1",
            "--repeats",
            "2",
            "--engines",
            "graph,steps",
            "--phonetisaurus-venv",
            str(tmp_path / "phonetisaurus-venv"),
            "--png",
            str(png),
        ],
        tmp_path,
    )
    assert "| system | checkpoint | engine | precision | beam |" in stdout
    systems = [row["system"] for row in payload["rows"]]
    assert systems == ["Phonetisaurus"] + ["tiny"] * 8  # 2 engines x 2 precisions x 2 beams
    # Each row names the weights its bundle was exported from, as the manifest says.
    assert {row["checkpoint"] for row in payload["rows"][1:]} == {tiny_bundle[3]["checkpoint"]}
    assert payload["words"] == 30 and payload["repeats"] == 2
    assert all(row["words/s"] > 0 for row in payload["rows"])
    # Trained on 500 words, Phonetisaurus gets some right; its PER is a real score.
    assert 0 <= payload["rows"][0]["per"] < 100
    # Both engines give the same outputs, so the same scores.
    by_engine = {(r["engine"], r["precision"], r["beam"]): r["wer"] for r in payload["rows"][1:]}
    assert all(by_engine[("graph", p, b)] == by_engine[("steps", p, b)] for _, p, b in by_engine)
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_loop_floor_benchmark_splits_both_engines_time(tiny_bundle, tmp_path):
    bundle_dir = tiny_bundle[1]
    stdout, payload = _run(
        ["bench/loop_floor.py", "--bundles", bundle_dir, "--sentences", "3", "--repeats", "1", "--calls", "20"],
        tmp_path,
    )
    assert "| bundle | precision | steps_ms | graph_ms | step_only_ms |" in stdout
    assert [row["precision"] for row in payload["rows"]] == ["float32", "int8"]
    assert set(payload["costs"]) == {"session_call_us", "loop_iteration_us", "body_node_us"}
    for row in payload["rows"]:
        # The step's nodes are part of the loop body, and the bookkeeping is the rest of it.
        assert row["body_nodes"] > row["step_nodes"] > 0 and row["bookkeeping_nodes"] > 0
        # The sessions' compute is timed inside the steps engine's own runs.
        assert row["steps_per_sentence"] >= 1 and row["steps_engine_sessions_ms"] < row["steps_ms"]
        assert row["measured_speedup"] == row["steps_ms"] / row["graph_ms"]
        # The step-only graph is timed beside the engines and is the no-bookkeeping bound.
        assert row["step_only_ms"] > 0
        assert row["speedup_with_no_bookkeeping"] == row["steps_ms"] / row["step_only_ms"]
        budget_ms = row["budget_us_per_step"] * row["steps_per_sentence"] / 1e3
        assert abs(row["steps_ms"] / (row["step_only_ms"] + budget_ms) - 1.5) < 1e-9


def test_step_only_graph_is_the_encoder_and_the_step_with_nothing_else(tiny_bundle):
    import numpy as np
    import onnx
    import onnxruntime as ort

    from bench.loop_floor import step_only_model

    bundle_dir = tiny_bundle[1]
    for suffix, int8 in ((".onnx", False), (".int8.onnx", True)):
        model = step_only_model(bundle_dir, int8, beam=3)
        onnx.checker.check_model(model, full_check=True)
        step = onnx.load(f"{bundle_dir}/decoder_step{suffix}")
        encoder = onnx.load(f"{bundle_dir}/encoder{suffix}")
        loop = next(node for node in model.graph.node if node.op_type == "Loop")
        body = next(a.g for a in loop.attribute if a.name == "body")
        # The body is the step's nodes and the feedback of each row's best token, no more.
        assert sorted(n.op_type for n in body.node) == sorted(
            [n.op_type for n in step.graph.node] + ["Gather", "Cast", "Identity"]
        )
        assert [n.op_type for n in model.graph.node[: len(encoder.graph.node)]] == [
            n.op_type for n in encoder.graph.node
        ]
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        feeds = {
            "source_ids": np.array([[4, 5, 6, 7]], np.int32),
            "source_lengths": np.array([4], np.int32),
            "steps": np.array(6, np.int64),
        }
        (tokens,) = session.run(None, feeds)
        assert tokens.shape == (3,) and tokens.dtype == np.int32


def test_hostile_input_benchmark_runs_every_front_end(tiny_bundle, tmp_path):
    stdout, payload = _run(
        ["bench/hostile.py", "--bundle", tiny_bundle[1], "--long", "5000", "--repeats", "1", "--no-page"], tmp_path
    )
    assert "x its time on ordinary lines" in stdout
    rows = {row["front end"]: row for row in payload["rows"]}
    assert len(rows) == 4 and all(row["same bytes as s2s-translate"] for row in rows.values())
    assert {row["lines out"] for row in rows.values()} == {payload["lines"]}


def test_int8_families_benchmark_scores_each_setting(tiny_run, tiny_bundle, tmp_path):
    run_dir, bundle_dir = tiny_run[0], tiny_bundle[1]
    stdout, payload = _run(
        ["bench/int8_families.py", "--bundle", bundle_dir, "--run-dir", run_dir, "--sentences", "20"]
        + ["--families", "native"],
        tmp_path,
    )
    from bench.int8_families import SETTINGS

    assert [row["setting"] for row in payload["rows"]] == list(SETTINGS)
    assert all(row["same as native INT8 %"] == 100 for row in payload["rows"])  # the same CPU
    assert "words/s vs float32 (native)" in stdout
