"""The export's quality gate, on real dev sentences of the run; a bundle that fails any
part is refused (`GateError`).

  (a) teacher-forced `log_probs`: largest absolute difference between Keras and
      onnxruntime (float32 must be <= `max_log_prob_diff`);
  (b) greedy and beam outputs of the Keras inference models and of the ONNX graphs,
      driven by the same `serving.search`, identical on every sentence;
  (c) INT8: the score change against float32 and the share of identical outputs; the
      export fails when INT8 loses more than `max_int8_loss`;
  (d) `translator.onnx` (and `translator.int8.onnx`): the graph's search against the numpy
      search over the same precision's step graphs, greedy and at the bundle's beam with
      its whole n-best list: identical token ids, order and finished flags on every
      sentence, scores within 1e-5;
  (e) `translator.text.onnx` (checked by `export.bundle`, which writes it): against the
      tokenizers around `translator.onnx`, on the dev sentences and on awkward lines;
  (f) the ORT format translators (`export.mobile`, also checked by `export.bundle`): each
      `.ort` file against its `.onnx` file, as (d) compares: identical n-best lists.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import os
import random
import sys
from typing import TYPE_CHECKING

import numpy as np

from export.checks import ExportError, GateError
from export.translator_export import check_engines_agree, compare_engines, gate_settings, gate_summary
from keras_s2s.config import BOS_ID, EOS_ID
from serving.batching import in_length_batches, pad_sources
from serving.decoding import SearchSettings, StepEngine
from serving.sessions import DecoderStepSession, EncoderSession, onnx_step_engine

if TYPE_CHECKING:
    from export.bundle import ExportOptions


def progress(message: str) -> None:
    print(f"[s2s-export] {message}", file=sys.stderr, flush=True)


def _best_ids(engine: StepEngine, sources, decode, beam_size: int, batch_size: int = 64) -> list[list[int]]:
    """The best hypothesis' token ids of each source, in order."""
    settings = SearchSettings(beam_size, 1, decode.length_penalty, decode.max_length_a, decode.max_length_b)
    found = in_length_batches(functools.partial(engine.search_batch, settings=settings), sources, batch_size)
    return [hypotheses[0].token_ids for hypotheses in found]


def teacher_forced_difference(
    model, config, encoder: EncoderSession, decoder: DecoderStepSession, sources, targets, batch_size: int = 64
) -> float:
    """Largest |log_prob| difference between the Keras training model and the ONNX step loop."""
    import keras

    worst = 0.0
    for start in range(0, len(sources), batch_size):
        batch_sources = sources[start : start + batch_size]
        batch_targets = targets[start : start + batch_size]
        ids, lengths = pad_sources(batch_sources, reverse=config.model.reverse_source)
        inputs, _ = pad_sources([[BOS_ID] + list(t) for t in batch_targets], reverse=False)
        logits = model({"source_ids": ids, "decoder_input_ids": inputs}, training=False)
        expected = keras.ops.convert_to_numpy(keras.ops.log_softmax(logits, axis=-1))
        state = encoder.state(ids, lengths)
        valid = np.array([len(t) + 1 for t in batch_targets])
        for t in range(inputs.shape[1]):
            log_probs, update = decoder(inputs[:, t], state)
            state.update(update)
            rows = valid > t
            if rows.any():
                worst = max(worst, float(np.abs(log_probs[rows] - expected[rows, t]).max()))
    return worst


def _score(kind, hypotheses_text, references):
    from keras_s2s.scores import bleu_scores, g2p_scores

    if kind == "g2p":
        values = g2p_scores(hypotheses_text, references)
        return {"per": values["per"], "wer": values["wer"]}, values["per"]
    values = bleu_scores(hypotheses_text, [r[0] for r in references])
    return {"bleu": values["bleu"], "chrf": values["chrf"]}, -values["bleu"]


@dataclasses.dataclass
class _Sentences:
    """The gate's dev sentences: texts, their source and first reference's ids, every reference."""

    texts: list
    sources: list
    targets: list
    references: list


def _gate_sentences(config, source_tokenizer, target_tokenizer, dev_pairs, count: int) -> _Sentences:
    """`count` distinct dev sources, in a seeded order, with all their references."""
    references = collections.defaultdict(list)
    for pair in dev_pairs:
        references[pair.source].append(pair.target)
    texts = list(references)
    random.Random(config.training.seed).shuffle(texts)
    texts = texts[:count]
    return _Sentences(
        texts,
        [source_tokenizer.encode(text) for text in texts],
        [target_tokenizer.encode(references[text][0]) for text in texts],
        [references[text] for text in texts],
    )


def _onnx_engine(work_dir: str, suffix: str, reverse: bool):
    """`(engine, encoder, decoder step)` of one precision's step graphs."""
    providers = ["CPUExecutionProvider"]
    encoder = EncoderSession(os.path.join(work_dir, f"encoder{suffix}.onnx"), providers, None)
    decoder = DecoderStepSession(os.path.join(work_dir, f"decoder_step{suffix}.onnx"), providers, None)
    # Full log-probabilities from the step graph, as from Keras: the same numpy selection.
    engine = onnx_step_engine(encoder, decoder, bos_id=BOS_ID, eos_id=EOS_ID, reverse_source=reverse, top_k=False)
    return engine, encoder, decoder


def run_gate(
    model, config, source_tokenizer, target_tokenizer, work_dir: str, options: ExportOptions, dev_pairs
) -> dict:
    """The quality gate over `dev_pairs`, parts (a) to (d); raises `GateError` when one fails."""
    from keras_s2s.decoder import KerasTranslator
    from keras_s2s.scores import metric_kind

    kind = metric_kind(config)
    gate_set = _gate_sentences(config, source_tokenizer, target_tokenizer, dev_pairs, options.gate_sentences)
    gate = {"sentences": len(gate_set.texts), "metric": kind, "beam_size": options.beam_size}
    onnx_engine, encoder, decoder = _onnx_engine(work_dir, "", config.model.reverse_source)

    progress(f"gate (a): teacher-forced log-probs on {len(gate_set.texts)} dev sentences")
    difference = teacher_forced_difference(model, config, encoder, decoder, gate_set.sources, gate_set.targets)
    gate["max_abs_log_prob_diff"] = difference
    if difference > options.max_log_prob_diff:
        raise GateError(
            f"gate (a): log-probs differ by {difference:.2e} > {options.max_log_prob_diff:.0e} "
            "between Keras and onnxruntime"
        )

    keras_engine = KerasTranslator(model, config, source_tokenizer, target_tokenizer).step_engine
    onnx_outputs = {}
    for beam in (1, options.beam_size):
        progress(f"gate (b): {'greedy' if beam == 1 else f'beam {beam}'} search, Keras vs onnxruntime")
        keras_outputs = _best_ids(keras_engine, gate_set.sources, config.decode, beam)
        onnx_outputs[beam] = _best_ids(onnx_engine, gate_set.sources, config.decode, beam)
        gate[f"identical_beam{beam}"] = _identical_share(
            keras_outputs, onnx_outputs[beam], gate_set.texts, f"gate (b): beam {beam}"
        )
    float_text = [target_tokenizer.decode(ids) for ids in onnx_outputs[options.beam_size]]
    gate["float32"], float_loss = _score(kind, float_text, gate_set.references)
    if options.quantize == "int8":
        gate.update(
            _gate_int8(
                work_dir, config, target_tokenizer, gate_set, kind, options, float_loss, onnx_outputs[options.beam_size]
            )
        )
    gate["translator"] = _gate_translators(work_dir, config, gate_set, options)
    return gate


def _identical_share(expected, found, texts, name: str) -> float:
    """The share of equal outputs; a `GateError` naming the first different sentence unless all are."""
    same = sum(a == b for a, b in zip(expected, found))
    if same != len(texts):
        first = next(i for i, (a, b) in enumerate(zip(expected, found)) if a != b)
        raise GateError(
            f"{name}: {len(texts) - same} of {len(texts)} dev outputs differ between Keras and "
            f"onnxruntime (first: {texts[first]!r})"
        )
    return same / max(len(texts), 1)


def _gate_int8(
    work_dir, config, target_tokenizer, gate_set: _Sentences, kind, options, float_loss: float, float_outputs
) -> dict:
    """(c): INT8 at the gate's beam against float32: its scores, their loss, the share of
    identical outputs; a `GateError` when it loses more than `max_int8_loss`."""
    progress(f"gate (c): INT8 beam {options.beam_size} against float32")
    engine, _, _ = _onnx_engine(work_dir, ".int8", config.model.reverse_source)
    outputs = _best_ids(engine, gate_set.sources, config.decode, options.beam_size)
    text = [target_tokenizer.decode(ids) for ids in outputs]
    scores, loss = _score(kind, text, gate_set.references)
    identical = sum(a == b for a, b in zip(outputs, float_outputs)) / max(len(gate_set.texts), 1)
    if loss - float_loss > options.max_int8_loss:
        raise GateError(
            f"gate (c): INT8 loses {loss - float_loss:.2f} {'PER' if kind == 'g2p' else 'BLEU'} "
            f"points (limit {options.max_int8_loss})"
        )
    return {"int8": scores, "int8_identical_share": identical, "int8_loss": loss - float_loss}


def _gate_translators(work_dir, config, gate_set: _Sentences, options) -> dict:
    """(d): each precision's `translator.onnx` against the numpy search over its step graphs."""
    summaries = {}
    for variant, suffix in (("float32", ""), ("int8", ".int8")):
        if variant == "int8" and options.quantize != "int8":
            continue
        progress(f"gate (d): translator{suffix}.onnx against the numpy search over the {variant} step graphs")
        report = compare_engines(
            work_dir,
            suffix,
            gate_set.sources,
            gate_settings(config.decode),
            reverse_source=config.model.reverse_source,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
        )
        summaries[variant] = gate_summary(report)
        refuse_differences(report, f"gate (d): translator{suffix}.onnx", gate_set.texts)
    return summaries


def refuse_differences(report, name: str, texts) -> None:
    try:
        check_engines_agree(report, name, texts)
    except ExportError as error:
        raise GateError(str(error)) from None
