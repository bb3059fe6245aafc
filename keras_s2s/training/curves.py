"""`training_curves.png`: loss, accuracy and the dev metric per epoch, from `train_log.csv`."""

from __future__ import annotations

import os

import numpy as np

from serving.files import atomic_path


def plot_curves(run_dir: str) -> str | None:
    """Draws loss, accuracy and the dev metric per epoch into `training_curves.png`."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = os.path.join(run_dir, "train_log.csv")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return None
    epochs = [int(r["epoch"]) + 1 for r in rows]
    panels = [("loss", ["loss", "val_loss"]), ("token accuracy", ["accuracy", "val_accuracy"])]
    for keys in (["val_per", "val_wer"], ["val_bleu", "val_chrf"]):
        if keys[0] in rows[0]:
            panels.append(("dev sample (%)" if "per" in keys[0] else "dev sample", keys))
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6))
    for axis, (title, keys) in zip(np.atleast_1d(axes), panels):
        for key in keys:
            values = [float(r[key]) if r.get(key) not in (None, "") else np.nan for r in rows]
            axis.plot(epochs, values, marker="o", label=key)
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    output = os.path.join(run_dir, "training_curves.png")
    with atomic_path(output) as partial:
        figure.savefig(partial, dpi=90)
    plt.close(figure)
    return output
