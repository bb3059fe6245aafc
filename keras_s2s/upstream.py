"""Everything that reaches into Keras' private `keras.src`, in one place.

Two workarounds for upstream bugs, each applied in a scope that undoes it on exit, and the
private helpers the torch-backend work and the float32-gate LSTM call. Each names the
upstream issue and the versions it was checked against (Keras 3.15.1, TensorFlow 2.21.0);
when a release fixes one, its scope is the one place to delete.
"""

from __future__ import annotations

import contextlib

import keras
from keras.src import backend as private_backend  # noqa: F401 (the LSTM kernels, AutocastScope)
from keras.src.trainers.data_adapters import data_adapter_utils  # noqa: F401 (unpack_x_y_sample_weight)


@contextlib.contextmanager
def build_from_local_batch(model: keras.Model, strategy):
    """Lets `fit` build a model under a strategy with several replicas, inside the scope.

    keras-team/keras#20329: before training and before each evaluation, Keras reduces one
    distributed batch across replicas to learn its shapes. That reduce fails on nested
    inputs across workers, and on any batch whose rows do not split evenly over the
    replicas (a bucket's batch of 555 rows on two GPUs cannot be averaged). Shapes need no
    reduce: this takes the batch's first local value instead. With one replica, nothing
    is changed."""
    if strategy is None or strategy.num_replicas_in_sync <= 1:
        yield
        return
    import tensorflow as tf

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
    try:
        yield
    finally:
        del model._maybe_symbolic_build  # the class's method again


@contextlib.contextmanager
def multi_worker_scalar_log_reduce(strategy):
    """Lets Keras 3 `fit` reduce scalar logs across workers, inside the scope.

    tensorflow/tensorflow#72388: under `MultiWorkerMirroredStrategy`, Keras averages each
    step's logs (loss, metrics: scalars) with `strategy.reduce("MEAN", value, axis=0)`,
    which fails on a scalar ("Invalid reduction dimension 0 for input with 0 dimensions").
    A scalar's mean over workers needs no axis; everything else keeps Keras' own
    reduction. Under any other strategy, nothing is changed."""
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer as tf_trainer

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        yield
        return
    original = tf_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if reduction not in ("auto", "mean"):
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

    tf_trainer.reduce_per_replica = reduce_per_replica
    try:
        yield
    finally:
        tf_trainer.reduce_per_replica = original


def reduce_per_replica():
    """Keras' current cross-replica log reduction (what the scope above replaces)."""
    from keras.src.backend.tensorflow import trainer as tf_trainer

    return tf_trainer.reduce_per_replica


@contextlib.contextmanager
def counting_keras_lstm_paths():
    """Counts, inside the scope, the calls of Keras' own LSTM paths under the torch backend:
    its cuDNN call (`cudnn`), torch's loop (`torch loop`) and its step loop (`keras loop`).
    A benchmark's diagnostic (`bench/gpu_train_step.py`); yields the counts."""
    import collections
    import importlib

    # The package's `rnn` attribute is the function of that name; the module is in sys.modules.
    torch_rnn = importlib.import_module("keras.src.backend.torch.rnn")
    counts = collections.Counter()
    patches = []
    for module, name, key in (
        (torch_rnn, "_cudnn_lstm", "cudnn"),
        (torch_rnn, "_fallback_lstm", "torch loop"),
        (private_backend, "rnn", "keras loop"),
    ):
        original = getattr(module, name, None)
        if original is None:
            continue

        def counted(*args, _original=original, _key=key, **kwargs):
            counts[_key] += 1
            return _original(*args, **kwargs)

        setattr(module, name, counted)
        patches.append((module, name, original))
    try:
        yield counts
    finally:
        for module, name, original in reversed(patches):
            setattr(module, name, original)
