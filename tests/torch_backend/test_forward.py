"""keras_s2s.torch_backend.forward: the training model's forward pass without Keras'
per-layer call machinery gives the functional model's logits and gradients, under float32
and mixed bfloat16, with and without attention."""

import keras
import numpy as np
import pytest
import torch

from keras_s2s.config import ModelConfig
from keras_s2s.models import build_seq2seq
from keras_s2s.torch_backend import forward as lean

pytestmark = pytest.mark.torch_backend

# On a GPU (bench/gpu_checks.sh) cuDNN's backward may add in another order.
GPU = torch.cuda.is_available()


def _inputs():
    rng = np.random.default_rng(0)
    source = rng.integers(4, 20, (6, 7)).astype("int32")
    for row, length in enumerate([7, 3, 1, 5, 7, 2]):
        source[row, length:] = 0  # right padding: the encoder's masked path
    decoder_in = rng.integers(4, 20, (6, 5)).astype("int32")
    return {"source_ids": torch.tensor(source), "decoder_input_ids": torch.tensor(decoder_in)}


def _logits_and_gradients(model, run):
    model.zero_grad()
    logits = run()
    # Any loss that reaches every weight through the logits.
    (logits.float() * torch.linspace(-1, 1, logits.shape[-1], device=logits.device)).sum().backward()
    return logits.detach().float().cpu().numpy(), [v.value.grad.float().cpu().numpy() for v in model.trainable_weights]


@pytest.fixture
def policy(request):
    keras.mixed_precision.set_global_policy(request.param)
    yield request.param
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"], indirect=True)
@pytest.mark.parametrize("attention", ["none", "luong"])
@pytest.mark.parametrize("float32_logits", [True, False])
def test_the_lean_forward_pass_gives_the_functional_models_logits_and_gradients(policy, attention, float32_logits):
    x = _inputs()
    config = ModelConfig(
        num_layers=2,
        hidden_dim=16,
        embedding_dim=8,
        dropout=0.3,
        attention=attention,
        float32_logits=float32_logits,
        source_vocabulary_size=20,
        target_vocabulary_size=20,
    )
    keras.utils.set_random_seed(1)
    model = build_seq2seq(config)
    assert lean.supported(model)
    want, want_grads = _logits_and_gradients(model, lambda: model(x, training=False))
    got, grads = _logits_and_gradients(model, lambda: lean.forward(model, x, training=False))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    assert len(grads) == len(want_grads) == len(model.trainable_weights)
    for g, w, v in zip(grads, want_grads, model.trainable_weights):
        np.testing.assert_allclose(g, w, rtol=1e-4 if GPU else 1e-6, atol=1e-5 if GPU else 1e-7, err_msg=v.path)
    # Dropout is on in training and off otherwise.
    noisy = lean.forward(model, x, training=True).detach().float().cpu().numpy()
    assert np.abs(noisy - got).max() > 1e-3


def test_a_bidirectional_encoder_is_not_supported():
    bidirectional = build_seq2seq(
        ModelConfig(
            num_layers=2,
            hidden_dim=16,
            embedding_dim=8,
            bidirectional_encoder=True,
            source_vocabulary_size=20,
            target_vocabulary_size=20,
        )
    )
    assert not lean.supported(bidirectional)
