"""The deep LSTM encoder-decoder of Sutskever et al. (2014), in Keras 3.

Only `keras` is imported here, never `tensorflow`, so the same model builds
under any Keras backend.

State layout shared by the inference models, the export and the search:
`states` is float32 `(2 * num_layers, batch, hidden_dim)` holding
`h_0, c_0, h_1, c_1, ...`, one (h, c) pair per LSTM layer.
"""

from __future__ import annotations

import keras
from keras import ops

from keras_s2s.config import PAD_ID, ModelConfig
from keras_s2s.models.lstm import LSTM


@keras.saving.register_keras_serializable(package="keras_s2s")
class LuongAttention(keras.layers.Layer):
    """Luong "general" attention: score(h_t, a_s) = h_t^T W a_s.

    Args:
        units: int. Size of the decoder and encoder states.
        init_scale: float. Uniform initialisation range of `W`.

    Call args:
        query: `(batch, target_time, units)` decoder outputs.
        values: `(batch, source_time, units)` encoder outputs.
        value_mask: `(batch, source_time)` bool, true on real source tokens.
        value_lengths: `(batch,)` int, real source lengths; used instead of
            `value_mask` when given.

    Returns:
        `(context, weights)`: `(batch, target_time, units)` and
        `(batch, target_time, source_time)`.
    """

    def __init__(self, units, init_scale=0.08, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.init_scale = init_scale

    def build(self, query_shape, values_shape=None, value_mask_shape=None, value_lengths_shape=None):
        self.kernel = self.add_weight(
            name="kernel",
            shape=(self.units, self.units),
            initializer=keras.initializers.RandomUniform(-self.init_scale, self.init_scale),
        )

    def call(self, query, values, value_mask=None, value_lengths=None):
        if value_lengths is not None:
            positions = ops.arange(ops.shape(values)[1], dtype="int32")
            value_mask = ops.less(
                ops.expand_dims(positions, 0),
                ops.expand_dims(ops.cast(value_lengths, "int32"), 1),
            )
        projected = ops.matmul(query, ops.cast(self.kernel, query.dtype))
        # (batch, target_time, source_time)
        scores = ops.matmul(projected, ops.transpose(values, (0, 2, 1)))
        scores = ops.cast(scores, "float32")
        mask = ops.expand_dims(ops.cast(value_mask, "bool"), 1)
        scores = ops.where(mask, scores, ops.full_like(scores, -1e9))
        weights = ops.softmax(scores, axis=-1)
        context = ops.matmul(ops.cast(weights, values.dtype), values)
        return context, weights

    def compute_output_shape(self, query_shape, values_shape=None, value_mask_shape=None, value_lengths_shape=None):
        return (
            tuple(query_shape),
            (query_shape[0], query_shape[1], values_shape[1] if values_shape else None),
        )

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units, "init_scale": self.init_scale})
        return config


def _uniform(scale):
    return keras.initializers.RandomUniform(-scale, scale)


def _lstm(units, name, scale):
    return LSTM(
        units,
        return_sequences=True,
        return_state=True,
        kernel_initializer=_uniform(scale),
        recurrent_initializer=_uniform(scale),
        bias_initializer=_uniform(scale),
        # The paper draws every parameter from U(-scale, scale), biases included.
        unit_forget_bias=False,
        name=name,
    )


def _layers(config: ModelConfig) -> dict:
    """The training model's layers by role (the encoder's and decoder's LSTMs, dropouts,
    embeddings, attention, the output projection), created once: the inference models
    share them."""
    scale = config.init_scale
    hidden = config.hidden_dim
    layers = {}
    layers["source_embedding"] = keras.layers.Embedding(
        config.source_vocabulary_size,
        config.embedding_dim,
        mask_zero=True,
        embeddings_initializer=_uniform(scale),
        name="source_embedding",
    )
    layers["target_embedding"] = keras.layers.Embedding(
        config.target_vocabulary_size,
        config.embedding_dim,
        embeddings_initializer=_uniform(scale),
        name="target_embedding",
    )
    for index in range(config.num_layers):
        if config.is_bidirectional(index):
            layer = keras.layers.Bidirectional(
                _lstm(hidden // 2, f"encoder_lstm_{index}_cell", scale), name=f"encoder_lstm_{index}"
            )
        else:
            layer = _lstm(hidden, f"encoder_lstm_{index}", scale)
        layers[f"encoder_lstm_{index}"] = layer
    for index in range(config.num_layers):
        layers[f"decoder_lstm_{index}"] = _lstm(hidden, f"decoder_lstm_{index}", scale)
    layers.update(
        {
            name: keras.layers.Dropout(config.dropout, name=name)
            for name in (
                [f"encoder_dropout_{i}" for i in range(config.num_layers + 1)]
                + [f"decoder_dropout_{i}" for i in range(config.num_layers + 1)]
            )
        }
    )
    if config.attention == "luong":
        layers["attention"] = LuongAttention(hidden, scale, name="attention")
        layers["attention_combine"] = keras.layers.Dense(
            hidden,
            activation="tanh",
            use_bias=False,
            kernel_initializer=_uniform(scale),
            name="attention_combine",
        )
    layers["logits_layer"] = keras.layers.Dense(
        config.target_vocabulary_size,
        kernel_initializer=_uniform(scale),
        bias_initializer=_uniform(scale),
        dtype="float32" if config.float32_logits else None,
        name="decoder_logits",
    )
    return layers


def build_seq2seq(config: ModelConfig) -> keras.Model:
    """Builds the training model: teacher-forced logits over the target vocabulary.

    Inputs are `source_ids` `(batch, source_time)` (right-padded with 0,
    already reversed when the config asks for it) and `decoder_input_ids`
    `(batch, target_time)` (bos + target). The output is `logits`
    `(batch, target_time, target_vocabulary_size)`.

    Args:
        config: ModelConfig. Layers, sizes, dropout, attention.

    Example:
    >>> config = ModelConfig(num_layers=2, hidden_dim=64, embedding_dim=32,
    ...                      source_vocabulary_size=40, target_vocabulary_size=50)
    >>> model = build_seq2seq(config)
    >>> model.get_layer("decoder_lstm_0").units
    64
    """
    if not config.source_vocabulary_size or not config.target_vocabulary_size:
        raise ValueError(
            "model.source_vocabulary_size and model.target_vocabulary_size must be set (they come from the tokenizers)"
        )
    layer = _layers(config)

    # === Functional model ===
    source_ids = keras.Input(shape=(None,), dtype="int32", name="source_ids")
    decoder_input_ids = keras.Input(shape=(None,), dtype="int32", name="decoder_input_ids")

    x = layer["encoder_dropout_0"](layer["source_embedding"](source_ids))
    encoder_states = []
    for index in range(config.num_layers):
        outputs = layer[f"encoder_lstm_{index}"](x)
        x = outputs[0]
        if config.is_bidirectional(index):
            forward_h, forward_c, backward_h, backward_c = outputs[1:]
            encoder_states.append(
                (
                    ops.concatenate([forward_h, backward_h], axis=-1),
                    ops.concatenate([forward_c, backward_c], axis=-1),
                )
            )
        else:
            encoder_states.append((outputs[1], outputs[2]))
        x = layer[f"encoder_dropout_{index + 1}"](x)
    encoder_outputs = x

    y = layer["decoder_dropout_0"](layer["target_embedding"](decoder_input_ids))
    for index in range(config.num_layers):
        y = layer[f"decoder_lstm_{index}"](y, initial_state=list(encoder_states[index]))[0]
        y = layer[f"decoder_dropout_{index + 1}"](y)
    if config.attention == "luong":
        source_mask = ops.not_equal(source_ids, PAD_ID)
        context, _ = layer["attention"](y, encoder_outputs, source_mask)
        y = layer["attention_combine"](ops.concatenate([y, context], axis=-1))
        y = layer[f"decoder_dropout_{config.num_layers}"](y)
    logits = layer["logits_layer"](y)
    if not config.float32_logits:
        logits = ops.cast(logits, "float32")

    model = keras.Model(
        inputs={"source_ids": source_ids, "decoder_input_ids": decoder_input_ids},
        outputs=logits,
        name="seq2seq",
    )
    # === Config ===
    model.seq2seq_config = config
    return model


def build_inference_models(model: keras.Model, config: ModelConfig | None = None):
    """Builds the encoder and one-step decoder models from a trained model.

    The two models share the trained layers (looked up by name), so they
    always hold the current weights.

    Returns:
        `(encoder, decoder_step)`.
        encoder: `source_ids` `(batch, time)` -> `states`
            `(2 * num_layers, batch, hidden_dim)` and, with attention,
            `encoder_outputs` `(batch, time, hidden_dim)`.
        decoder_step: `token_ids` `(batch,)`, `states` (and, with attention,
            `encoder_outputs`, `source_lengths` `(batch,)`) -> `log_probs`
            `(batch, target_vocabulary_size)`, `next_states`.
    """
    config = config or model.seq2seq_config
    hidden = config.hidden_dim
    layers = config.num_layers

    # === Encoder ===
    source_ids = keras.Input(shape=(None,), dtype="int32", name="source_ids")
    x = model.get_layer("source_embedding")(source_ids)
    stacked = []
    for index in range(layers):
        outputs = model.get_layer(f"encoder_lstm_{index}")(x)
        x = outputs[0]
        if config.is_bidirectional(index):
            forward_h, forward_c, backward_h, backward_c = outputs[1:]
            stacked += [
                ops.concatenate([forward_h, backward_h], axis=-1),
                ops.concatenate([forward_c, backward_c], axis=-1),
            ]
        else:
            stacked += [outputs[1], outputs[2]]
    states = ops.stack(stacked, axis=0)
    encoder_outputs = {"states": states}
    if config.attention == "luong":
        encoder_outputs["encoder_outputs"] = x
    encoder = keras.Model(source_ids, encoder_outputs, name="encoder")

    # === Decoder step ===
    token_ids = keras.Input(shape=(), dtype="int32", name="token_ids")
    states_in = keras.Input(batch_shape=(2 * layers, None, hidden), name="states")
    inputs = {"token_ids": token_ids, "states": states_in}
    y = model.get_layer("target_embedding")(ops.expand_dims(token_ids, 1))
    next_states = []
    for index in range(layers):
        outputs = model.get_layer(f"decoder_lstm_{index}")(
            y, initial_state=[states_in[2 * index], states_in[2 * index + 1]]
        )
        y = outputs[0]
        next_states += [outputs[1], outputs[2]]
    if config.attention == "luong":
        memory = keras.Input(shape=(None, hidden), name="encoder_outputs")
        source_lengths = keras.Input(shape=(), dtype="int32", name="source_lengths")
        inputs["encoder_outputs"] = memory
        inputs["source_lengths"] = source_lengths
        context, _ = model.get_layer("attention")(y, memory, value_lengths=source_lengths)
        y = model.get_layer("attention_combine")(ops.concatenate([y, context], axis=-1))
    logits = model.get_layer("decoder_logits")(y[:, 0, :])
    log_probs = ops.log_softmax(ops.cast(logits, "float32"), axis=-1)
    decoder_step = keras.Model(
        inputs,
        {"log_probs": log_probs, "next_states": ops.stack(next_states, axis=0)},
        name="decoder_step",
    )
    return encoder, decoder_step
