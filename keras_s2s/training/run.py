"""`train(config, run_dir)`: the whole run, as the recipe reads.

The run directory receives `config.json`, the splits (`data/*.tsv`), the tokenizers,
`checkpoints/{best,last}.weights.h5`, `backup/` (for resuming an interrupted run),
`train_log.csv`, TensorBoard logs (`tensorboard/`), `padding.json`,
`train_summary.json` and `training_curves.png`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import sys
import time

import keras
import tensorflow as tf

from keras_s2s import upstream
from keras_s2s.config import Config
from keras_s2s.data.pipeline import make_dataset, padding_share
from keras_s2s.losses import SequenceCrossEntropy
from keras_s2s.models import build_seq2seq
from keras_s2s.training.callbacks import CurvePlot, DevMetric, FitScheduleToBudget, TimeBudget
from keras_s2s.training.checkpoints import AtomicBackupAndRestore, AtomicCheckpoint, weights_digest
from keras_s2s.training.data import PreparedData, prepare_data
from keras_s2s.training.distribution import choose_strategy, is_chief, log, worker_scratch_dir
from keras_s2s.training.optimizer import PlannedCosineDecay, learning_rate_schedule, make_optimizer
from keras_s2s.training.precision import resolve as resolve_precision
from serving.files import atomic_write


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
        A summary: epochs run, final and best dev loss, padding share, seconds, the
        weights digest, and the trained `model`.
    """
    started = time.monotonic()
    keras.utils.set_random_seed(config.training.seed)
    strategy = strategy or choose_strategy()
    chief = is_chief(strategy)
    log(f"strategy {type(strategy).__name__} with {strategy.num_replicas_in_sync} replica(s)")
    # Every worker runs the same program; only the chief's files are the run. The others
    # write into a scratch directory of their own, removed at the end.
    os.makedirs(run_dir, exist_ok=True)
    if not chief:
        run_dir = worker_scratch_dir(run_dir, strategy)
        os.makedirs(run_dir, exist_ok=True)

    data = prepare_data(config, run_dir)
    config = _sized_to_vocabularies(config, data)
    if chief:
        config.save(os.path.join(run_dir, "config.json"))
    train_dataset, dev_dataset, padding = _datasets(config, data, run_dir, chief)

    precision, why = resolve_precision(config.training.mixed_precision, gpus=len(tf.config.list_logical_devices("GPU")))
    log(f"mixed precision: {precision} ({why})")
    with _mixed_precision(precision):
        with strategy.scope():
            model = build_seq2seq(config.model)
            schedule = learning_rate_schedule(config, padding["batches"])
            model.compile(
                optimizer=make_optimizer(config, padding["batches"], rate=schedule),
                loss=SequenceCrossEntropy(config.training.label_smoothing),
                weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                steps_per_execution=config.training.steps_per_execution,
            )
        if verbose:
            model.summary(print_fn=lambda line, **_: print(line, file=sys.stderr))
        budget = TimeBudget(max_minutes, strategy=strategy, chief=chief)
        callbacks = _callbacks(config, data, run_dir, strategy, chief, budget, schedule) + (callbacks or [])
        with upstream.multi_worker_scalar_log_reduce(strategy), upstream.build_from_local_batch(model, strategy):
            history = model.fit(
                train_dataset,
                validation_data=dev_dataset,
                epochs=config.training.epochs,
                steps_per_epoch=padding["batches"],
                callbacks=callbacks,
                verbose=verbose,
                shuffle=False,  # The dataset shuffles sentences and batches itself.
            )

    if not chief:
        shutil.rmtree(run_dir, ignore_errors=True)
    summary = {
        "epochs_run": len(history.history.get("loss", [])),
        "stopped_by_time_budget": budget.stopped,
        "final_val_loss": (history.history.get("val_loss") or [None])[-1],
        "best_val_loss": min(history.history.get("val_loss") or [math.nan]),
        "padding_share": padding["padding_share"],
        "seconds": time.monotonic() - started,
        "weights_digest": weights_digest(model),
    }
    if chief:
        with atomic_write(os.path.join(run_dir, "train_summary.json")) as handle:
            json.dump(summary, handle, indent=2)
    log(
        f"done: {summary['epochs_run']} epoch(s) in {summary['seconds'] / 60:.1f} min; "
        f"best dev loss {summary['best_val_loss']:.4f}; weights digest {summary['weights_digest']}"
    )
    model.seq2seq_config = config.model
    summary["model"] = model
    return summary


@contextlib.contextmanager
def _mixed_precision(setting: str):
    """Keras' global dtype policy for the run's model, put back afterwards."""
    previous = keras.mixed_precision.global_policy()
    if setting != "none":
        keras.mixed_precision.set_global_policy(f"mixed_{setting}")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _sized_to_vocabularies(config: Config, data: PreparedData) -> Config:
    """The config with the model's vocabulary sizes taken from the tokenizers."""
    model = dataclasses.replace(
        config.model,
        source_vocabulary_size=data.source_tokenizer.vocabulary_size,
        target_vocabulary_size=data.target_tokenizer.vocabulary_size,
    )
    config = dataclasses.replace(config, model=model)
    config.validate()
    return config


def _datasets(config: Config, data: PreparedData, run_dir: str, chief: bool):
    """Length-bucketed train and dev datasets, and the train set's padding report."""
    training = config.training
    options = dict(
        token_budget=training.token_budget,
        max_batch_size=training.max_batch_size,
        reverse_source=config.model.reverse_source,
        bucketing=training.bucketing,
    )
    train_options = dict(shuffle=True, seed=training.seed, shuffle_buffer=training.shuffle_buffer, **options)
    # One repeating iterator serves the whole run (every pass reshuffles; fit gets
    # `steps_per_epoch`): with a finite dataset Keras would start a new iterator each
    # epoch, and releasing the last one can stall an epoch's start for a long time.
    train_dataset = make_dataset(*data.ids["train"], repeat=True, **train_options)
    padding = padding_share(make_dataset(*data.ids["train"], **train_options))
    log(
        f"train: {padding['batches']} batches per epoch, {padding['real_tokens']} real tokens, "
        f"padding share {100 * padding['padding_share']:.1f}%"
    )
    if chief:
        with atomic_write(os.path.join(run_dir, "padding.json")) as handle:
            json.dump(padding, handle, indent=2)
    # Each bucket flushes its remainder, so every epoch has the same batch count.
    dev_dataset = make_dataset(*data.ids["dev"], shuffle=False, **options)
    dev_batches = padding_share(dev_dataset)["batches"]
    dev_dataset = dev_dataset.apply(tf.data.experimental.assert_cardinality(dev_batches))
    return train_dataset, dev_dataset, padding


def _callbacks(
    config: Config, data: PreparedData, run_dir: str, strategy, chief: bool, budget: TimeBudget, schedule
) -> list:
    training = config.training
    callbacks = []
    if training.eval_sample_size and data.splits["dev"] and chief:
        # Decoding a sample is local work; only the chief's logs are kept.
        callbacks.append(DevMetric(config, data, training.eval_sample_size))
    callbacks += [
        AtomicBackupAndRestore(
            os.path.join(run_dir, "backup"),
            strategy=strategy,
            chief=chief,
            save_freq=training.save_every_steps or "epoch",
            delete_checkpoint=True,
        ),
        AtomicCheckpoint(
            os.path.join(run_dir, "checkpoints"), enabled=chief, average_last=training.average_last_epochs
        ),
        keras.callbacks.CSVLogger(os.path.join(run_dir, "train_log.csv"), append=True),
        budget,
        CurvePlot(run_dir, enabled=chief),
    ]
    if budget.max_seconds and training.fit_schedule_to_budget and isinstance(schedule, PlannedCosineDecay):
        callbacks.append(FitScheduleToBudget(schedule, budget, strategy=strategy, chief=chief))
    if chief:
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(run_dir, "tensorboard"), profile_batch=0))
    if training.early_stopping_patience:
        callbacks.append(keras.callbacks.EarlyStopping(patience=training.early_stopping_patience))
    if training.reduce_lr_patience and training.optimizer == "adam":
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(factor=0.5, patience=training.reduce_lr_patience, min_lr=1e-5, verbose=1)
        )
    return callbacks
