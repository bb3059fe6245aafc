"""keras_s2s.torch_backend.step: the torch training step without host-device waits trains
exactly as Keras' own `train_step` (weights, loss, step count), with and without clipping,
with its lean forward pass (`keras_s2s.torch_backend.forward`) and with Keras' own."""

import keras
import numpy as np
import pytest
import torch

from keras_s2s.config import ModelConfig
from keras_s2s.losses import SequenceCrossEntropy
from keras_s2s.models import build_seq2seq
from keras_s2s.torch_backend import step as torch_step

pytestmark = pytest.mark.torch_backend

CONFIG = ModelConfig(
    num_layers=2, hidden_dim=16, embedding_dim=8, dropout=0.0, source_vocabulary_size=20, target_vocabulary_size=20
)


def _batches():
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(4):
        source = rng.integers(4, 20, (6, 7)).astype("int32")
        for row, length in enumerate([7, 3, 1, 5, 7, 2]):
            source[row, length:] = 0
        target = rng.integers(4, 20, (6, 5)).astype("int32")
        weights = (rng.random((6, 5)) > 0.2).astype("float32")
        batches.append(
            (
                {"source_ids": torch.tensor(source), "decoder_input_ids": torch.tensor(target)},
                torch.tensor(target),
                torch.tensor(weights),
            )
        )
    return batches


def _train(make_optimizer, install, numpy=False, lean_forward=True):
    keras.utils.set_random_seed(3)
    model = build_seq2seq(CONFIG)
    model.compile(optimizer=make_optimizer(), loss=SequenceCrossEntropy())
    fast = torch_step.install(model, lean_forward=lean_forward) if install else None
    batches = _batches()
    if numpy:  # numpy batches: the wait-free step moves them to the device itself
        batches = [keras.tree.map_structure(lambda t: t.numpy(), batch) for batch in batches]
    losses = [model.train_on_batch(x, y, sample_weight=w) for x, y, w in batches]
    return fast, losses, [v.numpy() for v in model.trainable_weights], int(model.optimizer.iterations.numpy())


CASES = {
    "sgd clipped, numpy batches": (lambda: keras.optimizers.SGD(0.5, global_clipnorm=0.05), True, True, True),
    "sgd unclipped": (lambda: keras.optimizers.SGD(0.5), True, False, True),
    "sgd clipped, Keras forward": (lambda: keras.optimizers.SGD(0.5, global_clipnorm=0.05), True, False, False),
    "adam (Keras update)": (lambda: keras.optimizers.Adam(0.01, global_clipnorm=0.05), False, False, True),
    "sgd momentum (Keras update)": (lambda: keras.optimizers.SGD(0.5, momentum=0.9), False, False, True),
}


@pytest.mark.parametrize("name", list(CASES))
def test_the_wait_free_step_trains_as_keras_train_step(name):
    make, expect_fast, numpy, lean_forward = CASES[name]
    _, want_losses, want_weights, want_steps = _train(make, install=False, numpy=numpy)
    fast, losses, weights, steps = _train(make, install=True, numpy=numpy, lean_forward=lean_forward)
    assert fast is expect_fast
    assert steps == want_steps == 4
    np.testing.assert_allclose(losses, want_losses, rtol=1e-5)
    for a, b in zip(weights, want_weights):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_training_moves_the_weights_and_the_clipping_takes_effect():
    def distance(first, second):
        return max(float(np.abs(a - b).max()) for a, b in zip(first, second))

    keras.utils.set_random_seed(3)
    initial = [v.numpy() for v in build_seq2seq(CONFIG).trainable_weights]
    unclipped = _train(CASES["sgd unclipped"][0], install=True)[2]
    clipped = _train(CASES["sgd clipped, Keras forward"][0], install=True)[2]
    assert distance(unclipped, initial) > 1e-3
    assert distance(clipped, unclipped) > 1e-3
