import keras
import numpy as np
import pytest

from keras_s2s.config import ModelConfig
from keras_s2s.models import build_inference_models, build_seq2seq

CASES = [
    dict(attention="none", bidirectional_encoder=False, num_layers=1),
    dict(attention="none", bidirectional_encoder=False, num_layers=3),
    dict(attention="luong", bidirectional_encoder=False, num_layers=2),
    dict(attention="luong", bidirectional_encoder=True, num_layers=2),
    dict(attention="luong", bidirectional_encoder=False, bidirectional_layers=2, num_layers=3),
]


def _config(**kwargs):
    values = dict(hidden_dim=24, embedding_dim=12, dropout=0.3, source_vocabulary_size=30, target_vocabulary_size=35)
    values.update(kwargs)
    return ModelConfig(**values)


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    source = rng.integers(4, 30, (4, 9)).astype("int32")
    for row, length in enumerate([9, 5, 2, 7]):
        source[row, length:] = 0
    target = rng.integers(4, 35, (4, 6)).astype("int32")
    return source, target


@pytest.mark.parametrize(
    "case",
    CASES,
    ids=lambda c: (
        f"{c['attention']}-bi{c.get('bidirectional_layers') or int(c['bidirectional_encoder'])}-L{c['num_layers']}"
    ),
)
def test_step_by_step_decoding_reproduces_teacher_forcing(case):
    config = _config(**case)
    model = build_seq2seq(config)
    source, target = _batch()
    logits = model({"source_ids": source, "decoder_input_ids": target}, training=False)
    expected = keras.ops.convert_to_numpy(keras.ops.log_softmax(logits, axis=-1))
    encoder, decoder_step = build_inference_models(model)
    encoded = encoder(source)
    states = keras.ops.convert_to_numpy(encoded["states"])
    assert states.shape == (2 * config.num_layers, 4, config.hidden_dim)
    lengths = (source != 0).sum(1).astype("int32")
    for t in range(target.shape[1]):
        inputs = {"token_ids": target[:, t], "states": states}
        if config.attention == "luong":
            inputs["encoder_outputs"] = keras.ops.convert_to_numpy(encoded["encoder_outputs"])
            inputs["source_lengths"] = lengths
        outputs = decoder_step(inputs)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(outputs["log_probs"]), expected[:, t], atol=1e-5)
        states = keras.ops.convert_to_numpy(outputs["next_states"])


@pytest.mark.parametrize("bidirectional_layers", [1, 2])
def test_padding_does_not_change_the_encoder_state(bidirectional_layers):
    config = _config(attention="luong", bidirectional_layers=bidirectional_layers, num_layers=2)
    model = build_seq2seq(config)
    assert [isinstance(model.get_layer(f"encoder_lstm_{i}"), keras.layers.Bidirectional) for i in range(2)] == [
        i < bidirectional_layers for i in range(2)
    ]
    encoder, _ = build_inference_models(model)
    source, _ = _batch()
    together = keras.ops.convert_to_numpy(encoder(source)["states"])
    for row, length in enumerate((source != 0).sum(1)):
        alone = keras.ops.convert_to_numpy(encoder(source[row : row + 1, :length])["states"])
        np.testing.assert_allclose(alone[:, 0], together[:, row], atol=1e-6)


def test_layers_have_stable_names_and_uniform_init():
    model = build_seq2seq(_config(num_layers=2, attention="luong"))
    for name in [
        "source_embedding",
        "target_embedding",
        "encoder_lstm_0",
        "encoder_lstm_1",
        "decoder_lstm_0",
        "decoder_lstm_1",
        "attention",
        "attention_combine",
        "decoder_logits",
    ]:
        assert model.get_layer(name) is not None
    for weight in model.weights:
        values = keras.ops.convert_to_numpy(weight)
        assert np.abs(values).max() <= 0.08 + 1e-7, weight.path


def test_missing_vocabulary_size_is_refused():
    with pytest.raises(ValueError, match="vocabulary_size"):
        build_seq2seq(ModelConfig())


@pytest.mark.parametrize("float32_logits", [True, False])
def test_mixed_precision_logits_are_float32_and_projection_dtype_follows_config(float32_logits):
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_seq2seq(_config(num_layers=1, float32_logits=float32_logits))
        source, target = _batch()
        logits = model({"source_ids": source, "decoder_input_ids": target})
    finally:
        keras.mixed_precision.set_global_policy(previous)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    projection = model.get_layer("decoder_logits")
    assert projection.compute_dtype == ("float32" if float32_logits else "bfloat16")
    assert projection.kernel.dtype == "float32"
