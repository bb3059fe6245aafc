"""Greedy and batched beam search over a step function, in pure numpy.

The same search drives the Keras reference decoder and the onnxruntime
translator, so both produce the same tokens for the same model.

A step function has the signature::

    step(token_ids, state) -> (log_probs, updates)

- `token_ids`: int32 `(rows,)`, the last token of each live hypothesis.
- `state`: dict of arrays, one row per hypothesis along the axis that
  `batch_axes` names (0 when not named; the stacked LSTM `states` use 1).
- `log_probs`: float32 `(rows, vocab)`, log-probabilities of the next token;
  or a pair `(values, ids)` `(rows, k)` of the k best tokens of each row, best
  first, with k at least 2 x beam (1 for greedy): the search needs no more, and
  a step that selects them itself (onnxruntime's TopK in the exported graph)
  saves the search a pass over `rows x vocab`.
- `updates`: dict with the new values of the entries that change each step
  (e.g. `{"states": ...}`); entries it leaves out are constant per sentence
  (e.g. `encoder_outputs`) and are only re-indexed when sentences finish.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import numpy as np

StepFunction = Callable[[np.ndarray, dict], tuple[np.ndarray, dict]]


def top_per_row(log_probs, k: int) -> tuple[np.ndarray, np.ndarray]:
    """`(values, ids)` of the `k` best tokens of each row, best first.

    A step's pre-selected `(values, ids)` pair is passed through after checking
    that it holds at least `k` tokens per row (`k` is capped at the vocabulary).
    """
    if isinstance(log_probs, tuple):
        values, ids = log_probs
        if values.shape[1] < k:
            raise ValueError(f"the step returned {values.shape[1]} tokens per row; the search needs {k}")
        return values, ids.astype(np.int32, copy=False)
    vocab = log_probs.shape[1]
    k = min(k, vocab)
    if k == 1:
        ids = np.argmax(log_probs, axis=1)[:, None]
    else:
        ids = (
            np.argpartition(log_probs, vocab - k, axis=1)[:, vocab - k :]
            if k < vocab
            else (np.broadcast_to(np.arange(vocab), log_probs.shape))
        )
        order = np.argsort(-np.take_along_axis(log_probs, ids, axis=1), axis=1, kind="stable")
        ids = np.take_along_axis(ids, order, axis=1)
    return np.take_along_axis(log_probs, ids, axis=1), ids.astype(np.int32)


@dataclasses.dataclass
class Hypothesis:
    """One output sequence.

    Attributes:
        token_ids: the output ids, without bos and eos.
        score: length-normalised log-probability (`log_prob / length ** penalty`,
            where length counts the eos).
        log_prob: the summed log-probability.
        finished: whether the hypothesis ended with eos (not cut at the limit).
    """

    token_ids: list[int]
    score: float
    log_prob: float
    finished: bool = True


def _take(state: dict, keys, indices: np.ndarray, batch_axes: Mapping[str, int]) -> None:
    for key in keys:
        state[key] = np.take(state[key], indices, axis=batch_axes.get(key, 0))


def _drop_sentences(
    state: dict, keys, done: np.ndarray, width: int, batch_axes: Mapping[str, int], owned: set
) -> np.ndarray:
    """Removes the rows of done sentences from the entries `keys` that stay constant
    per sentence (e.g. `encoder_outputs`, the largest arrays of a step).

    Each sentence holds `width` consecutive rows. Rather than copying every kept
    row, a kept sentence from the tail moves into each hole left among the first
    `kept` sentences, and the entry becomes a prefix view: the cost is the rows
    moved, not the rows kept. Entries whose row axis is not 0, or that the search
    does not own yet (the caller's arrays), are gathered instead (and owned from then).

    Returns:
        `order`: for each kept sentence, in its new position, its old position.
    """
    kept = np.flatnonzero(~done)
    count = len(kept)
    holes = np.flatnonzero(done[:count])
    movers = kept[count - len(holes) :]  # the kept sentences at positions >= count
    order = np.arange(count)
    order[holes] = movers
    within = np.arange(width)
    for key in keys:
        value = state[key]
        if batch_axes.get(key, 0) == 0 and key in owned:
            if len(holes):
                value[(holes[:, None] * width + within).reshape(-1)] = value[
                    (movers[:, None] * width + within).reshape(-1)
                ]
            state[key] = value[: count * width]
        else:
            rows = (order[:, None] * width + within).reshape(-1)
            state[key] = np.take(value, rows, axis=batch_axes.get(key, 0))
            owned.add(key)
    return order


def _normalise(log_prob: float, length: int, penalty: float) -> float:
    return float(log_prob) / (float(length) ** penalty) if penalty else float(log_prob)


def greedy_search(
    step: StepFunction,
    state: dict,
    *,
    bos_id: int,
    eos_id: int,
    max_lengths: Sequence[int],
    length_penalty: float = 1.0,
    batch_axes: Mapping[str, int] | None = None,
) -> list[list[Hypothesis]]:
    """Picks the most likely token at each step; finished rows leave the batch.

    Returns:
        One single-element list of `Hypothesis` per sentence, in input order.
    """
    batch_axes = dict(batch_axes or {"states": 1})
    state = dict(state)
    max_lengths = np.asarray(max_lengths, dtype=np.int64)
    batch = len(max_lengths)
    rows = np.arange(batch)  # original sentence of each live row
    tokens = np.full(batch, bos_id, dtype=np.int32)
    log_probs_sum = np.zeros(batch, dtype=np.float32)
    # (batch, longest limit): the tokens of each live row so far.
    outputs = np.zeros((batch, int(max_lengths.max()) if batch else 0), dtype=np.int32)
    results: list[list[Hypothesis]] = [[] for _ in range(batch)]
    dynamic_keys: list[str] | None = None
    owned: set = set()
    step_index = 0
    while len(rows):
        log_probs, updates = step(tokens, state)
        state.update(updates)
        if dynamic_keys is None:
            dynamic_keys = list(updates)
        values, ids = top_per_row(log_probs, 1)
        # (rows,)
        best = ids[:, 0]
        log_probs_sum += values[:, 0]
        outputs[:, step_index] = best
        step_index += 1
        ended = (best == eos_id) | (step_index >= max_lengths[rows])
        for row in np.flatnonzero(ended):
            is_eos = best[row] == eos_id
            results[rows[row]] = [
                Hypothesis(
                    outputs[row, : step_index - int(is_eos)].tolist(),
                    _normalise(log_probs_sum[row], step_index, length_penalty),
                    float(log_probs_sum[row]),
                    bool(is_eos),
                )
            ]
        if ended.any():
            static_keys = [key for key in state if key not in dynamic_keys]
            order = _drop_sentences(state, static_keys, ended, 1, batch_axes, owned)
            _take(state, dynamic_keys, order, batch_axes)
            rows, best, log_probs_sum, outputs = rows[order], best[order], log_probs_sum[order], outputs[order]
        tokens = best
    return results


@dataclasses.dataclass
class _Candidates:
    """The best `2 x beam` extensions of each live sentence, best first, one row per sentence."""

    scores: np.ndarray  # summed log-probabilities, float32 (live, width)
    words: np.ndarray  # the token that extends the parent (live, width)
    parents: np.ndarray  # the parent's beam within its sentence (live, width)
    is_eos: np.ndarray  # whether the token is eos (live, width)
    any_ended: bool  # whether any of the best `beam` candidates of a sentence is eos


def _select(scores: np.ndarray, log_probs, beam: int, eos_id: int) -> _Candidates:
    """The best `2 x beam` extensions of each sentence among its beams' candidates: they
    are among the best `2 x beam` tokens of each beam, so select per row first, then over
    `beam x k`."""
    values, ids = top_per_row(log_probs, 2 * beam)
    k = values.shape[1]
    live = len(scores)
    candidates = (scores.reshape(-1, 1) + values).reshape(live, beam * k)
    top = np.argsort(-candidates, axis=1, kind="stable")[:, : min(2 * beam, beam * k)]
    flat = top + np.arange(0, live * beam * k, beam * k)[:, None]
    words = ids.reshape(-1)[flat]
    is_eos = words == eos_id
    return _Candidates(candidates.reshape(-1)[flat], words, top // k, is_eos, bool(is_eos[:, :beam].any()))


def _continuing(candidates: _Candidates, beam: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The best `beam` candidates that do not end become the new beams, best first.

    Returns:
        `(parents (live, beam), words (live * beam,), scores (live, beam))`.
    """
    c = candidates
    if not c.any_ended:
        return c.parents[:, :beam], c.words[:, :beam].reshape(-1), c.scores[:, :beam]
    live, width = c.scores.shape
    keep = np.argsort(c.is_eos, axis=1, kind="stable")[:, :beam]
    keep_flat = (keep + np.arange(0, live * width, width)[:, None]).reshape(-1)
    return (
        c.parents.reshape(-1)[keep_flat].reshape(live, beam),
        c.words.reshape(-1)[keep_flat],
        c.scores.reshape(-1)[keep_flat].reshape(live, beam),
    )


class _Finished:
    """Every sentence's finished hypotheses, and what stopping needs to know of them: how
    many ended with eos, and the `n_best`-th best score among those (-inf while fewer)."""

    def __init__(self, batch: int, n_best: int, length_penalty: float):
        self.lists: list[list[Hypothesis]] = [[] for _ in range(batch)]
        self.count = np.zeros(batch, dtype=np.int64)
        self.nth_score = np.full(batch, -np.inf)
        self.n_best, self.length_penalty = n_best, length_penalty

    def ended(self, sentence: int, token_ids: list[int], log_prob, length: int) -> None:
        """A hypothesis that ended with eos (`length` counts the eos)."""
        found = self.lists[sentence]
        found.append(Hypothesis(token_ids, _normalise(log_prob, length, self.length_penalty), float(log_prob)))
        self.count[sentence] = len(found)
        if len(found) >= self.n_best:
            self.nth_score[sentence] = sorted((h.score for h in found), reverse=True)[self.n_best - 1]

    def cut(self, sentence: int, token_ids: list[int], log_prob, length: int) -> None:
        """A live beam of a sentence at its length limit (which is done then)."""
        self.lists[sentence].append(
            Hypothesis(token_ids, _normalise(log_prob, length, self.length_penalty), float(log_prob), finished=False)
        )

    def best(self) -> list[list[Hypothesis]]:
        return [sorted(found, key=lambda h: h.score, reverse=True)[: self.n_best] for found in self.lists]


def _finish_ended(finished: _Finished, candidates: _Candidates, beam: int, sentences, history, length: int) -> bool:
    """Sets aside the hypotheses that end with eos among each sentence's best `beam`
    candidates; returns whether there were any."""
    if not candidates.any_ended:
        return False
    eos_rows, eos_ranks = np.nonzero(candidates.is_eos[:, :beam])
    any_ended = False
    for row, rank in zip(eos_rows.tolist(), eos_ranks.tolist()):
        value = candidates.scores[row, rank]
        if np.isfinite(value):
            parent = row * beam + candidates.parents[row, rank]
            finished.ended(sentences[row], history[parent, : length - 1].tolist(), value, length)
            any_ended = True
    return any_ended


def _finish_at_limit(
    finished: _Finished, at_limit, sentences, beam: int, parents, words, scores, history, length: int
) -> None:
    """The live beams of the sentences at their length limit finish, unfinished."""
    for row in np.flatnonzero(at_limit).tolist():
        for b in range(beam):
            if np.isfinite(scores[row, b]):
                parent = row * beam + parents[row, b]
                tokens = history[parent, : length - 1].tolist() + [int(words[row * beam + b])]
                finished.cut(sentences[row], tokens, scores[row, b], length)


def _early_stop(done, finished: _Finished, sentences, scores, beam: int, limit_divisor):
    """Done sentences: those with `beam` hypotheses that ended, and those where no live beam
    can still beat the `n_best`-th finished one: a beam's score cannot rise, and the
    longest length divides it most."""
    counts = finished.count[sentences]
    full = counts >= beam
    done = full if done is None else done | full
    undecided = ~done & (counts >= finished.n_best)
    if undecided.any():
        bound = scores.max(axis=1).astype(np.float64) / limit_divisor[sentences]
        done |= undecided & (bound <= finished.nth_score[sentences])
    return done


def beam_search(
    step: StepFunction,
    state: dict,
    *,
    bos_id: int,
    eos_id: int,
    max_lengths: Sequence[int],
    beam_size: int = 5,
    n_best: int = 1,
    length_penalty: float = 1.0,
    batch_axes: Mapping[str, int] | None = None,
) -> list[list[Hypothesis]]:
    """Batched left-to-right beam search over `batch x beam` rows.

    Each step scores every extension of every live beam (`_select`), sets aside those that
    end with eos among the best `beam_size` candidates (`_finish_ended`), and keeps the best
    `beam_size` that do not end (`_continuing`). A sentence is done at its length limit
    (`_finish_at_limit`), when it has `beam_size` finished hypotheses, or when no live beam
    can still beat its `n_best`-th finished one (`_early_stop`); done sentences leave the
    batch. The per-step work is a fixed handful of array operations on flat indices (at
    batch 1 the search's cost per step is its number of numpy calls, not their size);
    states follow their parent beam with one `np.take` per entry, and the entries that are
    constant per sentence only move when sentences leave.

    Args:
        step: the step function (see the module docstring).
        state: the encoder's output for `batch` sentences, one row each.
        bos_id: int. First input token.
        eos_id: int. End token.
        max_lengths: per sentence, the most output tokens (eos included).
        beam_size: int. Beams per sentence; 1 gives the greedy result.
        n_best: int. Hypotheses returned per sentence (<= beam_size).
        length_penalty: float. Scores are `log_prob / length ** length_penalty`.
        batch_axes: which axis of each state entry is the row axis.

    Returns:
        Per sentence, in input order, up to `n_best` hypotheses, best first.
    """
    if n_best > beam_size:
        raise ValueError(f"n_best ({n_best}) must not exceed beam_size ({beam_size})")
    batch_axes = dict(batch_axes or {"states": 1})
    beam = beam_size
    max_lengths = np.asarray(max_lengths, dtype=np.int64)
    batch = len(max_lengths)
    # Every sentence gets `beam` identical rows: (batch * beam, ...).
    state = {key: np.repeat(value, beam, axis=batch_axes.get(key, 0)) for key, value in state.items()}
    owned = set(state)
    sentences = np.arange(batch)  # original index of each live sentence
    scores = np.full((batch, beam), -np.inf, dtype=np.float32)
    scores[:, 0] = 0.0  # Only the first beam is live at the start.
    # The tokens of each live beam so far, one row per beam: (live * beam, longest limit).
    history = np.zeros((batch * beam, int(max_lengths.max()) if batch else 0), dtype=np.int32)
    tokens = np.full(batch * beam, bos_id, dtype=np.int32)
    finished = _Finished(batch, n_best, length_penalty)
    limit_divisor = max_lengths.astype(np.float64) ** length_penalty if length_penalty else np.ones(batch)
    shortest_limit = int(max_lengths.min()) if batch else 0
    any_finished = False  # whether a live sentence may have finished hypotheses
    dynamic_keys: list[str] | None = None
    length = 0
    while len(sentences):
        live = len(sentences)
        log_probs, updates = step(tokens, state)
        state.update(updates)
        dynamic_keys = list(updates) if dynamic_keys is None else dynamic_keys
        length += 1
        candidates = _select(scores, log_probs, beam, eos_id)
        any_finished |= _finish_ended(finished, candidates, beam, sentences, history, length)
        parents, words, scores = _continuing(candidates, beam)

        # Rarely needed work (finishing at the limit, the early-stop bound, dropping
        # sentences) runs only on the steps that need it.
        done = None
        if length >= shortest_limit:
            done = length >= max_lengths[sentences]
            _finish_at_limit(finished, done, sentences, beam, parents, words, scores, history, length)
        if any_finished:
            done = _early_stop(done, finished, sentences, scores, beam, limit_divisor)
        order = None
        if done is not None and done.any():
            static_keys = [key for key in state if key not in dynamic_keys]
            order = _drop_sentences(state, static_keys, done, beam, batch_axes, owned)
            sentences, scores, parents = sentences[order], scores[order], parents[order]
            words = words.reshape(live, beam)[order].reshape(-1)
            any_finished = bool(finished.count[sentences].any())
            shortest_limit = int(max_lengths[sentences].min()) if len(sentences) else 0

        # The dynamic entries and the history follow their parent beam.
        starts = (order if order is not None else np.arange(live)) * beam
        parent_rows = (parents + starts[:, None]).reshape(-1)
        _take(state, dynamic_keys, parent_rows, batch_axes)
        history = history[parent_rows]
        if length <= history.shape[1]:
            history[:, length - 1] = words
        tokens = words
    return finished.best()


def search(
    step: StepFunction,
    state: dict,
    *,
    beam_size: int = 5,
    n_best: int = 1,
    **options,
) -> list[list[Hypothesis]]:
    """Greedy search for `beam_size == 1` (the fast path), beam search otherwise.

    `options` are the keyword arguments shared by both searches: `bos_id`,
    `eos_id`, `max_lengths`, `length_penalty`, `batch_axes`.
    """
    if beam_size == 1 and n_best == 1:
        return greedy_search(step, state, **options)
    return beam_search(step, state, beam_size=beam_size, n_best=n_best, **options)
