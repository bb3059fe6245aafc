"""The same translator files from JavaScript: onnxruntime-node, onnxruntime-web's wasm
backend under Node.js, and the demo page in headless Chromium, against Python's onnxruntime.

Needs `npm ci --ignore-scripts` in web/ and Debian's chromium (`make test` installs both)."""

import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from bench.common import demo_page
from serving.sessions import TranslatorGraphSession, open_session
from serving.tokenizers import load_vocabulary
from serving.translator import Translator

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WEB = os.path.join(ROOT, "web")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
TEXTS = [
    "hello",
    "",
    "  ",
    "zebra",
    "abracadabra",
    "🙂",
    "a🙂b",
    "ÀÉÎ",
    "x",
    "sequence",
    "HELLO",
    "q" * 80,
    "onnxruntime",
    "keras",
    "to",
    "phoneme",
]
SETTINGS = [
    {"beamSize": 1, "nBest": 1},
    {"beamSize": 3, "nBest": 3},
    {"beamSize": 5, "nBest": 2, "lengthPenalty": 0.6, "maxLengthA": 1.2, "maxLengthB": 4},
]


def _node(*args, **kwargs):
    if not os.path.isdir(os.path.join(WEB, "node_modules", "onnxruntime-web")):
        pytest.fail("web/node_modules is missing: run `npm ci --ignore-scripts` in web/ (make test does)")
    return subprocess.run(["node", *args], cwd=ROOT, capture_output=True, text=True, timeout=300, **kwargs)


@pytest.fixture(scope="module")
def fixture(tiny_bundle, tmp_path_factory):
    bundle = tiny_bundle[1]
    manifest = json.load(open(os.path.join(bundle, "manifest.json")))
    source = load_vocabulary(os.path.join(bundle, manifest["tokenizers"]["source"]))
    sources = [source.encode(text)[: manifest["max_source_length"]] for text in TEXTS]
    path = tmp_path_factory.mktemp("web") / "fixture.json"
    path.write_text(json.dumps({"texts": TEXTS, "sources": sources, "settings": SETTINGS}))
    return bundle, manifest, sources, str(path)


def _python_outputs(bundle, manifest, sources):
    """What Python's onnxruntime gives on the same files and inputs."""
    graph = TranslatorGraphSession(os.path.join(bundle, "translator.onnx"), ["CPUExecutionProvider"], 1)
    text = open_session(os.path.join(bundle, "translator.text.onnx"), ["CPUExecutionProvider"], 1)
    out = {"text": [], "ids": []}
    for setting in SETTINGS:
        options = dict(
            beam_size=setting["beamSize"],
            n_best=setting["nBest"],
            length_penalty=setting.get("lengthPenalty", manifest["decode"]["length_penalty"]),
            max_length_a=setting.get("maxLengthA", manifest["decode"]["max_length_a"]),
            max_length_b=setting.get("maxLengthB", manifest["decode"]["max_length_b"]),
        )
        out["ids"].append(
            [[(h.token_ids, h.score, h.finished) for h in hypotheses] for hypotheses in graph(sources, **options)]
        )
        feeds = {"texts": np.array(TEXTS, dtype=object)}
        feeds.update(
            {
                name: np.array(value, np.float64 if isinstance(value, float) else np.int64)
                for name, value in options.items()
            }
        )
        translations, scores = text.run(["translations", "text_scores"], feeds)
        out["text"].append(
            [
                [(str(t), float(s)) for t, s in zip(row_t, row_s) if np.isfinite(s)]
                for row_t, row_s in zip(translations, scores)
            ]
        )
    return out


def _assert_same(javascript, python):
    for got_setting, want_setting in zip(javascript["ids"], python["ids"], strict=True):
        for got, want in zip(got_setting, want_setting, strict=True):
            assert [(h["tokenIds"], h["finished"]) for h in got] == [(ids, done) for ids, _, done in want]
            assert [h["score"] for h in got] == pytest.approx([score for _, score, _ in want], abs=1e-5)
    for got_setting, want_setting in zip(javascript["text"], python["text"], strict=True):
        for got, want in zip(got_setting, want_setting, strict=True):
            assert [h["text"] for h in got] == [text for text, _ in want]
            assert [h["score"] for h in got] == pytest.approx([score for _, score in want], abs=1e-5)


@pytest.mark.parametrize("backend", ["node", "wasm"])
def test_node_and_wasm_give_pythons_outputs(fixture, backend):
    bundle, manifest, sources, path = fixture
    result = _node("tests/web/run_fixture.mjs", backend, bundle, path)
    assert result.returncode == 0, result.stderr[-3000:]
    _assert_same(json.loads(result.stdout), _python_outputs(bundle, manifest, sources))


@pytest.fixture(scope="module")
def page_server(tiny_bundle):
    with demo_page(tiny_bundle[1]) as url:
        yield url


def _chromium():
    if not os.path.exists(CHROMIUM) and not shutil.which("chromium"):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (make test does as root)")


def test_the_demo_page_in_chromium_gives_pythons_outputs(fixture, page_server, tiny_bundle):
    _chromium()
    bundle, manifest, sources, path = fixture
    result = _node("web/page.mjs", page_server, "--fixture", path, "--type", "zebra")
    assert result.returncode == 0, result.stderr[-3000:]
    page = json.loads(result.stdout)
    assert page["errors"] == []
    _assert_same(page["fixture"], _python_outputs(bundle, manifest, sources))
    # Typing shows the n-best list of what was typed, with its scores and the time taken.
    expected = Translator.from_bundle(bundle).translate(["zebra"], beam_size=5, n_best=3)[0]
    assert [row[1] for row in page["table"]] == [t.text for t in expected]
    assert [float(row[2]) for row in page["table"]] == pytest.approx([t.score for t in expected], abs=1e-3)
    assert " ms for beam 5, 3-best" in page["status"]


def test_translate_mjs_writes_one_line_per_input_line_in_order(tiny_bundle, tmp_path):
    bundle = tiny_bundle[1]
    lines = ["hello", "", "zebra", "🙂", "   ", "hello", "abracadabra"] * 6
    stdin = "\n".join(lines) + "\n"
    result = _node(
        "web/translate.mjs", bundle, "--beam", "3", "--n-best", "2", "--json", "--batch-size", "5", input=stdin
    )
    assert result.returncode == 0, result.stderr
    found = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(found) == len(lines)
    expected = Translator.from_bundle(bundle).translate(lines, beam_size=3, n_best=2)
    for got, want in zip(found, expected):
        assert [h["text"] for h in got] == [t.text for t in want]
        assert [h["score"] for h in got] == pytest.approx([t.score for t in want], abs=1e-4)
    plain = _node("web/translate.mjs", bundle, "--backend", "wasm", input=stdin)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.split("\n")[:-1] == [h[0]["text"] for h in found]
    # Source ids in, ids out, for bundles without a text translator.
    ids = _node("web/translate.mjs", bundle, "--ids", "--beam", "3", input="5 6 7\n\n8\n")
    assert ids.returncode == 0, ids.stderr
    assert len(ids.stdout.split("\n")[:-1]) == 3
    # A bad line gets an empty output line and a warning; the others are translated.
    bad = _node("web/translate.mjs", bundle, "--ids", input="5 6\n5 x\n7\n")
    assert bad.returncode == 1 and "line 2: not translated" in bad.stderr, bad.stderr
    written = bad.stdout.split("\n")[:-1]
    assert len(written) == 3 and written[1] == "" and written[0] and written[2]
    damaged = tmp_path / "damaged"
    shutil.copytree(bundle, damaged)
    with open(damaged / "translator.text.onnx", "r+b") as handle:
        handle.seek(200)
        handle.write(b"\x00\x01")
    refused = _node("web/translate.mjs", str(damaged), input="hello\n")
    assert refused.returncode == 2, refused.stderr
    assert f"{os.path.join(str(damaged), 'translator.text.onnx')}: sha256 does not match" in refused.stderr
