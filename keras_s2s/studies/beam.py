"""Quality by beam size, for a single model and an ensemble: the paper's Table 1 found
that a beam of 2 gets most of the gain of a larger beam, and ensembles add more."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

from keras_s2s.studies.common import load_split, markdown_table, plot_lines, write_study


def beam_study(
    run_dir: str,
    out_dir: str,
    beams: Sequence[int] = (1, 2, 3, 5, 8, 12),
    ensemble: Sequence[str] = (),
    split: str = "test",
    checkpoint: str = "best",
    limit: int = 0,
    batch_size: int = 64,
) -> dict:
    """Decodes the split at every beam size with the run (and with the run plus
    `ensemble` as one model); writes `beam.{json,md,png}` into `out_dir`."""
    from keras_s2s.decoder import make_translator

    models = {"single model": make_translator(run_dir, checkpoint=checkpoint)}
    if ensemble:
        models[f"ensemble of {1 + len(ensemble)}"] = make_translator(run_dir, checkpoint=checkpoint, ensemble=ensemble)
    data = load_split(run_dir, split, models["single model"].config, limit)
    rows = []
    for name, translator in models.items():
        for beam in beams:
            start = time.perf_counter()
            hypotheses = translator.translate_best(data.sources, beam_size=beam, batch_size=batch_size, progress=True)
            scores = data.score(hypotheses)
            rows.append({"model": name, "beam": beam, **scores, "seconds": time.perf_counter() - start})
            print(f"[study beam] {name}, beam {beam}: {data.headline} {scores[data.headline]:.2f}")
    columns = ["model", "beam", *(("bleu", "chrf") if data.kind == "bleu" else ("per", "wer")), "seconds"]
    inputs = len(data.sources)
    markdown = markdown_table(rows, columns) + f"\n{split} split of {os.path.abspath(run_dir)}, {inputs} inputs.\n"
    payload = {"study": "beam", "run_dir": os.path.abspath(run_dir), "split": split, "inputs": inputs, "rows": rows}
    if ensemble:
        payload["ensemble"] = [os.path.abspath(d) for d in ensemble]
    paths = write_study(out_dir, "beam", payload, markdown)

    series = {name: [r[data.headline] for r in rows if r["model"] == name] for name in models}
    unit = " (%)" if data.kind == "g2p" else ""
    plot_lines(
        series,
        [str(b) for b in beams],
        "beam size",
        f"{split} {data.headline.upper()}{unit}",
        "Quality by beam size",
        paths["png"],
    )
    return payload
