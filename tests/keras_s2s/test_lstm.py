"""keras_s2s.models.lstm.LSTM: under torch both fused paths (packed, frozen) equal Keras' loop;
under mixed precision on TensorFlow's CPU loop the gates and cell state run in float32."""

import numpy as np
import pytest

from keras_s2s.models.lstm import LSTM

CODE = r"""
import sys
sys.modules['tensorflow'] = None
import numpy as np, keras, torch
from keras_s2s.config import ModelConfig
from keras_s2s.models import _torch_lstm, build_seq2seq
from keras_s2s.models.lstm import LSTM

rng = np.random.default_rng(0)
GPU = torch.cuda.is_available()  # CODE also runs alone on a GPU machine (BENCHMARKS.md, GPU)
DEVICE = 'cuda' if GPU else 'cpu'


def run(layer, x, mask, h0, c0, seed):
    # Outputs, then gradients of a random linear loss over every output for the input and each weight.
    xs = torch.tensor(x, requires_grad=True, device=DEVICE)
    mask = None if mask is None else torch.tensor(mask, device=DEVICE)
    out = layer(xs, mask=mask, initial_state=[torch.tensor(h0, device=DEVICE), torch.tensor(c0, device=DEVICE)])
    draw = np.random.default_rng(seed)
    loss = sum((o * torch.tensor(draw.normal(size=tuple(o.shape)), dtype=torch.float32, device=DEVICE)).sum() for o in out)
    loss.backward()
    return [o.detach().cpu().numpy() for o in out] + [xs.grad.cpu().numpy()] + [
        v.value.grad.cpu().numpy() for v in layer.trainable_variables]


def layers(time, **kwargs):
    # keras_s2s's LSTM and Keras' own, 8 units over 6 features, with the same weights.
    ours, reference = LSTM(8, **kwargs), keras.layers.LSTM(8, **kwargs)
    ours.build((None, time, 6))
    reference.build((None, time, 6))
    reference.set_weights(ours.get_weights())
    return ours, reference


def compare(mask, zero_output_for_mask=False, shape=None):
    batch, time = mask.shape if shape is None else shape
    x = rng.normal(size=(batch, time, 6)).astype('float32')
    h0, c0 = (rng.normal(size=(batch, 8)).astype('float32') for _ in range(2))
    kwargs = dict(return_sequences=True, return_state=True, zero_output_for_mask=zero_output_for_mask)
    ours, reference = layers(time, **kwargs)
    seed = int(rng.integers(1 << 30))
    got = run(ours, x, mask, h0, c0, seed)
    want = run(reference, x, mask, h0, c0, seed)
    for a, b in zip(got, want):
        # cuDNN sums in another order than Keras' loop: 5e-5 apart on an H200 (float32, no TF32).
        np.testing.assert_allclose(a, b, atol=1e-4 if GPU else 1e-5)


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
    if not (GPU and method == "frozen"):  # there a device-side assertion stops it (no host wait)
        compare(holes)  # not right-padded: Keras' own loop, same results
    empty = right_padded([3, 0, 2], 3)
    compare(empty)  # an empty row: Keras' own loop (packed) or its initial state kept (frozen)
    compare(empty, zero_output_for_mask=True)
    declined = {"packed": 3, "frozen": 0 if GPU else 1}[method]
    assert _torch_lstm.CALLS['declined'] == before['declined'] + declined, (method, _torch_lstm.CALLS)

# What the fused calls derive from a mask is computed once per mask tensor (an encoder's layers all
# get the same one), and again for another tensor or once the tensor is changed in place.
for method in ("packed", "frozen"):
    _torch_lstm.METHOD = method
    mask = torch.tensor(right_padded([4, 2, 3], 4), device=DEVICE)
    facts = _torch_lstm._facts(mask)
    assert _torch_lstm._facts(mask) is facts and _torch_lstm._facts(mask.clone()) is not facts
    layer, reference = layers(4, return_sequences=True)
    x = torch.tensor(rng.normal(size=(3, 4, 6)).astype('float32'), device=DEVICE)
    for _ in range(2):
        np.testing.assert_allclose(layer(x, mask=mask).detach().cpu().numpy(),
                                   reference(x, mask=mask).detach().cpu().numpy(), atol=1e-4 if GPU else 1e-5)
        mask[0, 3] = False  # row 0 is now 3 steps long
    assert _torch_lstm._facts(mask).lengths.tolist() == [3, 2, 3]

# Without a mask, on a GPU: one fused call with the weights in one buffer (forced here on any device).
on_gpu = _torch_lstm.on_gpu
_torch_lstm.on_gpu = lambda inputs: True
before = _torch_lstm.CALLS['unmasked']
compare(None, shape=(5, 6))
for return_sequences in (False, True):
    layer, reference = layers(4, return_sequences=return_sequences)
    x = rng.normal(size=(3, 4, 6)).astype('float32')
    np.testing.assert_allclose(layer(x).detach().cpu().numpy(), reference(x).detach().cpu().numpy(),
                               atol=1e-4 if GPU else 1e-5)
assert _torch_lstm.CALLS['unmasked'] == before + 3, _torch_lstm.CALLS
_torch_lstm.on_gpu = on_gpu

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
    return [logits.detach().cpu().numpy()] + [v.value.grad.cpu().numpy() for v in model.trainable_variables]


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
    # Imported here: importing this module must not need TensorFlow (CODE runs alone on GPUs).
    from conftest import run_under_torch

    assert run_under_torch(CODE).split()[-1:] == ["ok"]


def _lstm_outputs_and_gradients(layer, x, mask, h0, c0):
    import tensorflow as tf

    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = layer(x, mask=tf.constant(mask), initial_state=[tf.constant(h0), tf.constant(c0)])
        draw = np.random.default_rng(7)
        loss = sum(tf.reduce_sum(tf.cast(o, "float32") * draw.normal(size=o.shape).astype("float32"))
                   for o in out)
    grads = tape.gradient(loss, [x] + layer.trainable_variables)
    return [np.asarray(tf.cast(t, "float32")) for t in list(out) + grads]


@pytest.mark.parametrize("go_backwards", [False, True])
def test_mixed_precision_lstm_keeps_gates_and_cell_in_float32(go_backwards):
    """Under mixed bfloat16 on TensorFlow's CPU loop, LSTM's gates and cell state are float32:
    closer to a float32 layer than Keras' all-bfloat16 step in outputs, states and the inputs' and
    bias's gradients, and within 3% of it in the weights' gradients."""
    import keras

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(3)
    batch, time, width, units = 16, 12, 24, 32
    lengths = rng.integers(1, time + 1, batch)
    mask = np.arange(time)[None, :] < lengths[:, None]
    x = rng.normal(size=(batch, time, width)).astype("float32")
    h0, c0 = (rng.normal(size=(batch, units)).astype("float32") for _ in range(2))
    kwargs = dict(return_sequences=True, return_state=True, go_backwards=go_backwards)
    results = {}
    for name, cls, policy in [("float32", keras.layers.LSTM, "float32"),
                              ("ours", LSTM, "mixed_bfloat16"),
                              ("keras", keras.layers.LSTM, "mixed_bfloat16")]:
        layer = cls(units, dtype=policy, **kwargs)
        layer.build((None, time, width))
        if name == "float32":
            weights = layer.get_weights()
        layer.set_weights(weights)
        results[name] = _lstm_outputs_and_gradients(layer, x, mask, h0, c0)
    for index, name in enumerate(["outputs", "h", "c", "d_inputs", "d_kernel", "d_recurrent", "d_bias"]):
        reference = results["float32"][index]
        scale = np.abs(reference).max()
        ours = np.abs(results["ours"][index] - reference).max() / scale
        keras_bf16 = np.abs(results["keras"][index] - reference).max() / scale
        assert ours < 0.03, (name, ours)
        # The weight gradients sum over every step and row: over 24 random initialisations
        # theirs came out less close than Keras' in 6 (kernel) and 4 (recurrent kernel).
        if name not in ("d_kernel", "d_recurrent"):
            assert ours < keras_bf16, (name, ours, keras_bf16)

