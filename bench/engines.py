"""The one-file translator against the step engine, and the JavaScript runtimes.

    python bench/engines.py --bundles runs/g2p_small.bundle,runs/bible_small.bundle

For each bundle, thread count and precision (float32, INT8), in one process with the two
engines' runs interleaved so that both see the same machine:

- batch 1: latency p50/p90 over `--latency-sentences` dev sentences, beam 5;
- batch 32: sentences per second over `--sentences` dev sentences (median of `--repeats`);
- the decode-time rows: how many decoder-step rows the search computes with done
  sentences leaving the batch (what both engines do) against keeping every sentence to
  the end, at batch 32.

Then the same `translator.onnx` at batch 1 under onnxruntime-node, onnxruntime-web's wasm
backend under Node.js, and in a page in headless Chromium (`web/page.mjs --bench`), one
thread each.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import ROOT, demo_page, git_commit, machine, median, percentile, table, write_result  # noqa: E402


def _sources(bundle: str, count: int) -> list[list[int]]:
    """The first `count` dev sources of the run the bundle came from, as token ids."""
    from serving.tokenizers import load_vocabulary

    with open(os.path.join(bundle, "manifest.json"), encoding="utf-8") as handle:
        manifest = json.load(handle)
    vocabulary = load_vocabulary(os.path.join(bundle, manifest["tokenizers"]["source"]))
    dev = os.path.join(manifest["exported_from"], "data", "dev.tsv")
    with open(dev, encoding="utf-8") as handle:
        lines = [line.split("\t")[0] for line in handle.read().splitlines()[:count]]
    return [vocabulary.encode(line)[: manifest["max_source_length"]] for line in lines]


class CountingStep:
    """A step function that counts the rows it computes."""

    def __init__(self, step):
        self.step, self.rows, self.calls = step, 0, 0

    def __call__(self, token_ids, state, **kwargs):
        self.rows += len(token_ids)
        self.calls += 1
        return self.step(token_ids, state, **kwargs)

    def __getattr__(self, name):
        return getattr(self.step, name)


def _row_share(bundle: str, sources, beam: int, batch: int) -> dict:
    """Decoder-step rows with done sentences leaving (as decoded) against keeping them all."""
    from serving.translator import Translator

    translator = Translator.from_bundle(bundle, num_threads=1, engine="steps")
    counting = translator.engine.step = CountingStep(translator.engine.step)
    # Keeping every sentence to the end, each step of a batch would compute all its rows.
    kept = 0
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    for start in range(0, len(order), batch):
        chunk = [sources[i] for i in order[start : start + batch]]
        calls = counting.calls
        translator.translate_ids(chunk, beam_size=beam, batch_size=len(chunk))
        kept += (counting.calls - calls) * len(chunk) * beam
    return {"rows_dropping": counting.rows, "rows_keeping": kept, "keeping_costs": kept / counting.rows - 1}


def _step_time(step, bundle: str, rows: int, calls: int = 100) -> float:
    """Median seconds of one decoder-step call at `rows` rows, on its own."""
    import numpy as np

    with open(os.path.join(bundle, "manifest.json"), encoding="utf-8") as handle:
        model = json.load(handle)["config"]["model"]
    hidden, time_steps = model["hidden_dim"], 20
    state = {
        "states": np.full((2 * model["num_layers"], rows, hidden), 0.01, np.float32),
        "encoder_outputs": np.full((rows, time_steps, hidden), 0.01, np.float32),
        "source_lengths": np.full(rows, time_steps, np.int32),
    }
    tokens = np.full(rows, 2, np.int32)
    times = []
    for _ in range(calls + 10):
        started = time.perf_counter()
        step(tokens, state, top_k=2 * rows)
        times.append(time.perf_counter() - started)
    return median(times[10:])


def _python_rows(
    bundle: str, threads: int, int8: bool, sources, latency_count: int, repeats: int, beam: int, batch: int
) -> list[dict]:
    from serving.translator import Translator

    engines = {
        name: Translator.from_bundle(bundle, num_threads=threads, int8=int8, engine=name) for name in ("graph", "steps")
    }
    latency = {name: [] for name in engines}
    throughput = {name: [] for name in engines}
    for translator in engines.values():  # warm-up
        translator.translate_ids(sources[:batch], beam_size=beam, batch_size=batch)
    for source in sources[:latency_count]:
        for name, translator in engines.items():
            started = time.perf_counter()
            translator.translate_ids([source], beam_size=beam, batch_size=1)
            latency[name].append(time.perf_counter() - started)
    for _ in range(repeats):
        for name, translator in engines.items():
            started = time.perf_counter()
            translator.translate_ids(sources, beam_size=beam, batch_size=batch)
            throughput[name].append(len(sources) / (time.perf_counter() - started))
    rows = []
    for name in engines:
        rows.append(
            {
                "bundle": os.path.basename(bundle.rstrip("/")),
                "precision": "int8" if int8 else "float32",
                "threads": threads,
                "engine": name,
                "batch1_p50_ms": percentile(latency[name], 50) * 1e3,
                "batch1_p90_ms": percentile(latency[name], 90) * 1e3,
                "batch32_sentences_per_s": median(throughput[name]),
            }
        )
    graph, steps = rows
    graph["step_ms"] = steps["step_ms"] = _step_time(engines["steps"].decoder_step, bundle, beam) * 1e3
    graph["p50_speedup_vs_steps"] = steps["batch1_p50_ms"] / graph["batch1_p50_ms"]
    graph["batch32_ratio_vs_steps"] = graph["batch32_sentences_per_s"] / steps["batch32_sentences_per_s"]
    return rows


def _javascript_rows(bundle: str, sources, latency_count: int, beam: int) -> list[dict]:
    """Batch-1 latency of `translator.onnx` under onnxruntime-node, wasm under Node.js and
    wasm in a page (one thread each)."""
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        fixture = os.path.join(scratch, "sources.json")
        with open(fixture, "w", encoding="utf-8") as handle:
            json.dump({"sources": sources[:latency_count], "beamSize": beam}, handle)
        for backend in ("node", "wasm"):
            result = subprocess.run(
                ["node", "bench/web_latency.mjs", backend, bundle, fixture],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=1800,
                check=True,
            )
            rows.append(
                {
                    "runtime": f"onnxruntime-{'node' if backend == 'node' else 'web (wasm, Node.js)'}",
                    **json.loads(result.stdout),
                }
            )
        rows.append({"runtime": "onnxruntime-web (wasm, Chromium page)", **_page_latency(bundle, fixture)})
    node = rows[0]["p50_ms"]
    for row in rows:
        row["p50_vs_node"] = row["p50_ms"] / node
    return rows


def _page_latency(bundle: str, fixture: str) -> dict:
    with demo_page(bundle) as url:
        result = subprocess.run(
            ["node", "web/page.mjs", url, "--bench", fixture, "--timeout", "600000"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=1800,
            check=True,
        )
    return json.loads(result.stdout)["bench"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundles", default="runs/g2p_small.bundle,runs/bible_small.bundle")
    parser.add_argument("--threads", default=f"1,{os.cpu_count()}")
    parser.add_argument("--sentences", type=int, default=128, help="sentences per batch-32 run")
    parser.add_argument("--latency-sentences", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--no-javascript", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    rows, javascript, dropping = [], [], []
    for bundle in args.bundles.split(","):
        sources = _sources(bundle, max(args.sentences, args.latency_sentences))
        name = os.path.basename(bundle.rstrip("/"))
        for threads in (int(t) for t in args.threads.split(",")):
            for int8 in (False, True):
                print(f"[engines] {name}: {threads} thread(s), {'int8' if int8 else 'float32'}", file=sys.stderr)
                rows += _python_rows(
                    bundle,
                    threads,
                    int8,
                    sources[: args.sentences],
                    args.latency_sentences,
                    args.repeats,
                    args.beam,
                    32,
                )
        dropping.append({"bundle": name, **_row_share(bundle, sources[: args.sentences], args.beam, 32)})
        if not args.no_javascript:
            print(f"[engines] {name}: JavaScript runtimes", file=sys.stderr)
            javascript += [
                {"bundle": name, **row} for row in _javascript_rows(bundle, sources, args.latency_sentences, args.beam)
            ]

    print(
        table(
            rows,
            [
                "bundle",
                "precision",
                "threads",
                "engine",
                "batch1_p50_ms",
                "batch1_p90_ms",
                "batch32_sentences_per_s",
                "p50_speedup_vs_steps",
                "batch32_ratio_vs_steps",
                "step_ms",
            ],
        )
    )
    print()
    print(table(dropping, ["bundle", "rows_dropping", "rows_keeping", "keeping_costs"]))
    if javascript:
        print()
        print(table(javascript, ["bundle", "runtime", "p50_ms", "p90_ms", "p50_vs_node", "step_ms"]))
    path = write_result(
        "engines",
        {
            "machine": machine(),
            "commit": git_commit(),
            "beam": args.beam,
            "python": rows,
            "done_sentences": dropping,
            "javascript": javascript,
        },
        args.out,
    )
    print(f"\nwritten: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
