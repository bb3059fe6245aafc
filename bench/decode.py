"""Decoding speed: the onnxruntime translator against the Keras models on TensorFlow.

    python bench/decode.py --bundle runs/bible_small.bundle --run-dir runs/bible_small --paper

For each thread count (each in its own process, so TensorFlow's pools are set before it
starts; onnxruntime and TensorFlow get the same number of intra-op threads and one
inter-op thread), and for each model (the trained `bible_small` bundle; with `--paper`, a
4 x 1000 model with 1000-d embeddings and 32k vocabularies, random weights):

- beam 5 and greedy, sentences per second at batch 32 (median of `--repeats`),
- latency p50/p90 at batch 1,
for onnxruntime float32, onnxruntime INT8 and Keras on TensorFlow, all driven by the same
`serving.search` code. Also: the share of decode time spent inside onnxruntime (the rest
is the search and numpy), and the decoder step's GFLOP/s at 160 rows (32 x beam 5) against
onnxruntime's rate for one plain MatMul with the same weights, measured in the same process.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import ROOT, Timed, git_commit, machine, median, percentile, table, write_result  # noqa: E402

CACHE = os.path.join(ROOT, "bench", ".cache")
PAPER = dict(
    num_layers=4,
    hidden_dim=1000,
    embedding_dim=1000,
    attention="none",
    reverse_source=True,
    source_vocabulary_size=32000,
    target_vocabulary_size=32000,
    dropout=0.0,
)


# --- Worker side: one thread count ----------------------------------------------------


def traced_decoder_step(model, config):
    """The decoder step as tf2onnx traces it from the Keras step model, with the same
    selection nodes. Not what the export writes; `--compare-traced` times it against
    `decoder_step_graph`."""
    from export.onnx_export import convert
    from export.top_k import add_top_k
    from keras_s2s.decoder import decoder_step_function
    from keras_s2s.models import build_inference_models

    _, decoder_step = build_inference_models(model, config)
    proto = convert(decoder_step_function(decoder_step, config))
    add_top_k(proto)
    return proto


def _throughput(decode, sources, beam, batch, repeats):
    decode(sources[:batch], beam, batch)  # warm-up (and TensorFlow tracing)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        decode(sources, beam, batch)
        times.append(time.perf_counter() - start)
    return len(sources) / median(times)


def _latency(decode, sources, beam):
    decode(sources[:1], beam, 1)
    times = []
    for source in sources:
        start = time.perf_counter()
        decode([source], beam, 1)
        times.append(time.perf_counter() - start)
    return percentile(times, 50) * 1000, percentile(times, 90) * 1000


def weight_flops_per_row(path: str) -> tuple[float, list]:
    """2 x the weights that each row multiplies per step (LSTM W and R, MatMul/Gemm B), and
    the MatMul weight shapes."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(path)
    weights = {init.name: numpy_helper.to_array(init).shape for init in model.graph.initializer}
    flops, shapes = 0.0, []
    for node in model.graph.node:
        if node.op_type == "LSTM":
            for name in node.input[1:3]:
                if name in weights:
                    shape = weights[name]
                    flops += 2.0 * shape[-1] * shape[-2] * (shape[0] if len(shape) == 3 else 1)
        elif node.op_type in ("MatMul", "Gemm"):
            for name in node.input[:2]:
                if name in weights and len(weights[name]) == 2:
                    flops += 2.0 * weights[name][0] * weights[name][1]
                    shapes.append(weights[name])
    return flops, shapes


def _plain_matmul_rate(flops_per_row: float, rows: int, threads: int, hidden: int) -> float:
    """onnxruntime GFLOP/s of one MatMul [rows, K] x [K, N] with K x N = flops_per_row / 2."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    k = hidden
    n = max(1, int(flops_per_row / 2 / k))
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((k, n)).astype(np.float32), "B")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["A", "B"], ["C"])],
        "plain",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, [None, k])],
        [helper.make_tensor_value_info("C", TensorProto.FLOAT, [None, n])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    a = np.random.default_rng(1).standard_normal((rows, k)).astype(np.float32)
    for _ in range(3):
        session.run(None, {"A": a})
    times = []
    for _ in range(15):
        start = time.perf_counter()
        session.run(None, {"A": a})
        times.append(time.perf_counter() - start)
    return 2.0 * k * n * rows / median(times) / 1e9


def _step_rate(step, state_for_rows, rows: int, flops_per_row: float) -> tuple[float, float]:
    """(milliseconds, GFLOP/s) of one decoder step at `rows` rows."""
    import numpy as np

    tokens = np.full([rows], 5, np.int32)
    state = state_for_rows(rows)
    for _ in range(3):
        step(tokens, state)
    times = []
    for _ in range(15):
        start = time.perf_counter()
        step(tokens, state)
        times.append(time.perf_counter() - start)
    seconds = median(times)
    return seconds * 1000, flops_per_row * rows / seconds / 1e9


def _step_state(model_config, rows: int) -> dict:
    """A decoder step's state for `rows` rows (zero LSTM states, 30 source steps)."""
    import numpy as np

    layers, hidden = model_config.num_layers, model_config.hidden_dim
    state = {"states": np.zeros([2 * layers, rows, hidden], np.float32)}
    if model_config.attention == "luong":
        state["encoder_outputs"] = np.random.default_rng(0).standard_normal([rows, 30, hidden]).astype(np.float32)
        state["source_lengths"] = np.full([rows], 30, np.int32)
    return state


def _thread_rows(name, threads, directory, model_config, row_counts, rounds=9, calls=10) -> list[dict]:
    """The decoder step (beam 5's call) on every thread and on one, at a few row counts,
    the two timed in turns, `calls` calls per turn (as a decoder calls one session many
    times in a row: a turn per call would have each evict the other's weights from the
    caches): where one thread wins, the translator runs the step on one
    (`serving.sessions.ONE_THREAD_MFLOP`)."""
    import numpy as np

    from serving.sessions import DecoderStepSession

    flops_per_row, _ = weight_flops_per_row(os.path.join(directory, "decoder_step.onnx"))
    out = []
    for variant, suffix in (("float32", ""), ("INT8", ".int8")):
        path = os.path.join(directory, f"decoder_step{suffix}.onnx")
        every, one = (DecoderStepSession(path, ["CPUExecutionProvider"], count) for count in (threads, 1))
        for rows in row_counts:
            tokens, state = np.full([rows], 5, np.int32), _step_state(model_config, rows)
            times = {"every": [], "one": []}
            for session in (every, one):
                for _ in range(3):
                    session(tokens, state, top_k=10)
            for _ in range(rounds):
                for key, session in (("every", every), ("one", one)):
                    session(tokens, state, top_k=10)
                    start = time.perf_counter()
                    for _ in range(calls):
                        session(tokens, state, top_k=10)
                    times[key].append((time.perf_counter() - start) / calls)
            every_ms, one_ms = 1000 * median(times["every"]), 1000 * median(times["one"])
            out.append(
                {
                    "model": name,
                    "threads": threads,
                    "variant": variant,
                    "rows": rows,
                    "MFLOP/call": flops_per_row * rows / 1e6,
                    "ms, all threads": every_ms,
                    "ms on 1 thread": one_ms,
                    "1 thread speed-up": every_ms / one_ms,
                }
            )
    return out


def _one_thread_latency(name, threads, engine, translator, sources, beam=5) -> dict:
    """p50 / p90 ms per sentence at batch 1 with the translator's one-thread small steps
    and with every step on all threads, the two in turns sentence by sentence."""
    step = translator.engine.step
    threshold = step.one_thread_rows
    times = {threshold: [], 0: []}
    translator.translate_ids(sources[:1], beam_size=beam, batch_size=1)
    for source in sources:
        for rows in (threshold, 0):
            step.one_thread_rows = rows
            start = time.perf_counter()
            translator.translate_ids([source], beam_size=beam, batch_size=1)
            times[rows].append(time.perf_counter() - start)
    step.one_thread_rows = threshold
    on, off = (percentile(times[key], 50) * 1000 for key in (threshold, 0))
    return {
        "model": name,
        "threads": threads,
        "engine": engine,
        "search": f"beam {beam}",
        "one-thread below rows": threshold,
        "p50 ms, one-thread small steps": on,
        "p90 ms, one-thread small steps": percentile(times[threshold], 90) * 1000,
        "p50 ms, all threads": off,
        "p90 ms, all threads": percentile(times[0], 90) * 1000,
        "speed-up p50": off / on,
    }


def _step_row(name, threads, step32, step8, step_path, model_config) -> dict:
    """The decoder step alone: milliseconds at 160 rows (batch 32 x beam 5) and at 5 rows
    (batch 1 x beam 5), float32 and INT8, called as the translator calls it for beam 5
    (the 10 best tokens per row), and its GFLOP/s at 160 rows against a plain MatMul of
    the same weights."""
    flops_per_row, _ = weight_flops_per_row(step_path)
    hidden = model_config.hidden_dim
    state_for_rows = functools.partial(_step_state, model_config)

    def beam_step(session):
        return lambda tokens, state: session(tokens, state, top_k=10)

    step_ms, step_rate = _step_rate(beam_step(step32), state_for_rows, 160, flops_per_row)
    step8_ms, _ = _step_rate(beam_step(step8), state_for_rows, 160, flops_per_row)
    step5_ms, _ = _step_rate(beam_step(step32), state_for_rows, 5, flops_per_row)
    step85_ms, _ = _step_rate(beam_step(step8), state_for_rows, 5, flops_per_row)
    plain = _plain_matmul_rate(flops_per_row, 160, threads, hidden)
    return {
        "model": name,
        "threads": threads,
        "engine": "decoder step (onnxruntime)",
        "MFLOP/row": flops_per_row / 1e6,
        "ms @160 f32": step_ms,
        "ms @160 INT8": step8_ms,
        "ms @5 f32": step5_ms,
        "ms @5 INT8": step85_ms,
        "f32 / INT8 @5": step5_ms / step85_ms,
        "GFLOP/s @160": step_rate,
        "plain MatMul GFLOP/s": plain,
        "step / plain %": 100 * step_rate / plain,
    }


def _configure_tensorflow(threads: int):
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def _paper_model_dir(quick: bool) -> str:
    """A paper-shaped Keras model and ONNX graphs (float32 and INT8), random weights.

    The ONNX graphs are built directly (`bench/paper_onnx.py`; tf2onnx runs out of
    memory on this shape) and cached in `bench/.cache/`.
    """
    import keras

    from bench.paper_onnx import build
    from export.quantize import quantize_int8
    from keras_s2s.config import ModelConfig
    from keras_s2s.models import build_seq2seq

    shape = dict(PAPER)
    if quick:  # the smoke test: same code, a small shape (its 1,200 targets take the two-stage top-k)
        shape.update(
            num_layers=2, hidden_dim=64, embedding_dim=32, source_vocabulary_size=500, target_vocabulary_size=1200
        )
    name = "paper" if not quick else "paper_quick"
    directory = os.path.join(CACHE, name)
    config = ModelConfig(**shape)
    keras.utils.set_random_seed(0)
    model = build_seq2seq(config)
    # The cache is rebuilt when the code that writes the graphs changes.
    digest = hashlib.sha256()
    for module in ("bench/paper_onnx.py", "export/step_graph.py", "export/top_k.py"):
        with open(os.path.join(ROOT, module), "rb") as handle:
            digest.update(handle.read())
    stamp = os.path.join(directory, "built_from.sha256")
    current = os.path.exists(stamp) and open(stamp).read() == digest.hexdigest()
    if not current or not os.path.exists(os.path.join(directory, "decoder_step.int8.onnx")):
        print(f"building the {name} ONNX graphs in {directory}", file=sys.stderr)
        build(
            directory,
            config.num_layers,
            config.hidden_dim,
            config.embedding_dim,
            config.source_vocabulary_size,
            config.target_vocabulary_size,
        )
        for part in ("encoder", "decoder_step"):
            quantize_int8(os.path.join(directory, f"{part}.onnx"), os.path.join(directory, f"{part}.int8.onnx"))
        with open(stamp, "w") as handle:
            handle.write(digest.hexdigest())
    return directory, model, config


def worker(args) -> dict:
    threads = args.worker_threads
    os.environ["OMP_NUM_THREADS"] = str(threads)
    _configure_tensorflow(threads)
    import numpy as np

    from keras_s2s.config import BOS_ID, EOS_ID, Config, DecodeConfig
    from keras_s2s.decoder import KerasTranslator, load_run
    from serving.decoding import SearchTranslator
    from serving.sessions import DecoderStepSession, EncoderSession, one_thread_rows, onnx_step_engine
    from serving.translator import Translator

    rows = []
    models = []
    if args.bundle:
        ort32 = Translator.from_bundle(args.bundle, num_threads=threads, engine="steps")
        ort8 = Translator.from_bundle(args.bundle, num_threads=threads, int8=True, engine="steps")
        config, model, source_tokenizer, target_tokenizer = load_run(args.run_dir)
        bundle_model = model
        keras_translator = KerasTranslator(model, config, source_tokenizer, target_tokenizer)
        from keras_s2s.data.readers import read_tsv

        texts = [pair.source for pair in read_tsv(os.path.join(args.run_dir, "data", "dev.tsv"))]
        sources = [ort32.source_vocabulary.encode(text) for text in texts]
        models.append(
            (
                ort32.manifest["config"]["name"],
                ort32,
                ort8,
                keras_translator,
                sources,
                config.decode,
                os.path.join(args.bundle, "decoder_step.onnx"),
                config.model,
            )
        )
    if args.paper:
        directory, model, model_config = _paper_model_dir(args.quick)
        decode = DecodeConfig(beam_size=5, max_length_a=1.0, max_length_b=5)
        config = Config(model=model_config, decode=decode)
        rng = np.random.default_rng(0)
        sources = [
            list(rng.integers(4, model_config.source_vocabulary_size, int(rng.integers(20, 31))))
            for _ in range(max(args.paper_sentences, args.paper_latency_sentences))
        ]

        def raw(suffix):
            """The bundle translator's decode path for bare ONNX files; as `Translator` opens a
            bundle's step, small calls run on one thread."""
            encoder = EncoderSession(
                os.path.join(directory, f"encoder{suffix}.onnx"), ["CPUExecutionProvider"], threads
            )
            step = DecoderStepSession(
                os.path.join(directory, f"decoder_step{suffix}.onnx"),
                ["CPUExecutionProvider"],
                threads,
                one_thread_rows=one_thread_rows(dataclasses.asdict(model_config), int8=bool(suffix)),
            )
            engine = onnx_step_engine(encoder, step, bos_id=BOS_ID, eos_id=EOS_ID, reverse_source=True)
            return SearchTranslator(
                engine,
                None,
                None,
                dict(
                    beam_size=5,
                    length_penalty=decode.length_penalty,
                    max_length_a=decode.max_length_a,
                    max_length_b=decode.max_length_b,
                ),
            )

        models.append(
            (
                "paper shape",
                raw(""),
                raw(".int8"),
                KerasTranslator(model, config, None, None),
                sources,
                decode,
                os.path.join(directory, "decoder_step.onnx"),
                model_config,
            )
        )

    for name, ort32, ort8, keras_translator, sources, _decode, step_path, model_config in models:
        paper = name == "paper shape"
        throughput_sources = sources[: args.paper_sentences if paper else args.sentences]
        latency_sources = sources[: args.paper_latency_sentences if paper else args.latency_sentences]
        engines = [
            ("onnxruntime float32", ort32),
            ("onnxruntime INT8", ort8),
            ("Keras on TensorFlow", keras_translator),
        ]
        for engine, translator in engines:

            def run(batch_sources, beam, batch, translator=translator):
                return translator.translate_ids(batch_sources, beam_size=beam, batch_size=batch)

            for beam in (5, 1):
                row = {
                    "model": name,
                    "threads": threads,
                    "engine": engine,
                    "search": f"beam {beam}" if beam > 1 else "greedy",
                }
                row["sent/s @32"] = _throughput(run, throughput_sources, beam, 32, args.repeats)
                if engine.startswith("onnxruntime"):
                    # Latency, and the time per decoder step at batch 1: float32 and INT8 may
                    # stop at different lengths, the time per step compares like with like.
                    engine_ = translator.engine
                    step = engine_.step = Timed(engine_.step)
                    start = time.perf_counter()
                    row["p50 ms @1"], row["p90 ms @1"] = _latency(run, latency_sources, beam)
                    total = time.perf_counter() - start
                    engine_.step = step.function
                    row["ms/step @1"] = 1000 * total / step.calls
                    row["steps/sentence @1"] = step.calls / (len(latency_sources) + 1)
                else:
                    row["p50 ms @1"], row["p90 ms @1"] = _latency(run, latency_sources, beam)
                if engine.startswith("onnxruntime"):
                    # Where the time goes, at batch 32.
                    encoder, step = Timed(engine_.encode), Timed(engine_.step)
                    engine_.encode, engine_.step = encoder, step
                    start = time.perf_counter()
                    run(throughput_sources, beam, 32)
                    total = time.perf_counter() - start
                    engine_.encode, engine_.step = encoder.function, step.function
                    row["in onnxruntime %"] = 100 * (encoder.seconds + step.seconds) / total
                rows.append(row)
                print(json.dumps(row), file=sys.stderr)

        rows.append(_step_row(name, threads, ort32.engine.step, ort8.engine.step, step_path, model_config))
        print(json.dumps(rows[-1]), file=sys.stderr)
        if threads > 1:
            for engine, translator in engines[:2]:
                if translator.engine.step.one_thread_rows:
                    rows.append(_one_thread_latency(name, threads, engine, translator, latency_sources))
                    print(json.dumps(rows[-1]), file=sys.stderr)
            counts = (1, 5, 20) if paper else (5, 10, 20, 40, 80)
            rows += _thread_rows(name, threads, os.path.dirname(step_path), model_config, counts)
            print(json.dumps(rows[-1]), file=sys.stderr)
    if args.compare_traced and args.bundle:
        # The same trained step as tf2onnx traces it from the Keras step model.
        import onnx

        from export.quantize import quantize_int8

        name, model_config = models[0][0], models[0][-1]
        with tempfile.TemporaryDirectory() as scratch:
            path = os.path.join(scratch, "decoder_step.onnx")
            onnx.save(traced_decoder_step(bundle_model, model_config), path)
            quantize_int8(path, os.path.join(scratch, "decoder_step.int8.onnx"))
            traced32, traced8 = (
                DecoderStepSession(
                    os.path.join(scratch, f"decoder_step{suffix}.onnx"), ["CPUExecutionProvider"], threads
                )
                for suffix in ("", ".int8")
            )
            rows.append(_step_row(f"{name} (traced step)", threads, traced32, traced8, path, model_config))
        print(json.dumps(rows[-1]), file=sys.stderr)
    return {"rows": rows}


# --- Driver --------------------------------------------------------------------------


def _ratios(rows: list[dict]) -> list[dict]:
    """The ratios the targets are stated in, per model and thread count."""
    index = {(r["model"], r["threads"], r["engine"], r.get("search")): r for r in rows if "sent/s @32" in r}
    out = []
    for (model, threads, engine, search), row in index.items():
        if engine != "onnxruntime float32":
            continue
        keras = index.get((model, threads, "Keras on TensorFlow", search))
        int8 = index.get((model, threads, "onnxruntime INT8", search))
        ratio = {"model": model, "threads": threads, "search": search}
        if keras:
            ratio["f32 / TF sent/s @32"] = row["sent/s @32"] / keras["sent/s @32"]
            ratio["TF / f32 p50 @1"] = keras["p50 ms @1"] / row["p50 ms @1"]
        if int8:
            ratio["INT8 / f32 sent/s @32"] = int8["sent/s @32"] / row["sent/s @32"]
            ratio["f32 / INT8 p50 @1"] = row["p50 ms @1"] / int8["p50 ms @1"]
            ratio["f32 / INT8 ms/step @1"] = row["ms/step @1"] / int8["ms/step @1"]
        out.append(ratio)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default=None, help="a trained bundle (e.g. runs/bible_small.bundle)")
    parser.add_argument("--run-dir", default=None, help="the run the bundle came from")
    parser.add_argument("--paper", action="store_true", help="also the paper-shaped model (random weights)")
    parser.add_argument("--threads", default=f"1,{os.cpu_count()}", help="comma-separated thread counts")
    parser.add_argument("--sentences", type=int, default=96, help="sentences per throughput run")
    parser.add_argument("--latency-sentences", type=int, default=20)
    parser.add_argument("--paper-sentences", type=int, default=32, help="the paper shape is slow on a CPU")
    parser.add_argument("--paper-latency-sentences", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a small paper-like shape (smoke test)")
    parser.add_argument(
        "--compare-traced",
        action="store_true",
        help="also time the bundle's step as tf2onnx traces it from the Keras model",
    )
    parser.add_argument("--out", default=None)
    parser.add_argument("--worker-threads", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker_threads:
        result = worker(args)
        with open(args.worker_out, "w", encoding="utf-8") as handle:
            json.dump(result, handle)
        return 0
    if not args.bundle and not args.paper:
        parser.error("give --bundle and --run-dir, or --paper, or both")

    rows = []
    for threads in [int(t) for t in args.threads.split(",") if t]:
        with tempfile.TemporaryDirectory() as scratch:
            out = os.path.join(scratch, "rows.json")
            command = [
                sys.executable,
                os.path.abspath(__file__),
                "--worker-threads",
                str(threads),
                "--worker-out",
                out,
                "--sentences",
                str(args.sentences),
                "--latency-sentences",
                str(args.latency_sentences),
                "--repeats",
                str(args.repeats),
                "--paper-sentences",
                str(args.paper_sentences),
                "--paper-latency-sentences",
                str(args.paper_latency_sentences),
            ]
            if args.bundle:
                command += ["--bundle", args.bundle, "--run-dir", args.run_dir]
            if args.compare_traced:
                command.append("--compare-traced")
            if args.paper:
                command += ["--paper"] + (["--quick"] if args.quick else [])
            env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", OMP_NUM_THREADS=str(threads), PYTHONPATH=ROOT)
            subprocess.run(command, check=True, env=env, cwd=ROOT)
            with open(out, encoding="utf-8") as handle:
                rows += json.load(handle)["rows"]

    speed = [r for r in rows if "sent/s @32" in r]
    steps = [r for r in rows if "GFLOP/s @160" in r]
    one_thread = [r for r in rows if "speed-up p50" in r]
    thread_rows = [r for r in rows if "1 thread speed-up" in r]
    ratios = _ratios(rows)
    print(
        table(
            speed,
            [
                "model",
                "threads",
                "engine",
                "search",
                "sent/s @32",
                "p50 ms @1",
                "p90 ms @1",
                "ms/step @1",
                "steps/sentence @1",
                "in onnxruntime %",
            ],
        )
    )
    print()
    print(
        table(
            ratios,
            [
                "model",
                "threads",
                "search",
                "f32 / TF sent/s @32",
                "TF / f32 p50 @1",
                "INT8 / f32 sent/s @32",
                "f32 / INT8 p50 @1",
                "f32 / INT8 ms/step @1",
            ],
        )
    )
    print()
    print(
        table(
            steps,
            [
                "model",
                "threads",
                "MFLOP/row",
                "ms @160 f32",
                "ms @160 INT8",
                "ms @5 f32",
                "ms @5 INT8",
                "f32 / INT8 @5",
                "GFLOP/s @160",
                "plain MatMul GFLOP/s",
                "step / plain %",
            ],
        )
    )
    if one_thread:
        print()
        print(
            table(
                one_thread,
                [
                    "model",
                    "threads",
                    "engine",
                    "search",
                    "one-thread below rows",
                    "p50 ms, one-thread small steps",
                    "p90 ms, one-thread small steps",
                    "p50 ms, all threads",
                    "p90 ms, all threads",
                    "speed-up p50",
                ],
            )
        )
    if thread_rows:
        print()
        print(
            table(
                thread_rows,
                [
                    "model",
                    "threads",
                    "variant",
                    "rows",
                    "MFLOP/call",
                    "ms, all threads",
                    "ms on 1 thread",
                    "1 thread speed-up",
                ],
            )
        )
    payload = {"machine": machine(), "commit": git_commit(), "rows": rows, "ratios": ratios}
    print("wrote", write_result("decode", payload, args.out), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
