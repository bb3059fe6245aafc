"""Batches for a search: sources padded into one array, their output limits, and decoding in
batches of similar length with the results in input order."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def pad_sources(sequences: Sequence[Sequence[int]], reverse: bool, pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Right-pads id lists into a batch, reversing the real tokens if asked.

    Returns:
        `(ids, lengths)`: int32 `(batch, max(1, longest))` and int32 `(batch,)`.
    """
    lengths = np.array([len(s) for s in sequences], dtype=np.int32)
    width = max(1, int(lengths.max()) if len(lengths) else 1)
    ids = np.full((len(sequences), width), pad_id, dtype=np.int32)
    for row, sequence in enumerate(sequences):
        if len(sequence):
            ids[row, : len(sequence)] = sequence[::-1] if reverse else sequence
    return ids, lengths


def max_output_lengths(source_lengths: Sequence[int], a: float, b: int) -> np.ndarray:
    """Output length limit per sentence: `floor(a * source_length + b)`, at least 1."""
    lengths = np.asarray(source_lengths, dtype=np.float64)
    return np.maximum(1, np.floor(a * lengths + b)).astype(np.int64)


def in_length_batches(
    decode_batch: Callable[[list], list],
    sources: Sequence[Sequence[int]],
    batch_size: int = 32,
    progress: Callable[[int], None] | None = None,
) -> list:
    """Runs `decode_batch(sources of one batch)` over batches of similar length; returns
    its per-source results in input order.

    Args:
        decode_batch: one result per source of a batch, in the batch's order.
        sources: source id lists.
        batch_size: int. Sentences per batch.
        progress: called with the number of inputs done after each batch.
    """
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    results: list = [None] * len(sources)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        for index, result in zip(chunk, decode_batch([sources[i] for i in chunk])):
            results[index] = result
        if progress is not None:
            progress(len(chunk))
    return results
