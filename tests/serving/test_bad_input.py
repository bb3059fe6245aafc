"""Damaged bundles are refused naming the file; no input line stops a run; a long soak."""

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import time

import pytest

from serving.cli import main
from serving.translator import BundleError, Translator

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _copy(bundle_dir, tmp_path):
    target = str(tmp_path / "bundle")
    shutil.copytree(bundle_dir, target)
    return target


def _manifest(bundle_dir):
    with open(os.path.join(bundle_dir, "manifest.json"), encoding="utf-8") as handle:
        return json.load(handle)


def _write_manifest(bundle_dir, manifest):
    with open(os.path.join(bundle_dir, "manifest.json"), "w", encoding="utf-8") as handle:
        json.dump(manifest, handle)


def _rehash(bundle_dir, name):
    manifest = _manifest(bundle_dir)
    with open(os.path.join(bundle_dir, name), "rb") as handle:
        manifest["files"][name]["sha256"] = hashlib.sha256(handle.read()).hexdigest()
    _write_manifest(bundle_dir, manifest)


def _truncate(bundle_dir, name):
    path = os.path.join(bundle_dir, name)
    with open(path, "rb") as handle:
        data = handle.read()
    with open(path, "wb") as handle:
        handle.write(data[: len(data) // 3])


def _wrong_version(bundle_dir):
    manifest = _manifest(bundle_dir)
    manifest["format_version"] = 99
    _write_manifest(bundle_dir, manifest)


def _missing_file(bundle_dir):
    os.remove(os.path.join(bundle_dir, "encoder.onnx"))


def _sha_mismatch(bundle_dir):
    with open(os.path.join(bundle_dir, "source_tokenizer.json"), "a", encoding="utf-8") as handle:
        handle.write(" ")


def _truncated_onnx(bundle_dir):
    _truncate(bundle_dir, "decoder_step.onnx")


def _truncated_onnx_with_matching_sha(bundle_dir):
    # The default (graph) engine's file.
    _truncate(bundle_dir, "translator.onnx")
    _rehash(bundle_dir, "translator.onnx")


def _manifest_not_json(bundle_dir):
    with open(os.path.join(bundle_dir, "manifest.json"), "w", encoding="utf-8") as handle:
        handle.write('{"format_version": 1, "files": {')


def _manifest_without_field(bundle_dir):
    manifest = _manifest(bundle_dir)
    del manifest["special_ids"]
    _write_manifest(bundle_dir, manifest)


def _unlisted_model(bundle_dir):
    manifest = _manifest(bundle_dir)
    del manifest["files"]["encoder.onnx"]
    _write_manifest(bundle_dir, manifest)


def _no_manifest(bundle_dir):
    os.remove(os.path.join(bundle_dir, "manifest.json"))


DAMAGES = {
    "wrong format version": (_wrong_version, r"manifest\.json: format_version 99 is not supported"),
    "manifest names a missing file": (_missing_file, r"encoder\.onnx: named in the manifest but missing"),
    "sha256 mismatch": (_sha_mismatch, r"source_tokenizer\.json: sha256 does not match"),
    "truncated onnx": (_truncated_onnx, r"decoder_step\.onnx: sha256 does not match"),
    "truncated onnx, sha256 updated": (
        _truncated_onnx_with_matching_sha,
        r"translator\.onnx: onnxruntime cannot load this model",
    ),
    "manifest is not json": (_manifest_not_json, r"manifest\.json: not valid JSON"),
    "manifest lacks a field": (_manifest_without_field, r"manifest\.json: field 'special_ids' is missing"),
    "model without a sha256": (_unlisted_model, r"manifest\.json: encoder\.onnx is used but has no sha256"),
    "no manifest": (_no_manifest, r"manifest\.json: manifest is missing"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_damaged_bundle_is_refused_naming_the_file(tiny_bundle, tmp_path, capsys, damage):
    change, message = DAMAGES[damage]
    bundle_dir = _copy(tiny_bundle[1], tmp_path)
    change(bundle_dir)
    with pytest.raises(BundleError, match=message):
        Translator.from_bundle(bundle_dir)
    # The command line says the same and exits with status 2, writing nothing.
    output = tmp_path / "out.txt"
    source = tmp_path / "in.txt"
    source.write_text("hello\n", encoding="utf-8")
    assert main([bundle_dir, "-i", str(source), "-o", str(output)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("s2s-translate: error: ") and bundle_dir in error
    assert not output.exists()


def test_a_failing_line_gives_an_empty_line_a_warning_and_status_1(tiny_bundle, tmp_path, capsys, monkeypatch):
    lines = ["hello", "world", "kaboom", "abracadabra", "", "zebra"]
    reference = [r[0].text for r in Translator.from_bundle(tiny_bundle[1]).translate(lines, beam_size=2)]
    original = Translator.translate

    def flaky(self, texts, **options):
        if "kaboom" in texts:
            raise RuntimeError("simulated failure")
        return original(self, texts, **options)

    monkeypatch.setattr(Translator, "translate", flaky)
    source, target = tmp_path / "in.txt", tmp_path / "out.txt"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert main([tiny_bundle[1], "-i", str(source), "-o", str(target), "--beam", "2"]) == 1
    written = target.read_text(encoding="utf-8").split("\n")
    assert written[:-1] == reference[:2] + [""] + reference[3:]
    error = capsys.readouterr().err
    assert "line 3: not translated (RuntimeError: simulated failure)" in error
    assert "1 line(s) not translated" in error


def test_an_interrupted_translation_leaves_the_old_output_file(tiny_bundle, tmp_path, monkeypatch):
    source, target = tmp_path / "in.txt", tmp_path / "out.txt"
    source.write_text("hello\nworld\n", encoding="utf-8")
    target.write_text("previous result\n", encoding="utf-8")

    def crash(self, texts, **options):
        raise KeyboardInterrupt

    monkeypatch.setattr(Translator, "translate", crash)
    with pytest.raises(KeyboardInterrupt):
        main([tiny_bundle[1], "-i", str(source), "-o", str(target)])
    assert target.read_text(encoding="utf-8") == "previous result\n"


def _random_line(rng):
    alphabets = [
        "abcdefghijklmnopqrstuvwxyz",
        "ABCXYZ",
        "áéíóúñü",
        "日本語中文",
        "עברית",
        "😀🚀👍🏽",
        "ʃʒθðŋ",
        " \t",
        "0123456789",
        "\u200b\u00a0",
    ]
    length = rng.choice([0, 1, 3, 8, 12, 20, 40, 200])
    return "".join(rng.choice(rng.choice(alphabets)) for _ in range(length))


def _rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        return None
    return None


@pytest.mark.filterwarnings("ignore::serving.translator.TruncationWarning")
def test_soak_20000_random_lines_keep_count_order_and_flat_memory(tiny_bundle, tmp_path):
    rng = random.Random(7)
    pool = [_random_line(rng) for _ in range(400)] + ["hello", "world", ""]
    lines = [rng.choice(pool) for _ in range(20_000)]
    # The same line always gets the same translation, so the output can be
    # checked line by line against the pool's translations.
    expected = {
        text: result[0].text
        for text, result in zip(pool, Translator.from_bundle(tiny_bundle[1]).translate(pool, beam_size=5))
    }
    source, target = tmp_path / "soak.txt", tmp_path / "soak.out"
    source.write_text("".join(line.replace("\r", " ") + "\n" for line in lines), encoding="utf-8")

    log = open(tmp_path / "soak.err", "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "serving.cli", tiny_bundle[1], "-i", str(source), "-o", str(target), "--beam", "5"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    samples = []  # (seconds, RSS in KiB)
    start = time.monotonic()
    while process.poll() is None:
        rss = _rss_kib(process.pid)
        if rss:
            samples.append((time.monotonic() - start, rss))
        time.sleep(0.05)
    log.close()
    stderr = (tmp_path / "soak.err").read_text(encoding="utf-8", errors="replace")
    assert process.returncode == 0, stderr[-3000:]

    written = target.read_text(encoding="utf-8").split("\n")
    assert written[-1] == "" and len(written) - 1 == len(lines)
    assert written[:-1] == [expected[line] for line in lines]

    # Memory is flat once translation runs: the second half's peak is close to the first half's.
    elapsed = samples[-1][0]
    running = [(t, rss) for t, rss in samples if t > 0.2 * elapsed]
    first = max(rss for t, rss in running if t <= 0.6 * elapsed)
    second = max(rss for t, rss in running if t > 0.6 * elapsed)
    peak = max(rss for _, rss in samples)
    print(
        f"soak: 20000 lines in {elapsed:.1f} s, peak RSS {peak / 1024:.1f} MiB, "
        f"peak in 20-60% {first / 1024:.1f} MiB, in 60-100% {second / 1024:.1f} MiB"
    )
    assert second <= first + 16 * 1024
