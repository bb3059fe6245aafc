import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from export import bundle as bundle_module
from export.bundle import ExportOptions, export_bundle, recover_interrupted_export
from export.cli import main as export_main
from serving.translator import BundleError, Translator

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def bundle(tiny_bundle):
    return tiny_bundle


def test_manifest_records_files_gate_and_versions(bundle):
    _, out, _, manifest = bundle
    on_disk = json.load(open(os.path.join(out, "manifest.json")))
    assert on_disk["format_version"] == 1 and on_disk["checkpoint"] == "best"
    assert set(on_disk["files"]) == {
        "encoder.onnx",
        "decoder_step.onnx",
        "translator.onnx",
        "encoder.int8.onnx",
        "decoder_step.int8.onnx",
        "translator.int8.onnx",
        "translator.text.onnx",
        "translator.ort",
        "translator.int8.ort",
        "translator.text.ort",
        "required_operators_and_types.config",
        "source_tokenizer.json",
        "target_tokenizer.json",
    }
    assert on_disk["models"]["float32"]["text_translator"] == "translator.text.onnx"
    from export.quantize import INT8_SETTINGS
    from serving.cpu import FAMILIES, cpu_family

    assert on_disk["quantization"] == {**INT8_SETTINGS, "gate_cpu": cpu_family()} and cpu_family() in FAMILIES
    assert on_disk["gate"]["text_translator"]["identical_share"] == 1.0
    assert on_disk["models"]["float32"]["translator"] == "translator.onnx"
    assert on_disk["models"]["int8"]["translator"] == "translator.int8.onnx"
    for variant in ("float32", "int8"):
        entry = on_disk["gate"]["translator"][variant]
        assert entry["identical_share"] == 1.0 and entry["max_score_diff"] <= 1e-5 and entry["sentences"] == 40
    assert on_disk["tensors"]["translator"]["inputs"] == [
        "source_ids",
        "source_lengths",
        "beam_size",
        "n_best",
        "length_penalty",
        "max_length_a",
        "max_length_b",
    ]
    assert on_disk["special_ids"] == {"pad": 0, "unk": 1, "bos": 2, "eos": 3}
    assert on_disk["gate"]["max_abs_log_prob_diff"] <= 1e-4
    assert on_disk["gate"]["identical_beam1"] == on_disk["gate"]["identical_beam5"] == 1.0
    assert 0 <= on_disk["gate"]["int8_identical_share"] <= 1
    assert {"tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime"} <= set(on_disk["versions"])
    assert on_disk["lstm"]["fused_nodes"] == {"encoder": 2, "decoder_step": 2}
    assert on_disk["tensors"]["encoder"]["inputs"] == ["source_ids", "source_lengths"]
    assert not [name for name in os.listdir(os.path.dirname(out)) if ".partial-" in name or ".old-" in name]
    # The source limit is the longest training source in tokens.
    run_dir = bundle[0]
    from keras_s2s.config import Config
    from keras_s2s.data.tokenizers import load_tokenizers

    source_tokenizer, _ = load_tokenizers(run_dir, Config.load(os.path.join(run_dir, "config.json")).tokenizer)
    lengths = [
        len(source_tokenizer.encode(line.split("\t")[0]))
        for line in open(os.path.join(run_dir, "data", "train.tsv"), encoding="utf-8").read().splitlines()
    ]
    assert on_disk["max_source_length"] == max(lengths)


def test_saved_model_reloads_with_signatures(bundle):
    import tensorflow as tf

    _, _, saved_model, manifest = bundle
    loaded = tf.saved_model.load(saved_model)
    states = loaded.encode(tf.constant([[5, 6, 7]], tf.int32), tf.constant([3], tf.int32))["states"]
    assert states.shape == (4, 1, 32)
    step = loaded.decode_step(tf.constant([2], tf.int32), states)
    assert np.allclose(np.exp(step["log_probs"].numpy()).sum(), 1.0, atol=1e-4)
    assert manifest["saved_model"]["max_abs_diff"] <= 1e-5


def test_moved_bundle_loads_and_translates_like_keras(bundle, tmp_path):
    run_dir, out, _, _ = bundle
    moved = str(tmp_path / "elsewhere")
    shutil.copytree(out, moved)
    translator = Translator.from_bundle(moved)
    words = ["hello", "world", "", "abracadabra"]
    results = translator.translate(words, beam_size=3)
    assert len(results) == 4 and results[2][0].text == ""
    from keras_s2s.decoder import make_translator

    reference = make_translator(run_dir).translate_best(["hello", "world", "abracadabra"], beam_size=3)
    assert [results[0][0].text, results[1][0].text, results[3][0].text] == reference
    int8 = Translator.from_bundle(moved, int8=True).translate(words, beam_size=3)
    assert len(int8) == 4


def test_changed_byte_in_an_onnx_file_is_refused(bundle, tmp_path):
    _, out, _, _ = bundle
    damaged = str(tmp_path / "damaged")
    shutil.copytree(out, damaged)
    path = os.path.join(damaged, "decoder_step.onnx")
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(path, "wb").write(bytes(data))
    with pytest.raises(BundleError, match=r"decoder_step\.onnx: sha256 does not match"):
        Translator.from_bundle(damaged)


def test_missing_tokenizer_file_is_refused(bundle, tmp_path):
    _, out, _, _ = bundle
    damaged = str(tmp_path / "missing")
    shutil.copytree(out, damaged)
    os.remove(os.path.join(damaged, "target_tokenizer.json"))
    with pytest.raises(BundleError, match=r"target_tokenizer\.json: named in the manifest but missing"):
        Translator.from_bundle(damaged)


def test_wrong_format_version_is_refused(bundle, tmp_path):
    _, out, _, _ = bundle
    other = str(tmp_path / "future")
    shutil.copytree(out, other)
    manifest = json.load(open(os.path.join(other, "manifest.json")))
    manifest["format_version"] = 99
    json.dump(manifest, open(os.path.join(other, "manifest.json"), "w"))
    with pytest.raises(BundleError, match=r"manifest\.json: format_version 99"):
        Translator.from_bundle(other)


def test_interrupted_export_leaves_the_old_bundle_intact(bundle, tmp_path, monkeypatch):
    run_dir, out, _, _ = bundle
    target = str(tmp_path / "bundle")
    shutil.copytree(out, target)
    before = {name: open(os.path.join(target, name), "rb").read() for name in os.listdir(target)}

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("interrupted in the gate")

    monkeypatch.setattr(bundle_module, "run_gate", crash)
    with pytest.raises(KeyboardInterrupt):
        export_bundle(run_dir, target, ExportOptions())
    after = {name: open(os.path.join(target, name), "rb").read() for name in os.listdir(target)}
    assert after == before
    assert os.listdir(tmp_path) == ["bundle"]
    Translator.from_bundle(target).translate(["hello"])


def test_failed_gate_refuses_the_export_and_keeps_the_old_bundle(bundle, tmp_path, capsys):
    run_dir, out, _, _ = bundle
    target = str(tmp_path / "bundle")
    shutil.copytree(out, target)
    code = export_main([run_dir, "--out", target, "--quantize", "int8", "--max-int8-loss", "-1"])
    assert code == 2
    assert "gate (c)" in capsys.readouterr().err
    Translator.from_bundle(target)


def test_the_averaged_weights_can_be_exported(bundle, tmp_path, capsys):
    from keras_s2s.decoder import make_translator

    run_dir = bundle[0]  # trained with training.average_last_epochs=2
    target = str(tmp_path / "averaged")
    assert export_main([run_dir, "--out", target, "--checkpoint", "averaged", "--gate-sentences", "20"]) == 0
    assert json.load(open(os.path.join(target, "manifest.json")))["checkpoint"] == "averaged"
    translator = Translator.from_bundle(target)
    sources = [translator.source_vocabulary.encode(w) for w in ["hello", "world", "abracadabra", "onnxruntime"]]

    def scores(found):
        return [hypotheses[0].score for hypotheses in found]

    exported = scores(translator.translate_ids(sources, beam_size=3))
    averaged = scores(make_translator(run_dir, checkpoint="averaged").translate_ids(sources, beam_size=3))
    best = scores(make_translator(run_dir, checkpoint="best").translate_ids(sources, beam_size=3))
    np.testing.assert_allclose(exported, averaged, atol=1e-4)
    assert np.abs(np.array(exported) - np.array(best)).max() > 1e-3  # not the best-dev-loss weights
    assert "averaged weights" in capsys.readouterr().err


def test_translate_cli_keeps_lines(bundle):
    _, out, _, _ = bundle
    data = b"hello\n\n   \nworld\n" + b"bad\xffbyte\n"
    result = subprocess.run(
        [sys.executable, "-m", "serving.cli", out, "--beam", "2"],
        input=data,
        capture_output=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr.decode()
    lines = result.stdout.decode().split("\n")
    assert len(lines) == 6 and lines[-1] == ""
    assert lines[1] == "" and lines[2] == "" and lines[0] != ""
    assert b"invalid UTF-8" in result.stderr


def test_export_killed_midway_leaves_the_old_bundle_and_is_cleaned_up(bundle, tmp_path):
    run_dir, out, _, _ = bundle
    target = tmp_path / "bundle"
    shutil.copytree(out, target)
    before = {name: (target / name).read_bytes() for name in os.listdir(target)}
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    process = subprocess.Popen(
        [sys.executable, "-m", "export.cli", run_dir, "--out", str(target)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    partial = []
    while time.monotonic() < deadline and process.poll() is None:
        partial = [p for p in tmp_path.iterdir() if p.name.startswith("bundle.partial-")]
        if partial and (partial[0] / "encoder.onnx").exists():
            break
        time.sleep(0.05)
    assert partial, "the export never got midway"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert {name: (target / name).read_bytes() for name in os.listdir(target)} == before
    Translator.from_bundle(str(target)).translate(["hello"])
    # A later export clears what the killed one left behind.
    recover_interrupted_export(str(target))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_a_kill_between_the_two_renames_is_recovered(bundle, tmp_path):
    _, out, _, _ = bundle
    moved_aside = tmp_path / "bundle.old-x1y2"
    shutil.copytree(out, moved_aside)
    recover_interrupted_export(str(tmp_path / "bundle"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]
    Translator.from_bundle(str(tmp_path / "bundle"))


def test_decoder_step_selects_the_best_tokens_in_the_graph(bundle):
    _, out, _, _ = bundle
    for int8 in (False, True):
        translator = Translator.from_bundle(out, int8=int8, engine="steps")
        assert translator.decoder_step.has_top_k
        state = translator.encode(np.array([[5, 6, 7]], np.int32), np.array([3], np.int32))
        tokens = np.array([2], np.int32)
        full, _ = translator.decoder_step(tokens, state)
        (values, ids), _ = translator.decoder_step(tokens, state, top_k=4)
        assert ids.shape == (1, 4)
        np.testing.assert_array_equal(ids[0], np.argsort(-full[0], kind="stable")[:4])
        np.testing.assert_allclose(values[0], np.sort(full[0])[::-1][:4], rtol=1e-6)


def test_the_ort_format_translators_give_the_onnx_files_outputs(bundle):
    """ONNX Runtime Mobile's files: gate (f) compared each with its .onnx file, and the
    minimal build's config lists the operators of all three, with their types."""
    import numpy as np

    from serving.sessions import open_session, search_feeds

    _, out, _, manifest = bundle
    assert manifest["models"]["float32"]["translator_ort"] == "translator.ort"
    assert manifest["models"]["int8"]["translator_ort"] == "translator.int8.ort"
    assert manifest["models"]["float32"]["text_translator_ort"] == "translator.text.ort"
    for name in ("translator.ort", "translator.int8.ort", "translator.text.ort"):
        entry = manifest["gate"]["ort"][name]
        assert entry["identical_share"] == 1.0 and entry["max_score_diff"] <= 1e-5 and entry["sentences"] >= 40
    config = open(os.path.join(out, "required_operators_and_types.config"), encoding="utf-8").read()
    for operator in ("Loop", "TopK", "StringSplit", "RegexFullMatch", "DynamicQuantizeLSTM"):
        assert operator in config
    assert manifest["mobile"]["operators"] >= 30 and manifest["mobile"]["conversion"]["target_platform"] == "arm"
    feeds = {"texts": np.array(["zebra", "", "cr\ronly"], dtype=object), **search_feeds(3, 3, 1.0, 2.0, 10)}
    outputs = [
        open_session(os.path.join(out, name), ["CPUExecutionProvider"], 1).run(["translations", "text_scores"], feeds)
        for name in ("translator.text.onnx", "translator.text.ort")
    ]
    assert outputs[0][0].tolist() == outputs[1][0].tolist()
    np.testing.assert_allclose(outputs[0][1], outputs[1][1], atol=1e-5)
