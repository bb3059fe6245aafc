"""keras_s2s.models.torch_forward: the training model's forward pass without Keras' per-layer
call machinery gives the functional model's logits and gradients, under float32 and
mixed bfloat16, with and without attention."""

from conftest import run_under_torch

CODE = r"""
import sys
sys.modules['tensorflow'] = None
import numpy as np, keras, torch
from keras_s2s.config import ModelConfig
from keras_s2s.models import build_seq2seq, torch_forward

# On a GPU (the device check, BENCHMARKS.md) cuDNN's backward may add in another order.
GPU = torch.cuda.is_available()
rng = np.random.default_rng(0)
source = rng.integers(4, 20, (6, 7)).astype('int32')
for row, length in enumerate([7, 3, 1, 5, 7, 2]):
    source[row, length:] = 0  # right padding: the encoder's masked path
decoder_in = rng.integers(4, 20, (6, 5)).astype('int32')
x = {'source_ids': torch.tensor(source), 'decoder_input_ids': torch.tensor(decoder_in)}


def logits_and_gradients(model, run):
    model.zero_grad()
    logits = run()
    # Any loss that reaches every weight through the logits.
    (logits.float() * torch.linspace(-1, 1, logits.shape[-1], device=logits.device)).sum().backward()
    return logits.detach().float().cpu().numpy(), [v.value.grad.float().cpu().numpy() for v in model.trainable_weights]


checked = 0
for policy in ('float32', 'mixed_bfloat16'):
    keras.mixed_precision.set_global_policy(policy)
    for attention in ('none', 'luong'):
        for float32_logits in (True, False):
            config = ModelConfig(num_layers=2, hidden_dim=16, embedding_dim=8, dropout=0.3, attention=attention,
                                 float32_logits=float32_logits, source_vocabulary_size=20,
                                 target_vocabulary_size=20)
            keras.utils.set_random_seed(1)
            model = build_seq2seq(config)
            assert torch_forward.supported(model)
            want, want_grads = logits_and_gradients(model, lambda: model(x, training=False))
            got, grads = logits_and_gradients(model, lambda: torch_forward.forward(model, x, training=False))
            name = (policy, attention, float32_logits)
            assert got.dtype == np.float32, name
            np.testing.assert_array_equal(got, want, err_msg=str(name))
            assert len(grads) == len(want_grads) == len(model.trainable_weights)
            for g, w, v in zip(grads, want_grads, model.trainable_weights):
                np.testing.assert_allclose(g, w, rtol=1e-4 if GPU else 1e-6, atol=1e-5 if GPU else 1e-7,
                                           err_msg=f'{name} {v.path}')
            # Dropout is on in training and off otherwise.
            noisy = torch_forward.forward(model, x, training=True).detach().float().cpu().numpy()
            assert np.abs(noisy - got).max() > 1e-3, name
            checked += 1

keras.mixed_precision.set_global_policy('float32')
bidirectional = build_seq2seq(ModelConfig(num_layers=2, hidden_dim=16, embedding_dim=8, bidirectional_encoder=True,
                                          source_vocabulary_size=20, target_vocabulary_size=20))
assert not torch_forward.supported(bidirectional)
print('ok', checked)
"""


def test_lean_forward_gives_the_functional_models_logits_and_gradients():
    assert run_under_torch(CODE).split()[-2:] == ["ok", "8"]
