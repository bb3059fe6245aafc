"""The device-side translator on a real exported bundle."""

import os
import subprocess
import threading
import venv

import pytest

from serving.translator import Translator

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def translator(tiny_bundle):
    return Translator.from_bundle(tiny_bundle[1])


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
        capture_output=True, text=True, timeout=900,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    absent = subprocess.run([python, "-c", "import importlib.util as u; print([m for m in ('tensorflow', 'keras', 'tf2onnx') if u.find_spec(m)])"],
                            capture_output=True, text=True)
    assert absent.stdout.strip() == "[]"
    env = dict(os.environ, PYTHONPATH=ROOT)
    result = subprocess.run([python, "-m", "serving.cli", tiny_bundle[1], "--beam", "5"], input="hello\n\nworld\n",
                            capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    expected = [r[0].text for r in Translator.from_bundle(tiny_bundle[1]).translate(["hello", "", "world"], beam_size=5)]
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
