"""Writes `translator.onnx` (and `translator.int8.onnx`) into a bundle and checks that the
graph's search gives the numpy search's n-best lists, token for token.

Only numpy, onnx and onnxruntime are needed here (no TensorFlow).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Sequence

import onnx

from export.checks import ExportError, check_translator
from export.search_graph import translator_graph
from serving.search import Hypothesis, decode_in_batches, in_length_batches
from serving.translator import DecoderStepSession, EncoderSession, TranslatorGraphSession

SCORE_TOLERANCE = 1e-5


def write_translator(bundle_dir: str, suffix: str, *, reverse_source: bool, bos_id: int, eos_id: int,
                     encoder_lstms: int, decoder_lstms: int) -> dict:
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
    path = os.path.join(bundle_dir, name)
    onnx.save(model, path + ".partial")
    os.replace(path + ".partial", path)
    return counts


@dataclasses.dataclass(frozen=True)
class SearchSetting:
    """One search setting of the comparison."""

    beam_size: int
    n_best: int
    length_penalty: float
    max_length_a: float
    max_length_b: int


def differences(expected: Sequence[Sequence[Hypothesis]], found: Sequence[Sequence[Hypothesis]]) -> dict:
    """How two engines' n-best lists differ.

    Returns:
        `{"sentences", "different" (token ids, order, finished flags or count), "max_score_diff",
        "first" (index of the first different sentence or None)}`.
    """
    different, worst, first = 0, 0.0, None
    for index, (a, b) in enumerate(zip(expected, found, strict=True)):
        same = [(h.token_ids, h.finished) for h in a] == [(h.token_ids, h.finished) for h in b]
        if same:
            worst = max([worst] + [abs(x.score - y.score) for x, y in zip(a, b)])
        else:
            different += 1
            first = index if first is None else first
    return {"sentences": len(expected), "different": different, "max_score_diff": worst, "first": first}


def compare_engines(bundle_dir: str, suffix: str, sources: Sequence[Sequence[int]],
                    settings: Sequence[SearchSetting], *, reverse_source: bool, bos_id: int, eos_id: int,
                    batch_size: int = 64) -> list[dict]:
    """Decodes `sources` with `translator{suffix}.onnx` and with the numpy search over
    `encoder{suffix}.onnx` and `decoder_step{suffix}.onnx`, on one thread each (onnxruntime's
    INT8 kernels may round differently on another thread count), for each setting.

    Returns:
        Per setting, its fields and `differences(...)`.
    """
    providers = ["CPUExecutionProvider"]
    encoder = EncoderSession(os.path.join(bundle_dir, f"encoder{suffix}.onnx"), providers, 1)
    step = DecoderStepSession(os.path.join(bundle_dir, f"decoder_step{suffix}.onnx"), providers, 1)
    graph = TranslatorGraphSession(os.path.join(bundle_dir, f"translator{suffix}.onnx"), providers, 1)

    def encode(ids, lengths):
        state = encoder(ids, lengths)
        if "encoder_outputs" in state:
            state["source_lengths"] = lengths
        return state

    report = []
    for setting in settings:
        expected = decode_in_batches(
            encode, functools.partial(step, top_k=2 * setting.beam_size), sources, reverse=reverse_source,
            max_length_a=setting.max_length_a, max_length_b=setting.max_length_b, batch_size=batch_size,
            bos_id=bos_id, eos_id=eos_id, beam_size=setting.beam_size, n_best=setting.n_best,
            length_penalty=setting.length_penalty)
        found = in_length_batches(functools.partial(graph, **dataclasses.asdict(setting)), sources, batch_size)
        report.append({**dataclasses.asdict(setting), **differences(expected, found)})
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
                f"largest score difference {entry['max_score_diff']:.1e}{where}")


def gate_settings(decode) -> list[SearchSetting]:
    """The export gate's settings: greedy, and the bundle's beam with its full n-best list."""
    common = dict(length_penalty=float(decode.length_penalty), max_length_a=float(decode.max_length_a),
                  max_length_b=int(decode.max_length_b))
    return [SearchSetting(1, 1, **common), SearchSetting(decode.beam_size, decode.beam_size, **common)]


def gate_summary(report: Sequence[dict]) -> dict:
    """The manifest's record of one translator's comparison."""
    return {
        "settings": [{key: entry[key] for key in ("beam_size", "n_best", "length_penalty", "max_length_a",
                                                   "max_length_b")} for entry in report],
        "sentences": report[0]["sentences"] if report else 0,
        "identical_share": min((1 - e["different"] / max(e["sentences"], 1) for e in report), default=1.0),
        "max_score_diff": max((e["max_score_diff"] for e in report), default=0.0),
    }

