"""keras_s2s.torch_step: the torch training step without host-device waits trains exactly
as Keras' own `train_step` (weights, loss, step count), with and without clipping, with its
lean forward pass (`keras_s2s.models.torch_forward`) and with Keras' own."""

from conftest import run_under_torch

CODE = r"""
import sys
sys.modules['tensorflow'] = None
import numpy as np, keras, torch
from keras_s2s import torch_step
from keras_s2s.config import ModelConfig
from keras_s2s.losses import SequenceCrossEntropy
from keras_s2s.models import build_seq2seq

rng = np.random.default_rng(0)
config = ModelConfig(num_layers=2, hidden_dim=16, embedding_dim=8, dropout=0.0,
                     source_vocabulary_size=20, target_vocabulary_size=20)
batches = []
for _ in range(4):
    source = rng.integers(4, 20, (6, 7)).astype('int32')
    for row, length in enumerate([7, 3, 1, 5, 7, 2]):
        source[row, length:] = 0
    target = rng.integers(4, 20, (6, 5)).astype('int32')
    weights = (rng.random((6, 5)) > 0.2).astype('float32')
    batches.append(({'source_ids': torch.tensor(source), 'decoder_input_ids': torch.tensor(target)},
                    torch.tensor(target), torch.tensor(weights)))


def as_numpy(batch):
    return keras.tree.map_structure(lambda t: t.numpy(), batch)


def train(make_optimizer, install, numpy=False, lean_forward=True):
    keras.utils.set_random_seed(3)
    model = build_seq2seq(config)
    model.compile(optimizer=make_optimizer(), loss=SequenceCrossEntropy())
    fast = torch_step.install(model, lean_forward=lean_forward) if install else None
    losses = [model.train_on_batch(x, y, sample_weight=w)
              for x, y, w in (map(as_numpy, batches) if numpy else batches)]
    return fast, losses, [v.numpy() for v in model.trainable_weights], int(model.optimizer.iterations.numpy())


cases = {
    'sgd clipped': (lambda: keras.optimizers.SGD(0.5, global_clipnorm=0.05), True),
    'sgd unclipped': (lambda: keras.optimizers.SGD(0.5), True),
    'sgd clipped, Keras forward': (lambda: keras.optimizers.SGD(0.5, global_clipnorm=0.05), True),
    'adam (Keras update)': (lambda: keras.optimizers.Adam(0.01, global_clipnorm=0.05), False),
    'sgd momentum (Keras update)': (lambda: keras.optimizers.SGD(0.5, momentum=0.9), False),
}
keras.utils.set_random_seed(3)
initial = [v.numpy() for v in build_seq2seq(config).trainable_weights]
results = {}
for name, (make, expect_fast) in cases.items():
    numpy = name == 'sgd clipped'  # numpy batches: the wait-free step moves them to the device itself
    _, want_losses, want_weights, want_steps = train(make, install=False, numpy=numpy)
    fast, losses, weights, steps = train(make, install=True, numpy=numpy, lean_forward='Keras forward' not in name)
    assert fast is expect_fast, (name, fast)
    assert steps == want_steps == len(batches), (name, steps, want_steps)
    np.testing.assert_allclose(losses, want_losses, rtol=1e-5, err_msg=name)
    results[name] = weights
    for a, b in zip(weights, want_weights):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=name)

def distance(first, second):
    return max(float(np.abs(a - b).max()) for a, b in zip(first, second))


# Training moved the weights, and the clipping took effect.
assert distance(results['sgd unclipped'], initial) > 1e-3
assert distance(results['sgd clipped'], results['sgd unclipped']) > 1e-3
print('ok')
"""


def test_wait_free_torch_step_trains_as_keras_train_step():
    assert run_under_torch(CODE).split()[-1:] == ["ok"]
