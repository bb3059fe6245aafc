"""The upstream workarounds are applied only inside their scopes, and undone on exit,
an error included."""

import keras
import pytest
import tensorflow as tf

from keras_s2s import upstream


def _multi_worker_strategy():
    # isinstance is all the scope looks at; a real one would start collectives.
    return tf.distribute.MultiWorkerMirroredStrategy.__new__(tf.distribute.MultiWorkerMirroredStrategy)


def test_the_log_reduce_fix_is_undone_when_its_scope_ends():
    original = upstream.reduce_per_replica()
    with upstream.multi_worker_scalar_log_reduce(_multi_worker_strategy()):
        assert upstream.reduce_per_replica() is not original
    assert upstream.reduce_per_replica() is original
    with pytest.raises(KeyError):
        with upstream.multi_worker_scalar_log_reduce(_multi_worker_strategy()):
            raise KeyError("fit failed")
    assert upstream.reduce_per_replica() is original


def test_the_log_reduce_fix_changes_nothing_on_one_machine():
    original = upstream.reduce_per_replica()
    with upstream.multi_worker_scalar_log_reduce(tf.distribute.get_strategy()):
        assert upstream.reduce_per_replica() is original


def test_the_local_batch_build_is_undone_when_its_scope_ends(two_cpu_strategy):
    with two_cpu_strategy.scope():
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    method = type(model)._maybe_symbolic_build
    with upstream.build_from_local_batch(model, two_cpu_strategy):
        assert "_maybe_symbolic_build" in vars(model)
    assert "_maybe_symbolic_build" not in vars(model) and type(model)._maybe_symbolic_build is method
    with pytest.raises(ValueError):
        with upstream.build_from_local_batch(model, two_cpu_strategy):
            raise ValueError("fit failed")
    assert "_maybe_symbolic_build" not in vars(model)
    with upstream.build_from_local_batch(model, tf.distribute.get_strategy()):
        assert "_maybe_symbolic_build" not in vars(model)
