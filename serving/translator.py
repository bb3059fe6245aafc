"""The device-side translator: a bundle directory -> onnxruntime sessions -> an engine of
`serving.decoding.SearchTranslator`.

Only numpy, onnxruntime and sentencepiece are used here. A bundle is checked before it is
used: its manifest's format version, and the sha256 of every file it names
(`serving.manifest`); a damaged bundle is refused with a message naming the file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from serving.decoding import SearchTranslator, StepEngine, Translation, TruncationWarning
from serving.ensemble import ensemble_engine
from serving.manifest import FORMAT_VERSION, MANIFEST, BundleError, load_bundle_vocabulary, read_manifest, sha256_of
from serving.sessions import (
    DecoderStepSession,
    EncoderSession,
    TranslatorGraphSession,
    one_thread_rows,
    onnx_step_engine,
)

ENGINES = ("graph", "steps")
__all__ = [
    "ENGINES",
    "FORMAT_VERSION",
    "BundleError",
    "EnsembleTranslator",
    "Translation",
    "Translator",
    "TruncationWarning",
    "read_manifest",
    "sha256_of",
]


class Translator(SearchTranslator):
    """Translates text with a bundle's ONNX graphs.

    Two engines give the same results: `graph` runs `translator.onnx`, the encoder and the
    whole beam search in one onnxruntime call per batch; `steps` runs `encoder.onnx`, then
    `decoder_step.onnx` once per output token from the numpy search of `serving.search`.
    The default is `graph` (lower latency, BENCHMARKS.md) for bundles that have it.

    Build one with `Translator.from_bundle(path)`. Safe to call from several threads:
    all per-call data lives on the stack.
    """

    def __init__(
        self, bundle_dir: str, manifest: dict, providers=None, num_threads=None, int8=False, engine: str | None = None
    ):
        self.bundle_dir, self.manifest = bundle_dir, manifest
        manifest_path = os.path.join(bundle_dir, MANIFEST)
        providers = providers or ["CPUExecutionProvider"]
        variant = "int8" if int8 else "float32"
        try:
            models = manifest["models"].get(variant)
            if models is None:
                raise BundleError(f"{manifest_path}: no {variant} models in this bundle")
            encoder_file, step_file, graph_file = models["encoder"], models["decoder_step"], models.get("translator")
            source_file, target_file = manifest["tokenizers"]["source"], manifest["tokenizers"]["target"]
            self.special_ids = {name: int(manifest["special_ids"][name]) for name in ("bos", "eos")}
            self.reverse_source = bool(manifest["reverse_source"])
            decode = dict(manifest["decode"])
            max_source_length = int(manifest.get("max_source_length", 0)) or None
        except KeyError as error:
            raise BundleError(f"{manifest_path}: field {error} is missing") from None
        except (AttributeError, TypeError, ValueError) as error:
            raise BundleError(f"{manifest_path}: malformed ({error})") from None
        if engine not in (None, *ENGINES):
            raise ValueError(f"engine {engine!r}: use one of {', '.join(ENGINES)}")
        if engine == "graph" and graph_file is None:
            raise BundleError(
                f"{manifest_path}: this bundle has no {variant} translator.onnx "
                "(export it again, or use the steps engine)"
            )
        self.engine_name = engine or ("graph" if graph_file else "steps")
        try:
            small = one_thread_rows(manifest["config"]["model"], int8)
        except (KeyError, TypeError, ValueError, ZeroDivisionError):  # a bundle without its model's shape
            small = 0
        # Only the chosen engine's graphs are opened: a graph-engine translator holds one session.
        self.graph = self.encoder = self.decoder_step = None
        if self.engine_name == "graph":
            self.graph = TranslatorGraphSession(
                os.path.join(bundle_dir, graph_file), providers, num_threads, one_thread_rows=small
            )
        else:
            self.encoder = EncoderSession(os.path.join(bundle_dir, encoder_file), providers, num_threads)
            self.decoder_step = DecoderStepSession(
                os.path.join(bundle_dir, step_file), providers, num_threads, one_thread_rows=small
            )
        super().__init__(
            self.graph or self.step_engine(),
            load_bundle_vocabulary(os.path.join(bundle_dir, source_file)),
            load_bundle_vocabulary(os.path.join(bundle_dir, target_file)),
            decode,
            max_source_length,
        )

    @classmethod
    def from_bundle(
        cls, path: str, providers=None, num_threads: int | None = None, int8: bool = False, engine: str | None = None
    ):
        """Checks the bundle (format version, sha256 of every file) and opens its sessions.

        Args:
            engine: `graph`, `steps`, or None for `graph` where the bundle has it.
        """
        manifest = read_manifest(path, verify=True)
        return cls(path, manifest, providers=providers, num_threads=num_threads, int8=int8, engine=engine)

    def step_engine(self, top_k: bool | None = None) -> StepEngine:
        """The step graphs as the numpy search drives them (the steps engine only)."""
        if self.decoder_step is None:
            raise ValueError(f"{self.bundle_dir}: opened with the graph engine; open it with engine='steps'")
        return onnx_step_engine(
            self.encoder,
            self.decoder_step,
            bos_id=self.special_ids["bos"],
            eos_id=self.special_ids["eos"],
            reverse_source=self.reverse_source,
            top_k=top_k,
        )

    def encode(self, source_ids, source_lengths) -> dict:
        """The search state of a padded batch (the steps engine only)."""
        return self.encoder.state(source_ids, source_lengths)


class EnsembleTranslator(SearchTranslator):
    """Several bundles with the same tokenizers, translating as one model
    (`serving.ensemble`); the members' graphs may differ in shape and precision. Source
    reversal, length limits and decode settings come from the first member.

    Args:
        members: `Translator`s opened with `engine="steps"`.

    Example:
    >>> EnsembleTranslator([Translator.from_bundle(a, engine="steps"), Translator.from_bundle(b, engine="steps")])  # doctest: +SKIP
    """

    def __init__(self, members: Sequence[Translator]):
        if not members:
            raise ValueError("an ensemble needs at least one bundle")
        first = members[0]
        for member in members:
            if member.engine_name != "steps":
                raise ValueError(
                    f"{member.bundle_dir}: an ensemble combines its members' steps: open every member "
                    "with engine='steps'"
                )
        for member in members[1:]:
            for side in ("source", "target"):
                name, other = first.manifest["tokenizers"][side], member.manifest["tokenizers"][side]
                if first.manifest["files"][name]["sha256"] != member.manifest["files"][other]["sha256"]:
                    raise BundleError(
                        f"{os.path.join(member.bundle_dir, other)}: the {side} tokenizer differs from "
                        f"{os.path.join(first.bundle_dir, name)}'s; ensemble members must share it"
                    )
            if (member.reverse_source, member.special_ids) != (first.reverse_source, first.special_ids):
                raise BundleError(
                    f"{member.bundle_dir}: source reversal or special ids differ from {first.bundle_dir}'s"
                )
        self.members = list(members)
        self.bundle_dir, self.manifest = first.bundle_dir, first.manifest
        # Full log-probabilities from every member: each member's step without its top-k.
        super().__init__(
            ensemble_engine([member.step_engine(top_k=False) for member in members]),
            first.source_vocabulary,
            first.target_vocabulary,
            first.decode,
            first.max_source_length,
        )
