"""Training: corpus -> tokenizers -> tf.data -> Keras `fit` under `tf.distribute`.

One function, `train(config, run_dir)`, does the whole run. The run
directory receives `config.json`, the splits (`data/*.tsv`), the
tokenizers, `checkpoints/{best,last}.weights.h5`, `backup/` (for resuming
an interrupted run), `train_log.csv`, TensorBoard logs (`tensorboard/`),
`padding.json` and `training_curves.png`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import shutil
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from keras_s2s.config import Config
from keras_s2s.data.datasets import load_pairs
from keras_s2s.data.pipeline import make_dataset, padding_share
from keras_s2s.data.readers import Pair, filter_pairs, read_tsv, split_pairs, write_tsv
from keras_s2s.data.tokenizers import build_tokenizers, load_tokenizers, save_tokenizers, tokenizer_files
from keras_s2s.losses import SequenceCrossEntropy
from keras_s2s.models import build_seq2seq


def log(message: str) -> None:
    print(f"[s2s] {message}", file=sys.stderr, flush=True)


# --- Strategy ---------------------------------------------------------------


def choose_strategy() -> tf.distribute.Strategy:
    """`MultiWorkerMirroredStrategy` under `TF_CONFIG`, `MirroredStrategy` on
    several local GPUs, else the default single-device strategy."""
    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not os.environ.get("TF_CONFIG"):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type in (None, "chief") or (task_type == "worker" and task_id == 0)


# --- Data -------------------------------------------------------------------


@dataclasses.dataclass
class PreparedData:
    """Splits as pairs and as ids, and the tokenizers."""

    splits: dict[str, list[Pair]]
    ids: dict[str, tuple[list[list[int]], list[list[int]]]]
    source_tokenizer: object
    target_tokenizer: object
    report: dict


def _side_length(split: str, subword: bool):
    if subword or split == "space":
        return lambda text: len(text.split())
    return len


def prepare_data(config: Config, run_dir: str) -> PreparedData:
    """Loads, filters, splits and tokenizes the corpus; writes splits and tokenizers.

    A run directory that already holds splits and tokenizers (a resumed run)
    reuses them.
    """
    data_dir = os.path.join(run_dir, "data")
    os.makedirs(data_dir, exist_ok=True)
    paths = {name: os.path.join(data_dir, f"{name}.tsv") for name in ("train", "dev", "test")}
    report_path = os.path.join(data_dir, "report.json")
    tokenizer_paths = tokenizer_files(run_dir, config.tokenizer)
    if all(os.path.exists(p) for p in list(paths.values()) + list(tokenizer_paths)):
        log(f"reusing the splits and tokenizers in {run_dir}")
        splits = {name: read_tsv(path) for name, path in paths.items()}
        source_tokenizer, target_tokenizer = load_tokenizers(run_dir, config.tokenizer)
        with open(report_path, encoding="utf-8") as handle:
            report = json.load(handle)
    else:
        pairs = load_pairs(config.data)
        subword = config.tokenizer.type == "sentencepiece"
        kept, filtered = filter_pairs(
            pairs,
            max_length=config.data.max_length,
            max_length_ratio=config.data.max_length_ratio,
            min_length=config.data.min_length,
            deduplicate=config.data.deduplicate,
            length_fn=_side_length(config.tokenizer.source_split, subword),
            target_length_fn=_side_length(config.tokenizer.target_split, subword),
        )
        log(f"corpus {config.data.dataset}: {filtered.summary()}")
        splits = split_pairs(kept, config.data.dev_size, config.data.test_size, config.data.seed)
        source_tokenizer, target_tokenizer = build_tokenizers(
            config.tokenizer,
            [p.source for p in splits["train"]],
            [p.target for p in splits["train"]],
        )
        save_tokenizers(run_dir, config.tokenizer, source_tokenizer, target_tokenizer)
        for name, path in paths.items():
            write_tsv(splits[name], path)
        report = {"filter": dataclasses.asdict(filtered)}
        report["splits"] = {name: len(split) for name, split in splits.items()}
        with open(report_path, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)
    ids = {}
    too_long = 0
    for name, split in splits.items():
        sources = [source_tokenizer.encode(p.source) for p in split]
        targets = [target_tokenizer.encode(p.target) for p in split]
        if name == "train":
            # Subword lengths are only known now: drop over-long training pairs.
            limit = config.data.max_length
            keep = [
                i for i in range(len(sources))
                if 0 < len(sources[i]) <= limit and 0 < len(targets[i]) <= limit
            ]
            too_long = len(sources) - len(keep)
            sources = [sources[i] for i in keep]
            targets = [targets[i] for i in keep]
        ids[name] = (sources, targets)
    if too_long:
        log(f"train: {too_long} pairs over {config.data.max_length} tokens after tokenizing, removed")
    report["train_removed_after_tokenizing"] = too_long
    log(
        "splits: "
        + ", ".join(f"{name} {len(split)}" for name, split in splits.items())
        + f"; vocabulary source {source_tokenizer.vocabulary_size}, "
        f"target {target_tokenizer.vocabulary_size}"
    )
    return PreparedData(splits, ids, source_tokenizer, target_tokenizer, report)


# --- Optimiser --------------------------------------------------------------


@keras.saving.register_keras_serializable(package="keras_s2s")
class PaperSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """The paper's rate: constant, then halved every `decay_every` epochs after `decay_start`.

    Args:
        initial: float. Starting learning rate (0.7 in the paper).
        steps_per_epoch: int. Batches per epoch.
        decay_start: float. Epoch after which halving begins (5).
        decay_every: float. Epochs between halvings (0.5).
    """

    def __init__(self, initial, steps_per_epoch, decay_start=5.0, decay_every=0.5):
        self.initial = float(initial)
        self.steps_per_epoch = int(steps_per_epoch)
        self.decay_start = float(decay_start)
        self.decay_every = float(decay_every)

    def __call__(self, step):
        epoch = keras.ops.cast(step, "float32") / float(self.steps_per_epoch)
        halvings = keras.ops.floor(
            keras.ops.maximum(epoch - self.decay_start, 0.0) / self.decay_every
        )
        return self.initial * keras.ops.power(0.5, halvings)

    def get_config(self):
        return {
            "initial": self.initial,
            "steps_per_epoch": self.steps_per_epoch,
            "decay_start": self.decay_start,
            "decay_every": self.decay_every,
        }


def learning_rate_schedule(config: Config, steps_per_epoch: int):
    """The learning rate: a float, or a schedule of the optimizer step."""
    training = config.training
    if training.optimizer == "paper_sgd":
        return PaperSchedule(
            training.learning_rate,
            steps_per_epoch,
            training.learning_rate_decay_start,
            training.learning_rate_decay_every,
        )
    if training.learning_rate_schedule == "cosine":
        total = max(1, training.epochs * steps_per_epoch)
        warmup = min(training.warmup_steps, total - 1)
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=training.learning_rate / 100 if warmup else training.learning_rate,
            decay_steps=total - warmup,
            alpha=training.final_learning_rate_ratio,
            warmup_target=training.learning_rate if warmup else None,
            warmup_steps=warmup,
        )
    return training.learning_rate


def make_optimizer(config: Config, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    rate = learning_rate_schedule(config, steps_per_epoch)
    clip = config.training.clip_norm or None
    if config.training.optimizer == "paper_sgd":
        return keras.optimizers.SGD(rate, global_clipnorm=clip)
    return keras.optimizers.Adam(rate, global_clipnorm=clip)


# --- Callbacks --------------------------------------------------------------


def _save_weights_atomically(model: keras.Model, path: str) -> None:
    temporary = path[: -len(".weights.h5")] + ".partial.weights.h5"
    model.save_weights(temporary)
    os.replace(temporary, path)


class AtomicCheckpoint(keras.callbacks.Callback):
    """Writes `last.weights.h5` each epoch and `best.weights.h5` on a new best dev loss.

    Each file is written beside its target and renamed into place, so an
    interrupted write never replaces a good checkpoint.
    """

    def __init__(self, directory: str, monitor: str = "val_loss", enabled: bool = True):
        super().__init__()
        self.directory = directory
        self.monitor = monitor
        self.enabled = enabled
        self.best = math.inf
        os.makedirs(directory, exist_ok=True)
        state = os.path.join(directory, "best.json")
        if os.path.exists(state):
            with open(state, encoding="utf-8") as handle:
                self.best = json.load(handle).get(monitor, math.inf)

    def on_epoch_end(self, epoch, logs=None):
        if not self.enabled:
            return
        logs = logs or {}
        _save_weights_atomically(self.model, os.path.join(self.directory, "last.weights.h5"))
        value = logs.get(self.monitor)
        if value is not None and value < self.best:
            self.best = float(value)
            _save_weights_atomically(self.model, os.path.join(self.directory, "best.weights.h5"))
            with open(os.path.join(self.directory, "best.json.tmp"), "w", encoding="utf-8") as h:
                json.dump({self.monitor: self.best, "epoch": epoch + 1}, h)
            os.replace(
                os.path.join(self.directory, "best.json.tmp"),
                os.path.join(self.directory, "best.json"),
            )


class TimeBudget(keras.callbacks.Callback):
    """Stops training once `max_minutes` have passed (checked after every batch)."""

    def __init__(self, max_minutes: float | None):
        super().__init__()
        self.max_seconds = None if not max_minutes else 60.0 * max_minutes
        self.start = time.monotonic()
        self.stopped = False

    def on_train_batch_end(self, batch, logs=None):
        if self.max_seconds and time.monotonic() - self.start > self.max_seconds:
            if not self.stopped:
                log(f"time budget of {self.max_seconds / 60:.1f} minutes reached: stopping")
            self.stopped = True
            self.model.stop_training = True


class DevMetric(keras.callbacks.Callback):
    """Greedy-decodes a dev sample each epoch and adds `val_bleu`/`val_chrf`
    or `val_per`/`val_wer` to the epoch logs."""

    def __init__(self, config: Config, data: PreparedData, sample_size: int):
        super().__init__()
        self.config = config
        self.data = data
        from keras_s2s.evaluation import inputs_to_decode, metric_kind

        self.kind = metric_kind(config)
        pairs = list(data.splits["dev"])
        # A seeded sample of distinct sources, with every pair of each.
        chosen = list(dict.fromkeys(p.source for p in pairs))
        random.Random(config.training.seed).shuffle(chosen)
        chosen = set(chosen[:sample_size])
        self.pairs = [p for p in pairs if p.source in chosen]
        self.sources = inputs_to_decode(self.kind, self.pairs)
        self.translator = None

    def on_epoch_end(self, epoch, logs=None):
        from keras_s2s.evaluation import KerasTranslator, score_outputs

        if not self.sources or logs is None:
            return
        if self.translator is None:
            self.translator = KerasTranslator(
                self.model, self.config, self.data.source_tokenizer, self.data.target_tokenizer
            )
        hypotheses = self.translator.translate(self.sources, beam_size=1, batch_size=128)
        values = score_outputs(self.kind, self.pairs, hypotheses)
        if self.kind == "g2p":
            logs["val_per"], logs["val_wer"] = values["per"], values["wer"]
            summary = f"dev sample PER {values['per']:.2f}% WER {values['wer']:.2f}%"
        else:
            logs["val_bleu"], logs["val_chrf"] = values["bleu"], values["chrf"]
            summary = f"dev sample BLEU {values['bleu']:.2f} chrF {values['chrf']:.2f}"
        log(f"epoch {epoch + 1}: {summary} (greedy, {len(self.sources)} sentences)")


class CurvePlot(keras.callbacks.Callback):
    """Redraws `training_curves.png` from `train_log.csv` after every epoch."""

    def __init__(self, run_dir: str, enabled: bool = True):
        super().__init__()
        self.run_dir = run_dir
        self.enabled = enabled

    def on_epoch_end(self, epoch, logs=None):
        if self.enabled:
            try:
                plot_curves(self.run_dir)
            except Exception as error:  # A plot must never stop training.
                log(f"could not draw training curves: {error}")


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
    figure.savefig(output + ".tmp.png", dpi=90)
    plt.close(figure)
    os.replace(output + ".tmp.png", output)
    return output


# --- Training ---------------------------------------------------------------


def train(
    config: Config,
    run_dir: str,
    *,
    max_minutes: float | None = None,
    strategy: tf.distribute.Strategy | None = None,
    verbose: int | str = "auto",
    callbacks: list | None = None,
) -> dict:
    """Trains `config` into `run_dir`; an interrupted run resumes from its backup.

    Args:
        config: Config. The whole run.
        run_dir: str. Output directory (created).
        max_minutes: float. Stop after this much training time.
        strategy: a `tf.distribute.Strategy`; chosen automatically when None.
        verbose: Keras progress-bar setting.
        callbacks: extra Keras callbacks, run after the built-in ones.

    Returns:
        A summary: epochs run, final and best dev loss, padding share, seconds.
    """
    previous_policy = keras.mixed_precision.global_policy()
    if config.training.mixed_precision != "none":
        keras.mixed_precision.set_global_policy(f"mixed_{config.training.mixed_precision}")
    try:
        return _train(
            config, run_dir, max_minutes=max_minutes, strategy=strategy, verbose=verbose,
            extra_callbacks=callbacks or [],
        )
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def _train(config, run_dir, *, max_minutes, strategy, verbose, extra_callbacks) -> dict:
    started = time.monotonic()
    os.makedirs(run_dir, exist_ok=True)
    keras.utils.set_random_seed(config.training.seed)
    strategy = strategy or choose_strategy()
    chief = is_chief(strategy)
    log(f"strategy {type(strategy).__name__} with {strategy.num_replicas_in_sync} replica(s)")

    data = prepare_data(config, run_dir)
    config = dataclasses.replace(
        config,
        model=dataclasses.replace(
            config.model,
            source_vocabulary_size=data.source_tokenizer.vocabulary_size,
            target_vocabulary_size=data.target_tokenizer.vocabulary_size,
        ),
    )
    config.validate()
    if chief:
        config.save(os.path.join(run_dir, "config.json"))

    training = config.training
    dataset_options = dict(
        token_budget=training.token_budget,
        max_batch_size=training.max_batch_size,
        reverse_source=config.model.reverse_source,
        bucketing=training.bucketing,
    )
    train_dataset = make_dataset(
        *data.ids["train"],
        shuffle=True,
        seed=training.seed,
        shuffle_buffer=training.shuffle_buffer,
        **dataset_options,
    )
    dev_dataset = make_dataset(*data.ids["dev"], shuffle=False, **dataset_options)
    padding = padding_share(train_dataset)
    log(
        f"train: {padding['batches']} batches per epoch, {padding['real_tokens']} real tokens, "
        f"padding share {100 * padding['padding_share']:.1f}%"
    )
    if chief:
        with open(os.path.join(run_dir, "padding.json"), "w", encoding="utf-8") as handle:
            json.dump(padding, handle, indent=2)
    # Each bucket flushes its remainder, so every epoch has the same batch count;
    # telling tf.data lets Keras show a full progress bar.
    train_dataset = train_dataset.apply(tf.data.experimental.assert_cardinality(padding["batches"]))
    dev_batches = padding_share(dev_dataset)["batches"]
    dev_dataset = dev_dataset.apply(tf.data.experimental.assert_cardinality(dev_batches))

    with strategy.scope():
        model = build_seq2seq(config.model)
        model.compile(
            optimizer=make_optimizer(config, padding["batches"]),
            loss=SequenceCrossEntropy(training.label_smoothing),
            weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
            steps_per_execution=training.steps_per_execution,
        )
    if verbose:
        model.summary(print_fn=lambda line, **_: print(line, file=sys.stderr))

    checkpoint_dir = os.path.join(run_dir, "checkpoints")
    backup_dir = os.path.join(run_dir, "backup") if chief else os.path.join(
        run_dir, f"backup_worker_{os.getpid()}"
    )
    budget = TimeBudget(max_minutes)
    callbacks = []
    if training.eval_sample_size and data.splits["dev"]:
        callbacks.append(DevMetric(config, data, training.eval_sample_size))
    callbacks += [
        keras.callbacks.BackupAndRestore(
            backup_dir, save_freq=training.save_every_steps or "epoch", delete_checkpoint=True
        ),
        AtomicCheckpoint(checkpoint_dir, enabled=chief),
        keras.callbacks.CSVLogger(os.path.join(run_dir, "train_log.csv"), append=True),
        budget,
        CurvePlot(run_dir, enabled=chief),
    ]
    if chief:
        callbacks.append(
            keras.callbacks.TensorBoard(os.path.join(run_dir, "tensorboard"), profile_batch=0)
        )
    if training.early_stopping_patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(patience=training.early_stopping_patience)
        )
    if training.reduce_lr_patience and training.optimizer == "adam":
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                factor=0.5, patience=training.reduce_lr_patience, min_lr=1e-5, verbose=1
            )
        )

    callbacks += extra_callbacks
    history = model.fit(
        train_dataset,
        validation_data=dev_dataset,
        epochs=training.epochs,
        callbacks=callbacks,
        verbose=verbose,
        shuffle=False,  # The dataset shuffles sentences and batches itself.
    )
    if not chief and os.path.isdir(backup_dir):
        shutil.rmtree(backup_dir, ignore_errors=True)
    summary = {
        "epochs_run": len(history.history.get("loss", [])),
        "stopped_by_time_budget": budget.stopped,
        "final_val_loss": (history.history.get("val_loss") or [None])[-1],
        "best_val_loss": min(history.history.get("val_loss") or [math.nan]),
        "padding_share": padding["padding_share"],
        "seconds": time.monotonic() - started,
    }
    if chief:
        with open(os.path.join(run_dir, "train_summary.json"), "w", encoding="utf-8") as handle:
            json.dump(summary, handle, indent=2)
    log(
        f"done: {summary['epochs_run']} epoch(s) in {summary['seconds'] / 60:.1f} min; "
        f"best dev loss {summary['best_val_loss']:.4f}"
    )
    model.seq2seq_config = config.model
    summary["model"] = model
    return summary
