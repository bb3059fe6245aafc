"""The documents stay true: every command block of the README and of docs/ runs.

Each document's `bash`, `python` and `js` blocks run in order, in a directory of their own
that holds what `make demo` leaves (`runs/g2p_small`, its bundle) and the input files the
blocks name, with the substitutions below (the `tiny` preset where a real preset trains for
minutes or hours). A block that cannot run here is listed in `NOT_RUN` with the reason;
`text` blocks are usage synopses, whose every option must exist in the command's parser.
A new block fails this test until it runs or is listed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys

import pytest

from keras_s2s.native_logs import is_native_log_line

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCUMENTS = [
    "README.md",
    *sorted(f"docs/{name}" for name in os.listdir(os.path.join(REPO, "docs")) if name.endswith(".md")),
]
RUNNABLE = ("bash", "python", "js")

# (pattern, replacement, why) applied to every runnable block.
SUBSTITUTIONS = [
    (
        r"--config bible_best\b",
        "--config tiny --set training.average_last_epochs=2",
        "bible_best trains for two hours and averages its last epochs",
    ),
    (r"--config (g2p_small|g2p_best|bible_small|paper)\b", "--config tiny", "the presets train for minutes to hours"),
    (r"--minutes \d+", "--minutes 1", "tiny trains in seconds"),
    (r"--seeds [\d,]+", "--seeds 1", "one seed exercises the same code"),
    (r"--layers [\d,]+", "--layers 1,2", "two depths exercise the same code"),
    (r"--max-minutes \d+", "--max-minutes 1", "tiny trains in seconds"),
    (r"training\.epochs=\d+", "training.epochs=2", "a study's epochs cap is what its minutes stop"),
    (r"\.seed2\b", ".seed1", "the sandbox trains one seed; a run ensembled with itself exercises the same code"),
    (r"--quantize int8", "--quantize int8 --max-int8-loss 100", "a 32-unit model loses more than a point to INT8"),
    (r"^pip install .*$", ":", "tests/test_packaging.py installs the wheel into a fresh virtual environment"),
    (r"\(cd web && npm ci --ignore-scripts\)", "test -d web/node_modules/onnxruntime-node", "make test ran it"),
    (r"bundles/bible_small", "bundles/g2p_small", "test_translator_graph.py runs a SentencePiece text graph"),
    (r"^make test\b.*$", ":", "it is the command that runs this test"),
    (
        r"^make demo\b",
        f"make -C {REPO} -o $VENV/bin/s2s VENV=$VENV DEMO_CONFIG=tiny MAX_INT8_LOSS=100 "
        "RUN_DIR=$PWD/runs/demo BUNDLE_DIR=$PWD/runs/demo.bundle demo",
        "the demo's own steps on tiny, with the installed environment",
    ),
]

# (document, a line of the block): why it does not run here.
NOT_RUN = {
    (
        "docs/training.md",
        "# machine A (chief)",
    ): "needs two machines; launch-local below runs the same TF_CONFIG on one",
    (
        "docs/serving.md",
        "python -m http.server",
    ): "serves until stopped; tests/web/test_web.py serves the page and opens it",
}


def blocks(document: str) -> list[tuple[str, str, int]]:
    """`(language, code, line)` of every fenced block of a document."""
    found, language, code, start = [], None, [], 0
    with open(os.path.join(REPO, document), encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            fence = re.match(r"^```(\w*)\s*$", line)
            if fence and language is None:
                language, code, start = fence.group(1) or "text", [], number
            elif line.startswith("```") and language is not None:
                found.append((language, "".join(code), start))
                language = None
            elif language is not None:
                code.append(line)
    return found


def _not_run(document: str, code: str) -> str | None:
    for (name, marker), why in NOT_RUN.items():
        if name == document and any(line.strip().startswith(marker) for line in code.splitlines()):
            return why
    return None


def _substituted(code: str) -> str:
    for pattern, replacement, _ in SUBSTITUTIONS:
        code = re.sub(pattern, replacement, code, flags=re.MULTILINE)
    return code


def test_every_not_run_entry_names_one_block():
    for document, marker in NOT_RUN:
        matches = [c for _, c, _ in blocks(document) if any(ln.strip().startswith(marker) for ln in c.splitlines())]
        assert len(matches) == 1, f"{document}: NOT_RUN {marker!r} matches {len(matches)} blocks"


def test_every_block_has_a_known_kind():
    for document in DOCUMENTS:
        for language, _, line in blocks(document):
            assert language in (*RUNNABLE, "text"), (
                f"{document}:{line}: a {language!r} block (use bash, python, js, text)"
            )


def _parsers() -> dict[str, argparse.ArgumentParser]:
    from export.cli import build_parser as export_parser
    from keras_s2s.cli import build_parser as s2s_parser
    from serving.cli import build_parser as translate_parser

    parsers = {"s2s-export": export_parser(), "s2s-translate": translate_parser()}

    def add(prefix: str, parser: argparse.ArgumentParser) -> None:
        parsers[prefix] = parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    add(f"{prefix} {name}", child)

    add("s2s", s2s_parser())
    return parsers


def test_every_option_of_a_synopsis_exists():
    """`text` blocks that show a command's usage name only options the command has."""
    parsers = _parsers()
    with open(os.path.join(REPO, "web", "translate.mjs"), encoding="utf-8") as handle:
        node_usage = handle.read()
    checked = 0
    for document in DOCUMENTS:
        for language, code, line in blocks(document):
            if language != "text":
                continue
            command = None
            for text in code.splitlines():
                words = text.split()
                if words and words[0] in ("s2s", "s2s-export", "s2s-translate"):
                    command = next(" ".join(words[:n]) for n in (3, 2, 1) if " ".join(words[:n]) in parsers)
                elif not text.startswith(" "):
                    command = None  # a line that is not a command or its continuation
                if command is None:
                    continue
                known = set(parsers[command]._option_string_actions)
                for option in re.findall(r"(?<![\w-])(--?[a-z][a-z0-9-]*)", text.split("#")[0]):
                    assert option in known, f"{document}:{line}: {command} has no option {option}"
                    checked += 1
            assert "node web/translate.mjs" not in code or all(
                option in node_usage for option in re.findall(r"--[a-z-]+", code)
            )
    assert checked > 30


def _sandbox(tmp_path, tiny_run, tiny_bundle) -> str:
    """What `make demo` leaves, and the input files the blocks name."""
    run_dir, bundle_dir = tiny_run[0], tiny_bundle[1]
    shutil.copytree(run_dir, tmp_path / "runs" / "g2p_small")
    shutil.copytree(bundle_dir, tmp_path / "runs" / "g2p_small.bundle")
    shutil.copytree(bundle_dir, tmp_path / "bundles" / "g2p_small")
    data = os.path.join(run_dir, "data")
    for split in ("train", "dev", "test"):
        shutil.copy(os.path.join(data, f"{split}.tsv"), tmp_path / f"{split}.tsv")
    shutil.copy(os.path.join(data, "train.tsv"), tmp_path / "corpus.tsv")
    pairs = [line.split("\t") for line in (tmp_path / "train.tsv").read_text(encoding="utf-8").splitlines()]
    (tmp_path / "train.de").write_text("".join(f"{s}\n" for s, _ in pairs), encoding="utf-8")
    (tmp_path / "train.en").write_text("".join(f"{t}\n" for _, t in pairs), encoding="utf-8")
    tests = [line.split("\t") for line in (tmp_path / "test.tsv").read_text(encoding="utf-8").splitlines()]
    (tmp_path / "words.txt").write_text("".join(f"{s}\n" for s, _ in tests), encoding="utf-8")
    (tmp_path / "prons.txt").write_text("".join(f"{t}\n" for _, t in tests), encoding="utf-8")
    os.symlink(os.path.join(REPO, "web"), tmp_path / "web")
    os.symlink(os.path.join(REPO, "web", "node_modules"), tmp_path / "node_modules")
    return str(tmp_path)


def _run_block(language: str, code: str, cwd: str, where: str) -> None:
    environment = dict(
        os.environ, VENV=sys.prefix, PATH=os.path.join(sys.prefix, "bin") + os.pathsep + os.environ["PATH"]
    )
    if language == "bash":
        command = ["bash", "-euo", "pipefail", "-c", code]
    else:
        path = os.path.join(cwd, "block.py" if language == "python" else "block.mjs")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(code)
        command = [sys.executable, path] if language == "python" else ["node", path]
    result = subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (
        f"{where}:\n{code}\nstdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"
    )
    # Quiet by default: neither TensorFlow's start-up logging nor the quantiser's advice.
    noise = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if is_native_log_line(line.encode()) or "cuInit" in line or "pre-processing before quantization" in line
    ]
    assert not noise, f"{where}: {noise[:3]}"


@pytest.mark.parametrize("document", DOCUMENTS)
def test_the_documents_command_blocks_run(document, tmp_path, tiny_run, tiny_bundle):
    cwd = _sandbox(tmp_path, tiny_run, tiny_bundle)
    for language, code, line in blocks(document):
        if language not in RUNNABLE or _not_run(document, code):
            continue
        _run_block(language, _substituted(code), cwd, f"{document}:{line}")
