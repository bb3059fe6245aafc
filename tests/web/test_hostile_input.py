"""Hostile input, one contract in every front end: only `\\n` ends a line, every other
character (NUL, a bare `\\r`, U+2028, C0 and C1 controls) is inside its line, one line out
per line in, in order, the same bytes as `s2s-translate`, and work per line bounded by the
model's source limit, in the text graph too.

Needs `npm ci --ignore-scripts` in web/ and Debian's chromium (`make test` installs both)."""

import json
import os
import subprocess
import sys

import pytest

from bench.common import demo_page
from bench.hostile import hostile_bytes, line_count, text_graph_lines
from serving.cli import decoded_lines, main
from serving.tokenizers import NUL_STAND_IN
from serving.translator import Translator

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LONG = 1_000_000


def _node(*args, **kwargs):
    if not os.path.isdir(os.path.join(ROOT, "web", "node_modules", "onnxruntime-web")):
        pytest.fail("web/node_modules is missing: run `npm ci --ignore-scripts` in web/ (make test does)")
    return subprocess.run(["node", *args], cwd=ROOT, capture_output=True, timeout=300, **kwargs)


@pytest.fixture(scope="module")
def hostile(tiny_bundle, tmp_path_factory):
    """The hostile file, and what `s2s-translate` writes for it: `(bundle, path, bytes)`."""
    bundle = tiny_bundle[1]
    folder = tmp_path_factory.mktemp("hostile")
    path, out = str(folder / "hostile.txt"), str(folder / "out.txt")
    data = hostile_bytes(LONG)
    with open(path, "wb") as handle:
        handle.write(data)
    assert main([bundle, "-i", path, "-o", out]) == 0
    with open(out, "rb") as handle:
        expected = handle.read()
    assert expected.count(b"\n") == line_count(data) == len(data.split(b"\n"))
    return bundle, path, expected


def _lines(path: str) -> list[str]:
    with open(path, "rb") as handle:
        return [text for _, text, _ in decoded_lines(handle)]


def _joined(texts) -> bytes:
    return "".join(f"{text}\n" for text in texts).encode()


def test_python_reads_lines_as_the_contract_says():
    data = b"\xef\xbb\xbfbom\r\nx\r\r\ncr\ronly\nnul\x00\x85\xe2\x80\xa8in\n\n\xffbad\nlast\r"
    got = list(decoded_lines(_split_on_newline(data)))
    assert [text for _, text, _ in got] == [
        "bom",
        "x\r",
        "cr\ronly",
        "nul\x00\ufffd\u2028in",
        "",
        "\ufffdbad",
        "last\r",
    ]
    assert [bad for _, _, bad in got] == [False, False, False, True, False, True, False]


def _split_on_newline(data: bytes) -> list[bytes]:
    """What iterating over a binary file yields: lines ended by `\\n` only."""
    pieces = data.split(b"\n")
    return [piece + b"\n" for piece in pieces[:-1]] + ([pieces[-1]] if pieces[-1] else [])


def test_javascript_reads_lines_as_python_does_across_chunk_boundaries():
    data = b"\xef\xbb\xbfbom\r\nx\r\r\ncr\ronly\nnul\x00\x85\xe2\x80\xa8in\n\n\xffbad\nlast\r"
    script = (
        "import {readLines} from './web/s2s.mjs';"
        "const data = Buffer.from(process.argv[1], 'hex'); const out = [];"
        "for (let size = 1; size <= data.length; size++) {"
        "  const chunks = []; for (let at = 0; at < data.length; at += size) chunks.push(data.subarray(at, at + size));"
        "  const lines = []; for await (const line of readLines(chunks)) lines.push(line); out.push(lines); }"
        "process.stdout.write(JSON.stringify(out));"
    )
    stand_in = _node(
        "--input-type=module", "-e", "import {NUL_STAND_IN} from './web/s2s.mjs'; process.stdout.write(NUL_STAND_IN)"
    )
    assert stand_in.stdout.decode() == NUL_STAND_IN  # the character Python's documentation names
    result = _node("--input-type=module", "-e", script, data.hex())
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    python = [[number, text, not bad] for number, text, bad in decoded_lines(_split_on_newline(data))]
    for lines in json.loads(result.stdout):  # every chunk size, a "\r\n" split between chunks included
        assert lines == python


@pytest.mark.filterwarnings("ignore::serving.decoding.TruncationWarning")
def test_every_python_front_end_gives_s2s_translates_bytes(hostile):
    bundle, path, expected = hostile
    lines = _lines(path)
    assert _joined(Translator.from_bundle(bundle).translate_best(lines)) == expected
    assert _joined(text_graph_lines(bundle, lines)) == expected


@pytest.mark.parametrize("backend", ["node", "wasm"])
def test_translate_mjs_gives_s2s_translates_bytes(hostile, backend):
    bundle, path, expected = hostile
    result = _node("web/translate.mjs", bundle, "-i", path, "--backend", backend)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    assert result.stdout == expected
    stderr = result.stderr.decode()
    assert "more than" in stderr and "truncated" in stderr  # the long line, with its number
    assert "invalid UTF-8 replaced" in stderr
    # The same lines on stdin, in small batches.
    piped = _node("web/translate.mjs", bundle, "--backend", backend, "--batch-size", "5", input=open(path, "rb").read())
    assert piped.returncode == 0 and piped.stdout == expected


def test_the_demo_page_gives_s2s_translates_bytes(hostile):
    if not os.path.exists(os.environ.get("CHROMIUM", "/usr/bin/chromium")):
        pytest.fail("chromium is missing: apt-get install chromium (make test does as root)")
    bundle, path, expected = hostile
    with demo_page(bundle) as url:
        result = _node("web/page.mjs", url, "--lines", path)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    assert result.stdout == expected


PEAK = """
import resource, sys
import numpy as np
from serving.sessions import open_session, search_feeds
from bench.hostile import hostile_lines
session = open_session(sys.argv[1] + "/translator.text.onnx", ["CPUExecutionProvider"], 1)
feeds = search_feeds(3, 1, 1.0, 2.0, 10)
long = [line.decode("utf-8") for line in hostile_lines(int(sys.argv[2])) if len(line) > 1000]
def peak_after(texts):
    session.run(["translations"], {"texts": np.array(texts, dtype=object), **feeds})
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
short = peak_after(["hello", "zebra"] * 16)
print(short, peak_after(["hello"] * 29 + long * 3))
"""


def test_the_text_graphs_memory_on_long_lines_stays_bounded(tiny_bundle):
    """A batch with three 1,000,000-character lines costs the graph a few copies of its
    text, not tensors that grow with the line: peak RSS grows by well under 100 MB."""
    result = subprocess.run(
        [sys.executable, "-c", PEAK, tiny_bundle[1], str(LONG)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    short, long = map(float, result.stdout.split())
    assert long - short < 100, f"peak RSS {short:.0f} MB -> {long:.0f} MB"
