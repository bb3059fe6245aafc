"""Hostile input through every front end: one output line per input line, the same bytes as
`s2s-translate`, in bounded time and memory.

    python bench/hostile.py --bundle runs/g2p_small.bundle [--long 1000000] [--repeats 3]

The input (`hostile_bytes`) holds ordinary words, every C0 control character inside a
line (NUL and a bare carriage return among them), U+0085, U+2028 and U+2029, blank lines,
invalid UTF-8, `\\r\\n` endings, a byte-order mark, one line of `--long` characters and a
last line without a newline. Each front end translates the file in a process of its own:
`s2s-translate`, `translator.text.onnx` called directly from Python, `web/translate.mjs`
on onnxruntime-node and on onnxruntime-web's wasm backend, and the demo page in headless
Chromium. The table gives each one's wall time (median of `--repeats`) against
`s2s-translate`'s and its peak RSS (the page: its largest Chromium process), and whether
its output equals `s2s-translate`'s byte for byte. Results go to bench/results/hostile.json.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import ROOT, git_commit, machine, median, table, write_result

# Every character class the line contract names, each inside a line and alone on one.
SEPARATORS = ["\x85", "\u2028", "\u2029", "\r", "\x0b", "\x0c", "\x00"]
WORDS = (
    "hello sequence phoneme keras onnxruntime zebra abracadabra to a x the quick brown fox jumps over lazy dog "
    "translation encoder decoder beam search lexicon stress reversed source bucket gradient clipping attention "
    "vector deep memory network train export device phone board browser server"
).split()


def hostile_lines(long: int = 1_000_000, seed: int = 0) -> list[bytes]:
    """The lines of the hostile input, as bytes without their endings."""
    rng = random.Random(seed)
    text = [f"{word}" for word in WORDS] + [word.upper() for word in WORDS[:10]]
    text += ["", " ", "\t", "\u3000", "  two  words  ", "l'été", "ñandú 🙂", "🙂", "a🙂🙂b", "ÀÉÎõ", "zebra\u200b"]
    text += ["e\u0301te\u0301", "שלום", "中文", "q" * 300, "\ufeffinner bom", "\ufffe\uffff"]
    text += [f"ab{chr(code)}cd" for code in range(0x20) if code != 0x0A]  # every C0 control but \n
    text += [chr(code) for code in range(0x20) if code not in (0x0A, 0x0D)]  # and alone
    text += [f"cr{s}inside" for s in SEPARATORS] + [f"{s}lead" for s in SEPARATORS] + [f"trail{s}" for s in SEPARATORS]
    text += ["\x7f", "del\x7fete", "c1\x9ccontrol", "x\r\r"]  # "x\r\r" + "\r\n": one \r stays
    alphabet = "abcdefghijklmnopqrstuvwxyz' -" + "🙂é\x00\r\u2028\x85\tXYZ"
    text += ["".join(rng.choice(alphabet) for _ in range(long))]
    text += [f"{word} again" for word in WORDS]
    lines = [line.encode("utf-8") for line in text]
    lines += [b"caf\xe9", b"\xff\xfe", b"\xe2\x82", b"\xed\xa0\x80 surrogate", b"ok \xc0\xaf overlong"]
    lines[0] = "\ufeff".encode() + lines[0]  # a byte-order mark on line 1 is dropped
    return lines


def hostile_bytes(long: int = 1_000_000, seed: int = 0) -> bytes:
    """The hostile input file: `\\n` and some `\\r\\n` endings, the last line without one."""
    lines = hostile_lines(long, seed) + [b"phoneme"]
    ends = [b"\r\n" if index % 7 == 3 else b"\n" for index in range(len(lines) - 1)] + [b""]
    return b"".join(line + end for line, end in zip(lines, ends))


def line_count(data: bytes) -> int:
    """Lines as `s2s-translate` counts them: `\\n`-ended ones and a last one without."""
    return data.count(b"\n") + (not data.endswith(b"\n"))


def run_measured(command: list[str], cwd: str = ROOT, stdin: bytes | None = None) -> dict:
    """Runs `command`; returns its stdout bytes, exit status, wall seconds and peak RSS (MB)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as inp:
        if stdin is not None:
            inp.write(stdin)
            inp.seek(0)
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, stdin=inp, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return {
            "stdout": out.read(),
            "stderr": err.read().decode("utf-8", "replace"),
            "returncode": process.returncode,
            "seconds": seconds,
            "peak_rss_mb": usage.ru_maxrss / 1024,
        }


def text_graph_lines(bundle: str, lines: list[str], batch_size: int = 32) -> list[str]:
    """The best translation of each line from `translator.text.onnx` called directly, as a
    C++ or Java caller would call it (NUL replaced by `NUL_STAND_IN`, the bundle's default
    beam)."""
    import json

    import numpy as np

    from serving.sessions import open_session, search_feeds
    from serving.tokenizers import NUL_STAND_IN

    with open(os.path.join(bundle, "manifest.json"), encoding="utf-8") as handle:
        decode = json.load(handle)["decode"]
    session = open_session(os.path.join(bundle, "translator.text.onnx"), ["CPUExecutionProvider"], None)
    feeds = search_feeds(
        decode["beam_size"], 1, decode["length_penalty"], decode["max_length_a"], decode["max_length_b"]
    )
    out = []
    for start in range(0, len(lines), batch_size):
        texts = np.array(
            [line.replace("\x00", NUL_STAND_IN) for line in lines[start : start + batch_size]], dtype=object
        )
        translations, scores = session.run(["translations", "text_scores"], {"texts": texts, **feeds})
        out += [str(t).replace("\n", " ") if np.isfinite(s) else "" for t, s in zip(translations[:, 0], scores[:, 0])]
    return out


DIRECT = """
import sys
from bench.hostile import text_graph_lines
from serving.cli import decoded_lines
with open(sys.argv[2], "rb") as handle:
    lines = [text for _, text, _ in decoded_lines(handle)]
sys.stdout.buffer.write("".join(line + "\\n" for line in text_graph_lines(sys.argv[1], lines)).encode())
"""


def front_ends(bundle: str, path: str, page_url: str | None) -> dict:
    """The command of each front end on the file at `path`."""
    python = sys.executable
    commands = {
        "s2s-translate": [python, "-m", "serving.cli", bundle, "-i", path],
        "translator.text.onnx (Python)": [python, "-c", DIRECT, bundle, path],
        "web/translate.mjs (onnxruntime-node)": ["node", "web/translate.mjs", bundle, "-i", path],
        "web/translate.mjs (onnxruntime-web, wasm)": [
            "node",
            "web/translate.mjs",
            bundle,
            "-i",
            path,
            "--backend",
            "wasm",
        ],
    }
    if page_url:
        commands["demo page (Chromium, onnxruntime-web)"] = ["node", "web/page.mjs", page_url, "--lines", path]
    return commands


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--long", type=int, default=1_000_000, help="characters of the long line")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-page", action="store_true", help="leave out the demo page (no Chromium)")
    parser.add_argument("--out", default=None, help="result JSON (default: bench/results/hostile.json)")
    args = parser.parse_args(argv)
    from bench.common import demo_page

    data = hostile_bytes(args.long)
    # As many ordinary lines: what each front end costs on input that is not hostile.
    ordinary = b"".join(f"{WORDS[i % len(WORDS)]}\n".encode() for i in range(line_count(data)))
    rows = []
    with tempfile.TemporaryDirectory() as work:
        paths = {"hostile": os.path.join(work, "hostile.txt"), "ordinary": os.path.join(work, "ordinary.txt")}
        for kind, content in (("hostile", data), ("ordinary", ordinary)):
            with open(paths[kind], "wb") as handle:
                handle.write(content)
        page = demo_page(args.bundle) if not args.no_page else None
        url = page.__enter__() if page else None
        try:
            runs: dict = {}
            for _ in range(args.repeats):  # interleaved, so that a slow spell hits every front end
                for kind, path in paths.items():
                    for name, command in front_ends(os.path.abspath(args.bundle), path, url).items():
                        result = run_measured(command)
                        if name.startswith("demo page"):
                            result["peak_rss_mb"] = _page_peak(result)
                        runs.setdefault((kind, name), []).append(result)
        finally:
            if page:
                page.__exit__(None, None, None)
    baseline = median([r["seconds"] for r in runs[("hostile", "s2s-translate")]])
    reference = runs[("hostile", "s2s-translate")][-1]["stdout"]
    for (kind, name), results in runs.items():
        if kind != "hostile":
            continue
        seconds = median([r["seconds"] for r in results])
        rows.append(
            {
                "front end": name,
                "lines out": results[-1]["stdout"].count(b"\n"),
                "same bytes as s2s-translate": all(r["stdout"] == reference for r in results),
                "exit": results[-1]["returncode"],
                "seconds": seconds,
                "x s2s-translate": seconds / baseline,
                "x its time on ordinary lines": seconds / median([r["seconds"] for r in runs[("ordinary", name)]]),
                "peak RSS MB": max(r["peak_rss_mb"] for r in results),
            }
        )
    columns = list(rows[0])
    print(f"{line_count(data)} lines in, the longest {args.long:,} characters ({len(data) / 1e6:.2f} MB)")
    print(table(rows, columns))
    write_result(
        "hostile",
        {"machine": machine(), "commit": git_commit(), "lines": line_count(data), "long": args.long, "rows": rows},
        args.out,
    )
    return 0


def _page_peak(result: dict) -> float:
    """page.mjs --lines reports its Chromium's peak RSS on its last stderr line."""
    for line in reversed(result["stderr"].splitlines()):
        if line.startswith("chromium peak RSS MB "):
            return float(line.split()[-1])
    return float("nan")


if __name__ == "__main__":
    sys.exit(main())
