"""keras_s2s.models.lstm.LSTM under torch: both fused paths for masked batches (packed,
frozen) and the unmasked one equal Keras' loop, outputs and gradients, layer and model."""

import keras
import numpy as np
import pytest
import torch

from keras_s2s.config import ModelConfig
from keras_s2s.models import build_seq2seq
from keras_s2s.models.lstm import LSTM, TorchPaths, configure_lstms, fused_calls
from keras_s2s.torch_backend import lstm as fused

pytestmark = pytest.mark.torch_backend

GPU = torch.cuda.is_available()  # these tests also run on a GPU machine (bench/gpu_checks.sh)
DEVICE = "cuda" if GPU else "cpu"
# cuDNN sums in another order than Keras' loop: 5e-5 apart on an H200 (float32, no TF32).
ATOL = 1e-4 if GPU else 1e-5


def _run(layer, x, mask, h0, c0, seed):
    """Outputs, then gradients of a random linear loss over every output for the input and each weight."""
    xs = torch.tensor(x, requires_grad=True, device=DEVICE)
    mask = None if mask is None else torch.tensor(mask, device=DEVICE)
    out = layer(xs, mask=mask, initial_state=[torch.tensor(h0, device=DEVICE), torch.tensor(c0, device=DEVICE)])
    draw = np.random.default_rng(seed)
    loss = sum(
        (o * torch.tensor(draw.normal(size=tuple(o.shape)), dtype=torch.float32, device=DEVICE)).sum() for o in out
    )
    loss.backward()
    return (
        [o.detach().cpu().numpy() for o in out]
        + [xs.grad.cpu().numpy()]
        + [v.value.grad.cpu().numpy() for v in layer.trainable_variables]
    )


def _layers(time, paths=None, **kwargs):
    """keras_s2s's LSTM (with `paths`) and Keras' own, 8 units over 6 features, the same weights."""
    ours, reference = LSTM(8, **kwargs), keras.layers.LSTM(8, **kwargs)
    ours.torch_paths = paths or TorchPaths()
    ours.build((None, time, 6))
    reference.build((None, time, 6))
    reference.set_weights(ours.get_weights())
    return ours, reference


def _compare(rng, mask, paths, zero_output_for_mask=False, shape=None):
    """Runs both layers on one random batch; returns ours (to read its path counts)."""
    batch, time = mask.shape if shape is None else shape
    x = rng.normal(size=(batch, time, 6)).astype("float32")
    h0, c0 = (rng.normal(size=(batch, 8)).astype("float32") for _ in range(2))
    ours, reference = _layers(
        time, paths, return_sequences=True, return_state=True, zero_output_for_mask=zero_output_for_mask
    )
    seed = int(rng.integers(1 << 30))
    for a, b in zip(_run(ours, x, mask, h0, c0, seed), _run(reference, x, mask, h0, c0, seed)):
        np.testing.assert_allclose(a, b, atol=ATOL)
    return ours


def _right_padded(lengths, time):
    return np.arange(time)[None, :] < np.array(lengths)[:, None]


@pytest.mark.parametrize("method", ["packed", "frozen"])
def test_a_right_padded_batch_runs_fused_with_keras_loops_results(method):
    rng = np.random.default_rng(0)
    paths = TorchPaths(method=method)
    assert _compare(rng, _right_padded([7, 3, 1, 5, 7, 2], 7), paths).calls[method] == 1
    assert _compare(rng, _right_padded([4, 2, 4], 4), paths, zero_output_for_mask=True).calls[method] == 1


@pytest.mark.parametrize("method", ["packed", "frozen"])
def test_masks_the_fused_calls_do_not_take_go_to_keras_loop_with_the_same_results(method):
    rng = np.random.default_rng(1)
    paths = TorchPaths(method=method)
    holes = _right_padded([5, 5], 5)
    holes[1, 2] = False
    if not (GPU and method == "frozen"):  # there a device-side assertion stops it (no host wait)
        assert _compare(rng, holes, paths).calls["declined"] == 1
    empty = _right_padded([3, 0, 2], 3)  # an empty row: Keras' loop (packed) or its initial state kept (frozen)
    for zero_output in (False, True):
        layer = _compare(rng, empty, paths, zero_output_for_mask=zero_output)
        assert layer.calls["declined" if method == "packed" else "frozen"] == 1


@pytest.mark.parametrize("method", ["packed", "frozen"])
def test_what_the_calls_derive_from_a_mask_is_computed_once_per_mask_tensor(method):
    # An encoder's layers all get the same mask tensor; another tensor, or the same one
    # changed in place, gets its own.
    rng = np.random.default_rng(2)
    mask = torch.tensor(_right_padded([4, 2, 3], 4), device=DEVICE)
    facts = fused._facts(mask)
    assert fused._facts(mask) is facts and fused._facts(mask.clone()) is not facts
    layer, reference = _layers(4, TorchPaths(method=method), return_sequences=True)
    x = torch.tensor(rng.normal(size=(3, 4, 6)).astype("float32"), device=DEVICE)
    for _ in range(2):
        np.testing.assert_allclose(
            layer(x, mask=mask).detach().cpu().numpy(), reference(x, mask=mask).detach().cpu().numpy(), atol=ATOL
        )
        mask[0, 3] = False  # row 0 is now 3 steps long
    assert fused._facts(mask).lengths.tolist() == [3, 2, 3]


@pytest.mark.parametrize("one_buffer", [True, False])
def test_without_a_mask_the_gpus_path_is_one_fused_call(one_buffer):
    # Forced here on any device; the weights in one buffer or apart give the same results.
    rng = np.random.default_rng(3)
    paths = TorchPaths(gpu=True, one_buffer=one_buffer)
    assert _compare(rng, None, paths, shape=(5, 6)).calls["unmasked"] == 1
    for return_sequences in (False, True):
        layer, reference = _layers(4, paths, return_sequences=return_sequences)
        x = rng.normal(size=(3, 4, 6)).astype("float32")
        np.testing.assert_allclose(layer(x).detach().cpu().numpy(), reference(x).detach().cpu().numpy(), atol=ATOL)
        assert layer.calls["unmasked"] == 1


def test_the_whole_models_logits_and_gradients_equal_keras_loops():
    rng = np.random.default_rng(4)
    config = ModelConfig(
        num_layers=2,
        hidden_dim=16,
        embedding_dim=8,
        attention="luong",
        dropout=0.0,
        source_vocabulary_size=20,
        target_vocabulary_size=20,
    )
    model = build_seq2seq(config)
    source = rng.integers(4, 20, (5, 9)).astype("int32")
    for row, length in enumerate([9, 4, 1, 6, 9]):
        source[row, length:] = 0
    target = rng.integers(4, 20, (5, 6)).astype("int32")

    def logits_and_grads():
        for variable in model.trainable_variables:
            variable.value.grad = None
        logits = model({"source_ids": source, "decoder_input_ids": target}, training=True)
        logits.square().sum().backward()
        return [logits.detach().cpu().numpy()] + [v.value.grad.cpu().numpy() for v in model.trainable_variables]

    configure_lstms(model, torch_paths=TorchPaths(fused=False))
    loop = logits_and_grads()
    for method in ("packed", "frozen"):
        before = fused_calls(model)[method]
        configure_lstms(model, torch_paths=TorchPaths(method=method))
        for a, b in zip(logits_and_grads(), loop):
            np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)
        assert fused_calls(model)[method] == before + config.num_layers  # the encoder's layers


def test_paths_are_checked():
    with pytest.raises(ValueError, match="method"):
        TorchPaths(method="fast")
