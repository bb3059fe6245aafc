"""ONNX export: `encoder.onnx` (tf2onnx) and `decoder_step.onnx` (written directly).

Every Keras LSTM layer becomes exactly one fused ONNX `LSTM` node. The
decoder step, which runs once per output token, is written node by node from
the trained weights (`export/step_graph.py`) rather than traced: the traced
graph carries some 60 shape-handling nodes (see there). The encoder, which
runs once per sentence, is converted by tf2onnx. The training encoder masks
padding through `Embedding(mask_zero=True)`, which tf2onnx would turn into a
`Loop`; the export therefore traces the encoder without the mask (the same
layers, looked up by name) and then gives every encoder `LSTM` node the
`source_lengths` input as `sequence_lens`, so a right-padded batch yields
exactly the final states of each sentence alone.

Tracing runs on the CPU so that no `CudnnRNNV3` enters the graph.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
import tensorflow as tf

from export.checks import ExportError, check_fused_lstms  # noqa: F401 (re-exported)
from export.step_graph import OPSET, DecoderWeights, decoder_step_graph
from keras_s2s.config import ModelConfig
from serving.files import atomic_path


def encoder_function(model, config: ModelConfig) -> tf.types.experimental.GenericFunction:
    """The encoder as a `tf.function`: `source_ids`, `source_lengths` -> `states`
    (and `encoder_outputs` with attention)."""
    embedding = model.get_layer("source_embedding")
    layers = [model.get_layer(f"encoder_lstm_{i}") for i in range(config.num_layers)]

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None], tf.int32, name="source_ids"),
            tf.TensorSpec([None], tf.int32, name="source_lengths"),
        ]
    )
    def encode(source_ids, source_lengths):
        # No Keras mask here: `sequence_lens` takes its place in the ONNX graph.
        x = tf.gather(embedding.embeddings, source_ids)
        stacked = []
        for index, layer in enumerate(layers):
            outputs = layer(x, training=False)
            x = outputs[0]
            if config.is_bidirectional(index):
                stacked += [
                    tf.concat([outputs[1], outputs[3]], axis=-1),
                    tf.concat([outputs[2], outputs[4]], axis=-1),
                ]
            else:
                stacked += [outputs[1], outputs[2]]
        result = {"states": tf.stack(stacked, axis=0)}
        if config.attention == "luong":
            result["encoder_outputs"] = x
        return result

    return encode


def convert(function) -> onnx.ModelProto:
    """Converts a `tf.function` with a named input signature, traced on the CPU."""
    import tf2onnx

    with tf.device("/CPU:0"):
        model_proto, _ = tf2onnx.convert.from_function(function, input_signature=function.input_signature, opset=OPSET)
    return model_proto


def attach_sequence_lengths(model_proto: onnx.ModelProto, lengths_name: str = "source_lengths") -> int:
    """Sets `sequence_lens` of every `LSTM` node to the graph input `lengths_name`.

    Returns:
        The number of `LSTM` nodes changed.
    """
    names = {graph_input.name for graph_input in model_proto.graph.input}
    if lengths_name not in names:
        model_proto.graph.input.append(
            onnx.helper.make_tensor_value_info(lengths_name, onnx.TensorProto.INT32, ["batch"])
        )
    changed = 0
    for node in model_proto.graph.node:
        if node.op_type == "LSTM":
            while len(node.input) < 5:
                node.input.append("")
            node.input[4] = lengths_name
            changed += 1
    return changed


def decoder_weights(model, config: ModelConfig) -> DecoderWeights:
    """The trained decoder's weights (float32 numpy, Keras layout), read from the layers by name."""

    def numpy(variable):
        return np.asarray(variable.numpy(), dtype=np.float32)

    lstm = []
    for index in range(config.num_layers):
        cell = model.get_layer(f"decoder_lstm_{index}").cell
        lstm.append((numpy(cell.kernel), numpy(cell.recurrent_kernel), numpy(cell.bias)))
    logits = model.get_layer("decoder_logits")
    weights = DecoderWeights(
        embedding=numpy(model.get_layer("target_embedding").embeddings),
        lstm=lstm,
        logits_kernel=numpy(logits.kernel),
        logits_bias=numpy(logits.bias),
    )
    if config.attention == "luong":
        weights.attention = numpy(model.get_layer("attention").kernel)
        weights.attention_combine = numpy(model.get_layer("attention_combine").kernel)
    return weights


def export_onnx(model, config: ModelConfig, out_dir: str) -> dict:
    """Writes `encoder.onnx` and `decoder_step.onnx` for a trained model.

    Args:
        model: the trained `build_seq2seq` model.
        config: ModelConfig. Its shape.
        out_dir: str. Directory to write into (must exist).

    Returns:
        `{"encoder": op counts, "decoder_step": op counts}`.
    """
    encoder_proto = convert(encoder_function(model, config))
    attach_sequence_lengths(encoder_proto)
    decoder_proto = decoder_step_graph(decoder_weights(model, config))
    report = {
        "encoder": check_fused_lstms(encoder_proto, config.num_layers, "encoder.onnx"),
        "decoder_step": check_fused_lstms(decoder_proto, config.num_layers, "decoder_step.onnx"),
    }
    for proto, file_name in ((encoder_proto, "encoder.onnx"), (decoder_proto, "decoder_step.onnx")):
        with atomic_path(os.path.join(out_dir, file_name)) as path:
            onnx.save(proto, path)
    return report
