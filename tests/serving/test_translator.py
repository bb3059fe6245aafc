"""The device-side translator on a real exported bundle."""

import os
import subprocess
import threading
import venv

import numpy as np
import pytest

from serving.translator import Translator

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def translator(tiny_bundle):
    return Translator.from_bundle(tiny_bundle[1], engine="steps")


def test_odd_lines_keep_count_and_order(translator):
    lines = ["", "   ", "x" * 10_000, "🙂🙂", "привет", "こんにちは", "hello", "", "hello"]
    with pytest.warns(UserWarning, match="truncated"):
        results = translator.translate(lines, beam_size=2)
    assert len(results) == len(lines)
    assert results[0][0].text == "" and results[1][0].text == "" and results[7][0].text == ""
    assert results[6][0].text == results[8][0].text != ""


def test_n_best_returns_distinct_hypotheses_ordered_by_score(translator):
    for hypotheses in translator.translate(["abandon", "zebra", "quick"], beam_size=5, n_best=4):
        assert len(hypotheses) == 4
        assert len({tuple(h.token_ids) for h in hypotheses}) == 4
        scores = [h.score for h in hypotheses]
        assert scores == sorted(scores, reverse=True)


def test_batches_equal_one_by_one(translator):
    words = ["a", "longerword", "mid", "pneumonia", "x", "sequence", "to", "sequences"]
    together = translator.translate(words, beam_size=3, batch_size=3)
    for word, result in zip(words, together):
        alone = translator.translate([word], beam_size=3, batch_size=1)[0]
        assert alone[0].token_ids == result[0].token_ids
        assert alone[0].score == pytest.approx(result[0].score, abs=1e-5)


def test_two_threads_get_the_same_results_as_one(translator):
    words = [f"{w}{i}" for i in range(3) for w in ("alpha", "beta", "gamma", "delta", "epsilon")]
    expected = [r[0].text for r in translator.translate(words, beam_size=3)]
    found = {}

    def work(name):
        found[name] = [r[0].text for r in translator.translate(words, beam_size=3, batch_size=4)]

    threads = [threading.Thread(target=work, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert found[0] == found[1] == expected


def test_translator_runs_in_a_venv_without_tensorflow_or_keras(tiny_bundle, tmp_path):
    """A fresh venv with only serving/requirements.txt installed translates the bundle."""
    environment = tmp_path / "venv"
    venv.create(environment, with_pip=True)
    python = str(environment / "bin" / "python")
    install = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "-r", os.path.join(ROOT, "serving", "requirements.txt")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    absent = subprocess.run(
        [
            python,
            "-c",
            "import importlib.util as u; print([m for m in ('tensorflow', 'keras', 'tf2onnx') if u.find_spec(m)])",
        ],
        capture_output=True,
        text=True,
    )
    assert absent.stdout.strip() == "[]"
    env = dict(os.environ, PYTHONPATH=ROOT)
    result = subprocess.run(
        [python, "-m", "serving.cli", tiny_bundle[1], "--beam", "5"],
        input="hello\n\nworld\n",
        capture_output=True,
        text=True,
        env=env,
        cwd=str(tmp_path),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    expected = [
        r[0].text for r in Translator.from_bundle(tiny_bundle[1]).translate(["hello", "", "world"], beam_size=5)
    ]
    assert result.stdout.split("\n")[:3] == expected


def test_cli_file_in_file_out_with_json_and_progress(tiny_bundle, tmp_path, capsys):
    import json

    from serving.cli import main

    source = tmp_path / "in.txt"
    source.write_text("hello\n\nworld\n", encoding="utf-8")
    target = tmp_path / "out.jsonl"
    assert main([tiny_bundle[1], "-i", str(source), "-o", str(target), "--json", "--n-best", "2", "--beam", "3"]) == 0
    rows = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 3 and len(rows[0]) == 2 and rows[0][0]["score"] >= rows[0][1]["score"]
    assert rows[1] == [{"text": "", "score": 0.0}]
    assert "translating" in capsys.readouterr().err


WORDS = ["hello", "world", "", "translation", "a", "sequence"]


def test_an_ensemble_of_a_bundle_with_itself_translates_as_the_bundle(translator, tiny_bundle):
    from serving.translator import EnsembleTranslator

    ensemble = EnsembleTranslator([translator, Translator.from_bundle(tiny_bundle[1], engine="steps")])
    alone = translator.translate(WORDS, beam_size=3, n_best=2)
    together = ensemble.translate(WORDS, beam_size=3, n_best=2)
    assert [[t.text for t in found] for found in together] == [[t.text for t in found] for found in alone]
    for a, b in zip(alone, together):
        assert [t.score for t in b] == pytest.approx([t.score for t in a], abs=1e-5)


def _replay(member, source_ids, tokens):
    """A member's summed log-probability of `tokens` for one source, one step at a time."""

    from serving.batching import pad_sources

    ids, lengths = pad_sources([source_ids], reverse=member.reverse_source)
    state = member.encode(ids, lengths)
    total, previous = 0.0, member.special_ids["bos"]
    for token in tokens:
        log_probs, updates = member.decoder_step(np.array([previous], np.int32), state)
        state.update(updates)
        total, previous = total + float(log_probs[0, token]), token
    return total


def test_ensemble_hypotheses_score_the_mean_of_their_members(translator, tiny_bundle):
    # The second member is the bundle with a fixed per-token bias on its log-probabilities:
    # a model that disagrees with the first. (INT8 would be a real second model, but its
    # dynamic quantization depends on the batch, so one-row replays would not match.)

    from serving.translator import EnsembleTranslator

    other = Translator.from_bundle(tiny_bundle[1], engine="steps")
    step = other.decoder_step
    bias = np.random.default_rng(0).uniform(-3, 0, translator.target_vocabulary.vocabulary_size).astype(np.float32)

    class Biased:
        has_top_k = False

        def __call__(self, token_ids, state, top_k=None):
            log_probs, updates = step(token_ids, state)
            return log_probs + bias, updates

    other.decoder_step = Biased()
    ensemble = EnsembleTranslator([translator, other])
    sources = [translator.source_vocabulary.encode(word) for word in WORDS if word]
    results = ensemble.translate_ids(sources, beam_size=3, n_best=3)
    assert len(results) == len(sources)
    eos = translator.special_ids["eos"]
    for source, found in zip(sources, results):
        assert found
        for hypothesis in found:
            tokens = hypothesis.token_ids + ([eos] if hypothesis.finished else [])
            members = [_replay(member, source, tokens) for member in (translator, other)]
            assert abs(members[0] - members[1]) > 0.1
            assert sum(members) / 2 == pytest.approx(hypothesis.log_prob, abs=1e-4)


def test_an_ensemble_refuses_a_bundle_with_other_tokenizers(tiny_bundle, tmp_path):
    import json
    import shutil

    from serving.translator import BundleError, EnsembleTranslator, sha256_of

    other = tmp_path / "other"
    shutil.copytree(tiny_bundle[1], other)
    manifest = json.loads((other / "manifest.json").read_text(encoding="utf-8"))
    name = manifest["tokenizers"]["target"]
    vocabulary = json.loads((other / name).read_text(encoding="utf-8"))
    vocabulary["symbols"] = vocabulary["symbols"][:-1] + ["XX"]
    (other / name).write_text(json.dumps(vocabulary), encoding="utf-8")
    manifest["files"][name]["sha256"] = sha256_of(str(other / name))
    (other / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(BundleError, match=f"{name}: the target tokenizer differs"):
        EnsembleTranslator(
            [Translator.from_bundle(tiny_bundle[1], engine="steps"), Translator.from_bundle(str(other), engine="steps")]
        )


def test_cli_ensemble_translates_every_line_in_order(tiny_bundle, tmp_path, capsys):
    from serving.cli import main

    source = tmp_path / "in.txt"
    source.write_text("\n".join(WORDS) + "\n", encoding="utf-8")
    single, double = tmp_path / "single.txt", tmp_path / "double.txt"
    assert main([tiny_bundle[1], "-i", str(source), "-o", str(single), "--beam", "2"]) == 0
    assert (
        main([tiny_bundle[1], "-i", str(source), "-o", str(double), "--beam", "2", "--ensemble", tiny_bundle[1]]) == 0
    )
    assert double.read_text(encoding="utf-8") == single.read_text(encoding="utf-8")
    assert len(double.read_text(encoding="utf-8").splitlines()) == len(WORDS)


def test_step_work_per_row_from_the_manifest_matches_the_graph(tiny_bundle):
    _, bundle, _, manifest = tiny_bundle
    from bench.decode import weight_flops_per_row
    from serving.sessions import step_mflop_per_row

    # Counted from the graph's weights (LSTM W and R, the MatMul weights).
    expected, _ = weight_flops_per_row(os.path.join(bundle, manifest["models"]["float32"]["decoder_step"]))
    assert step_mflop_per_row(manifest["config"]["model"]) == pytest.approx(expected / 1e6, rel=1e-9)


def test_small_steps_run_on_one_thread_with_the_same_results(tiny_bundle):
    bundle = tiny_bundle[1]
    words = ["alpha", "quick", "zebra", "pneumonia"]
    several = Translator.from_bundle(bundle, num_threads=2, engine="steps")
    step = several.decoder_step
    assert step.one_thread_rows > 5  # a tiny model: every call of a small batch
    assert Translator.from_bundle(bundle, num_threads=1, engine="steps").decoder_step.one_thread_rows == 0
    plain = Translator.from_bundle(bundle, num_threads=2, engine="steps")
    plain.decoder_step.one_thread_rows = 0
    for word in words:
        found = several.translate([word], beam_size=3, n_best=3)[0]
        expected = plain.translate([word], beam_size=3, n_best=3)[0]
        assert [h.token_ids for h in found] == [h.token_ids for h in expected]
        assert [h.score for h in found] == pytest.approx([h.score for h in expected], abs=1e-6)
    assert plain.decoder_step._one_thread is None
    assert step._one_thread.get_session_options().intra_op_num_threads == 1
    assert step.session.get_session_options().intra_op_num_threads == 2
    # At the threshold and above, the session with every thread.
    wide = Translator.from_bundle(bundle, num_threads=2, engine="steps")
    wide.decoder_step.one_thread_rows = 3
    wide.translate(words, beam_size=3, batch_size=1)  # 3 rows per step
    assert wide.decoder_step._one_thread is None
