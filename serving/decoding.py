"""One translator for every engine: text -> ids -> batches of similar length -> search -> text.

An engine supplies only the model. `StepEngine` is an encode function and a step function,
searched by the numpy search of `serving.search` (the Keras decoder, the ONNX step graphs,
an ensemble of either); the one-file translator's session (`serving.sessions`) runs the
whole search itself. Both answer `search_batch(sources, settings)`. `SearchTranslator`
owns the rest: the settings' defaults, truncation to the model's limit, length-sorted
batches with results in input order, progress, n-best lists and the text around them.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import numpy as np

from serving.batching import in_length_batches, max_output_lengths, pad_sources
from serving.search import Hypothesis, StepFunction, search


@dataclasses.dataclass(frozen=True)
class SearchSettings:
    """How one call searches: beams, n-best, length normalisation and the output limit
    `floor(max_length_a * source_length + max_length_b)`."""

    beam_size: int
    n_best: int
    length_penalty: float
    max_length_a: float
    max_length_b: int

    def __post_init__(self):
        if self.n_best > self.beam_size:
            raise ValueError(f"n_best ({self.n_best}) must not exceed beam_size ({self.beam_size})")


class Engine(Protocol):
    def search_batch(self, sources: list[list[int]], settings: SearchSettings) -> list[list[Hypothesis]]:
        """Per source of one batch, up to `n_best` hypotheses, best first."""


@dataclasses.dataclass
class StepEngine:
    """A model as the numpy search drives it.

    Attributes:
        encode: `encode(source_ids, source_lengths) -> state` for one padded batch.
        step: the step function of `serving.search`.
        bos_id, eos_id: the target's first input token and end token.
        reverse_source: feed the real source tokens reversed.
        batch_axes: which axis of each state entry is the row axis.
        top_k: the step takes `top_k=` and then returns the k best tokens of each row
            (TopK inside the graph saves the search a pass over the vocabulary).
    """

    encode: Callable[[np.ndarray, np.ndarray], dict]
    step: StepFunction
    bos_id: int
    eos_id: int
    reverse_source: bool
    batch_axes: Mapping[str, int] = dataclasses.field(default_factory=lambda: {"states": 1})
    top_k: bool = False

    def search_batch(self, sources: list[list[int]], settings: SearchSettings) -> list[list[Hypothesis]]:
        ids, lengths = pad_sources(sources, reverse=self.reverse_source)
        # The search needs the 2 x beam best tokens of each row.
        step = functools.partial(self.step, top_k=2 * settings.beam_size) if self.top_k else self.step
        return search(
            step,
            self.encode(ids, lengths),
            bos_id=self.bos_id,
            eos_id=self.eos_id,
            max_lengths=max_output_lengths(lengths, settings.max_length_a, settings.max_length_b),
            beam_size=settings.beam_size,
            n_best=settings.n_best,
            length_penalty=settings.length_penalty,
            batch_axes=self.batch_axes,
        )


class TruncationWarning(UserWarning):
    """A source longer than the model's limit was cut to the limit.

    Attributes: `index` (position in the call's inputs), `length`, `limit`.
    """

    def __init__(self, index: int, length: int, limit: int):
        super().__init__(f"input {index}: {length} tokens, truncated to {limit}")
        self.index, self.length, self.limit = index, length, limit


@dataclasses.dataclass
class Translation:
    """One hypothesis for one input."""

    text: str
    score: float
    token_ids: list[int]


class SearchTranslator:
    """Translates with one engine.

    Args:
        engine: a `StepEngine` or the one-file translator's session.
        source_vocabulary, target_vocabulary: `encode(text) -> ids`, `decode(ids) -> text`.
        decode: the defaults of `beam_size`, `length_penalty`, `max_length_a`, `max_length_b`.
        max_source_length: longer sources are cut to it (with a `TruncationWarning`).
        batch_size: sentences per batch unless a call says otherwise.

    Safe to call from several threads when the engine is: all per-call data lives on the stack.
    """

    def __init__(
        self,
        engine: Engine,
        source_vocabulary,
        target_vocabulary,
        decode: Mapping,
        max_source_length: int | None = None,
        batch_size: int = 32,
    ):
        self.engine = engine
        self.source_vocabulary, self.target_vocabulary = source_vocabulary, target_vocabulary
        self.decode = {key: decode[key] for key in ("beam_size", "length_penalty", "max_length_a", "max_length_b")}
        self.max_source_length = max_source_length or None
        self.batch_size = batch_size

    def settings(
        self,
        beam_size: int | None = None,
        n_best: int = 1,
        length_penalty: float | None = None,
        max_length_a: float | None = None,
        max_length_b: int | None = None,
    ) -> SearchSettings:
        """The settings of a call: the arguments given, the defaults for the others."""
        given = dict(
            beam_size=beam_size or None,
            length_penalty=length_penalty,
            max_length_a=max_length_a,
            max_length_b=max_length_b,
        )
        return SearchSettings(
            n_best=n_best, **{key: self.decode[key] if value is None else value for key, value in given.items()}
        )

    def translate_ids(
        self,
        sources: Sequence[Sequence[int]],
        beam_size: int | None = None,
        n_best: int = 1,
        length_penalty: float | None = None,
        max_length_a: float | None = None,
        max_length_b: int | None = None,
        batch_size: int | None = None,
        progress: bool | Callable[[int], None] | None = None,
    ) -> list[list[Hypothesis]]:
        """Decodes id lists; returns per input up to `n_best` `Hypothesis`, in input order.

        `progress`: True for a progress bar on stderr, or a function called with the number
        of inputs done after each batch.
        """
        settings = self.settings(beam_size, n_best, length_penalty, max_length_a, max_length_b)
        sources = [self._within_limit(index, list(source)) for index, source in enumerate(sources)]
        bar = None
        if progress is True:
            from tqdm import tqdm

            bar = tqdm(total=len(sources), desc="decoding", unit="sentence", file=sys.stderr)
            progress = bar.update
        try:
            return in_length_batches(
                functools.partial(self.engine.search_batch, settings=settings),
                sources,
                batch_size or self.batch_size,
                progress or None,
            )
        finally:
            if bar:
                bar.close()

    def _within_limit(self, index: int, source: list[int]) -> list[int]:
        if self.max_source_length and len(source) > self.max_source_length:
            warnings.warn(TruncationWarning(index, len(source), self.max_source_length), stacklevel=3)
            return source[: self.max_source_length]
        return source

    def translate(self, texts: Sequence[str], **options) -> list[list[Translation]]:
        """Translates lines; per input, its hypotheses best first (a blank line gives "")."""
        results = self.translate_ids([self.source_vocabulary.encode(text) for text in texts], **options)
        return [
            [Translation("", 0.0, [])]
            if not text.strip()
            else [Translation(self.target_vocabulary.decode(h.token_ids), h.score, h.token_ids) for h in found]
            for text, found in zip(texts, results)
        ]

    def translate_best(self, texts: Sequence[str], **options) -> list[str]:
        """Translates lines; returns the best output of each, in order."""
        return [found[0].text if found else "" for found in self.translate(texts, **options)]
