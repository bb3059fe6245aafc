"""Where a run is trained: the `tf.distribute` strategy, which process writes the run
directory, and where the other workers write."""

from __future__ import annotations

import os
import sys

import tensorflow as tf


def log(message: str) -> None:
    print(f"[s2s] {message}", file=sys.stderr, flush=True)


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
