"""The scores: sacrebleu BLEU and chrF for text; phoneme and word error rates for
grapheme-to-phoneme, where any reference pronunciation counts."""

from __future__ import annotations

import collections
from collections.abc import Sequence

from keras_s2s.config import Config


def edit_distance(a: Sequence, b: Sequence) -> int:
    """Levenshtein distance between two sequences."""
    previous = list(range(len(b) + 1))
    for i, item in enumerate(a, start=1):
        current = [i] + [0] * len(b)
        for j, other in enumerate(b, start=1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (item != other))
        previous = current
    return previous[-1]


def g2p_scores(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> dict:
    """Phoneme error rate and word error rate, in percent.

    A word is right when its hypothesis equals any of its references; its
    phoneme errors are counted against the closest reference (and that
    reference's length is the denominator).
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    errors = length = wrong = 0
    for hypothesis, options in zip(hypotheses, references):
        hyp = hypothesis.split()
        best = min(
            ((edit_distance(hyp, ref.split()), len(ref.split())) for ref in options),
            key=lambda pair: (pair[0] / max(pair[1], 1), pair[0]),
        )
        errors += best[0]
        length += best[1]
        wrong += best[0] > 0
    return {
        "per": 100.0 * errors / max(length, 1),
        "wer": 100.0 * wrong / max(len(hypotheses), 1),
        "words": len(hypotheses),
    }


def bleu_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict:
    """Corpus BLEU and chrF from sacrebleu, with their signatures."""
    import sacrebleu

    bleu = sacrebleu.metrics.BLEU()
    chrf = sacrebleu.metrics.CHRF()
    bleu_score = bleu.corpus_score(list(hypotheses), [list(references)])
    chrf_score = chrf.corpus_score(list(hypotheses), [list(references)])
    return {
        "bleu": bleu_score.score,
        "chrf": chrf_score.score,
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
        "sentences": len(hypotheses),
    }


def metric_kind(config: Config) -> str:
    """`g2p` or `bleu`, resolving `decode.metric: auto`."""
    if config.decode.metric != "auto":
        return config.decode.metric
    if config.data.dataset == "cmudict" or (
        config.tokenizer.type == "symbol" and config.tokenizer.target_split == "space"
    ):
        return "g2p"
    return "bleu"


def inputs_to_decode(kind: str, pairs) -> list[str]:
    """The sources to decode for scoring: each distinct source once for `g2p`
    (all its targets are references), every pair's source for `bleu`."""
    if kind == "g2p":
        return list(dict.fromkeys(pair.source for pair in pairs))
    return [pair.source for pair in pairs]


def score_outputs(kind: str, pairs, hypotheses: Sequence[str]) -> dict:
    """Scores hypotheses for `inputs_to_decode(kind, pairs)`, in that order."""
    if kind == "g2p":
        references = collections.defaultdict(list)
        for pair in pairs:
            references[pair.source].append(pair.target)
        sources = inputs_to_decode(kind, pairs)
        return g2p_scores(hypotheses, [references[source] for source in sources])
    return bleu_scores(hypotheses, [pair.target for pair in pairs])


def format_scores(values: dict) -> str:
    if "per" in values:
        return f"PER {values['per']:.2f}%  WER {values['wer']:.2f}%  ({values['words']} words)"
    return (
        f"BLEU {values['bleu']:.2f}  chrF {values['chrf']:.2f}  ({values['sentences']} sentences)"
        f"\n  {values['bleu_signature']}\n  {values['chrf_signature']}"
    )


def _lines(path: str) -> list[str]:
    with open(path, encoding="utf-8-sig") as handle:
        return handle.read().splitlines()


def file_pairs(source: str | None, reference: str | None) -> list:
    """`Pair`s of two line-aligned files; an error naming both when a file is missing or
    their line counts differ."""
    from keras_s2s.data.readers import Pair

    if not source or not reference:
        raise ValueError("--source and --reference go together")
    sources, references = _lines(source), _lines(reference)
    if len(sources) != len(references):
        raise ValueError(
            f"{source} has {len(sources)} lines, {reference} has {len(references)}: they must be line-aligned"
        )
    return [Pair(s, r, f"{source}:{line}") for line, (s, r) in enumerate(zip(sources, references), start=1)]


def score_files(hypotheses: str, references: str, metric: str, source: str | None = None) -> dict:
    """Scores a hypothesis file (one line per input line, as `s2s-translate` writes it)
    against a reference file. For `g2p` with `source`, the lines of one source word are
    one word with all their references, as `s2s evaluate` scores a split."""
    hyps = _lines(hypotheses)
    refs = _lines(references)
    if len(hyps) != len(refs):
        raise ValueError(f"{hypotheses} has {len(hyps)} lines, {references} has {len(refs)}: they must be line-aligned")
    if metric == "bleu":
        return bleu_scores(hyps, refs)
    if source is None:
        return g2p_scores(hyps, [[r] for r in refs])
    pairs = file_pairs(source, references)
    first = {}
    for pair, hyp in zip(pairs, hyps):
        first.setdefault(pair.source, hyp)
    return score_outputs("g2p", pairs, [first[s] for s in inputs_to_decode("g2p", pairs)])
