"""INT8 on the three CPU families: the export gate's figures for each quantisation setting.

    python bench/int8_families.py --bundle runs/g2p_small.bundle --run-dir runs/g2p_small \\
        [--sentences 1000] [--arm64-sysroot build/arm64/sysroot]

onnxruntime's dynamic quantisation is redone from the bundle's float32 graphs with each
setting (weight type, `reduce_range`, per-channel weights) into a `translator.int8.onnx`
of its own. Every translator then decodes the same test words (beam of the bundle, one
thread) on:

- this machine (x86-64; its family from `serving.cpu`, VNNI here);
- the same x86-64 Python under `qemu-x86_64 -cpu Haswell` (AVX2, no VNNI, no AVX-512): the
  kernels of an AVX2-only CPU;
- the ARM64 sysroot of `make test-arm64` as a Cortex-A72 (NEON) and a Cortex-A76 (dot
  product).

Per family and setting: PER and WER, the loss against float32 on the same CPU (the gate's
figure (c)), the share of outputs identical to float32 (its agreement), and the share
identical to this machine's INT8 output. Speed is this machine's only (emulated timings
mean nothing): words/s of each INT8 setting against float32, batch 64, one thread.
Results go to bench/results/int8_families.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import ROOT, git_commit, machine, median, table, write_result
from bench.sysroot import run_as

SETTINGS = {  # name: onnxruntime.quantization.quantize_dynamic arguments
    "s8": {"weight_type": "QInt8", "reduce_range": False, "per_channel": False},
    "s8 reduce_range": {"weight_type": "QInt8", "reduce_range": True, "per_channel": False},
    "s8 per-channel": {"weight_type": "QInt8", "reduce_range": False, "per_channel": True},
    "s8 per-channel reduce_range": {"weight_type": "QInt8", "reduce_range": True, "per_channel": True},
    "u8": {"weight_type": "QUInt8", "reduce_range": False, "per_channel": False},
}


def worker(folder: str) -> dict:
    """Decodes `folder/sources.json` with every `*.onnx` translator in `folder`: the best
    hypothesis' ids of each source, and this CPU's family. Device side only."""
    from serving.cpu import cpu_family
    from serving.decoding import SearchSettings
    from serving.sessions import TranslatorGraphSession

    with open(os.path.join(folder, "sources.json"), encoding="utf-8") as handle:
        job = json.load(handle)
    settings = SearchSettings(**job["settings"])
    out = {"family": cpu_family(), "outputs": {}}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".onnx"):
            graph = TranslatorGraphSession(os.path.join(folder, name), ["CPUExecutionProvider"], 1)
            found = []
            for start in range(0, len(job["sources"]), 64):
                found += graph.search_batch(job["sources"][start : start + 64], settings)
            out["outputs"][name] = [h[0].token_ids if h else [] for h in found]
    return out


def _quantize(bundle: str, folder: str, name: str, arguments: dict) -> None:
    """The bundle's float32 graphs quantised with `arguments`, as `folder/{name}.onnx`."""
    from onnxruntime.quantization import QuantType

    from export.quantize import quantize_int8
    from export.translator_export import write_translator

    with open(os.path.join(bundle, "manifest.json"), encoding="utf-8") as handle:
        manifest = json.load(handle)
    with tempfile.TemporaryDirectory() as work:
        for graph in ("encoder", "decoder_step"):
            quantize_int8(
                os.path.join(bundle, f"{graph}.onnx"),
                os.path.join(work, f"{graph}.int8.onnx"),
                weight_type=getattr(QuantType, arguments["weight_type"]),
                reduce_range=arguments["reduce_range"],
                per_channel=arguments["per_channel"],
            )
        lstm = manifest["lstm"]["fused_nodes"]
        write_translator(
            work,
            ".int8",
            reverse_source=manifest["reverse_source"],
            bos_id=manifest["special_ids"]["bos"],
            eos_id=manifest["special_ids"]["eos"],
            encoder_lstms=lstm["encoder"],
            decoder_lstms=lstm["decoder_step"],
        )
        shutil.copy(os.path.join(work, "translator.int8.onnx"), os.path.join(folder, f"{name}.onnx"))


def _run_families(folder: str, sysroot: str | None, families: list[str]) -> dict:
    """The worker on this machine, under QEMU as Haswell, and in the ARM64 sysroot (those of
    `families`)."""
    here = [sys.executable, os.path.abspath(__file__), "--worker", folder]
    runs = {"native": here}
    if "haswell" in families:
        runs["Haswell (QEMU)"] = ["qemu-x86_64-static", "-cpu", "Haswell", *here]
    results = {}
    for name, command in runs.items():
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        if done.returncode:
            raise RuntimeError(f"{name}: {done.stderr[-2000:]}")
        results[name] = json.loads(done.stdout)
    if sysroot and "arm64" in families:
        inside = "/opt/s2s/int8"
        shutil.rmtree(sysroot + inside, ignore_errors=True)
        shutil.copytree(folder, sysroot + inside)
        shutil.rmtree(sysroot + "/opt/s2s/work", ignore_errors=True)
        shutil.copytree(os.path.join(ROOT, "serving"), sysroot + "/opt/s2s/work/serving")
        shutil.copytree(
            os.path.join(ROOT, "bench"), sysroot + "/opt/s2s/work/bench", ignore=shutil.ignore_patterns("results")
        )
        for cpu in ("cortex-a72", "cortex-a76"):
            command = ["python3", "/opt/s2s/work/bench/int8_families.py", "--worker", inside]
            done = run_as(sysroot, cpu, command, "/opt/s2s/work", timeout=7200)
            if done.returncode:
                raise RuntimeError(f"{cpu}: {done.stderr[-2000:]}")
            results[f"{cpu} (QEMU)"] = json.loads(done.stdout)
    return results


def _speed(folder: str, sources: list, settings, repeats: int = 3) -> dict:
    """Words/s of each translator here, batch 64, one thread (median of `repeats`)."""
    from serving.sessions import TranslatorGraphSession

    speeds: dict = {}
    graphs = {
        name: TranslatorGraphSession(os.path.join(folder, name), ["CPUExecutionProvider"], 1)
        for name in sorted(os.listdir(folder))
        if name.endswith(".onnx")
    }
    for _ in range(repeats):  # interleaved, so that a slow spell hits every setting
        for name, graph in graphs.items():
            started = time.perf_counter()
            for start in range(0, len(sources), 64):
                graph.search_batch(sources[start : start + 64], settings)
            speeds.setdefault(name, []).append(len(sources) / (time.perf_counter() - started))
    return {name: median(values) for name, values in speeds.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--bundle")
    parser.add_argument("--run-dir")
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--arm64-sysroot", default=os.path.join(ROOT, "build", "arm64", "sysroot"))
    parser.add_argument(
        "--families", default="native,haswell,arm64", help="which of native, haswell, arm64 (default: all)"
    )
    parser.add_argument("--out", default=None, help="result JSON (default: bench/results/int8_families.json)")
    args = parser.parse_args(argv)
    if args.worker:
        json.dump(worker(args.worker), sys.stdout)
        return 0
    from keras_s2s.data.readers import read_tsv
    from keras_s2s.scores import g2p_scores
    from serving.decoding import SearchSettings
    from serving.translator import Translator

    translator = Translator.from_bundle(args.bundle)
    references: dict = {}
    for pair in read_tsv(os.path.join(args.run_dir, "data", "test.tsv")):
        references.setdefault(pair.source, []).append(pair.target)
    words = list(references)[: args.sentences]
    limit = translator.max_source_length
    sources = [translator.source_vocabulary.encode(word)[:limit] for word in words]
    decode = translator.decode
    settings = SearchSettings(
        decode["beam_size"], 1, decode["length_penalty"], decode["max_length_a"], decode["max_length_b"]
    )
    sysroot = args.arm64_sysroot if os.path.exists(os.path.join(args.arm64_sysroot, ".keras-s2s-sysroot")) else None
    with tempfile.TemporaryDirectory() as folder:
        with open(os.path.join(folder, "sources.json"), "w", encoding="utf-8") as handle:
            json.dump({"sources": sources, "settings": settings.__dict__}, handle)
        shutil.copy(os.path.join(args.bundle, "translator.onnx"), os.path.join(folder, "float32.onnx"))
        for name, arguments in SETTINGS.items():
            _quantize(args.bundle, folder, name.replace(" ", "_"), arguments)
        speeds = _speed(folder, sources, settings)
        families = _run_families(folder, sysroot, args.families.split(","))
    target = translator.target_vocabulary
    native = families["native"]["outputs"]
    rows = []
    for family_name, result in families.items():
        outputs = result["outputs"]
        float_text = [target.decode(ids) for ids in outputs["float32.onnx"]]
        float_scores = g2p_scores(float_text, [references[w] for w in words])
        for name in SETTINGS:
            file = name.replace(" ", "_") + ".onnx"
            text = [target.decode(ids) for ids in outputs[file]]
            scores = g2p_scores(text, [references[w] for w in words])
            rows.append(
                {
                    "CPU": f"{family_name}: {result['family']}",
                    "setting": name,
                    "PER": scores["per"],
                    "WER": scores["wer"],
                    "PER loss": scores["per"] - float_scores["per"],
                    "WER loss": scores["wer"] - float_scores["wer"],
                    "same as float32 %": 100
                    * sum(a == b for a, b in zip(outputs[file], outputs["float32.onnx"]))
                    / len(words),
                    "same as native INT8 %": 100
                    * sum(a == b for a, b in zip(outputs[file], native[file]))
                    / len(words),
                    "words/s vs float32 (native)": speeds[file] / speeds["float32.onnx"],
                }
            )
    columns = list(rows[0])
    print(f"{len(words)} test words of {args.run_dir}, beam {settings.beam_size}; float32 PER/WER per CPU in the loss")
    print(table(rows, columns))
    write_result(
        "int8_families",
        {"machine": machine(), "commit": git_commit(), "bundle": args.bundle, "words": len(words), "rows": rows},
        args.out,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
