"""`evaluate(run_dir, split)`: decode a split of a run with its Keras models, score it,
write the hypotheses and the scores."""

from __future__ import annotations

import collections
import json
import os
import sys
from collections.abc import Sequence

from keras_s2s.decoder import make_translator
from keras_s2s.scores import file_pairs, format_scores, inputs_to_decode, metric_kind, score_outputs
from serving.files import atomic_write


def evaluate(
    run_dir: str,
    split: str = "test",
    beam_size: int | None = None,
    batch_size: int = 64,
    samples: int = 5,
    out=None,
    checkpoint: str = "best",
    length_penalty: float | None = None,
    ensemble: Sequence[str] = (),
    source: str | None = None,
    reference: str | None = None,
) -> dict:
    """Decodes a split of a run, writes hypotheses and scores, prints a summary.

    With `source` and `reference` (line-aligned text files), decodes and scores those
    instead of a split, the same way; the stem is the source file's name.

    Writes `eval/{split}.beam{K}.hyp` (one line per distinct source, in split
    order) and `eval/{split}.beam{K}.json` (scores); with another checkpoint
    than `best` the stem is `{split}.{checkpoint}.beam{K}`, and a `length_penalty`
    other than the run's adds `.lp{value}` (tune it on `dev`, then use it on `test`).
    With `ensemble` run directories (same tokenizers, same data split), decodes with
    all the runs as one model and adds `.ensemble{N}` to the stem; the scores list
    the members.
    """
    from keras_s2s.data.readers import read_tsv

    out = out or sys.stdout
    translator = make_translator(run_dir, checkpoint=checkpoint, ensemble=ensemble)
    config = translator.config
    beam_size = beam_size or config.decode.beam_size
    if length_penalty is None:
        length_penalty = config.decode.length_penalty
    if source or reference:
        pairs, split = file_pairs(source, reference), os.path.basename(source or "")
    else:
        pairs = read_tsv(os.path.join(run_dir, "data", f"{split}.tsv"))
    kind = metric_kind(config)
    sources = inputs_to_decode(kind, pairs)
    hypotheses = translator.translate_best(
        sources, beam_size=beam_size, batch_size=batch_size, progress=True, length_penalty=length_penalty
    )
    values = score_outputs(kind, pairs, hypotheses)
    values.update(
        {
            "split": split,
            "beam_size": beam_size,
            "length_penalty": length_penalty,
            "metric": kind,
            "checkpoint": checkpoint,
        }
    )
    if ensemble:
        values["ensemble"] = [os.path.abspath(d) for d in (run_dir, *ensemble)]
    directory = os.path.join(run_dir, "eval")
    os.makedirs(directory, exist_ok=True)
    stem = os.path.join(directory, f"{split}{'' if checkpoint == 'best' else '.' + checkpoint}.beam{beam_size}")
    if ensemble:
        stem += f".ensemble{1 + len(ensemble)}"
    if length_penalty != config.decode.length_penalty:
        stem += f".lp{length_penalty:g}"
    with atomic_write(stem + ".hyp") as handle:
        handle.writelines(h + "\n" for h in hypotheses)
    with atomic_write(stem + ".json") as handle:
        json.dump(values, handle, indent=2)
    print(f"{split} ({beam_size=}, {length_penalty=}): {format_scores(values)}", file=out)
    if samples:
        references = collections.defaultdict(list)
        for pair in pairs:
            references[pair.source].append(pair.target)
        print("samples (source -> hypothesis | reference):", file=out)
        for source, hypothesis in list(zip(sources, hypotheses))[:samples]:
            print(f"  {source} -> {hypothesis} | {' / '.join(references[source])}", file=out)
    print(f"hypotheses: {stem}.hyp", file=out)
    return values
