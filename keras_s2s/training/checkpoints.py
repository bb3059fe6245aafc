"""Checkpoints: `best`/`last` weights written atomically each epoch, the average of the
last epochs' weights, the resumable backup, and the weights digest."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil

import keras
import numpy as np
import tensorflow as tf

from keras_s2s.training.distribution import log
from serving.files import atomic_path, atomic_write


def _save_weights_atomically(model: keras.Model, path: str) -> None:
    with atomic_path(path) as temporary:
        model.save_weights(temporary)


def _copy_atomically(source: str, path: str) -> None:
    with atomic_path(path) as temporary:
        shutil.copyfile(source, temporary)


def _epoch_weight_files(directory: str) -> list[str]:
    """`epoch_NNNN.weights.h5` files in `directory`, oldest first."""
    names = sorted(
        name
        for name in os.listdir(directory)
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
    with atomic_path(out_path) as temporary:
        shutil.copyfile(paths[-1], temporary)
        _average_into(temporary, paths)


def _average_into(out_path: str, paths: list[str]) -> None:
    import h5py

    sources = [h5py.File(path, "r") for path in paths]
    try:
        with h5py.File(out_path, "r+") as out:
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


class AtomicCheckpoint(keras.callbacks.Callback):
    """Writes `last.weights.h5` each epoch and `best.weights.h5` on a new best dev loss.

    Each file is written beside its target and renamed into place, so an
    interrupted write never replaces a good checkpoint. With `average_last` N,
    the last N epochs' weights are kept as `epoch_NNNN.weights.h5` and their
    mean is written as `averaged.weights.h5` when training ends (a resumed run
    averages the files kept before the interruption too).
    """

    def __init__(self, directory: str, monitor: str = "val_loss", enabled: bool = True, average_last: int = 0):
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
            with atomic_write(os.path.join(self.directory, "best.json")) as handle:
                json.dump({self.monitor: self.best, "epoch": epoch + 1}, handle)

    def on_train_end(self, logs=None):
        if not (self.enabled and self.average_last):
            return
        paths = _epoch_weight_files(self.directory)
        if paths:
            average_weights(paths, os.path.join(self.directory, "averaged.weights.h5"))
            log(f"averaged the weights of {len(paths)} epoch(s) into {self.directory}/averaged.weights.h5")


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
        with atomic_write(self._state_path(), fsync=True) as handle:
            json.dump(state, handle)
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
