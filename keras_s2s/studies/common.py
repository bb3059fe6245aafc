"""What every study shares: a run's split as decodable inputs, scoring, perplexity, and
writing the result as JSON, a Markdown table and a PNG."""

from __future__ import annotations

import dataclasses
import json
import math
import os

from keras_s2s.scores import inputs_to_decode, metric_kind, score_outputs
from serving.files import atomic_path, atomic_write


@dataclasses.dataclass
class Split:
    """A run's split ready to decode: the pairs, the distinct inputs in split order, and
    the metric that scores them (`bleu` or `g2p`)."""

    pairs: list
    sources: list[str]
    kind: str

    @property
    def headline(self) -> str:
        """The score a study plots: BLEU for translation, WER for G2P."""
        return "bleu" if self.kind == "bleu" else "wer"

    def score(self, hypotheses: list[str]) -> dict:
        return score_outputs(self.kind, self.pairs, hypotheses)

    def subset(self, keep: set[str]) -> Split:
        """The pairs and inputs whose source is in `keep`, in the same order."""
        return Split([p for p in self.pairs if p.source in keep], [s for s in self.sources if s in keep], self.kind)


def load_split(run_dir: str, split: str, config, limit: int = 0) -> Split:
    """`RUN_DIR/data/{split}.tsv`; `limit` keeps its first N distinct inputs."""
    from keras_s2s.data.readers import read_tsv

    pairs = read_tsv(os.path.join(run_dir, "data", f"{split}.tsv"))
    kind = metric_kind(config)
    whole = Split(pairs, inputs_to_decode(kind, pairs), kind)
    return whole.subset(set(whole.sources[:limit])) if limit else whole


def perplexity(run_dir: str, split: str = "test", checkpoint: str = "best", limit: int = 0) -> float:
    """Per-token perplexity of the split's references under the model, teacher-forced:
    `exp` of the mean negative log-likelihood of every target token and eos (no label
    smoothing), the paper's measure."""
    import numpy as np
    from keras import ops

    from keras_s2s.data.pipeline import make_dataset
    from keras_s2s.data.readers import read_tsv
    from keras_s2s.decoder import load_run

    config, model, source_tokenizer, target_tokenizer = load_run(run_dir, checkpoint=checkpoint)
    pairs = read_tsv(os.path.join(run_dir, "data", f"{split}.tsv"))[: limit or None]
    sources = [source_tokenizer.encode(p.source) or [0] for p in pairs]
    targets = [target_tokenizer.encode(p.target) for p in pairs]
    dataset = make_dataset(
        sources,
        targets,
        token_budget=config.training.token_budget,
        max_batch_size=config.training.max_batch_size,
        reverse_source=config.model.reverse_source,
        shuffle=False,
    )
    total, count = 0.0, 0
    for inputs, target, mask in dataset:
        log_probs = ops.log_softmax(ops.cast(model(inputs, training=False), "float32"), axis=-1)
        picked = np.take_along_axis(np.asarray(log_probs), np.asarray(target)[..., None], axis=-1)[..., 0]
        mask = np.asarray(mask)
        total -= float((picked * mask).sum())
        count += int(mask.sum())
    return math.exp(total / count)


def write_study(out_dir: str, name: str, payload: dict, markdown: str) -> dict:
    """`OUT_DIR/NAME.json` and `OUT_DIR/NAME.md`, each written beside and renamed."""
    os.makedirs(out_dir, exist_ok=True)
    with atomic_write(os.path.join(out_dir, f"{name}.json")) as handle:
        json.dump(payload, handle, indent=2)
    with atomic_write(os.path.join(out_dir, f"{name}.md")) as handle:
        handle.write(markdown)
    return {kind: os.path.join(out_dir, f"{name}.{kind}") for kind in ("json", "md", "png")}


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    def cell(value):
        if isinstance(value, float):
            return f"{value:.2f}"
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def plot_lines(series: dict[str, list[float]], ticks: list[str], xlabel: str, ylabel: str, title: str, path: str):
    """One line per series over the same ticks, into `path` (PNG)."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6, 3.8))
    for label, values in series.items():
        axis.plot(range(len(values)), values, marker="o", label=label)
    axis.set_xticks(range(len(ticks)), ticks)
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend()
    return save_figure(figure, path)


def save_figure(figure, path: str) -> str:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    with atomic_path(path) as partial:
        figure.savefig(partial, dpi=110)
    plt.close(figure)
    return path


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
