"""Trained comparisons at equal budgets: the reversed source (the paper: test perplexity
5.8 -> 4.7, BLEU 25.9 -> 30.6) and depth (each added layer cut perplexity by nearly 10%).
Every variant trains from the same preset with its own overrides, for the same number of
minutes, once per seed, into `OUT_DIR/runs/`; an interrupted study resumes its runs."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence

from keras_s2s.studies.common import load_split, markdown_table, perplexity, pyplot, save_figure, write_study


def reversal_variants() -> dict[str, list[str]]:
    """The fixed vector alone (no attention), the source as given and reversed."""
    return {
        "source as given": ["model.attention=none", "model.reverse_source=false"],
        "reversed source": ["model.attention=none", "model.reverse_source=true"],
    }


def depth_variants(depths: Sequence[int]) -> dict[str, list[str]]:
    return {f"{depth} layer{'s' if depth > 1 else ''}": [f"model.num_layers={depth}"] for depth in depths}


@dataclasses.dataclass(frozen=True)
class Run:
    """One variant trained with one seed: its config changes and its run directory."""

    label: str
    seed: int
    run_dir: str
    overrides: tuple[str, ...]


def plan_runs(
    name: str, variants: Mapping[str, Sequence[str]], seeds: Sequence[int], settings: Sequence[str], out_dir: str
) -> list[Run]:
    """Every variant with every seed, in table order; the study's settings come first so
    that a variant's own overrides win."""
    return [
        Run(
            label,
            seed,
            os.path.join(out_dir, "runs", f"{name}.{label.replace(' ', '_')}.seed{seed}"),
            (*settings, *overrides, f"training.seed={seed}"),
        )
        for label, overrides in variants.items()
        for seed in seeds
    ]


def dev_curve(run_dir: str) -> list[float]:
    """Dev perplexity (teacher-forced, exp of the dev loss) after each epoch of a run."""
    with open(os.path.join(run_dir, "train_log.csv"), encoding="utf-8") as handle:
        return [math.exp(float(row["val_loss"])) for row in csv.DictReader(handle)]


def _read_json(path: str, default):
    if not os.path.exists(path):
        return default
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _finished(run_dir: str) -> dict | None:
    """The summary of a run that finished earlier (a resumed study does not retrain it)."""
    return _read_json(os.path.join(run_dir, "train_summary.json"), None)


def train_runs(runs: Sequence[Run], preset: str, minutes: float, jobs: int = 1) -> None:
    """Trains every run that has not finished, for `minutes` each.

    With `jobs` > 1 the runs train `jobs` at a time, each in its own `s2s train` process
    with its log in `RUN_DIR.log`; where the machine has a CPU core per job, each process
    gets one to itself, so that runs trained side by side get equal budgets."""
    pending = [run for run in runs if _finished(run.run_dir) is None]
    if jobs <= 1:
        from keras_s2s.config import load_preset
        from keras_s2s.training import train

        for run in pending:
            print(f"[study] {run.label}, seed {run.seed}: training {minutes:g} min into {run.run_dir}")
            train(load_preset(preset).override(list(run.overrides)), run.run_dir, max_minutes=minutes, verbose=2)
        return
    # Seed-major, so that the runs trained side by side are the variants of one seed and
    # a busy machine slows the variants being compared alike.
    pending.sort(key=lambda run: run.seed)
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    running: dict[int, tuple[Run, subprocess.Popen]] = {}
    try:
        while pending or running:
            for slot in range(jobs):
                if slot in running or not pending:
                    continue
                run = pending.pop(0)
                process = _start_training(run, preset, minutes)
                running[slot] = run, process
                core = cores[slot] if len(cores) >= jobs else None
                if core is not None:
                    # Threads inherit it: the child has not started TensorFlow's pools yet.
                    os.sched_setaffinity(process.pid, {core})
                where = f" on core {core}" if core is not None else ""
                print(f"[study] {run.label}, seed {run.seed}: training {minutes:g} min{where}, log {run.run_dir}.log")
            time.sleep(1.0)
            for slot, (run, process) in list(running.items()):
                if process.poll() is not None:
                    del running[slot]
                    if process.returncode:
                        raise RuntimeError(
                            f"training {run.run_dir} failed with exit status {process.returncode}; "
                            f"see {run.run_dir}.log"
                        )
                    print(f"[study] {run.label}, seed {run.seed}: trained")
    finally:
        for _, process in running.values():
            process.terminate()
            process.wait()


def _start_training(run: Run, preset: str, minutes: float) -> subprocess.Popen:
    command = [sys.executable, "-m", "keras_s2s.cli", "train", "--config", preset, "--run-dir", run.run_dir]
    for override in run.overrides:
        command += ["--set", override]
    command += ["--max-minutes", str(minutes), "--progress", "2"]
    os.makedirs(os.path.dirname(run.run_dir), exist_ok=True)
    with open(f"{run.run_dir}.log", "w", encoding="utf-8") as log:
        # The child keeps its own copy of the file descriptor.
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def score_run(run: Run, scoring: dict, earlier: Sequence[dict]) -> dict:
    """The run's row: teacher-forced perplexity and BLEU/chrF or PER/WER on the split. An
    earlier row of the same weights and scoring is reused instead of decoding again."""
    summary = _finished(run.run_dir)
    key = (run.run_dir, summary.get("weights_digest"), scoring)
    row = next((r for r in earlier if (r.get("run_dir"), r.get("weights_digest"), r.get("scoring")) == key), None)
    if row is None:
        from keras_s2s.decoder import make_translator

        translator = make_translator(run.run_dir)
        data = load_split(run.run_dir, scoring["split"], translator.config, scoring["limit"])
        hypotheses = translator.translate_best(data.sources, beam_size=scoring["beam_size"], progress=True)
        row = {
            "variant": run.label,
            "seed": run.seed,
            "perplexity": perplexity(run.run_dir, scoring["split"], limit=scoring["limit"]),
            **data.score(hypotheses),
            "epochs": summary["epochs_run"],
            "minutes": summary["seconds"] / 60,
            "run_dir": run.run_dir,
            "weights_digest": summary.get("weights_digest"),
            "scoring": scoring,
        }
    row["dev_perplexity_by_epoch"] = dev_curve(run.run_dir)
    return row


def variant_means(rows: Sequence[dict], labels: Sequence[str], headline: str) -> list[dict]:
    """Each variant's means over its seeds. The paper compares converged models; at a fixed
    budget a bigger model also sees less data, so the dev perplexity after the epochs every
    run reached separates the two."""
    common_epochs = min(len(r["dev_perplexity_by_epoch"]) for r in rows)
    means = []
    for label in labels:
        mine = [r for r in rows if r["variant"] == label]
        means.append(
            {
                "variant": label,
                "seeds": len(mine),
                "perplexity": statistics.mean(r["perplexity"] for r in mine),
                headline: statistics.mean(r[headline] for r in mine),
                "epochs": statistics.mean(r["epochs"] for r in mine),
                f"dev perplexity after {common_epochs} epochs": statistics.mean(
                    r["dev_perplexity_by_epoch"][common_epochs - 1] for r in mine
                ),
            }
        )
    return means


def variants_study(
    name: str,
    preset: str,
    variants: Mapping[str, Sequence[str]],
    out_dir: str,
    minutes: float,
    seeds: Sequence[int] = (1,),
    settings: Sequence[str] = (),
    split: str = "test",
    beam_size: int | None = None,
    limit: int = 0,
    jobs: int = 1,
) -> dict:
    """Trains every variant and seed for `minutes` (`jobs` at a time), then scores each run
    on `split`: perplexity (teacher-forced) and BLEU or PER/WER; writes `NAME.{json,md,png}`."""
    runs = plan_runs(name, variants, seeds, settings, out_dir)
    train_runs(runs, preset, minutes, jobs)
    earlier = _read_json(os.path.join(out_dir, f"{name}.json"), {}).get("rows", [])
    scoring = {"split": split, "limit": limit, "beam_size": beam_size}
    rows = []
    for run in runs:
        rows.append(score_run(run, scoring, earlier))
        print(
            f"[study {name}] {run.label}, seed {run.seed}: perplexity {rows[-1]['perplexity']:.3f}, "
            + ", ".join(f"{key} {rows[-1][key]:.2f}" for key in ("bleu", "chrf", "per", "wer") if key in rows[-1])
        )
    headline = "bleu" if "bleu" in rows[0] else "wer"
    means = variant_means(rows, list(variants), headline)
    scores_columns = ["bleu", "chrf"] if headline == "bleu" else ["per", "wer"]
    markdown = (
        markdown_table(rows, ["variant", "seed", "perplexity", *scores_columns, "epochs", "minutes"])
        + "\nMeans over seeds:\n\n"
        + markdown_table(means, ["variant", "seeds", "perplexity", headline, "epochs", list(means[0])[-1]])
        + f"\nPreset `{preset}`{' with ' + ', '.join(settings) if settings else ''}; {minutes:g} minutes per run; {split} split.\n"
    )
    payload = {
        "study": name,
        "preset": preset,
        "settings": list(settings),
        "minutes": minutes,
        "rows": rows,
        "means": means,
    }
    paths = write_study(out_dir, name, payload, markdown)
    plot_variants(
        rows,
        list(variants),
        headline,
        split,
        f"{name}: {minutes:g} minutes per run, {len(seeds)} seed(s)",
        paths["png"],
    )
    return payload


def plot_variants(rows: Sequence[dict], labels: Sequence[str], headline: str, split: str, title: str, path: str) -> str:
    """Bars of the split's perplexity and headline score per variant (a dot per seed), and
    every run's dev perplexity against its training minutes."""
    plt = pyplot()
    figure, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for axis, key, name in (
        (axes[0], "perplexity", f"{split} perplexity"),
        (axes[1], headline, f"{split} {headline.upper()}"),
    ):
        for index, label in enumerate(labels):
            values = [r[key] for r in rows if r["variant"] == label]
            axis.bar(index, statistics.mean(values), color=f"C{index}", alpha=0.6)
            axis.scatter([index] * len(values), values, color="black", s=12, zorder=3)
        axis.set_xticks(range(len(labels)), list(labels), rotation=15)
        axis.set_title(name)
        axis.grid(axis="y", alpha=0.3)
    first_seed = rows[0]["seed"]
    for row in rows:
        curve = row["dev_perplexity_by_epoch"]
        per_epoch = row["minutes"] / max(len(curve), 1)
        axes[2].plot(
            [per_epoch * (epoch + 1) for epoch in range(len(curve))],
            curve,
            color=f"C{list(labels).index(row['variant'])}",
            marker=".",
            label=row["variant"] if row["seed"] == first_seed else None,
        )
    # The first epochs' perplexities would flatten the differences that matter at the end.
    final = min(r["dev_perplexity_by_epoch"][-1] for r in rows)
    axes[2].set_ylim(1.0, 1.0 + 3.0 * (final - 1.0))
    axes[2].set_xlabel("training minutes")
    axes[2].set_title("dev perplexity by epoch")
    axes[2].grid(alpha=0.3)
    axes[2].legend(fontsize=7)
    figure.suptitle(title)
    return save_figure(figure, path)
