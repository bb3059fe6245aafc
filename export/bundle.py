"""A trained run -> a self-checking bundle: ONNX graphs, INT8 copies, the one-file
translators, tokenizers, manifest.

The bundle is built in a temporary directory beside the target and moved into place only
after every check of `export.gate` passed, so a failed or interrupted export leaves an
earlier bundle untouched.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time

import numpy as np

from export.gate import GateError, progress, refuse_differences, run_gate
from export.mobile import compare_ort, compare_ort_text, ort_name, write_ort_translators
from export.onnx_export import OPSET, export_onnx
from export.quantize import INT8_SETTINGS, quantize_int8
from export.saved_model import export_saved_model
from export.translator_export import (
    AWKWARD_LINES,
    compare_text,
    compare_text_apart,
    gate_settings,
    gate_summary,
    text_translator_possible,
    write_text_translator,
    write_translator,
)
from keras_s2s.config import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from serving.cpu import cpu_family
from serving.files import atomic_write, recover_directory, replace_directory, temporary_path
from serving.manifest import FORMAT_VERSION, sha256_of

__all__ = ["ExportOptions", "GateError", "export_bundle", "recover_interrupted_export", "summary"]


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
    verbose: bool. Let the quantiser's advice through.
    """

    quantize: str | None = None
    saved_model_dir: str | None = None
    gate_sentences: int = 300
    max_log_prob_diff: float = 1e-4
    max_int8_loss: float = 1.0
    beam_size: int = 5
    checkpoint: str = "best"
    verbose: bool = False


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
    """Cleans up after an export of `out_dir` that was killed (`serving.files.recover_directory`)."""
    recover_directory(out_dir)


def export_bundle(run_dir: str, out_dir: str, options: ExportOptions | None = None) -> dict:
    """Exports a run directory to a bundle directory; returns the manifest."""
    from keras_s2s.data.readers import read_tsv
    from keras_s2s.decoder import load_run

    options = options or ExportOptions()
    if options.quantize not in (None, "int8"):
        raise ValueError(f"--quantize {options.quantize!r}: only int8 is supported")
    started = time.monotonic()
    out_dir = os.path.abspath(out_dir)
    os.makedirs(os.path.dirname(out_dir), exist_ok=True)
    recover_interrupted_export(out_dir)
    progress(f"loading {run_dir} ({options.checkpoint} weights)")
    config, model, source_tokenizer, target_tokenizer = load_run(run_dir, checkpoint=options.checkpoint)
    work_dir = temporary_path(out_dir)
    os.makedirs(work_dir)
    try:
        bundle = _Bundle(work_dir)
        op_counts = bundle.graphs(model, config, options.quantize, advice=options.verbose)
        bundle.tokenizers(run_dir, config)
        max_source_length = longest_training_source(run_dir, source_tokenizer)
        bundle.text_translator(config, max_source_length)
        dev_pairs = read_tsv(os.path.join(run_dir, "data", "dev.tsv"))
        gate = run_gate(model, config, source_tokenizer, target_tokenizer, work_dir, options, dev_pairs)
        if bundle.text_operators:
            gate["text_translator"] = bundle.check_text_translator(
                config, max_source_length, dev_pairs, options.gate_sentences
            )
        bundle.ort_translators()
        gate["ort"] = bundle.check_ort_translators(
            config, source_tokenizer, max_source_length, dev_pairs, options.gate_sentences
        )
        saved_model = None
        if options.saved_model_dir:
            progress(f"writing the SavedModel to {options.saved_model_dir}")
            saved_model = export_saved_model(model, config, os.path.abspath(options.saved_model_dir))
        manifest = bundle.manifest(config, options, op_counts, max_source_length, gate, saved_model, run_dir)
        replace_directory(work_dir, out_dir)
    except BaseException:
        shutil.rmtree(work_dir, ignore_errors=True)
        raise
    manifest["seconds"] = time.monotonic() - started
    return manifest


class _Bundle:
    """The files of a bundle being written in `work_dir`, and what the manifest says of them."""

    def __init__(self, work_dir: str):
        self.work_dir = work_dir
        self.files: list[str] = []
        self.models: dict = {}
        self.tokenizer_names: dict = {}
        self.translator_ops: dict = {}
        self.text_operators: str | None = None
        self.mobile: dict = {}

    def _path(self, name: str) -> str:
        return os.path.join(self.work_dir, name)

    def graphs(self, model, config, quantize: str | None, advice: bool = False) -> dict:
        """`encoder.onnx`, `decoder_step.onnx`, their INT8 copies, and a `translator.onnx` per
        precision; returns the step graphs' op counts."""
        progress(f"writing ONNX, opset {OPSET} (encoder: tf2onnx; decoder step: from the weights)")
        op_counts = export_onnx(model, config.model, self.work_dir)
        self.files += ["encoder.onnx", "decoder_step.onnx"]
        self.models["float32"] = {"encoder": "encoder.onnx", "decoder_step": "decoder_step.onnx"}
        if quantize == "int8":
            progress("quantising to INT8 (onnxruntime dynamic quantisation)")
            for name in ("encoder", "decoder_step"):
                quantize_int8(self._path(f"{name}.onnx"), self._path(f"{name}.int8.onnx"), advice=advice)
            self.files += ["encoder.int8.onnx", "decoder_step.int8.onnx"]
            self.models["int8"] = {"encoder": "encoder.int8.onnx", "decoder_step": "decoder_step.int8.onnx"}
        progress("writing the one-file translator (encoder and beam search in one graph)")
        for variant, suffix in (("float32", ""), ("int8", ".int8")):
            if variant in self.models:
                self.translator_ops[variant] = write_translator(
                    self.work_dir,
                    suffix,
                    reverse_source=config.model.reverse_source,
                    bos_id=BOS_ID,
                    eos_id=EOS_ID,
                    encoder_lstms=op_counts["encoder"]["LSTM"],
                    decoder_lstms=op_counts["decoder_step"]["LSTM"],
                )
                self.models[variant]["translator"] = f"translator{suffix}.onnx"
                self.files.append(f"translator{suffix}.onnx")
        return op_counts

    def tokenizers(self, run_dir: str, config) -> None:
        from keras_s2s.data.tokenizers import tokenizer_files

        for side, path in zip(("source", "target"), tokenizer_files(run_dir, config.tokenizer)):
            name = os.path.basename(path)
            if not os.path.exists(self._path(name)):
                for extra in ("", ".json"):
                    if extra == "" or os.path.exists(path + extra):
                        shutil.copyfile(path + extra, self._path(name + extra))
                        self.files.append(name + extra)
            self.tokenizer_names[side] = name

    def text_translator(self, config, max_source_length: int) -> None:
        """`translator.text.onnx`, where the tokenizers can be written as graph operators."""
        source, target = self.tokenizer_names["source"], self.tokenizer_names["target"]
        reason = text_translator_possible(self.work_dir, source, target)
        if reason:
            progress(f"no text translator: {reason}")
            return
        symbol = config.tokenizer.type == "symbol"
        progress(
            "writing the text translator (the tokenizers in the graph: "
            + ("standard string operators)" if symbol else "onnxruntime-extensions' SentencePiece operators)")
        )
        self.translator_ops["text"] = write_text_translator(self.work_dir, source, target, max_source_length)
        self.models["float32"]["text_translator"] = "translator.text.onnx"
        self.text_operators = "standard" if symbol else "onnxruntime-extensions"
        self.files.append("translator.text.onnx")

    def check_text_translator(self, config, max_source_length: int, dev_pairs, sentences: int) -> dict:
        """Gate (e): the text graph against the tokenizers around `translator.onnx`."""
        progress("gate (e): translator.text.onnx against the tokenizers around translator.onnx")
        texts = [pair.source for pair in dev_pairs[:sentences]] + AWKWARD_LINES
        check = compare_text if self.text_operators == "standard" else compare_text_apart
        report = check(
            self.work_dir,
            self.tokenizer_names["source"],
            self.tokenizer_names["target"],
            max_source_length,
            texts,
            gate_settings(config.decode),
        )
        refuse_differences(report, "gate (e): translator.text.onnx", texts)
        return gate_summary(report)

    def ort_translators(self) -> None:
        """The one-file translators in ORT format, and the operator config of a minimal build
        (`export.mobile`)."""
        names = [models["translator"] for models in self.models.values()]
        if self.text_operators == "standard":
            names.append(self.models["float32"]["text_translator"])
        progress(f"writing the ORT format translators for ONNX Runtime Mobile ({', '.join(map(ort_name, names))})")
        self.mobile = write_ort_translators(self.work_dir, names)
        self.files += list(self.mobile["files"].values()) + [self.mobile["operators_config"]]
        for models in self.models.values():
            for key, name in list(models.items()):
                if name in self.mobile["files"]:
                    models[f"{key}_ort"] = self.mobile["files"][name]

    def check_ort_translators(
        self, config, source_tokenizer, max_source_length: int, dev_pairs, sentences: int
    ) -> dict:
        """Gate (f): each `.ort` translator against its `.onnx` file."""
        progress("gate (f): the ORT format translators against their ONNX files")
        texts = [pair.source for pair in dev_pairs[:sentences]]
        sources = [source_tokenizer.encode(text)[: max_source_length or None] for text in texts]
        summaries = {}
        for name in self.mobile["files"]:
            if name == "translator.text.onnx":
                report = compare_ort_text(self.work_dir, name, texts + AWKWARD_LINES, gate_settings(config.decode))
                refuse_differences(report, f"gate (f): {ort_name(name)}", texts + AWKWARD_LINES)
            else:
                report = compare_ort(self.work_dir, name, sources, gate_settings(config.decode))
                refuse_differences(report, f"gate (f): {ort_name(name)}", texts)
            summaries[ort_name(name)] = gate_summary(report)
        return summaries

    def manifest(
        self,
        config,
        options: ExportOptions,
        op_counts: dict,
        max_source_length: int,
        gate: dict,
        saved_model,
        run_dir: str,
    ) -> dict:
        """Writes `manifest.json`: the files and their sha256, the model, the search defaults,
        the gate's figures."""
        decode = config.decode
        manifest = {
            "format_version": FORMAT_VERSION,
            "config": config.to_dict(),
            "checkpoint": options.checkpoint,
            "special_ids": {"pad": PAD_ID, "unk": UNK_ID, "bos": BOS_ID, "eos": EOS_ID},
            "reverse_source": config.model.reverse_source,
            "attention": config.model.attention,
            "max_source_length": max_source_length,
            "decode": {
                "beam_size": decode.beam_size,
                "length_penalty": decode.length_penalty,
                "max_length_a": decode.max_length_a,
                "max_length_b": decode.max_length_b,
            },
            "opset": OPSET,
            # translator.text.onnx's string operators: "standard" (every onnxruntime), or
            # "onnxruntime-extensions" (register its library; not in onnxruntime-node or -web).
            "text_translator_operators": self.text_operators,
            "models": self.models,
            # How the INT8 graphs were quantised, and the CPU family whose kernels ran gate (c):
            # INT8 outputs differ between families (docs/export.md, "INT8 on every CPU").
            "quantization": {**INT8_SETTINGS, "gate_cpu": cpu_family()} if "int8" in self.models else None,
            # ONNX Runtime Mobile: the translators' `.ort` files and a minimal build's operators.
            "mobile": {key: value for key, value in self.mobile.items() if key != "files"},
            "tokenizers": self.tokenizer_names,
            "tensors": {
                "encoder": _tensor_names(self._path("encoder.onnx")),
                "decoder_step": _tensor_names(self._path("decoder_step.onnx")),
                "translator": _tensor_names(self._path("translator.onnx")),
                "states_layout": "(2 * num_layers, batch, hidden_dim): h_0, c_0, h_1, c_1, ...",
            },
            "lstm": {
                "fused_nodes": {
                    "encoder": op_counts["encoder"]["LSTM"],
                    "decoder_step": op_counts["decoder_step"]["LSTM"],
                },
                "translator_loops": {
                    variant: counts["graph"]["Loop"]
                    for variant, counts in self.translator_ops.items()
                    if variant != "text"
                },
                "converted_by": {"encoder": "tf2onnx", "decoder_step": "export/step_graph.py"},
                "encoder_sequence_lens": "source_lengths, attached by the exporter",
            },
            "files": {
                name: {"sha256": sha256_of(self._path(name)), "bytes": os.path.getsize(self._path(name))}
                for name in self.files
            },
            "versions": _versions(),
            "gate": gate,
            "saved_model": saved_model,
            "exported_from": os.path.abspath(run_dir),
        }
        with atomic_write(self._path("manifest.json")) as handle:
            json.dump(manifest, handle, indent=2)
        return manifest


def summary(manifest: dict, out_dir: str) -> str:
    """A one-screen summary: files, sizes, gate results."""
    lines = [f"bundle {out_dir}"]
    for name, entry in manifest["files"].items():
        lines.append(f"  {name:28s} {entry['bytes'] / 1e6:8.2f} MB")
    gate = manifest["gate"]
    lines.append(
        f"gate on {gate['sentences']} dev sentences: max |log-prob diff| {gate['max_abs_log_prob_diff']:.2e}; "
        + ", ".join(
            f"{k.replace('identical_', 'identical ')} {100 * v:.1f}%"
            for k, v in gate.items()
            if k.startswith("identical_")
        )
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
        lines.append(
            f"  text translator: identical to the tokenizers around translator.onnx on "
            f"{100 * entry['identical_share']:.1f}% of {entry['sentences']} lines"
        )
    for name, entry in gate.get("ort", {}).items():
        lines.append(
            f"  {name}: identical to its .onnx file on {100 * entry['identical_share']:.1f}% of "
            f"{entry['sentences']} inputs, scores within {entry['max_score_diff']:.1e}"
        )
    for variant, entry in gate.get("translator", {}).items():
        lines.append(
            f"  translator ({variant}): identical to the step engine on {100 * entry['identical_share']:.1f}% "
            f"of {entry['sentences']} sentences, scores within {entry['max_score_diff']:.1e}"
        )
    lines.append(f"LSTM nodes (fused): {manifest['lstm']['fused_nodes']}")
    return "\n".join(lines)
