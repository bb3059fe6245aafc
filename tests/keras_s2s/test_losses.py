import numpy as np
import pytest

from keras_s2s.losses import SequenceCrossEntropy


def _log_softmax(x):
    shifted = x - x.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_sequence_cross_entropy_matches_numpy_per_token_and_weighted_mean(smoothing):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 5, 7)).astype("float32") * 3
    target = rng.integers(0, 7, (3, 5)).astype("int32")
    weights = (rng.random((3, 5)) > 0.3).astype("float32")
    log_probs = _log_softmax(logits.astype("float64"))
    nll = -np.take_along_axis(log_probs, target[..., None], -1)[..., 0]
    expected_tokens = (1 - smoothing) * nll - smoothing * log_probs.mean(-1)
    loss = SequenceCrossEntropy(label_smoothing=smoothing)
    np.testing.assert_allclose(np.asarray(loss.call(target, logits)), expected_tokens, rtol=1e-5, atol=1e-5)
    expected = (expected_tokens * weights).sum() / weights.sum()
    np.testing.assert_allclose(float(loss(target, logits, sample_weight=weights)), expected, rtol=1e-5)
