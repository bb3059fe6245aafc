"""Decoding with the Keras inference models: a run directory -> `KerasTranslator`.

The encoder and one-step decoder models are an engine (`serving.decoding.StepEngine`) of
the same search translator the onnxruntime bundle uses, so both produce the same tokens
for the same model.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence

import numpy as np

from keras_s2s.config import BOS_ID, EOS_ID, Config
from serving.decoding import SearchTranslator, StepEngine
from serving.ensemble import ensemble_engine


def decoder_step_function(decoder_step, config):
    """The one-step decoder model as a `tf.function` with named inputs.

    Inputs: `token_ids`, `states` (plus `encoder_outputs`, `source_lengths`
    with attention); outputs `log_probs`, `next_states`. The Keras decoder, the
    ONNX export and the SavedModel's `decode_step` all trace this one function.
    """
    import tensorflow as tf

    hidden, layers = config.hidden_dim, config.num_layers
    signature = [
        tf.TensorSpec([None], tf.int32, name="token_ids"),
        tf.TensorSpec([2 * layers, None, hidden], tf.float32, name="states"),
    ]
    if config.attention == "luong":
        signature += [
            tf.TensorSpec([None, None, hidden], tf.float32, name="encoder_outputs"),
            tf.TensorSpec([None], tf.int32, name="source_lengths"),
        ]

        @tf.function(input_signature=signature)
        def step(token_ids, states, encoder_outputs, source_lengths):
            outputs = decoder_step(
                {
                    "token_ids": token_ids,
                    "states": states,
                    "encoder_outputs": encoder_outputs,
                    "source_lengths": source_lengths,
                },
                training=False,
            )
            return {"log_probs": outputs["log_probs"], "next_states": outputs["next_states"]}

    else:

        @tf.function(input_signature=signature)
        def step(token_ids, states):
            outputs = decoder_step({"token_ids": token_ids, "states": states}, training=False)
            return {"log_probs": outputs["log_probs"], "next_states": outputs["next_states"]}

    return step


class KerasTranslator(SearchTranslator):
    """Decodes with the Keras encoder and decoder-step models and the numpy search.

    Args:
        model: the trained `build_seq2seq` model.
        config: Config. The run's config (model shape, decode settings).
        source_tokenizer: encodes source text.
        target_tokenizer: decodes output ids.
    """

    def __init__(self, model, config: Config, source_tokenizer, target_tokenizer):
        import tensorflow as tf

        from keras_s2s.models import build_inference_models

        self.config = config
        self.encoder, self.decoder_step = build_inference_models(model, config.model)

        # One trace each, with dynamic batch and time axes.
        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32, name="source_ids")], reduce_retracing=True)
        def encode(source_ids):
            return self.encoder(source_ids, training=False)

        self._encode = encode
        self._step = decoder_step_function(self.decoder_step, config.model)
        self._attention = config.model.attention == "luong"
        self.step_engine = StepEngine(self.encode_batch, self.step, BOS_ID, EOS_ID, config.model.reverse_source)
        super().__init__(self.step_engine, source_tokenizer, target_tokenizer, _decode_defaults(config), batch_size=64)

    def encode_batch(self, source_ids: np.ndarray, source_lengths: np.ndarray) -> dict:
        outputs = self._encode(source_ids)
        state = {"states": outputs["states"].numpy().astype(np.float32)}
        if self._attention:
            state["encoder_outputs"] = outputs["encoder_outputs"].numpy().astype(np.float32)
            state["source_lengths"] = source_lengths.astype(np.int32)
        return state

    def step(self, token_ids: np.ndarray, state: dict):
        if self._attention:
            outputs = self._step(token_ids, state["states"], state["encoder_outputs"], state["source_lengths"])
        else:
            outputs = self._step(token_ids, state["states"])
        return outputs["log_probs"].numpy(), {"states": outputs["next_states"].numpy()}


class KerasEnsembleTranslator(SearchTranslator):
    """Decodes with several trained runs as one model (`serving.ensemble`).

    The members must share their tokenizers and source reversal; their model shapes may
    differ. Decode settings come from the first member.

    Args:
        members: `KerasTranslator`s, one per run.
    """

    def __init__(self, members: Sequence[KerasTranslator]):
        first = members[0]
        self.members = list(members)
        self.config = first.config
        super().__init__(
            ensemble_engine([m.step_engine for m in members]),
            first.source_vocabulary,
            first.target_vocabulary,
            _decode_defaults(first.config),
            batch_size=64,
        )


def _decode_defaults(config: Config) -> dict:
    decode = config.decode
    return dict(
        beam_size=decode.beam_size,
        length_penalty=decode.length_penalty,
        max_length_a=decode.max_length_a,
        max_length_b=decode.max_length_b,
    )


def load_run(run_dir: str, checkpoint: str = "best"):
    """Loads a run directory: `(config, model, source_tokenizer, target_tokenizer)`."""
    from keras_s2s.data.tokenizers import load_tokenizers
    from keras_s2s.models import build_seq2seq

    config_path = os.path.join(run_dir, "config.json")
    if not os.path.exists(config_path):
        raise FileNotFoundError(f"{config_path}: not found; is {run_dir} a run directory?")
    config = Config.load(config_path)
    source_tokenizer, target_tokenizer = load_tokenizers(run_dir, config.tokenizer)
    model = build_seq2seq(config.model)
    weights = os.path.join(run_dir, "checkpoints", f"{checkpoint}.weights.h5")
    if checkpoint == "averaged" and not os.path.exists(weights):
        raise FileNotFoundError(f"{weights}: not found; train with training.average_last_epochs > 0")
    if not os.path.exists(weights):
        weights = os.path.join(run_dir, "checkpoints", "last.weights.h5")
    if not os.path.exists(weights):
        raise FileNotFoundError(f"{run_dir}/checkpoints: no best or last weights found")
    model.load_weights(weights)
    return config, model, source_tokenizer, target_tokenizer


def make_translator(
    run_dir: str, checkpoint: str = "best", ensemble: Sequence[str] = ()
) -> KerasTranslator | KerasEnsembleTranslator:
    """A `KerasTranslator` for a run directory's best (or last) weights; with
    `ensemble` run directories, a `KerasEnsembleTranslator` of all of them."""
    from keras_s2s.data.tokenizers import tokenizer_files

    translators, first_tokenizers = [], None
    for directory in [run_dir, *ensemble]:
        config, model, source_tokenizer, target_tokenizer = load_run(directory, checkpoint=checkpoint)
        paths = tokenizer_files(directory, config.tokenizer)
        tokenizers = [pathlib.Path(path).read_bytes() for path in paths]
        if first_tokenizers is not None and tokenizers != first_tokenizers:
            raise ValueError(
                f"{directory}: its tokenizers ({', '.join(paths)}) differ from {run_dir}'s; "
                "ensemble members must share their vocabularies"
            )
        first_tokenizers = first_tokenizers or tokenizers
        translators.append(KerasTranslator(model, config, source_tokenizer, target_tokenizer))
    return translators[0] if len(translators) == 1 else KerasEnsembleTranslator(translators)
