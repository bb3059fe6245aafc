"""The `tf.data` input pipeline: ids -> reversed, bucketed, padded batches.

A batch is `({"source_ids", "decoder_input_ids"}, target_ids, target_mask)`:

- `source_ids` `(batch, source_time)`: the real source tokens reversed when
  the config asks for it; padding (0) stays on the right, which the masked
  and cuDNN LSTMs need.
- `decoder_input_ids` `(batch, target_time)`: bos + target.
- `target_ids` `(batch, target_time)`: target + eos.
- `target_mask` `(batch, target_time)` float32: 1 on real target tokens,
  used as the sample weight of the loss.

With bucketing, sentences of similar length share a batch and the batch
size follows from a token budget: `batch_size * bucket_length <= token_budget`
where a sentence's length is `max(len(source), len(target) + 1)`.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_s2s.config import BOS_ID, EOS_ID, PAD_ID


def bucket_plan(
    max_length: int, token_budget: int, max_batch_size: int, growth: float = 1.1
) -> tuple[list[int], list[int]]:
    """Bucket boundaries and batch sizes for `tf.data.bucket_by_sequence_length`.

    A sentence of length `n` goes to the first bucket whose boundary is above
    `n`; bucket `i` holds lengths up to `boundaries[i] - 1` (the last one up to
    `max_length`).

    Returns:
        `(boundaries, batch_sizes)` with `len(batch_sizes) == len(boundaries) + 1`.
    """
    boundaries = []
    edge = 2.0
    while edge <= max_length:
        boundaries.append(int(edge))
        edge = max(edge + 1, edge * growth)
    boundaries = sorted(set(boundaries))
    upper = [b - 1 for b in boundaries] + [max_length]
    batch_sizes = [max(1, min(max_batch_size, token_budget // max(u, 1))) for u in upper]
    return boundaries, batch_sizes


def _ragged(sequences: list[list[int]]) -> tf.RaggedTensor:
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    flat = np.fromiter((token for s in sequences for token in s), dtype=np.int32, count=int(lengths.sum()))
    return tf.RaggedTensor.from_row_lengths(flat, lengths)


def make_dataset(
    sources: list[list[int]],
    targets: list[list[int]],
    *,
    token_budget: int,
    max_batch_size: int,
    reverse_source: bool = True,
    bucketing: bool = True,
    shuffle: bool = True,
    seed: int = 0,
    shuffle_buffer: int = 0,
    repeat: bool = False,
) -> tf.data.Dataset:
    """Builds the batched dataset of one split.

    Args:
        sources: source id lists (no bos/eos).
        targets: target id lists (no bos/eos).
        token_budget: int. Padded tokens per batch (bucketing on).
        max_batch_size: int. Sentences per batch (the bound with bucketing,
            the batch size without).
        reverse_source: bool. Reverse the real source tokens.
        bucketing: bool. Batch similar lengths together.
        shuffle: bool. Shuffle sentences (and batches) every epoch.
        seed: int. Shuffle seed; the same seed gives the same order on every
            worker, which sharding needs.
        shuffle_buffer: int. Shuffle buffer size (0: the whole split).
        repeat: bool. Pass over the split again and again (reshuffled each
            time) in one iterator whose prefetching runs across the passes;
            `fit` then needs `steps_per_epoch`.
    """
    if len(sources) != len(targets):
        raise ValueError(f"{len(sources)} sources but {len(targets)} targets")
    if not sources:
        raise ValueError("no sentences to batch")
    max_length = max(max(len(s), len(t) + 1) for s, t in zip(sources, targets))
    dataset = tf.data.Dataset.from_tensor_slices((_ragged(sources), _ragged(targets)))
    if shuffle:
        dataset = dataset.shuffle(shuffle_buffer or len(sources), seed=seed, reshuffle_each_iteration=True)

    def prepare(source, target):
        source = tf.cast(source, tf.int32)
        target = tf.cast(target, tf.int32)
        if reverse_source:
            source = tf.reverse(source, axis=[0])
        decoder_input = tf.concat([[BOS_ID], target], axis=0)
        target_output = tf.concat([target, [EOS_ID]], axis=0)
        return source, decoder_input, target_output

    dataset = dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    padded_shapes = ([None], [None], [None])
    padding_values = (PAD_ID, PAD_ID, PAD_ID)
    if bucketing:
        boundaries, batch_sizes = bucket_plan(max_length, token_budget, max_batch_size)
        dataset = dataset.bucket_by_sequence_length(
            element_length_func=lambda s, d, t: tf.maximum(tf.shape(s)[0], tf.shape(t)[0]),
            bucket_boundaries=boundaries,
            bucket_batch_sizes=batch_sizes,
            padded_shapes=padded_shapes,
            padding_values=padding_values,
        )
        if shuffle:
            dataset = dataset.shuffle(64, seed=seed + 1, reshuffle_each_iteration=True)
    else:
        dataset = dataset.padded_batch(max_batch_size, padded_shapes=padded_shapes, padding_values=padding_values)

    def to_keras(source, decoder_input, target_output):
        mask = tf.cast(tf.not_equal(target_output, PAD_ID), tf.float32)
        return (
            {"source_ids": source, "decoder_input_ids": decoder_input},
            target_output,
            mask,
        )

    if repeat:
        dataset = dataset.repeat()
    dataset = dataset.map(to_keras, num_parallel_calls=tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    options.deterministic = True
    dataset = dataset.with_options(options)
    return dataset.prefetch(tf.data.AUTOTUNE)


def padding_share(dataset: tf.data.Dataset) -> dict[str, float]:
    """Runs one epoch of `dataset` (no model) and counts real and padded tokens.

    Returns:
        `{"batches", "sentences", "real_tokens", "padded_tokens", "padding_share"}`
        counting source and target sides together.
    """
    batches = sentences = real = total = 0
    for inputs, targets, _ in dataset:
        source = inputs["source_ids"]
        batches += 1
        sentences += int(source.shape[0])
        real += int(tf.math.count_nonzero(source)) + int(tf.math.count_nonzero(targets))
        total += int(tf.size(source)) + int(tf.size(targets))
    return {
        "batches": batches,
        "sentences": sentences,
        "real_tokens": real,
        "padded_tokens": total,
        "padding_share": 1.0 - real / total if total else 0.0,
    }
