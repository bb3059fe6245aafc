"""The training model's forward pass under torch, without Keras' per-layer call machinery.

Under `KERAS_BACKEND=torch` a training step is bound by the host's Python time when the
GPU is fast (BENCHMARKS.md, GPU section): each `Layer.__call__` converts and checks its
inputs, resolves the call context, builds a call spec, walks the input and output trees
for masks and enters name and autocast scopes, and the functional model walks its graph
node by node; for the paper-shaped model that is 21 layer calls per step. `forward`
runs the same layers' `call` methods in the order `build_seq2seq` wires them, doing only
what `Layer.__call__` does that changes the result here:

- each layer computes in its own compute dtype: its variables are read under an
  `AutocastScope` of that dtype (mixed precision), and its floating input is cast to it
  (the float32 output projection gets a float32 input); layers with `autocast` off
  (`Embedding`: it looks up float32 rows and casts them) get neither;
- the source mask (`source_ids != 0`, what `Embedding(mask_zero=True)` computes) is
  handed to the encoder LSTMs, and `training` to every layer that takes it.

Same variables, same operations, same results as `model(inputs, training=...)` (tested,
gradients included); dropout is the `Dropout` layers' own, with their seed generators.
Models `forward` does not cover (a bidirectional encoder, a model not built by
`build_seq2seq`) report `supported(model) == False`.

Imported only under `KERAS_BACKEND=torch`.
"""

from __future__ import annotations

import contextlib

import keras
import torch

from keras_s2s.config import PAD_ID
from keras_s2s.upstream import private_backend as backend


def supported(model) -> bool:
    """Whether `forward` runs `model` (a `build_seq2seq` model without bidirectional layers)."""
    config = getattr(model, "seq2seq_config", None)
    return (
        keras.backend.backend() == "torch"
        and config is not None
        and config.attention in ("none", "luong")
        and not any(config.is_bidirectional(index) for index in range(config.num_layers))
    )


def _autocast(layer):
    """The scope `Layer.__call__` reads `layer`'s variables in: its compute dtype where that
    differs from the variables' (mixed precision)."""
    dtype = layer.compute_dtype
    return backend.AutocastScope(dtype) if dtype != layer.variable_dtype else contextlib.nullcontext()


def _in_compute_dtype(layer, x):
    if torch.is_floating_point(x) and keras.backend.standardize_dtype(x.dtype) != layer.compute_dtype:
        return keras.ops.cast(x, layer.compute_dtype)
    return x


def _call(layer, inputs, *args, **kwargs):
    """`layer.call(inputs, ...)` with `inputs` in the layer's compute dtype and its variables
    read in it, as `Layer.__call__` would (a layer with `autocast` off, such as `Embedding`,
    gets neither: it casts its own output)."""
    if not layer.autocast:
        return layer.call(inputs, *args, **kwargs)
    with _autocast(layer):
        return layer.call(_in_compute_dtype(layer, inputs), *args, **kwargs)


def _lstm(layer, inputs, initial_state=None, mask=None, training=False):
    """`layer.call` for one of the model's LSTM layers, straight to its `inner_loop` (the
    fused paths of `keras_s2s.models.lstm`, Keras' loop where they decline): what
    `RNN.call` adds around it (zero initial states, casts to the compute dtype, dropout
    masks, state assignment for stateful layers) is reduced to what these layers need."""
    cell = layer.cell
    if layer.stateful or layer.unroll or cell.dropout or cell.recurrent_dropout:
        return _call(layer, inputs, initial_state=initial_state, mask=mask, training=training)
    dtype = layer.compute_dtype
    if initial_state is None:
        zeros = keras.ops.zeros((inputs.shape[0], cell.units), dtype=dtype)
        initial_state = [zeros, zeros]
    else:
        initial_state = [keras.ops.cast(state, dtype) for state in initial_state]
    with _autocast(layer):
        last, outputs, states = layer.inner_loop(
            _in_compute_dtype(layer, inputs), initial_state, mask, training=training
        )
    output = keras.ops.cast(outputs if layer.return_sequences else last, dtype)
    return (output, *[keras.ops.cast(state, dtype) for state in states])


def forward(model, inputs: dict, training: bool = False):
    """The logits of `model(inputs, training=training)`, computed layer by layer.

    Args:
        model: a model built by `keras_s2s.models.build_seq2seq` (`supported(model)`).
        inputs: `{"source_ids", "decoder_input_ids"}` tensors.
        training: whether dropout is on.
    """
    config = model.seq2seq_config
    layers = {layer.name: layer for layer in model.layers}
    source_ids = keras.ops.convert_to_tensor(inputs["source_ids"])
    decoder_input_ids = keras.ops.convert_to_tensor(inputs["decoder_input_ids"])
    source_mask = source_ids != PAD_ID

    def dropout(name, x):
        return _call(layers[name], x, training=training)

    x = dropout("encoder_dropout_0", _call(layers["source_embedding"], source_ids))
    states = []
    for index in range(config.num_layers):
        outputs = _lstm(layers[f"encoder_lstm_{index}"], x, mask=source_mask, training=training)
        states.append([outputs[1], outputs[2]])
        x = outputs[0]
        if index + 1 < config.num_layers or config.attention == "luong":  # else the model has no use for it
            x = dropout(f"encoder_dropout_{index + 1}", x)
    y = dropout("decoder_dropout_0", _call(layers["target_embedding"], decoder_input_ids))
    for index in range(config.num_layers):
        y = _lstm(layers[f"decoder_lstm_{index}"], y, initial_state=states[index], training=training)[0]
        y = dropout(f"decoder_dropout_{index + 1}", y)
    if config.attention == "luong":
        context, _ = _call(layers["attention"], y, x, source_mask)
        y = _call(layers["attention_combine"], keras.ops.concatenate([y, context], axis=-1))
        y = dropout(f"decoder_dropout_{config.num_layers}", y)
    logits = _call(layers["decoder_logits"], y)
    return keras.ops.cast(logits, "float32")
