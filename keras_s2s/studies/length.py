"""Quality by source length: the paper's Figure 3 (left) found that the reversed source
kept its LSTM from degrading on long sentences; attention is the remedy that the fixed
vector's limit motivated."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from keras_s2s.studies.common import load_split, markdown_table, plot_lines, write_study


def _length(kind: str, source: str) -> int:
    """Words for translation, letters for G2P."""
    return len(source) if kind == "g2p" else len(source.split())


def length_buckets(lengths: Sequence[int], count: int) -> list[tuple[int, int]]:
    """`count` ranges `(low, high)` of source length (inclusive) holding about equal
    numbers of inputs; fewer where lengths repeat."""
    edges = np.unique(np.quantile(np.asarray(lengths), np.linspace(0, 1, count + 1)).round().astype(int))
    ranges, low = [], int(edges[0])
    for high in edges[1:]:
        ranges.append((low, int(high)))
        low = int(high) + 1
    return [r for r in ranges if r[0] <= r[1]]


def length_study(
    run_dirs: Sequence[str],
    out_dir: str,
    labels: Sequence[str] = (),
    split: str = "test",
    beam_size: int | None = None,
    buckets: int = 6,
    checkpoint: str = "best",
    limit: int = 0,
) -> dict:
    """Decodes the split with every run and scores it per source-length bucket; the runs
    must share the split. Writes `length.{json,md,png}` into `out_dir`."""
    from keras_s2s.decoder import make_translator

    labels = list(labels) or [os.path.basename(os.path.normpath(d)) for d in run_dirs]
    if len(labels) != len(run_dirs):
        raise ValueError(f"{len(labels)} labels for {len(run_dirs)} run directories")
    rows, reference = [], None
    for run_dir, label in zip(run_dirs, labels):
        translator = make_translator(run_dir, checkpoint=checkpoint)
        data = load_split(run_dir, split, translator.config, limit)
        if reference is None:
            reference = data
            ranges = length_buckets([_length(data.kind, s) for s in data.sources], buckets)
        elif [(p.source, p.target) for p in data.pairs] != [(p.source, p.target) for p in reference.pairs]:
            raise ValueError(f"{run_dir}: its {split} split differs from {run_dirs[0]}'s; the runs must share it")
        hypotheses = translator.translate_best(data.sources, beam_size=beam_size, progress=True)
        by_source = dict(zip(data.sources, hypotheses))
        for low, high in ranges:
            keep = {s for s in data.sources if low <= _length(data.kind, s) <= high}
            part = data.subset(keep)
            scores = part.score([by_source[s] for s in part.sources])
            rows.append({"run": label, "lengths": f"{low}-{high}", "low": low, "high": high, **scores})
            print(f"[study length] {label}, length {low}-{high}: {data.headline} {scores[data.headline]:.2f}")
    unit = "letters" if reference.kind == "g2p" else "words"
    columns = [
        "run",
        "lengths",
        *(("bleu", "chrf", "sentences") if reference.kind == "bleu" else ("per", "wer", "words")),
    ]
    markdown = (
        markdown_table(rows, columns) + f"\nSource length in {unit}; {split} split, {len(reference.sources)} inputs.\n"
    )
    payload = {"study": "length", "runs": dict(zip(labels, map(os.path.abspath, run_dirs))), "unit": unit, "rows": rows}
    paths = write_study(out_dir, "length", payload, markdown)

    # WER grows with length for any model (more phones to get wrong); PER shows where it breaks.
    key = "per" if reference.kind == "g2p" else reference.headline
    series = {label: [r[key] for r in rows if r["run"] == label] for label in labels}
    unit_label = " (%)" if reference.kind == "g2p" else ""
    plot_lines(
        series,
        [f"{low}-{high}" for low, high in ranges],
        f"source length ({unit})",
        f"{split} {key.upper()}{unit_label}",
        "Quality by source length",
        paths["png"],
    )
    return payload
