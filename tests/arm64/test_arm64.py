"""The device side on ARM64 and on an AVX2-only x86-64, against this x86-64 on the same
inputs (`make test-arm64`).

A Debian arm64 sysroot (tests/arm64/sysroot.sh) runs under QEMU user-mode emulation as
a Raspberry Pi 4 (Cortex-A72: NEON, no dot product) and a Pi 5 (Cortex-A76: with the dot
product that onnxruntime's INT8 kernels use): QEMU_CPU sets the instructions, and the
sysroot's /proc/cpuinfo is that CPU's (the host's own /proc would tell onnxruntime of an
x86 CPU). Python (numpy + onnxruntime's aarch64 wheel) and Node.js (onnxruntime-node's
linux/arm64 binary) translate the fixed bundle of tests/data/golden; on every CPU:

- float32 gives x86-64's token ids, n-best order and finished flags, scores within 1e-5;
- INT8's two engines agree as the export gate asks (gate (d)), and INT8 loses at most the
  gate's PER points against float32 (gate (c)), on the CPU that runs it.

The same checks run this x86-64 Python under `qemu-x86_64 -cpu Haswell`: onnxruntime then
takes the INT8 kernels of an AVX2-only CPU (no VNNI), whose u8 x s8 sums can saturate.
Emulated timings mean nothing here; outputs do. The figures go to build/arm64/report.json.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from bench.hostile import hostile_lines
from bench.sysroot import run_as
from serving.cli import decoded_lines

pytestmark = pytest.mark.arm64
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.join(ROOT, "tests", "arm64")
GOLDEN = os.path.join(ROOT, "tests", "data", "golden")
SYSROOT = os.environ.get("S2S_ARM64_SYSROOT", os.path.join(ROOT, "build", "arm64", "sysroot"))
WORK = "/opt/s2s/work"  # inside the sysroot
CPUS = ("cortex-a72", "cortex-a76")
MAX_INT8_LOSS = 1.0  # PER points: the export's default --max-int8-loss
SCORE_TOLERANCE = 1e-5


def _texts() -> list[str]:
    words = [line.rstrip("\n") for line in open(os.path.join(GOLDEN, "words.txt"), encoding="utf-8")]
    hostile = [text for _, text, _ in decoded_lines(line + b"\n" for line in hostile_lines(long=2000))]
    return words + hostile


def _stage() -> str:
    """Copies what the device side needs into the sysroot; returns the inputs' path there."""
    if not os.path.exists(os.path.join(SYSROOT, ".keras-s2s-sysroot")):
        pytest.fail(f"{SYSROOT}: no arm64 sysroot: run `make test-arm64` (tests/arm64/sysroot.sh makes it)")
    work = SYSROOT + WORK
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(os.path.join(ROOT, "serving"), os.path.join(work, "serving"))
    shutil.copytree(os.path.join(GOLDEN, "bundle"), os.path.join(work, "bundle"))
    os.makedirs(os.path.join(work, "tests", "web"))
    shutil.copy(os.path.join(HERE, "device_outputs.py"), work)
    shutil.copy(os.path.join(ROOT, "tests", "web", "run_fixture.mjs"), os.path.join(work, "tests", "web"))
    web = os.path.join(work, "web")
    os.makedirs(os.path.join(web, "node_modules"))
    for name in ("s2s.mjs", "translate.mjs", "package.json"):
        shutil.copy(os.path.join(ROOT, "web", name), web)
    modules = os.path.join(ROOT, "web", "node_modules")
    shutil.copytree(
        os.path.join(modules, "onnxruntime-common"), os.path.join(web, "node_modules", "onnxruntime-common")
    )
    # onnxruntime-node ships every platform's binary; the sysroot needs linux/arm64's.
    shutil.copytree(
        os.path.join(modules, "onnxruntime-node"),
        os.path.join(web, "node_modules", "onnxruntime-node"),
        ignore=lambda folder, names: [n for n in names if n in ("x64", "darwin", "win32")],
    )
    texts = _texts()
    with open(os.path.join(work, "inputs.json"), "w", encoding="utf-8") as handle:
        json.dump({"texts": texts}, handle)
    return os.path.join(work, "inputs.json")


def _in_sysroot(cpu: str, *command: str) -> str:
    result = run_as(SYSROOT, cpu, list(command), WORK)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def runs():
    """Per machine (x86-64 and each ARM CPU), device_outputs.py's runs and run_fixture.mjs's."""
    inputs = _stage()
    texts = _texts()
    native = subprocess.run(
        [sys.executable, os.path.join(HERE, "device_outputs.py"), os.path.join(GOLDEN, "bundle"), inputs],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    machines = {"x86-64": json.loads(native.stdout)}
    fixture = _node_fixture(machines["x86-64"], texts)
    with open(SYSROOT + WORK + "/fixture.json", "w", encoding="utf-8") as handle:
        json.dump(fixture, handle)
    machines["x86-64"]["node"] = json.loads(
        subprocess.run(
            [
                "node",
                "tests/web/run_fixture.mjs",
                "node",
                os.path.join(GOLDEN, "bundle"),
                SYSROOT + WORK + "/fixture.json",
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=True,
        ).stdout
    )
    # The x86-64 kernels of a CPU without VNNI or AVX-512: this Python under QEMU as Haswell.
    haswell = subprocess.run(
        ["qemu-x86_64-static", "-cpu", "Haswell", sys.executable, os.path.join(HERE, "device_outputs.py")]
        + [os.path.join(GOLDEN, "bundle"), inputs],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert haswell.returncode == 0, haswell.stderr[-3000:]
    machines["haswell"] = json.loads(haswell.stdout)
    for cpu in CPUS:
        machines[cpu] = json.loads(
            _in_sysroot(cpu, "python3", f"{WORK}/device_outputs.py", f"{WORK}/bundle", f"{WORK}/inputs.json")
        )
        machines[cpu]["node"] = json.loads(
            _in_sysroot(
                cpu, "node", f"{WORK}/tests/web/run_fixture.mjs", "node", f"{WORK}/bundle", f"{WORK}/fixture.json"
            )
        )
    report = _report(machines, texts)
    os.makedirs(os.path.join(ROOT, "build", "arm64"), exist_ok=True)
    with open(os.path.join(ROOT, "build", "arm64", "report.json"), "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)
    print(json.dumps(report, indent=2))
    return machines, texts, report


def _node_fixture(x86: dict, texts: list[str]) -> dict:
    """run_fixture.mjs's input: the texts, their source ids as Python's tokenizer gives them
    (the bundle's limit applied), and the bundle's two settings."""
    from serving.translator import Translator

    translator = Translator.from_bundle(os.path.join(GOLDEN, "bundle"))
    limit = translator.max_source_length
    sources = [translator.source_vocabulary.encode(text)[:limit] for text in texts]
    beam = translator.decode["beam_size"]
    return {
        "texts": texts,
        "sources": sources,
        "settings": [{"beamSize": 1, "nBest": 1}, {"beamSize": beam, "nBest": beam}],
    }


def _compare(expected: list, found: list) -> dict:
    """Sentences whose n-best lists differ in ids, order or finished flags; the largest score
    difference over the others."""
    different, worst = 0, 0.0
    for a, b in zip(expected, found, strict=True):
        if [(ids, done) for ids, _, done in a] != [(ids, done) for ids, _, done in b]:
            different += 1
        else:
            worst = max([worst] + [abs(x[1] - y[1]) for x, y in zip(a, b)])
    return {"sentences": len(expected), "different": different, "max_score_diff": worst}


def _per(run: list, words: list[str]) -> float:
    """PER of the best hypotheses of the golden words that CMUdict has, against it."""
    from keras_s2s.data.datasets import cmudict_pairs
    from keras_s2s.scores import g2p_scores
    from serving.tokenizers import load_vocabulary

    references: dict = {}
    for pair in cmudict_pairs(stress=False):
        references.setdefault(pair.source, []).append(pair.target)
    target = load_vocabulary(os.path.join(GOLDEN, "bundle", "target_tokenizer.json"))
    known = [(index, word) for index, word in enumerate(words) if word in references]
    hypotheses = [target.decode(run[index][0][0]) if run[index] else "" for index, _ in known]
    return g2p_scores(hypotheses, [references[word] for _, word in known])["per"]


def _report(machines: dict, texts: list[str]) -> dict:
    words = [line.rstrip("\n") for line in open(os.path.join(GOLDEN, "words.txt"), encoding="utf-8")]
    x86 = machines["x86-64"]["runs"]
    report = {"inputs": len(texts), "onnxruntime": machines["x86-64"]["onnxruntime"], "machines": {}}
    for name, machine in machines.items():
        runs = machine["runs"]
        entry = {"platform": machine["platform"], "family": machine["family"]}
        entry["float32_against_x86"] = {key: _compare(x86[key], runs[key]) for key in runs if key.startswith("float32")}
        entry["int8_against_x86"] = {key: _compare(x86[key], runs[key]) for key in runs if key.startswith("int8")}
        entry["int8_graph_against_steps"] = {
            key: _compare(runs[key.replace("/graph/", "/steps/")], runs[key])
            for key in runs
            if key.startswith("int8/graph")
        }
        beam = max(key.rsplit("beam", 1)[1] for key in runs)
        entry["per"] = {
            precision: _per(runs[f"{precision}/graph/beam{beam}"], words) for precision in ("float32", "int8")
        }
        entry["int8_loss"] = entry["per"]["int8"] - entry["per"]["float32"]
        report["machines"][name] = entry
    return report


def test_each_cpu_is_the_family_it_emulates(runs):
    _, _, report = runs
    families = {name: entry["family"] for name, entry in report["machines"].items()}
    assert families["haswell"] == "x86-64 AVX2"
    assert families["cortex-a72"] == "ARM64" and families["cortex-a76"] == "ARM64 dot product"


def test_float32_gives_x86_64s_n_best_lists_on_arm64(runs):
    _, _, report = runs
    for cpu in ("haswell", *CPUS):
        for key, entry in report["machines"][cpu]["float32_against_x86"].items():
            assert entry["different"] == 0, (cpu, key, entry)
            assert entry["max_score_diff"] <= SCORE_TOLERANCE, (cpu, key, entry)


def test_int8_holds_the_export_gate_on_arm64_and_avx2_only_x86_64(runs):
    _, _, report = runs
    for cpu in ("haswell", *CPUS):
        entry = report["machines"][cpu]
        for key, agreement in entry["int8_graph_against_steps"].items():
            assert agreement["different"] == 0 and agreement["max_score_diff"] <= SCORE_TOLERANCE, (cpu, key)
        assert entry["int8_loss"] <= MAX_INT8_LOSS, (cpu, entry["per"])


def test_int8_with_the_exports_settings_decodes_on_avx2_only_x86_64_as_with_vnni(runs):
    """`reduce_range` keeps AVX2's 16-bit pair sums from saturating (docs/export.md)."""
    _, _, report = runs
    for key, entry in report["machines"]["haswell"]["int8_against_x86"].items():
        assert entry["different"] == 0 and entry["max_score_diff"] <= SCORE_TOLERANCE, (key, entry)


def test_onnxruntime_node_on_arm64_gives_python_on_x86_64s_outputs(runs):
    machines, texts, _ = runs
    x86 = machines["x86-64"]
    beam = max(int(key.rsplit("beam", 1)[1]) for key in x86["runs"])
    for cpu in ("x86-64", *CPUS):
        node = machines[cpu]["node"]
        for index, key in enumerate(("float32/graph/beam1", f"float32/graph/beam{beam}")):
            found = [
                [[h["tokenIds"], h["score"], h["finished"]] for h in hypotheses] for hypotheses in node["ids"][index]
            ]
            entry = _compare(x86["runs"][key], found)
            assert entry["different"] == 0 and entry["max_score_diff"] <= SCORE_TOLERANCE, (cpu, key, entry)
        # The text graph on ARM64 gives the texts x86-64's does.
        for got_setting, want_setting in zip(node["text"], x86["node"]["text"], strict=True):
            for got, want in zip(got_setting, want_setting, strict=True):
                assert [h["text"] for h in got] == [h["text"] for h in want], cpu
                assert [h["score"] for h in got] == pytest.approx([h["score"] for h in want], abs=SCORE_TOLERANCE)
    assert len(machines["cortex-a72"]["node"]["text"][0]) == len(texts)
