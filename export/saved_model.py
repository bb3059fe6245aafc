"""The SavedModel export: `encode` and `decode_step` signatures, checked to reload to the
same outputs as Keras."""

from __future__ import annotations

import numpy as np

from export.checks import GateError
from keras_s2s.config import BOS_ID
from serving.batching import pad_sources
from serving.files import replace_directory, temporary_path


def export_saved_model(model, config, path: str) -> dict:
    """Writes a SavedModel with `encode` and `decode_step` signatures and checks it reloads
    to the same outputs as Keras."""
    import keras
    import tensorflow as tf

    from keras_s2s.decoder import decoder_step_function
    from keras_s2s.models import build_inference_models

    encoder, decoder_step = build_inference_models(model, config.model)
    archive = keras.export.ExportArchive()
    archive.track(encoder)
    archive.track(decoder_step)

    def encode(source_ids, source_lengths):
        outputs = encoder(source_ids, training=False)
        return dict(outputs)

    archive.add_endpoint(
        "encode",
        encode,
        input_signature=[
            tf.TensorSpec([None, None], tf.int32, name="source_ids"),
            tf.TensorSpec([None], tf.int32, name="source_lengths"),
        ],
    )
    archive.add_endpoint("decode_step", decoder_step_function(decoder_step, config.model))
    temporary = temporary_path(path)
    with tf.device("/CPU:0"):
        archive.write_out(temporary, verbose=False)
    # Check: reload and compare with Keras on a small batch.
    loaded = tf.saved_model.load(temporary)
    ids, lengths = pad_sources([[5, 6, 7, 8], [9, 10]], reverse=config.model.reverse_source)
    ids = np.minimum(ids, config.model.source_vocabulary_size - 1).astype(np.int32)
    reloaded = loaded.encode(tf.constant(ids), tf.constant(lengths))
    expected = encoder(ids, training=False)
    difference = float(np.abs(reloaded["states"].numpy() - keras.ops.convert_to_numpy(expected["states"])).max())
    feeds = [tf.constant([BOS_ID, BOS_ID], tf.int32), reloaded["states"]]
    keras_feeds = {"token_ids": np.array([BOS_ID, BOS_ID], np.int32), "states": reloaded["states"].numpy()}
    if config.model.attention == "luong":
        feeds += [reloaded["encoder_outputs"], tf.constant(lengths)]
        keras_feeds.update(encoder_outputs=reloaded["encoder_outputs"].numpy(), source_lengths=lengths)
    step = loaded.decode_step(*feeds)
    expected_step = decoder_step(keras_feeds, training=False)
    difference = max(
        difference,
        float(np.abs(step["log_probs"].numpy() - keras.ops.convert_to_numpy(expected_step["log_probs"])).max()),
    )
    if difference > 1e-5:
        raise GateError(f"{temporary}: reloaded SavedModel differs from Keras by {difference:.2e}")
    replace_directory(temporary, path)
    return {"path": path, "max_abs_diff": difference}
