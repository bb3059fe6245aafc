"""keras_s2s.models.lstm.LSTM under the torch backend: both fused paths (packed, frozen) equal Keras' loop."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CODE = r"""
import sys
sys.modules['tensorflow'] = None
import numpy as np, keras, torch
from keras_s2s.config import ModelConfig
from keras_s2s.models import _torch_lstm, build_seq2seq
from keras_s2s.models.lstm import LSTM

rng = np.random.default_rng(0)


def run(layer, x, mask, h0, c0, seed):
    # Outputs, then gradients of a random linear loss over every output for the input and each weight.
    xs = torch.tensor(x, requires_grad=True)
    out = layer(xs, mask=torch.tensor(mask), initial_state=[torch.tensor(h0), torch.tensor(c0)])
    draw = np.random.default_rng(seed)
    loss = sum((o * torch.tensor(draw.normal(size=tuple(o.shape)), dtype=torch.float32)).sum() for o in out)
    loss.backward()
    return [o.detach().numpy() for o in out] + [xs.grad.numpy()] + [
        v.value.grad.numpy() for v in layer.trainable_variables]


def compare(mask, zero_output_for_mask=False):
    batch, time = mask.shape
    x = rng.normal(size=(batch, time, 6)).astype('float32')
    h0, c0 = (rng.normal(size=(batch, 8)).astype('float32') for _ in range(2))
    kwargs = dict(return_sequences=True, return_state=True, zero_output_for_mask=zero_output_for_mask)
    ours, reference = LSTM(8, **kwargs), keras.layers.LSTM(8, **kwargs)
    ours.build((None, time, 6))
    reference.build((None, time, 6))
    reference.set_weights(ours.get_weights())
    seed = int(rng.integers(1 << 30))
    got = run(ours, x, mask, h0, c0, seed)
    want = run(reference, x, mask, h0, c0, seed)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, atol=1e-5)


def right_padded(lengths, time):
    return np.arange(time)[None, :] < np.array(lengths)[:, None]


for method in ("packed", "frozen"):
    _torch_lstm.METHOD = method
    before = dict(_torch_lstm.CALLS)
    compare(right_padded([7, 3, 1, 5, 7, 2], 7))
    compare(right_padded([4, 2, 4], 4), zero_output_for_mask=True)
    assert _torch_lstm.CALLS[method] == before[method] + 2, _torch_lstm.CALLS
    holes = right_padded([5, 5], 5)
    holes[1, 2] = False
    compare(holes)  # not right-padded: Keras' own loop, same results
    empty = right_padded([3, 0, 2], 3)
    compare(empty)  # an empty row: Keras' own loop (packed) or its initial state kept (frozen)
    compare(empty, zero_output_for_mask=True)
    declined = {"packed": 3, "frozen": 1}[method]
    assert _torch_lstm.CALLS['declined'] == before['declined'] + declined, (method, _torch_lstm.CALLS)

# The whole model: logits and gradients with the fused encoder equal Keras' loop.
config = ModelConfig(num_layers=2, hidden_dim=16, embedding_dim=8, attention='luong', dropout=0.0,
                     source_vocabulary_size=20, target_vocabulary_size=20)
model = build_seq2seq(config)
fused_loop = LSTM.inner_loop
source = rng.integers(4, 20, (5, 9)).astype('int32')
for row, length in enumerate([9, 4, 1, 6, 9]):
    source[row, length:] = 0
target = rng.integers(4, 20, (5, 6)).astype('int32')


def logits_and_grads():
    for variable in model.trainable_variables:
        variable.value.grad = None
    logits = model({'source_ids': source, 'decoder_input_ids': target}, training=True)
    logits.square().sum().backward()
    return [logits.detach().numpy()] + [v.value.grad.numpy() for v in model.trainable_variables]


LSTM.inner_loop = keras.layers.LSTM.inner_loop
loop = logits_and_grads()
LSTM.inner_loop = fused_loop
for method in ("packed", "frozen"):
    _torch_lstm.METHOD = method
    calls = _torch_lstm.CALLS[method]
    fused = logits_and_grads()
    assert _torch_lstm.CALLS[method] == calls + config.num_layers, _torch_lstm.CALLS
    for a, b in zip(fused, loop):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)
print('ok')
"""


def test_masked_lstm_runs_fused_under_torch_and_matches_keras_loop():
    environment = dict(os.environ, KERAS_BACKEND="torch", PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, "-c", CODE], cwd=ROOT, env=environment,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-1:] == ["ok"]
