"""A trained run -> a self-checking bundle: ONNX graphs, INT8 copies, tokenizers, manifest.

The bundle is built in a temporary directory beside the target and renamed
into place only after every check passed, so a failed or interrupted
export leaves an earlier bundle untouched.

Quality gate, on real dev sentences of the run:
  (a) teacher-forced `log_probs`: largest absolute difference between Keras
      and onnxruntime (float32 must be <= `max_log_prob_diff`);
  (b) greedy and beam outputs of the Keras inference models and of the ONNX
      graphs, driven by the same `serving.search`, identical on every sentence;
  (c) INT8: the score change against float32 and the share of identical
      outputs; the export fails when INT8 loses more than `max_int8_loss`;
  (d) `translator.onnx` (and `translator.int8.onnx`): the graph's search against
      the numpy search over the same precision's step graphs, greedy and at the
      bundle's beam with its whole n-best list: identical token ids, order and
      finished flags on every sentence, scores within 1e-5;
  (e) `translator.text.onnx`: against the tokenizers around `translator.onnx`, on
      the dev sentences and on awkward lines (`AWKWARD_LINES`), the same way.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import sys
import tempfile
import time

import numpy as np

from export.checks import ExportError
from export.onnx_export import OPSET, export_onnx
from export.translator_export import (
    AWKWARD_LINES,
    check_engines_agree,
    compare_engines,
    compare_text,
    compare_text_apart,
    gate_settings,
    gate_summary,
    text_translator_possible,
    write_text_translator,
    write_translator,
)
from keras_s2s.config import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from serving.search import decode_in_batches, pad_sources
from serving.translator import FORMAT_VERSION, DecoderStepSession, EncoderSession, sha256_of


class GateError(RuntimeError):
    """The exported graphs do not decode like the trained model."""


@dataclasses.dataclass
class ExportOptions:
    """Args:
    quantize: str. `int8` adds `*.int8.onnx` (onnxruntime dynamic quantisation).
    saved_model_dir: str. Also write a SavedModel there.
    gate_sentences: int. Dev sentences used by the gate.
    max_log_prob_diff: float. Largest allowed float32 log-prob difference.
    max_int8_loss: float. Largest allowed INT8 loss (BLEU points or PER points).
    beam_size: int. Beam of the gate's beam search.
    checkpoint: str. Which weights of the run: `best` (lowest dev loss), `last`, or
        `averaged` (`training.average_last_epochs`).
    """

    quantize: str | None = None
    saved_model_dir: str | None = None
    gate_sentences: int = 300
    max_log_prob_diff: float = 1e-4
    max_int8_loss: float = 1.0
    beam_size: int = 5
    checkpoint: str = "best"


def _progress(message: str) -> None:
    print(f"[s2s-export] {message}", file=sys.stderr, flush=True)


def _versions() -> dict:
    import keras
    import onnx
    import onnxruntime
    import tensorflow as tf
    import tf2onnx

    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "tf2onnx": tf2onnx.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
    }


def quantize_int8(source: str, target: str) -> None:
    """onnxruntime dynamic INT8 quantisation (LSTM -> DynamicQuantizeLSTM, MatMul -> MatMulInteger)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(source, target, weight_type=QuantType.QInt8, op_types_to_quantize=["LSTM", "MatMul", "Gemm"])


def export_saved_model(model, config, path: str) -> dict:
    """Writes a SavedModel with `encode` and `decode_step` signatures and checks it reloads
    to the same outputs as Keras."""
    import keras
    import tensorflow as tf

    from keras_s2s.evaluation import decoder_step_function
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
    temporary = path + ".partial"
    shutil.rmtree(temporary, ignore_errors=True)
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
    difference = max(difference, float(np.abs(step["log_probs"].numpy() - keras.ops.convert_to_numpy(expected_step["log_probs"])).max()))
    if difference > 1e-5:
        raise GateError(f"{temporary}: reloaded SavedModel differs from Keras by {difference:.2e}")
    if os.path.exists(path):
        shutil.rmtree(path)
    os.replace(temporary, path)
    return {"path": path, "max_abs_diff": difference}


def _onnx_state(encoder: EncoderSession, ids, lengths) -> dict:
    state = encoder(ids, lengths)
    if "encoder_outputs" in state:
        state["source_lengths"] = lengths
    return state


def _decode_all(encode, step, sources, reverse, decode, beam_size, batch_size=64):
    """Runs the shared search over `sources`; returns the best token id list of each, in order."""
    found = decode_in_batches(
        encode,
        step,
        sources,
        reverse=reverse,
        max_length_a=decode.max_length_a,
        max_length_b=decode.max_length_b,
        batch_size=batch_size,
        bos_id=BOS_ID,
        eos_id=EOS_ID,
        beam_size=beam_size,
        length_penalty=decode.length_penalty,
    )
    return [hypotheses[0].token_ids for hypotheses in found]


def teacher_forced_difference(model, config, encoder: EncoderSession, decoder: DecoderStepSession,
                              sources, targets, batch_size: int = 64) -> float:
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
        state = _onnx_state(encoder, ids, lengths)
        valid = np.array([len(t) + 1 for t in batch_targets])
        for t in range(inputs.shape[1]):
            log_probs, update = decoder(inputs[:, t], state)
            state.update(update)
            rows = valid > t
            if rows.any():
                worst = max(worst, float(np.abs(log_probs[rows] - expected[rows, t]).max()))
    return worst


def _score(kind, pairs_sources, hypotheses_text, references):
    from keras_s2s.evaluation import bleu_scores, g2p_scores

    if kind == "g2p":
        values = g2p_scores(hypotheses_text, references)
        return {"per": values["per"], "wer": values["wer"]}, values["per"]
    values = bleu_scores(hypotheses_text, [r[0] for r in references])
    return {"bleu": values["bleu"], "chrf": values["chrf"]}, -values["bleu"]


def run_gate(model, config, source_tokenizer, target_tokenizer, work_dir: str, options: ExportOptions,
             dev_pairs) -> dict:
    """The quality gate over `dev_pairs`; raises `GateError` when (a), (b) or (c) fails."""
    import collections

    from keras_s2s.evaluation import KerasTranslator, metric_kind

    kind = metric_kind(config)
    references = collections.defaultdict(list)
    for pair in dev_pairs:
        references[pair.source].append(pair.target)
    texts = list(references)
    random.Random(config.training.seed).shuffle(texts)
    texts = texts[: options.gate_sentences]
    sources = [source_tokenizer.encode(text) for text in texts]
    targets = [target_tokenizer.encode(references[text][0]) for text in texts]
    refs = [references[text] for text in texts]
    providers = ["CPUExecutionProvider"]
    encoder = EncoderSession(os.path.join(work_dir, "encoder.onnx"), providers, None)
    decoder = DecoderStepSession(os.path.join(work_dir, "decoder_step.onnx"), providers, None)
    gate = {"sentences": len(texts), "metric": kind, "beam_size": options.beam_size}

    _progress(f"gate (a): teacher-forced log-probs on {len(texts)} dev sentences")
    gate["max_abs_log_prob_diff"] = teacher_forced_difference(
        model, config, encoder, decoder, sources, targets
    )
    if gate["max_abs_log_prob_diff"] > options.max_log_prob_diff:
        raise GateError(
            f"gate (a): log-probs differ by {gate['max_abs_log_prob_diff']:.2e} "
            f"> {options.max_log_prob_diff:.0e} between Keras and onnxruntime"
        )
    keras_translator = KerasTranslator(model, config, source_tokenizer, target_tokenizer)
    reverse = config.model.reverse_source
    onnx_outputs = {}
    for beam in (1, options.beam_size):
        _progress(f"gate (b): {'greedy' if beam == 1 else f'beam {beam}'} search, Keras vs onnxruntime")
        keras_outputs = _decode_all(keras_translator.encode_batch, keras_translator.step, sources,
                                    reverse, config.decode, beam)
        onnx_outputs[beam] = _decode_all(lambda i, l: _onnx_state(encoder, i, l), decoder, sources,
                                         reverse, config.decode, beam)
        same = sum(a == b for a, b in zip(keras_outputs, onnx_outputs[beam]))
        gate[f"identical_beam{beam}"] = same / max(len(texts), 1)
        if same != len(texts):
            first = next(i for i, (a, b) in enumerate(zip(keras_outputs, onnx_outputs[beam])) if a != b)
            raise GateError(
                f"gate (b): beam {beam}: {len(texts) - same} of {len(texts)} dev outputs differ between "
                f"Keras and onnxruntime (first: {texts[first]!r})"
            )
    float_text = [target_tokenizer.decode(ids) for ids in onnx_outputs[options.beam_size]]
    gate["float32"], float_loss = _score(kind, texts, float_text, refs)
    if options.quantize == "int8":
        _progress(f"gate (c): INT8 beam {options.beam_size} against float32")
        int8_encoder = EncoderSession(os.path.join(work_dir, "encoder.int8.onnx"), providers, None)
        int8_decoder = DecoderStepSession(os.path.join(work_dir, "decoder_step.int8.onnx"), providers, None)
        int8_outputs = _decode_all(lambda i, l: _onnx_state(int8_encoder, i, l), int8_decoder, sources,
                                   reverse, config.decode, options.beam_size)
        int8_text = [target_tokenizer.decode(ids) for ids in int8_outputs]
        gate["int8"], int8_loss = _score(kind, texts, int8_text, refs)
        gate["int8_identical_share"] = sum(a == b for a, b in zip(int8_outputs, onnx_outputs[options.beam_size])) / max(len(texts), 1)
        gate["int8_loss"] = int8_loss - float_loss
        if gate["int8_loss"] > options.max_int8_loss:
            raise GateError(
                f"gate (c): INT8 loses {gate['int8_loss']:.2f} {'PER' if kind == 'g2p' else 'BLEU'} points "
                f"(limit {options.max_int8_loss})"
            )
    gate["translator"] = {}
    for variant, suffix in (("float32", ""), ("int8", ".int8")):
        if variant == "int8" and options.quantize != "int8":
            continue
        _progress(f"gate (d): translator{suffix}.onnx against the numpy search over the {variant} step graphs")
        report = compare_engines(work_dir, suffix, sources, gate_settings(config.decode), reverse_source=reverse,
                                 bos_id=BOS_ID, eos_id=EOS_ID)
        gate["translator"][variant] = gate_summary(report)
        _refuse_differences(report, f"gate (d): translator{suffix}.onnx", texts)
    return gate


def _refuse_differences(report, name: str, texts) -> None:
    try:
        check_engines_agree(report, name, texts)
    except ExportError as error:
        raise GateError(str(error)) from None


def _tensor_names(path: str) -> dict:
    import onnx

    graph = onnx.load(path, load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    return {
        "inputs": [i.name for i in graph.input if i.name not in initializers],
        "outputs": [o.name for o in graph.output],
    }


def longest_training_source(run_dir: str, source_tokenizer) -> int:
    """The model's source limit: the longest training source, in tokens.

    The corpus filter measures lengths in words for subword models, so the
    token limit comes from the encoded training split itself. Longer inputs are
    truncated to it by the translator (with a warning): the model never saw them.
    """
    from keras_s2s.data.readers import read_tsv

    pairs = read_tsv(os.path.join(run_dir, "data", "train.tsv"))
    return max((len(source_tokenizer.encode(pair.source)) for pair in pairs), default=0)


def recover_interrupted_export(out_dir: str) -> None:
    """Cleans up after an export of `out_dir` that was killed.

    Removes unfinished `NAME.partial-*` directories. If the kill came between
    the two renames of the swap (the old bundle moved aside, the new one not
    yet in place), the old bundle is moved back. One export per target at a time.
    """
    parent, name = os.path.split(os.path.abspath(out_dir))
    if not os.path.isdir(parent):
        return
    for entry in sorted(os.listdir(parent)):
        path = os.path.join(parent, entry)
        if entry.startswith(name + ".partial-"):
            shutil.rmtree(path, ignore_errors=True)
        elif entry.startswith(name + ".old-"):
            if os.path.exists(out_dir):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.replace(path, out_dir)


def export_bundle(run_dir: str, out_dir: str, options: ExportOptions | None = None) -> dict:
    """Exports a run directory to a bundle directory; returns the manifest."""
    from keras_s2s.data.readers import read_tsv
    from keras_s2s.data.tokenizers import tokenizer_files
    from keras_s2s.evaluation import load_run

    options = options or ExportOptions()
    started = time.monotonic()
    out_dir = os.path.abspath(out_dir)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    recover_interrupted_export(out_dir)
    _progress(f"loading {run_dir} ({options.checkpoint} weights)")
    config, model, source_tokenizer, target_tokenizer = load_run(run_dir, checkpoint=options.checkpoint)
    work_dir = tempfile.mkdtemp(prefix=os.path.basename(out_dir) + ".partial-", dir=parent)
    try:
        _progress("writing ONNX, opset %d (encoder: tf2onnx; decoder step: from the weights)" % OPSET)
        op_counts = export_onnx(model, config.model, work_dir)
        files = ["encoder.onnx", "decoder_step.onnx"]
        models = {"float32": {"encoder": "encoder.onnx", "decoder_step": "decoder_step.onnx"}}
        if options.quantize == "int8":
            _progress("quantising to INT8 (onnxruntime dynamic quantisation)")
            for name in ("encoder", "decoder_step"):
                quantize_int8(os.path.join(work_dir, f"{name}.onnx"), os.path.join(work_dir, f"{name}.int8.onnx"))
            files += ["encoder.int8.onnx", "decoder_step.int8.onnx"]
            models["int8"] = {"encoder": "encoder.int8.onnx", "decoder_step": "decoder_step.int8.onnx"}
        elif options.quantize:
            raise ValueError(f"--quantize {options.quantize!r}: only int8 is supported")
        _progress("writing the one-file translator (encoder and beam search in one graph)")
        lstms = dict(encoder_lstms=op_counts["encoder"]["LSTM"], decoder_lstms=op_counts["decoder_step"]["LSTM"])
        translator_ops = {}
        for variant, suffix in (("float32", ""), ("int8", ".int8")):
            if variant in models:
                translator_ops[variant] = write_translator(
                    work_dir, suffix, reverse_source=config.model.reverse_source, bos_id=BOS_ID, eos_id=EOS_ID,
                    **lstms)
                models[variant]["translator"] = f"translator{suffix}.onnx"
                files.append(f"translator{suffix}.onnx")
        tokenizers = {}
        for side, path in zip(("source", "target"), tokenizer_files(run_dir, config.tokenizer)):
            name = os.path.basename(path)
            if not os.path.exists(os.path.join(work_dir, name)):
                shutil.copyfile(path, os.path.join(work_dir, name))
                files.append(name)
                if os.path.exists(path + ".json"):
                    shutil.copyfile(path + ".json", os.path.join(work_dir, name + ".json"))
                    files.append(name + ".json")
            tokenizers[side] = name
        max_source_length = longest_training_source(run_dir, source_tokenizer)
        text_operators = None
        no_text = text_translator_possible(work_dir, tokenizers["source"], tokenizers["target"])
        if no_text:
            _progress(f"no text translator: {no_text}")
        else:
            symbol = config.tokenizer.type == "symbol"
            _progress("writing the text translator (the tokenizers in the graph: "
                      + ("standard string operators)" if symbol else "onnxruntime-extensions' SentencePiece operators)"))
            translator_ops["text"] = write_text_translator(work_dir, tokenizers["source"], tokenizers["target"],
                                                           max_source_length)
            models["float32"]["text_translator"] = "translator.text.onnx"
            text_operators = "standard" if symbol else "onnxruntime-extensions"
            files.append("translator.text.onnx")
        dev_pairs = read_tsv(os.path.join(run_dir, "data", "dev.tsv"))
        gate = run_gate(model, config, source_tokenizer, target_tokenizer, work_dir, options, dev_pairs)
        if "text_translator" in models["float32"]:
            _progress("gate (e): translator.text.onnx against the tokenizers around translator.onnx")
            texts = [pair.source for pair in dev_pairs[: options.gate_sentences]] + AWKWARD_LINES
            check = compare_text if text_operators == "standard" else compare_text_apart
            report = check(work_dir, tokenizers["source"], tokenizers["target"], max_source_length, texts,
                           gate_settings(config.decode))
            gate["text_translator"] = gate_summary(report)
            _refuse_differences(report, "gate (e): translator.text.onnx", texts)
        saved_model = None
        if options.saved_model_dir:
            _progress(f"writing the SavedModel to {options.saved_model_dir}")
            saved_model = export_saved_model(model, config, os.path.abspath(options.saved_model_dir))
        manifest = {
            "format_version": FORMAT_VERSION,
            "config": config.to_dict(),
            "checkpoint": options.checkpoint,
            "special_ids": {"pad": PAD_ID, "unk": UNK_ID, "bos": BOS_ID, "eos": EOS_ID},
            "reverse_source": config.model.reverse_source,
            "attention": config.model.attention,
            "max_source_length": max_source_length,
            "decode": {
                "beam_size": config.decode.beam_size,
                "length_penalty": config.decode.length_penalty,
                "max_length_a": config.decode.max_length_a,
                "max_length_b": config.decode.max_length_b,
            },
            "opset": OPSET,
            # translator.text.onnx's string operators: "standard" (every onnxruntime), or
            # "onnxruntime-extensions" (register its library; not in onnxruntime-node or -web).
            "text_translator_operators": text_operators,
            "models": models,
            "tokenizers": tokenizers,
            "tensors": {
                "encoder": _tensor_names(os.path.join(work_dir, "encoder.onnx")),
                "decoder_step": _tensor_names(os.path.join(work_dir, "decoder_step.onnx")),
                "translator": _tensor_names(os.path.join(work_dir, "translator.onnx")),
                "states_layout": "(2 * num_layers, batch, hidden_dim): h_0, c_0, h_1, c_1, ...",
            },
            "lstm": {
                "fused_nodes": {"encoder": op_counts["encoder"]["LSTM"], "decoder_step": op_counts["decoder_step"]["LSTM"]},
                "translator_loops": {variant: counts["graph"]["Loop"] for variant, counts in translator_ops.items()
                                     if variant != "text"},
                "converted_by": {"encoder": "tf2onnx", "decoder_step": "export/step_graph.py"},
                "encoder_sequence_lens": "source_lengths, attached by the exporter",
            },
            "files": {
                name: {"sha256": sha256_of(os.path.join(work_dir, name)),
                       "bytes": os.path.getsize(os.path.join(work_dir, name))}
                for name in files
            },
            "versions": _versions(),
            "gate": gate,
            "saved_model": saved_model,
            "exported_from": os.path.abspath(run_dir),
        }
        with open(os.path.join(work_dir, "manifest.json"), "w", encoding="utf-8") as handle:
            json.dump(manifest, handle, indent=2)
        # Swap into place: the old bundle is moved aside only once the new one is complete.
        old = None
        if os.path.exists(out_dir):
            old = tempfile.mkdtemp(prefix=os.path.basename(out_dir) + ".old-", dir=parent)
            os.rmdir(old)
            os.replace(out_dir, old)
        os.replace(work_dir, out_dir)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(work_dir, ignore_errors=True)
        raise
    manifest["seconds"] = time.monotonic() - started
    return manifest


def summary(manifest: dict, out_dir: str) -> str:
    """A one-screen summary: files, sizes, gate results."""
    lines = [f"bundle {out_dir}"]
    for name, entry in manifest["files"].items():
        lines.append(f"  {name:28s} {entry['bytes'] / 1e6:8.2f} MB")
    gate = manifest["gate"]
    lines.append(
        f"gate on {gate['sentences']} dev sentences: max |log-prob diff| {gate['max_abs_log_prob_diff']:.2e}; "
        + ", ".join(f"{k.replace('identical_', 'identical ')} {100 * v:.1f}%" for k, v in gate.items() if k.startswith("identical_"))
    )
    def scores(values: dict) -> str:
        return ", ".join(f"{key.upper() if len(key) == 3 else key} {value:.2f}" for key, value in values.items())

    lines.append(f"  float32 beam {manifest['gate'].get('beam_size', 5)}: {scores(gate['float32'])}")
    if "int8" in gate:
        lines.append(
            f"  int8: {scores(gate['int8'])} (loss {gate['int8_loss']:+.2f} points, "
            f"identical to float32 {100 * gate['int8_identical_share']:.1f}%)"
        )
    if "text_translator" in gate:
        entry = gate["text_translator"]
        lines.append(f"  text translator: identical to the tokenizers around translator.onnx on "
                     f"{100 * entry['identical_share']:.1f}% of {entry['sentences']} lines")
    for variant, entry in gate.get("translator", {}).items():
        lines.append(f"  translator ({variant}): identical to the step engine on {100 * entry['identical_share']:.1f}% "
                     f"of {entry['sentences']} sentences, scores within {entry['max_score_diff']:.1e}")
    lines.append(f"LSTM nodes (fused): {manifest['lstm']['fused_nodes']}")
    return "\n".join(lines)
