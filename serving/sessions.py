"""The onnxruntime sessions of a bundle: the encoder, the decoder step (a step function of
`serving.search`), and the one-file translator (an engine of `serving.decoding`)."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

import numpy as np

from serving.batching import pad_sources
from serving.decoding import SearchSettings, StepEngine
from serving.manifest import BundleError
from serving.search import Hypothesis


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


def open_session(path: str, providers, num_threads: int | None):
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
        self.session = open_session(path, providers, num_threads)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        missing = {"source_ids", "source_lengths"} - set(self.input_names)
        if missing or "states" not in self.output_names:
            raise BundleError(f"{path}: unexpected encoder inputs {self.input_names} / outputs {self.output_names}")

    def __call__(self, source_ids: np.ndarray, source_lengths: np.ndarray) -> dict:
        outputs = self.session.run(self.output_names, {"source_ids": source_ids, "source_lengths": source_lengths})
        return dict(zip(self.output_names, outputs))

    def state(self, source_ids: np.ndarray, source_lengths: np.ndarray) -> dict:
        """The search state of a padded batch: the encoder's outputs, and with attention the
        source lengths that mask them."""
        state = self(source_ids, source_lengths)
        if "encoder_outputs" in state:
            state["source_lengths"] = source_lengths
        return state


# A decoder step with little work per call runs faster on one thread than on several:
# onnxruntime hands its small nodes to the other threads and waits for them, and its INT8
# nodes (activations quantised per call) gain least from a second thread. Below these
# MFLOP per call the step runs on one thread (the measurements: BENCHMARKS.md, "Decoding").
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

    def __init__(
        self,
        path: str,
        providers,
        num_threads: int | None,
        one_thread_rows: int = 0,
        open_one_thread_first: bool = False,
    ):
        self._path, self._providers, self._num_threads = path, providers, num_threads
        threads = num_threads or os.cpu_count() or 1
        cpu_only = all((p if isinstance(p, str) else p[0]) == "CPUExecutionProvider" for p in providers)
        self.one_thread_rows = one_thread_rows if threads > 1 and cpu_only else 0
        self._lock = threading.Lock()
        # Either session checks the file; the other opens on first use, so a translator that
        # only ever makes small calls holds its weights once.
        self._session = self._one_thread = None
        if open_one_thread_first and self.one_thread_rows:
            self._one_thread = open_session(path, providers, 1)
        else:
            self._session = open_session(path, providers, num_threads)

    @property
    def session(self):
        """The session with every thread."""
        if self._session is None:
            with self._lock:
                if self._session is None:
                    self._session = open_session(self._path, self._providers, self._num_threads)
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
                    self._one_thread = open_session(self._path, self._providers, 1)
        return self._one_thread


class DecoderStepSession(_OneThreadFallback):
    """One decoder step as a `serving.search` step function.

    With `one_thread_rows`, calls with fewer rows run in a second, one-thread session
    (opened on first use, CPU only; see `ONE_THREAD_MFLOP`). Float32 results are the same
    on any thread count; onnxruntime's INT8 kernels may round differently on one thread
    than on two (BENCHMARKS.md, "Decoding"), so a translator with several threads decodes
    INT8 at batch 1 as one with one thread.
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


def search_feeds(beam_size: int, n_best: int, length_penalty: float, max_length_a: float, max_length_b: int) -> dict:
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

    INPUTS = {"source_ids", "source_lengths", "beam_size", "n_best", "length_penalty", "max_length_a", "max_length_b"}
    OUTPUTS = ["hypotheses", "hypothesis_lengths", "scores", "log_probs", "finished"]

    def __init__(self, path: str, providers, num_threads: int | None, one_thread_rows: int = 0):
        # As for the step engine, a search whose steps have few rows runs on one thread; a
        # translator of single lines then never opens the session with every thread.
        super().__init__(path, providers, num_threads, one_thread_rows, open_one_thread_first=True)
        inputs = {i.name for i in self._opened().get_inputs()}
        outputs = {o.name for o in self._opened().get_outputs()}
        if inputs != self.INPUTS or not set(self.OUTPUTS) <= outputs:
            raise BundleError(f"{path}: unexpected translator inputs {sorted(inputs)} / outputs {sorted(outputs)}")

    def search_batch(self, sources: list[list[int]], settings: SearchSettings) -> list[list[Hypothesis]]:
        """The engine of `serving.decoding.SearchTranslator`."""
        return self(
            sources,
            beam_size=settings.beam_size,
            n_best=settings.n_best,
            length_penalty=settings.length_penalty,
            max_length_a=settings.max_length_a,
            max_length_b=settings.max_length_b,
        )

    def __call__(
        self,
        sources: Sequence[Sequence[int]],
        *,
        beam_size: int,
        n_best: int,
        length_penalty: float,
        max_length_a: float,
        max_length_b: int,
    ) -> list[list[Hypothesis]]:
        ids, lengths = pad_sources(sources, reverse=False)
        feeds = {
            "source_ids": ids,
            "source_lengths": lengths,
            **search_feeds(beam_size, n_best, length_penalty, max_length_a, max_length_b),
        }
        session = self.session_for(len(sources) * beam_size)
        hypotheses, lengths, scores, log_probs, finished = session.run(self.OUTPUTS, feeds)
        return [
            [
                Hypothesis(
                    hypotheses[row, rank, : lengths[row, rank]].tolist(),
                    float(scores[row, rank]),
                    float(log_probs[row, rank]),
                    bool(finished[row, rank]),
                )
                for rank in range(hypotheses.shape[1])
                if np.isfinite(scores[row, rank])
            ]
            for row in range(len(sources))
        ]


def onnx_step_engine(
    encoder: EncoderSession,
    decoder_step: DecoderStepSession,
    *,
    bos_id: int,
    eos_id: int,
    reverse_source: bool,
    top_k: bool | None = None,
) -> StepEngine:
    """The step graphs as the numpy search drives them. `top_k` (default: where the step
    graph has it) lets the graph select each row's best tokens; an ensemble member needs
    full log-probabilities instead."""
    top_k = decoder_step.has_top_k if top_k is None else top_k and decoder_step.has_top_k
    return StepEngine(encoder.state, decoder_step, bos_id, eos_id, reverse_source, {"states": 1}, top_k=top_k)
