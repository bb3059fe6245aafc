"""Writes `translator.onnx` (and `translator.int8.onnx`) into a bundle and checks that the
graph's search gives the numpy search's n-best lists, token for token.

Only numpy, onnx and onnxruntime are needed here (no TensorFlow).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence

import onnx

from export.checks import ExportError, check_translator
from export.search_graph import translator_graph
from serving.batching import in_length_batches
from serving.decoding import SearchSettings
from serving.files import atomic_path
from serving.search import Hypothesis
from serving.sessions import DecoderStepSession, EncoderSession, TranslatorGraphSession, onnx_step_engine

SCORE_TOLERANCE = 1e-5


def write_translator(
    bundle_dir: str,
    suffix: str,
    *,
    reverse_source: bool,
    bos_id: int,
    eos_id: int,
    encoder_lstms: int,
    decoder_lstms: int,
) -> dict:
    """Builds `translator{suffix}.onnx` from `encoder{suffix}.onnx` and `decoder_step{suffix}.onnx`
    in `bundle_dir`, checks its structure and writes it.

    Returns:
        The op counts of the graph and of its loop body.
    """
    encoder = onnx.load(os.path.join(bundle_dir, f"encoder{suffix}.onnx"))
    step = onnx.load(os.path.join(bundle_dir, f"decoder_step{suffix}.onnx"))
    model = translator_graph(encoder, step, reverse_source=reverse_source, bos_id=bos_id, eos_id=eos_id)
    name = f"translator{suffix}.onnx"
    counts = check_translator(model, encoder_lstms, decoder_lstms, name)
    with atomic_path(os.path.join(bundle_dir, name)) as path:
        onnx.save(model, path)
    return counts


def differences(expected: Sequence[Sequence[tuple]], found: Sequence[Sequence[tuple]]) -> dict:
    """How two engines' n-best lists differ; each hypothesis is `(what must be equal, score)`.

    Returns:
        `{"sentences", "different" (in what must be equal, in order, or in count),
        "max_score_diff", "first" (index of the first different sentence or None)}`.
    """
    different, worst, first = 0, 0.0, None
    for index, (a, b) in enumerate(zip(expected, found, strict=True)):
        if [key for key, _ in a] == [key for key, _ in b]:
            worst = max([worst] + [abs(x - y) for (_, x), (_, y) in zip(a, b)])
        else:
            different += 1
            first = index if first is None else first
    return {"sentences": len(expected), "different": different, "max_score_diff": worst, "first": first}


def keyed(found: Sequence[Sequence[Hypothesis]]) -> list:
    return [[((h.token_ids, h.finished), h.score) for h in hypotheses] for hypotheses in found]


def compare_engines(
    bundle_dir: str,
    suffix: str,
    sources: Sequence[Sequence[int]],
    settings: Sequence[SearchSettings],
    *,
    reverse_source: bool,
    bos_id: int,
    eos_id: int,
    batch_size: int = 64,
) -> list[dict]:
    """Decodes `sources` with `translator{suffix}.onnx` and with the numpy search over
    `encoder{suffix}.onnx` and `decoder_step{suffix}.onnx`, on one thread each (onnxruntime's
    INT8 kernels may round differently on another thread count), for each setting.

    Returns:
        Per setting, its fields and `differences(...)`.
    """
    providers = ["CPUExecutionProvider"]
    steps = onnx_step_engine(
        EncoderSession(os.path.join(bundle_dir, f"encoder{suffix}.onnx"), providers, 1),
        DecoderStepSession(os.path.join(bundle_dir, f"decoder_step{suffix}.onnx"), providers, 1),
        bos_id=bos_id,
        eos_id=eos_id,
        reverse_source=reverse_source,
    )
    graph = TranslatorGraphSession(os.path.join(bundle_dir, f"translator{suffix}.onnx"), providers, 1)
    report = []
    for setting in settings:
        expected = in_length_batches(functools.partial(steps.search_batch, settings=setting), sources, batch_size)
        found = in_length_batches(functools.partial(graph.search_batch, settings=setting), sources, batch_size)
        report.append({**dataclasses.asdict(setting), **differences(keyed(expected), keyed(found))})
    return report


def check_engines_agree(report: Sequence[dict], name: str, texts: Sequence[str] | None = None) -> None:
    """Raises `ExportError` when any setting of `compare_engines`' report differs."""
    for entry in report:
        if entry["different"] or entry["max_score_diff"] > SCORE_TOLERANCE:
            where = ""
            if entry["first"] is not None and texts is not None:
                where = f" (first: {texts[entry['first']]!r})"
            raise ExportError(
                f"{name}: beam {entry['beam_size']}, n-best {entry['n_best']}: {entry['different']} of "
                f"{entry['sentences']} sentences decode differently from the numpy search over the step graphs, "
                f"largest score difference {entry['max_score_diff']:.1e}{where}"
            )


def gate_settings(decode) -> list[SearchSettings]:
    """The export gate's settings: greedy, and the bundle's beam with its full n-best list."""
    common = dict(
        length_penalty=float(decode.length_penalty),
        max_length_a=float(decode.max_length_a),
        max_length_b=int(decode.max_length_b),
    )
    return [SearchSettings(1, 1, **common), SearchSettings(decode.beam_size, decode.beam_size, **common)]


def gate_summary(report: Sequence[dict]) -> dict:
    """The manifest's record of one translator's comparison."""
    return {
        "settings": [
            {key: entry[key] for key in ("beam_size", "n_best", "length_penalty", "max_length_a", "max_length_b")}
            for entry in report
        ],
        "sentences": report[0]["sentences"] if report else 0,
        "identical_share": min((1 - e["different"] / max(e["sentences"], 1) for e in report), default=1.0),
        "max_score_diff": max((e["max_score_diff"] for e in report), default=0.0),
    }


# Lines the text gate adds to the dev sentences: blank lines, unknown characters, emoji,
# upper case, control characters and line separators inside a line, lines past the source
# limit (one of them long enough to show if the graph's work grew with the line).
AWKWARD_LINES = ["", " ", "\u3000", "\t", "🙂", "a🙂🙂b", "ÀÉÎõ", "HELLO", "l'été", "x y", "q" * 300]
AWKWARD_LINES += ["cr\ronly", "nul\x00inside", "\x00", "\x1c", "a\u2028b\u2029c\x85d\x0be\x0cf", "\x7f\x9c"]
AWKWARD_LINES += ["ab 🙂\x00\r" * 25_000]


def read_tokenizer(bundle_dir: str, name: str) -> dict:
    """A bundle's tokenizer file as `export.text_graph` takes it: a symbol tokenizer's
    JSON, or `{"type": "sentencepiece", "model": bytes, "lowercase": bool}`."""
    import json

    path = os.path.join(bundle_dir, name)
    if name.endswith(".json"):
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    lowercase = False
    if os.path.exists(path + ".json"):
        with open(path + ".json", encoding="utf-8") as handle:
            lowercase = json.load(handle).get("lowercase", False)
    with open(path, "rb") as handle:
        return {"type": "sentencepiece", "model": handle.read(), "lowercase": lowercase}


def text_translator_possible(bundle_dir: str, source_file: str, target_file: str) -> str | None:
    """Why a bundle gets no `translator.text.onnx`, or None when it can have one."""
    tokenizers = [read_tokenizer(bundle_dir, name) for name in (source_file, target_file)]
    if any(t.get("type") == "sentencepiece" and t.get("lowercase") for t in tokenizers):
        return "a lower-casing SentencePiece tokenizer (lower-casing needs a locale the graph cannot carry)"
    if any(t.get("type") == "sentencepiece" for t in tokenizers):
        try:
            import onnxruntime_extensions  # noqa: F401
        except ImportError:
            return "SentencePiece tokenizers need onnxruntime-extensions (pip install onnxruntime-extensions)"
    return None


def extensions_options():
    """Session options with onnxruntime-extensions' operators registered."""
    import onnxruntime as ort
    from onnxruntime_extensions import get_library_path

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.register_custom_ops_library(get_library_path())
    return options


def write_text_translator(bundle_dir: str, source_file: str, target_file: str, max_source_length: int) -> dict:
    """Builds `translator.text.onnx` from `translator.onnx` in `bundle_dir`: standard
    string operators for symbol tokenizers, onnxruntime-extensions' for SentencePiece.

    Returns:
        The op counts of the graph.
    """
    import collections

    from export.text_graph import text_translator_graph

    model = text_translator_graph(
        onnx.load(os.path.join(bundle_dir, "translator.onnx")),
        read_tokenizer(bundle_dir, source_file),
        read_tokenizer(bundle_dir, target_file),
        max_source_length,
    )
    onnx.checker.check_model(model)
    with atomic_path(os.path.join(bundle_dir, "translator.text.onnx")) as path:
        onnx.save(model, path)
    return dict(collections.Counter(node.op_type for node in model.graph.node))


def compare_text(
    bundle_dir: str,
    source_file: str,
    target_file: str,
    max_source_length: int,
    texts: Sequence[str],
    settings: Sequence[SearchSettings],
) -> list[dict]:
    """`translator.text.onnx` against the tokenizer, `translator.onnx` and the detokenizer
    (what `serving.translator.Translator.translate` does) on `texts`, per setting.

    Returns:
        Per setting, its fields and `differences(...)` (of the texts).
    """
    import numpy as np

    from serving.sessions import open_session, search_feeds
    from serving.tokenizers import NUL_STAND_IN, load_vocabulary

    source = load_vocabulary(os.path.join(bundle_dir, source_file))
    target = load_vocabulary(os.path.join(bundle_dir, target_file))
    providers = ["CPUExecutionProvider"]
    graph = TranslatorGraphSession(os.path.join(bundle_dir, "translator.onnx"), providers, 1)
    text_path = os.path.join(bundle_dir, "translator.text.onnx")
    if source_file.endswith(".json") and target_file.endswith(".json"):
        text_session = open_session(text_path, providers, 1)
    else:
        import onnxruntime as ort

        text_session = ort.InferenceSession(text_path, extensions_options(), providers=providers)
    sources = [source.encode(text)[: max_source_length or None] for text in texts]
    report = []
    for setting in settings:
        found = in_length_batches(functools.partial(graph.search_batch, settings=setting), sources, 64)
        expected = [
            [("", 0.0)] if not text.strip() else [(target.decode(h.token_ids), h.score) for h in hypotheses]
            for text, hypotheses in zip(texts, found)
        ]
        # As the documentation tells callers: NUL -> NUL_STAND_IN, which no C API string cuts.
        carried = [text.replace("\x00", NUL_STAND_IN) for text in texts]
        feeds = {"texts": np.array(carried, dtype=object), **search_feeds(**dataclasses.asdict(setting))}
        translations, scores = text_session.run(["translations", "text_scores"], feeds)
        got = [
            [(str(text), float(score)) for text, score in zip(row_texts, row_scores) if np.isfinite(score)]
            for row_texts, row_scores in zip(translations, scores)
        ]
        report.append({**dataclasses.asdict(setting), **differences(expected, got)})
    return report


def compare_text_apart(
    bundle_dir: str,
    source_file: str,
    target_file: str,
    max_source_length: int,
    texts: Sequence[str],
    settings: Sequence[SearchSettings],
) -> list[dict]:
    """`compare_text` in a fresh Python process: onnxruntime-extensions' library crashes a
    process that has TensorFlow loaded (as the export has), so SentencePiece text graphs
    are checked in one without it."""
    import json
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    request = json.dumps(
        {
            "bundle_dir": bundle_dir,
            "source_file": source_file,
            "target_file": target_file,
            "max_source_length": max_source_length,
            "texts": list(texts),
            "settings": [dataclasses.asdict(s) for s in settings],
        }
    )
    code = (
        "import json, sys; from export.translator_export import compare_text; from serving.decoding import SearchSettings; r = json.load(sys.stdin); "
        "print(json.dumps(compare_text(r['bundle_dir'], r['source_file'], r['target_file'], r['max_source_length'], "
        "r['texts'], [SearchSettings(**s) for s in r['settings']])))"
    )
    environment = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run(
        [sys.executable, "-c", code],
        input=request,
        capture_output=True,
        text=True,
        cwd=root,
        env=environment,
        timeout=3600,
    )
    if result.returncode != 0:
        raise ExportError(f"translator.text.onnx: the check failed to run ({result.stderr.strip()[-2000:]})")
    return json.loads(result.stdout.strip().splitlines()[-1])
