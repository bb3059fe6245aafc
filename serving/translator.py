"""The device-side translator: a bundle directory -> onnxruntime sessions -> beam search.

Only numpy, onnxruntime and sentencepiece are used here. A bundle is checked
before it is used: its manifest's format version, and the sha256 of every
file it names; a damaged bundle is refused with a message naming the file.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import threading
import warnings
from typing import Sequence

import numpy as np

from serving.search import Ensemble, Hypothesis, decode_in_batches, in_length_batches, pad_sources
from serving.tokenizers import load_vocabulary

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ENGINES = ("graph", "steps")


class TruncationWarning(UserWarning):
    """A source longer than the model's limit was cut to the limit.

    Attributes: `index` (position in the call's inputs), `length`, `limit`.
    """

    def __init__(self, index: int, length: int, limit: int):
        super().__init__(f"input {index}: {length} tokens, truncated to {limit}")
        self.index, self.length, self.limit = index, length, limit


class BundleError(ValueError):
    """A bundle that cannot be used; the message names the file."""


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(bundle_dir: str, verify: bool = True) -> dict:
    """Reads `manifest.json` and checks the format version and every file's sha256."""
    path = os.path.join(bundle_dir, MANIFEST)
    if not os.path.exists(path):
        raise BundleError(f"{path}: manifest is missing; is {bundle_dir} a bundle directory?")
    try:
        with open(path, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except ValueError as error:
        raise BundleError(f"{path}: not valid JSON ({error})") from None
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{path}: format_version {version!r} is not supported (this translator reads {FORMAT_VERSION})"
        )
    if verify:
        files = manifest.get("files", {})
        used = [manifest.get("tokenizers", {}).get(side) for side in ("source", "target")]
        for models in manifest.get("models", {}).values():
            used += list(models.values()) if isinstance(models, dict) else []
        for name in used:
            if name is not None and name not in files:
                raise BundleError(f"{path}: {name} is used but has no sha256 in the manifest")
        for name, entry in files.items():
            file_path = os.path.join(bundle_dir, name)
            if not os.path.exists(file_path):
                raise BundleError(f"{file_path}: named in the manifest but missing")
            if sha256_of(file_path) != entry["sha256"]:
                raise BundleError(f"{file_path}: sha256 does not match the manifest (damaged or changed)")
    return manifest


def _load_vocabulary(path: str):
    if not os.path.exists(path):
        raise BundleError(f"{path}: named in the manifest but missing")
    try:
        return load_vocabulary(path)
    except Exception as error:
        raise BundleError(f"{path}: cannot read this tokenizer ({type(error).__name__}: {error})") from None


@dataclasses.dataclass
class Translation:
    """One hypothesis for one input."""

    text: str
    score: float
    token_ids: list[int]


def _session_options(num_threads: int | None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if num_threads:
        options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    # A decoder calls the session many times in a row: no busy-waiting between calls.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def _open_session(path: str, providers, num_threads: int | None):
    import onnxruntime as ort

    if not os.path.exists(path):
        raise BundleError(f"{path}: named in the manifest but missing")
    try:
        return ort.InferenceSession(path, _session_options(num_threads), providers=providers)
    except Exception as error:  # onnxruntime raises its own exception types
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise BundleError(f"{path}: onnxruntime cannot load this model ({reason})") from None


class EncoderSession:
    """`source_ids`, `source_lengths` -> the search state (`states`, `encoder_outputs`)."""

    def __init__(self, path: str, providers, num_threads: int | None):
        self.session = _open_session(path, providers, num_threads)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        missing = {"source_ids", "source_lengths"} - set(self.input_names)
        if missing or "states" not in self.output_names:
            raise BundleError(f"{path}: unexpected encoder inputs {self.input_names} / outputs {self.output_names}")

    def __call__(self, source_ids: np.ndarray, source_lengths: np.ndarray) -> dict:
        outputs = self.session.run(
            self.output_names, {"source_ids": source_ids, "source_lengths": source_lengths}
        )
        return dict(zip(self.output_names, outputs))


# A decoder step with little work per call runs faster on one thread than on several:
# onnxruntime hands its small nodes to the other threads and waits for them, and its INT8
# nodes (activations quantised per call) gain least from a second thread. Measured on
# `bible_small` (2 x 256, 4k vocabulary, 4.5 MFLOP per row) on 2 cores, the step alone,
# one thread against two: INT8 1.42x faster at 5 rows (batch 1, beam 5), 1.04x at 20, even
# at 30 (135 MFLOP); float32 1.02-1.06x at 5 rows (23 MFLOP), 0.84x at 10; on the paper shape
# (128 MFLOP per row) two threads win at every row count (BENCHMARKS.md). Below these MFLOP
# per call the step runs on one thread.
ONE_THREAD_MFLOP = {"float32": 30.0, "int8": 100.0}


def step_mflop_per_row(model: dict) -> float:
    """2 x the weights one row multiplies in a decoder step (LSTM layers, attention, output
    projection), in millions, from a manifest's `config.model`."""
    hidden = int(model["hidden_dim"])
    weights = 0
    for layer in range(int(model["num_layers"])):
        inputs = int(model["embedding_dim"]) if layer == 0 else hidden
        weights += (inputs + hidden) * 4 * hidden
    if model.get("attention", "none") != "none":
        weights += 3 * hidden * hidden  # the query's and the combination's matrices
    weights += hidden * int(model["target_vocabulary_size"])
    return 2.0 * weights / 1e6


def one_thread_rows(model: dict, int8: bool) -> int:
    """Calls with fewer rows run a decoder step of this model (a manifest's `config.model`)
    on one thread (`ONE_THREAD_MFLOP`)."""
    return int(ONE_THREAD_MFLOP["int8" if int8 else "float32"] / step_mflop_per_row(model))


class _OneThreadFallback:
    """An onnxruntime session, and a one-thread copy of it (opened on first use) for calls
    with fewer than `one_thread_rows` rows, where a second thread costs more than it gains
    (`ONE_THREAD_MFLOP`). CPU sessions with more than one thread only."""

    def __init__(self, path: str, providers, num_threads: int | None, one_thread_rows: int = 0,
                 open_one_thread_first: bool = False):
        self._path, self._providers, self._num_threads = path, providers, num_threads
        threads = num_threads or os.cpu_count() or 1
        cpu_only = all((p if isinstance(p, str) else p[0]) == "CPUExecutionProvider" for p in providers)
        self.one_thread_rows = one_thread_rows if threads > 1 and cpu_only else 0
        self._lock = threading.Lock()
        # Either session checks the file; the other opens on first use, so a translator that
        # only ever makes small calls holds its weights once.
        self._session = self._one_thread = None
        if open_one_thread_first and self.one_thread_rows:
            self._one_thread = _open_session(path, providers, 1)
        else:
            self._session = _open_session(path, providers, num_threads)

    @property
    def session(self):
        """The session with every thread."""
        if self._session is None:
            with self._lock:
                if self._session is None:
                    self._session = _open_session(self._path, self._providers, self._num_threads)
        return self._session

    def _opened(self):
        return self._session if self._session is not None else self._one_thread

    def session_for(self, rows: int):
        """The session for a call whose steps have `rows` rows."""
        if rows >= self.one_thread_rows:
            return self.session
        return self._one_thread_session()

    def _one_thread_session(self):
        if self._one_thread is None:
            with self._lock:
                if self._one_thread is None:
                    self._one_thread = _open_session(self._path, self._providers, 1)
        return self._one_thread


class DecoderStepSession(_OneThreadFallback):
    """One decoder step as a `serving.search` step function.

    With `one_thread_rows`, calls with fewer rows run in a second, one-thread session
    (opened on first use, CPU only; see `ONE_THREAD_MFLOP`). Float32 results are the same
    on any thread count; onnxruntime's INT8 kernels may round differently on one thread
    than on two (3 of 20 `bible_small` verses decoded differently at batch 1), so a
    translator with several threads now decodes INT8 at batch 1 as one with one thread.
    """

    def __init__(self, path: str, providers, num_threads: int | None, one_thread_rows: int = 0):
        super().__init__(path, providers, num_threads, one_thread_rows)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        if not {"token_ids", "states"} <= set(self.input_names) or not {
            "log_probs",
            "next_states",
        } <= set(self.output_names):
            raise BundleError(f"{path}: unexpected decoder inputs {self.input_names} / outputs {self.output_names}")
        self.has_top_k = "top_k" in self.input_names and "top_ids" in self.output_names
        vocabulary = self.session.get_outputs()[self.output_names.index("log_probs")].shape[-1]
        self.vocabulary = vocabulary if isinstance(vocabulary, int) else None
        self._state_inputs = [name for name in self.input_names if name not in ("token_ids", "top_k")]

    def __call__(self, token_ids: np.ndarray, state: dict, top_k: int | None = None):
        """One step. With `top_k` (and a graph that has the `top_k` input), returns the
        `(values, ids)` of the k best tokens per row instead of all log-probabilities."""
        feeds = {name: state[name] for name in self._state_inputs}
        feeds["token_ids"] = token_ids.astype(np.int32, copy=False)
        session = self.session_for(len(token_ids))
        if top_k and self.vocabulary and top_k >= self.vocabulary:
            top_k = None  # The whole vocabulary: the search sorts it itself.
        if self.has_top_k:
            feeds["top_k"] = np.array([top_k or 1], np.int64)
            if top_k:
                values, ids, next_states = session.run(["top_log_probs", "top_ids", "next_states"], feeds)
                return (values, ids), {"states": next_states}
        log_probs, next_states = session.run(["log_probs", "next_states"], feeds)
        return log_probs, {"states": next_states}


def search_feeds(beam_size: int, n_best: int, length_penalty: float, max_length_a: float,
                 max_length_b: int) -> dict:
    """The one-file translators' scalar inputs."""
    return {
        "beam_size": np.array(beam_size, np.int64),
        "n_best": np.array(n_best, np.int64),
        "length_penalty": np.array(length_penalty, np.float64),
        "max_length_a": np.array(max_length_a, np.float64),
        "max_length_b": np.array(max_length_b, np.int64),
    }


class TranslatorGraphSession(_OneThreadFallback):
    """`translator.onnx`: the encoder and the whole beam search in one onnxruntime call.

    Takes right-padded source ids as the tokenizer gives them (the graph reverses them
    itself when the model reads them reversed) and returns the n-best lists of
    `serving.search.beam_search`.
    """

    INPUTS = {"source_ids", "source_lengths", "beam_size", "n_best", "length_penalty", "max_length_a",
              "max_length_b"}
    OUTPUTS = ["hypotheses", "hypothesis_lengths", "scores", "log_probs", "finished"]

    def __init__(self, path: str, providers, num_threads: int | None, one_thread_rows: int = 0):
        # As for the step engine, a search whose steps have few rows runs on one thread; a
        # translator of single lines then never opens the session with every thread.
        super().__init__(path, providers, num_threads, one_thread_rows, open_one_thread_first=True)
        inputs = {i.name for i in self._opened().get_inputs()}
        outputs = {o.name for o in self._opened().get_outputs()}
        if inputs != self.INPUTS or not set(self.OUTPUTS) <= outputs:
            raise BundleError(f"{path}: unexpected translator inputs {sorted(inputs)} / outputs {sorted(outputs)}")

    def __call__(self, sources: Sequence[Sequence[int]], *, beam_size: int, n_best: int, length_penalty: float,
                 max_length_a: float, max_length_b: int) -> list[list[Hypothesis]]:
        ids, lengths = pad_sources(sources, reverse=False)
        feeds = {"source_ids": ids, "source_lengths": lengths,
                 **search_feeds(beam_size, n_best, length_penalty, max_length_a, max_length_b)}
        session = self.session_for(len(sources) * beam_size)
        hypotheses, lengths, scores, log_probs, finished = session.run(self.OUTPUTS, feeds)
        return [
            [
                Hypothesis(hypotheses[row, rank, : lengths[row, rank]].tolist(), float(scores[row, rank]),
                           float(log_probs[row, rank]), bool(finished[row, rank]))
                for rank in range(hypotheses.shape[1])
                if np.isfinite(scores[row, rank])
            ]
            for row in range(len(sources))
        ]


class Translator:
    """Translates text with a bundle's ONNX graphs.

    Two engines give the same results: `graph` runs `translator.onnx`, the encoder and the
    whole beam search in one onnxruntime call per batch; `steps` runs `encoder.onnx`, then
    `decoder_step.onnx` once per output token from the numpy search of `serving.search`.
    The default is `graph` (lower latency, BENCHMARKS.md) for bundles that have it.

    Build one with `Translator.from_bundle(path)`. Safe to call from several
    threads: all per-call data lives on the stack.
    """

    def __init__(self, bundle_dir: str, manifest: dict, providers=None, num_threads=None, int8=False,
                 engine: str | None = None):
        self.bundle_dir = bundle_dir
        self.manifest = manifest
        manifest_path = os.path.join(bundle_dir, MANIFEST)
        providers = providers or ["CPUExecutionProvider"]
        variant = "int8" if int8 else "float32"
        try:
            models = manifest["models"].get(variant)
            if models is None:
                raise BundleError(f"{manifest_path}: no {variant} models in this bundle")
            encoder_file, step_file = models["encoder"], models["decoder_step"]
            graph_file = models.get("translator")
            tokenizers = manifest["tokenizers"]
            source_file, target_file = tokenizers["source"], tokenizers["target"]
            self.special_ids = {name: int(manifest["special_ids"][name]) for name in ("bos", "eos")}
            self.reverse_source = bool(manifest["reverse_source"])
            self.decode = dict(manifest["decode"])
            self.max_source_length = int(manifest.get("max_source_length", 0)) or None
        except KeyError as error:
            raise BundleError(f"{manifest_path}: field {error} is missing") from None
        except (AttributeError, TypeError, ValueError) as error:
            raise BundleError(f"{manifest_path}: malformed ({error})") from None
        if engine not in (None, *ENGINES):
            raise ValueError(f"engine {engine!r}: use one of {', '.join(ENGINES)}")
        if engine == "graph" and graph_file is None:
            raise BundleError(f"{manifest_path}: this bundle has no {variant} translator.onnx "
                              "(export it again, or use the steps engine)")
        self.engine = engine or ("graph" if graph_file else "steps")
        try:
            small = one_thread_rows(manifest["config"]["model"], int8)
        except (KeyError, TypeError, ValueError, ZeroDivisionError):  # a bundle without its model's shape
            small = 0
        self.graph = None
        if self.engine == "graph":
            self.graph = TranslatorGraphSession(os.path.join(bundle_dir, graph_file), providers, num_threads,
                                                one_thread_rows=small)
        # The step graphs are opened for the steps engine only: a graph-engine translator
        # holds one session.
        self.encoder = self.decoder_step = None
        if self.engine == "steps":
            self.encoder = EncoderSession(os.path.join(bundle_dir, encoder_file), providers, num_threads)
            self.decoder_step = DecoderStepSession(os.path.join(bundle_dir, step_file), providers, num_threads,
                                                   one_thread_rows=small)
        self.source_vocabulary = _load_vocabulary(os.path.join(bundle_dir, source_file))
        self.target_vocabulary = _load_vocabulary(os.path.join(bundle_dir, target_file))

    @classmethod
    def from_bundle(cls, path: str, providers=None, num_threads: int | None = None, int8: bool = False,
                    engine: str | None = None):
        """Checks the bundle (format version, sha256 of every file) and opens its sessions.

        Args:
            engine: `graph`, `steps`, or None for `graph` where the bundle has it.
        """
        manifest = read_manifest(path, verify=True)
        return cls(path, manifest, providers=providers, num_threads=num_threads, int8=int8, engine=engine)

    def translate_ids(
        self,
        sources: Sequence[Sequence[int]],
        beam_size: int | None = None,
        n_best: int = 1,
        length_penalty: float | None = None,
        max_length_a: float | None = None,
        max_length_b: int | None = None,
        batch_size: int = 32,
        progress=None,
    ):
        """Decodes id lists; returns per input up to `n_best` `Hypothesis`, in input order.

        `progress`, when given, is called with the number of inputs done after each batch.
        """
        beam_size = beam_size or self.decode["beam_size"]
        length_penalty = self.decode["length_penalty"] if length_penalty is None else length_penalty
        a = self.decode["max_length_a"] if max_length_a is None else max_length_a
        b = self.decode["max_length_b"] if max_length_b is None else max_length_b
        sources = [list(source) for source in sources]
        if self.max_source_length:
            for index, source in enumerate(sources):
                if len(source) > self.max_source_length:
                    warnings.warn(TruncationWarning(index, len(source), self.max_source_length))
                    sources[index] = source[: self.max_source_length]
        if n_best > beam_size:
            raise ValueError(f"n_best ({n_best}) must not exceed beam_size ({beam_size})")
        if self.graph is not None:
            return in_length_batches(
                functools.partial(self.graph, beam_size=beam_size, n_best=n_best, length_penalty=length_penalty,
                                  max_length_a=a, max_length_b=b),
                sources, batch_size, progress)
        encode, step, batch_axes = self._search_functions(beam_size)
        return decode_in_batches(
            encode,
            step,
            sources,
            reverse=self.reverse_source,
            max_length_a=a,
            max_length_b=b,
            batch_size=batch_size,
            progress=progress,
            bos_id=self.special_ids["bos"],
            eos_id=self.special_ids["eos"],
            beam_size=beam_size,
            n_best=n_best,
            length_penalty=length_penalty,
            batch_axes=batch_axes,
        )

    def _search_functions(self, beam_size: int):
        """`(encode, step, batch_axes)` for the search."""
        step = self.decoder_step
        if self.decoder_step.has_top_k:
            # The search needs the 2 x beam best tokens of each row; TopK in the graph finds them.
            step = functools.partial(self.decoder_step, top_k=2 * beam_size)
        return self._encode, step, {"states": 1}

    def _encode(self, source_ids: np.ndarray, source_lengths: np.ndarray) -> dict:
        state = self.encoder(source_ids, source_lengths)
        if "encoder_outputs" in state:
            state["source_lengths"] = source_lengths
        return state

    def translate(self, texts: Sequence[str], **options) -> list[list[Translation]]:
        """Translates lines; per input, its hypotheses best first (an empty line gives "")."""
        sources = [self.source_vocabulary.encode(text) for text in texts]
        results = self.translate_ids(sources, **options)
        output = []
        for text, hypotheses in zip(texts, results):
            if not text.strip():
                output.append([Translation("", 0.0, [])])
                continue
            output.append(
                [
                    Translation(self.target_vocabulary.decode(h.token_ids), h.score, h.token_ids)
                    for h in hypotheses
                ]
            )
        return output


class EnsembleTranslator(Translator):
    """Several bundles with the same tokenizers, translating as one model.

    Each step's log-probabilities are the mean of the members' (`serving.search.Ensemble`);
    the members' graphs may differ in shape and precision. Special ids, source
    reversal, length limits and decode settings come from the first member.

    Args:
        members: `Translator`s.

    Example:
    >>> EnsembleTranslator([Translator.from_bundle(a), Translator.from_bundle(b)])  # doctest: +SKIP
    """

    def __init__(self, members: Sequence[Translator]):
        if not members:
            raise ValueError("an ensemble needs at least one bundle")
        first = members[0]
        for member in members:
            if member.engine != "steps":
                raise ValueError(f"{member.bundle_dir}: an ensemble combines its members' steps: open every member "
                                 "with engine='steps'")
        for member in members[1:]:
            for side in ("source", "target"):
                name, other = first.manifest["tokenizers"][side], member.manifest["tokenizers"][side]
                if first.manifest["files"][name]["sha256"] != member.manifest["files"][other]["sha256"]:
                    raise BundleError(f"{os.path.join(member.bundle_dir, other)}: the {side} tokenizer differs from "
                                      f"{os.path.join(first.bundle_dir, name)}'s; ensemble members must share it")
            if (member.reverse_source, member.special_ids) != (first.reverse_source, first.special_ids):
                raise BundleError(f"{member.bundle_dir}: source reversal or special ids differ from {first.bundle_dir}'s")
        self.members = list(members)
        self.graph = None  # The members' step graphs are combined per step.
        self.engine = "steps"
        for name in ("bundle_dir", "manifest", "special_ids", "reverse_source", "decode", "max_source_length",
                     "source_vocabulary", "target_vocabulary"):
            setattr(self, name, getattr(first, name))

    def _search_functions(self, beam_size: int):
        # Full log-probabilities from every member: a top-k per member would not hold the mean's top-k.
        ensemble = Ensemble([m._encode for m in self.members], [m.decoder_step for m in self.members],
                            [{"states": 1}] * len(self.members))
        return ensemble.encode, ensemble.step, ensemble.batch_axes
