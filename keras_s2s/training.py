"""Training: corpus -> tokenizers -> tf.data -> Keras `fit` under `tf.distribute`.

One function, `train(config, run_dir)`, does the whole run. The run
directory receives `config.json`, the splits (`data/*.tsv`), the
tokenizers, `checkpoints/{best,last}.weights.h5`, `backup/` (for resuming
an interrupted run), `train_log.csv`, TensorBoard logs (`tensorboard/`),
`padding.json` and `training_curves.png`.
"""

from __future__ import annotations

import dataclasses
import hashlib
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
from keras_s2s.data.readers import CorpusError, Pair, filter_pairs, read_tsv, split_pairs, write_tsv
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


def worker_task(strategy: tf.distribute.Strategy) -> tuple[str | None, int]:
    """`(task_type, task_id)` of this process; `(None, 0)` outside a cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not os.environ.get("TF_CONFIG"):
        return None, 0
    return resolver.task_type, int(resolver.task_id or 0)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """The chief writes the run directory: worker 0, or the task named `chief`."""
    task_type, task_id = worker_task(strategy)
    return task_type in (None, "chief") or (task_type == "worker" and task_id == 0)


def worker_scratch_dir(run_dir: str, strategy: tf.distribute.Strategy) -> str:
    """Where a non-chief worker writes: `RUN_DIR/.worker_<type>_<id>`.

    Named by the task, not the process, so a restarted worker finds its own
    backup; removed when training ends normally.
    """
    task_type, task_id = worker_task(strategy)
    return os.path.join(run_dir, f".worker_{task_type}_{task_id}")


def _build_from_local_batch(model: keras.Model, strategy: tf.distribute.Strategy) -> None:
    """Lets `fit` build a model under a strategy with several replicas.

    Before training and before each evaluation, Keras reduces one distributed
    batch across replicas to learn its shapes. That reduce fails on nested
    inputs across workers (keras-team/keras#20329), and on any batch whose
    rows do not split evenly over the replicas (a bucket's batch of 555 rows on
    two GPUs: 278 and 277 rows cannot be averaged). Shapes need no reduce:
    this takes the batch's first local value instead.
    """
    original = model._maybe_symbolic_build

    def local(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    def build(iterator=None, data_batch=None):
        if iterator is not None and data_batch is None:
            for _, _, batches in iterator:
                data_batch = tf.nest.map_structure(local, next(batches))
                break
        return original(iterator=None, data_batch=data_batch)

    model._maybe_symbolic_build = build


def _fix_multi_worker_log_reduce() -> None:
    """Lets Keras 3 `fit` reduce scalar logs across workers.

    Under `MultiWorkerMirroredStrategy`, Keras 3 averages each step's logs
    (loss, metrics: scalars) with `strategy.reduce("MEAN", value, axis=0)`,
    which fails on a scalar ("Invalid reduction dimension 0 for input with 0
    dimensions", tensorflow/tensorflow#72388). A scalar's mean over workers
    needs no axis; everything else keeps Keras' own reduction.
    """
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original = tf_trainer.reduce_per_replica
    if getattr(original, "keras_s2s_fix", False):
        return

    def reduce_per_replica(values, strategy, reduction):
        if not (
            isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and reduction in ("auto", "mean")
        ):
            return original(values, strategy, reduction)

        def reduce(value):
            local = (
                strategy.experimental_local_results(value)[0]
                if isinstance(value, tf.distribute.DistributedValues)
                else value
            )
            if tf.is_tensor(local) and local.shape.rank == 0:
                return strategy.reduce("MEAN", value, axis=None)
            return original(value, strategy, reduction)

        return tf.nest.map_structure(reduce, values)

    reduce_per_replica.keras_s2s_fix = True
    tf_trainer.reduce_per_replica = reduce_per_replica


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


def _corpus_name(data) -> str:
    if data.dataset == "tsv":
        return data.path
    if data.dataset == "parallel":
        return f"{data.source_path} + {data.target_path}"
    return f"data set {data.dataset}"


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
        if not kept:
            raise CorpusError(f"{_corpus_name(config.data)}: no usable pairs ({filtered.summary()})")
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
        return PlannedCosineDecay(
            initial_learning_rate=training.learning_rate / 100 if warmup else training.learning_rate,
            decay_steps=total - warmup,
            alpha=training.final_learning_rate_ratio,
            warmup_target=training.learning_rate if warmup else None,
            warmup_steps=warmup,
        )
    return training.learning_rate


class PlannedCosineDecay(keras.optimizers.schedules.CosineDecay):
    """Keras' `CosineDecay` whose length can be re-planned while training.

    The number of decay steps lives in a variable read by the compiled train
    step, so `plan(total_steps)` moves the end of the decay (the step at which
    the rate reaches `alpha` of its peak) without rebuilding anything. With the
    first plan it computes exactly what `CosineDecay` does.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.first_decay_steps = self.decay_steps
        self.decay_steps = keras.Variable(
            float(self.first_decay_steps), dtype="float32", trainable=False, name="planned_decay_steps"
        )

    @property
    def first_total_steps(self) -> int:
        """The configured plan's last step (warm-up included)."""
        return int(self.first_decay_steps) + int(self.warmup_steps)

    @property
    def planned_total_steps(self) -> int:
        """The step at which the decay ends (warm-up included)."""
        return int(round(float(keras.ops.convert_to_numpy(self.decay_steps)))) + int(self.warmup_steps)

    def plan(self, total_steps: float) -> None:
        """Ends the decay at optimizer step `total_steps` (at least one decay step)."""
        self.decay_steps.assign(max(1.0, float(total_steps) - float(self.warmup_steps)))

    def get_config(self):
        return dict(super().get_config(), decay_steps=self.first_decay_steps)


def make_optimizer(config: Config, steps_per_epoch: int, rate=None) -> keras.optimizers.Optimizer:
    """The configured optimizer; `rate` (a float or schedule) replaces the configured rate."""
    rate = learning_rate_schedule(config, steps_per_epoch) if rate is None else rate
    clip = config.training.clip_norm or None
    if config.training.optimizer == "paper_sgd":
        return keras.optimizers.SGD(rate, global_clipnorm=clip)
    return keras.optimizers.Adam(rate, global_clipnorm=clip)


# --- Callbacks --------------------------------------------------------------


def _partial_path(path: str) -> str:
    """Where `X.weights.h5` is written before it is renamed into place."""
    return path[: -len(".weights.h5")] + ".partial.weights.h5"


def _save_weights_atomically(model: keras.Model, path: str) -> None:
    temporary = _partial_path(path)
    model.save_weights(temporary)
    os.replace(temporary, path)


def _copy_atomically(source: str, path: str) -> None:
    temporary = _partial_path(path)
    shutil.copyfile(source, temporary)
    os.replace(temporary, path)


def _epoch_weight_files(directory: str) -> list[str]:
    """`epoch_NNNN.weights.h5` files in `directory`, oldest first."""
    names = sorted(
        name for name in os.listdir(directory)
        if name.startswith("epoch_") and name.endswith(".weights.h5") and ".partial" not in name
    )
    return [os.path.join(directory, name) for name in names]


def average_weights(paths: list[str], out_path: str) -> None:
    """Writes the element-wise mean of the Keras weight files `paths` (one
    architecture) to `out_path`, atomically.

    Works on the files alone (h5py), not on a live model, so it is the same under
    any distribution strategy. Float arrays are averaged in float64 and stored in
    their own dtype; other arrays (e.g. seed states) are taken from the last file.
    """
    import h5py

    temporary = _partial_path(out_path)
    shutil.copyfile(paths[-1], temporary)
    sources = [h5py.File(path, "r") for path in paths]
    try:
        with h5py.File(temporary, "r+") as out:
            names: list[str] = []
            out.visititems(lambda name, item: names.append(name) if isinstance(item, h5py.Dataset) else None)
            for name in names:
                if not np.issubdtype(out[name].dtype, np.floating):
                    continue
                total = np.zeros(out[name].shape, np.float64)
                for source in sources:
                    total += source[name][()]
                out[name][...] = (total / len(sources)).astype(out[name].dtype)
    finally:
        for source in sources:
            source.close()
    os.replace(temporary, out_path)


class AtomicCheckpoint(keras.callbacks.Callback):
    """Writes `last.weights.h5` each epoch and `best.weights.h5` on a new best dev loss.

    Each file is written beside its target and renamed into place, so an
    interrupted write never replaces a good checkpoint. With `average_last` N,
    the last N epochs' weights are kept as `epoch_NNNN.weights.h5` and their
    mean is written as `averaged.weights.h5` when training ends (a resumed run
    averages the files kept before the interruption too).
    """

    def __init__(self, directory: str, monitor: str = "val_loss", enabled: bool = True,
                 average_last: int = 0):
        super().__init__()
        self.directory = directory
        self.monitor = monitor
        self.enabled = enabled
        self.average_last = average_last
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
        last = os.path.join(self.directory, "last.weights.h5")
        _save_weights_atomically(self.model, last)
        if self.average_last:
            _copy_atomically(last, os.path.join(self.directory, f"epoch_{epoch + 1:04d}.weights.h5"))
            for old in _epoch_weight_files(self.directory)[: -self.average_last]:
                os.remove(old)
        value = logs.get(self.monitor)
        if value is not None and value < self.best:
            self.best = float(value)
            _copy_atomically(last, os.path.join(self.directory, "best.weights.h5"))
            with open(os.path.join(self.directory, "best.json.tmp"), "w", encoding="utf-8") as h:
                json.dump({self.monitor: self.best, "epoch": epoch + 1}, h)
            os.replace(
                os.path.join(self.directory, "best.json.tmp"),
                os.path.join(self.directory, "best.json"),
            )

    def on_train_end(self, logs=None):
        if not (self.enabled and self.average_last):
            return
        paths = _epoch_weight_files(self.directory)
        if paths:
            average_weights(paths, os.path.join(self.directory, "averaged.weights.h5"))
            log(f"averaged the weights of {len(paths)} epoch(s) into {self.directory}/averaged.weights.h5")


class TimeBudget(keras.callbacks.Callback):
    """Stops training once `max_minutes` have passed.

    Checked after every batch on one machine. Under
    `MultiWorkerMirroredStrategy` all workers must stop at the same step, so
    the chief's clock decides at the end of each epoch and every worker
    learns the decision through an all-reduce.
    """

    def __init__(self, max_minutes: float | None, strategy=None, chief: bool = True):
        super().__init__()
        self.max_seconds = None if not max_minutes else 60.0 * max_minutes
        self.start = time.monotonic()
        self.stopped = False
        self.strategy = strategy
        self.chief = chief
        self.multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)

    def _over(self) -> bool:
        return bool(self.max_seconds) and time.monotonic() - self.start > self.max_seconds

    def _stop(self):
        if not self.stopped:
            log(f"time budget of {self.max_seconds / 60:.1f} minutes reached: stopping")
        self.stopped = True
        self.model.stop_training = True

    def on_train_batch_end(self, batch, logs=None):
        if not self.multi_worker and self._over():
            self._stop()

    def on_epoch_end(self, epoch, logs=None):
        if not (self.multi_worker and self.max_seconds):
            return
        vote = tf.constant(1.0 if self.chief and self._over() else 0.0)
        if float(self.strategy.reduce(tf.distribute.ReduceOp.SUM, vote, axis=None)) > 0:
            self._stop()


class FitScheduleToBudget(keras.callbacks.Callback):
    """Ends a cosine schedule's decay when the time budget ends.

    A planned cosine decay that a time budget cuts short stops at a high rate,
    which wastes the last epochs' gains. At the end of every epoch this
    callback measures the time per optimizer step over that epoch (its
    validation and dev decoding included), estimates the step at which the
    budget will stop training, and moves the end of the decay there: never
    past the schedule's first plan, so a budget that leaves room changes nothing.
    Under `MultiWorkerMirroredStrategy` the chief's estimate is shared with
    every worker through an all-reduce, so all replicas follow one schedule.

    Args:
        schedule: `PlannedCosineDecay`. The optimizer's schedule.
        budget: `TimeBudget`. Its clock and limit.
        strategy: the `tf.distribute` strategy of the run.
        chief: bool. Whether this process's clock decides.
        clock: callable returning seconds (for tests).
    """

    def __init__(self, schedule, budget, strategy=None, chief=True, clock=time.monotonic):
        super().__init__()
        self.schedule = schedule
        self.budget = budget
        self.planned_steps = schedule.first_total_steps
        self.strategy = strategy
        self.chief = chief
        self.clock = clock
        self.multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        self.mark = None

    def _iterations(self) -> int:
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def on_train_begin(self, logs=None):
        self.mark = (self.clock(), self._iterations())

    def estimate(self, now: float, step: int) -> float:
        """The step at which the budget will stop training, at the pace since the last mark."""
        then, step_then = self.mark
        remaining = self.budget.max_seconds - (now - self.budget.start)
        if step <= step_then or now <= then:
            return float(self.planned_steps)
        return step + max(0.0, remaining) * (step - step_then) / (now - then)

    def on_epoch_end(self, epoch, logs=None):
        if not self.budget.max_seconds:
            return
        now, step = self.clock(), self._iterations()
        total = min(float(self.planned_steps), self.estimate(now, step)) if self.chief else 0.0
        self.mark = (now, step)
        if self.multi_worker:
            total = float(self.strategy.reduce(tf.distribute.ReduceOp.SUM, tf.constant(total), axis=None))
        before = self.schedule.planned_total_steps
        self.schedule.plan(total)
        after = self.schedule.planned_total_steps
        if self.chief and abs(after - before) > 0.01 * max(before, 1):
            log(f"time budget: the learning-rate decay now ends at step {after} "
                f"(was {before}; {self.planned_steps} planned)")


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


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` with a single atomic commit point, and one source
    of truth in a cluster.

    Each backup writes its weights (with the optimizer state) to a new file,
    then renames a small JSON file naming that file and the epoch into place,
    then removes the previous weights. A process killed at any moment (even
    `kill -9`) leaves a consistent backup, so the next start resumes from it.
    Resuming restarts the epoch in which the backup was taken, from the
    backed-up weights and optimizer state.

    Under `MultiWorkerMirroredStrategy` only the chief keeps a backup. At the
    start of training every worker takes the chief's weights, optimizer state
    and epoch through an all-reduce, so workers restarted after a crash agree
    on where they are without sharing a file system.

    Args:
        backup_dir: str. Where the backup lives.
        strategy: the `tf.distribute` strategy of the run.
        chief: bool. Whether this process writes and reads the backup.
        **kwargs: passed to `keras.callbacks.BackupAndRestore`.
    """

    STATE = "state.json"

    def __init__(self, backup_dir, strategy=None, chief=True, **kwargs):
        super().__init__(backup_dir, **kwargs)
        self.strategy = strategy
        self.chief = chief

    def _state_path(self) -> str:
        return os.path.join(self.backup_dir, self.STATE)

    def _read_state(self) -> dict | None:
        try:
            with open(self._state_path(), encoding="utf-8") as handle:
                return json.load(handle)
        except FileNotFoundError:
            return None

    def _load_model(self):
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        state = self._read_state() if self.chief else None
        epoch = 0
        if state is not None:
            self.model.load_weights(os.path.join(self.backup_dir, state["weights"]))
            epoch = int(state["epoch"])
            log(f"resuming from {self.backup_dir}: epoch {epoch + 1}")
        if isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy):
            epoch = self._take_chief_state(epoch)
        if epoch:
            self.model._initial_epoch = epoch

    def _take_chief_state(self, epoch: int) -> int:
        """All workers: every variable and the epoch become the chief's."""

        def from_chief(value):
            value = tf.convert_to_tensor(value)
            contribution = value if self.chief else tf.zeros_like(value)
            return self.strategy.reduce(tf.distribute.ReduceOp.SUM, contribution, axis=None)

        variables = list(self.model.variables)
        if self.model.optimizer is not None:
            variables += list(self.model.optimizer.variables)
        for variable in variables:
            variable.assign(from_chief(variable.value))
        return int(from_chief(tf.constant(epoch, tf.int64)))

    def _save_model(self):
        if not self.chief:
            return
        os.makedirs(self.backup_dir, exist_ok=True)
        previous = self._read_state()
        self._saves = getattr(self, "_saves", 0) + 1
        name = f"e{self._current_epoch}-b{self._last_batch_seen}-{os.getpid()}-{self._saves}.weights.h5"
        self.model.save_weights(os.path.join(self.backup_dir, name))
        state = {"epoch": self._current_epoch, "batch": self._last_batch_seen, "weights": name}
        temporary = self._state_path() + ".partial"
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self._state_path())
        if previous and previous["weights"] != name:
            try:
                os.remove(os.path.join(self.backup_dir, previous["weights"]))
            except FileNotFoundError:
                pass


def weights_digest(model: keras.Model) -> str:
    """sha256 of the model's weights: equal on every worker of a healthy run."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    return digest.hexdigest()[:16]


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
    # Every worker runs the same program; only the chief's files are the run.
    # The others write into a scratch directory of their own, removed at the end.
    chief_dir = run_dir
    run_dir = chief_dir if chief else worker_scratch_dir(chief_dir, strategy)
    os.makedirs(run_dir, exist_ok=True)

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
    train_options = dict(
        shuffle=True, seed=training.seed, shuffle_buffer=training.shuffle_buffer, **dataset_options
    )
    # One iterator serves the whole run (every pass reshuffles; fit gets
    # `steps_per_epoch`). With a finite dataset Keras starts a new iterator
    # each epoch and releases the last one at the next epoch's first batch;
    # that release blocked training (idle, in native code) for 30-60 s at
    # 14 of a 34-epoch g2p_best run's epoch starts, 9% of its time.
    train_dataset = make_dataset(*data.ids["train"], repeat=True, **train_options)
    dev_dataset = make_dataset(*data.ids["dev"], shuffle=False, **dataset_options)
    padding = padding_share(make_dataset(*data.ids["train"], **train_options))
    log(
        f"train: {padding['batches']} batches per epoch, {padding['real_tokens']} real tokens, "
        f"padding share {100 * padding['padding_share']:.1f}%"
    )
    if chief:
        with open(os.path.join(run_dir, "padding.json"), "w", encoding="utf-8") as handle:
            json.dump(padding, handle, indent=2)
    # Each bucket flushes its remainder, so every epoch has the same batch count.
    steps_per_epoch = padding["batches"]
    dev_batches = padding_share(dev_dataset)["batches"]
    dev_dataset = dev_dataset.apply(tf.data.experimental.assert_cardinality(dev_batches))

    with strategy.scope():
        model = build_seq2seq(config.model)
        schedule = learning_rate_schedule(config, steps_per_epoch)
        model.compile(
            optimizer=make_optimizer(config, steps_per_epoch, rate=schedule),
            loss=SequenceCrossEntropy(training.label_smoothing),
            weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
            steps_per_execution=training.steps_per_execution,
        )
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        _fix_multi_worker_log_reduce()
    if strategy.num_replicas_in_sync > 1:
        _build_from_local_batch(model, strategy)
    if verbose:
        model.summary(print_fn=lambda line, **_: print(line, file=sys.stderr))

    checkpoint_dir = os.path.join(run_dir, "checkpoints")
    backup_dir = os.path.join(run_dir, "backup")
    budget = TimeBudget(max_minutes, strategy=strategy, chief=chief)
    callbacks = []
    if training.eval_sample_size and data.splits["dev"] and chief:
        # Decoding a sample is local work; only the chief's logs are kept.
        callbacks.append(DevMetric(config, data, training.eval_sample_size))
    callbacks += [
        AtomicBackupAndRestore(
            backup_dir,
            strategy=strategy,
            chief=chief,
            save_freq=training.save_every_steps or "epoch",
            delete_checkpoint=True,
        ),
        AtomicCheckpoint(checkpoint_dir, enabled=chief, average_last=training.average_last_epochs),
        keras.callbacks.CSVLogger(os.path.join(run_dir, "train_log.csv"), append=True),
        budget,
        CurvePlot(run_dir, enabled=chief),
    ]
    if max_minutes and training.fit_schedule_to_budget and isinstance(schedule, PlannedCosineDecay):
        callbacks.append(FitScheduleToBudget(schedule, budget, strategy=strategy, chief=chief))
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
        steps_per_epoch=steps_per_epoch,
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
        with open(os.path.join(run_dir, "train_summary.json"), "w", encoding="utf-8") as handle:
            json.dump(summary, handle, indent=2)
    log(
        f"done: {summary['epochs_run']} epoch(s) in {summary['seconds'] / 60:.1f} min; "
        f"best dev loss {summary['best_val_loss']:.4f}; weights digest {summary['weights_digest']}"
    )
    model.seq2seq_config = config.model
    summary["model"] = model
    return summary
