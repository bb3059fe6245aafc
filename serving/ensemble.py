"""Several models with one target vocabulary, decoded as one model.

The ensemble's log-probability of a token is the mean of its members' (a product of
experts; Sutskever et al. (2014) decoded with an ensemble of 5 LSTMs). `Ensemble` combines
members' encode and step functions into one pair for `serving.search`; `ensemble_engine`
combines `StepEngine`s into one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from serving.decoding import StepEngine
from serving.search import StepFunction


class Ensemble:
    """Several models with one target vocabulary, decoded as one model.

    The ensemble's log-probability of a token is the mean of its members'
    (a product of experts; Sutskever et al. (2014) decoded with an ensemble of
    5 LSTMs). Each member keeps its own state: the ensemble's state holds
    member `i`'s entry `key` as `"i/key"`, so the search re-indexes every
    member's rows with its own.

    Args:
        encoders: one `encode(source_ids, source_lengths) -> state` per member.
        steps: one step function per member; each must return full
            log-probabilities (not a pre-selected top-k).
        batch_axes: per member, its state's row axes (default: `{"states": 1}`).

    Example:
    >>> ensemble = Ensemble([encode_a, encode_b], [step_a, step_b])  # doctest: +SKIP
    >>> search(ensemble.step, ensemble.encode(ids, lengths), batch_axes=ensemble.batch_axes, ...)  # doctest: +SKIP
    """

    def __init__(
        self,
        encoders: Sequence[Callable],
        steps: Sequence[StepFunction],
        batch_axes: Sequence[Mapping[str, int] | None] | None = None,
    ):
        if not steps or len(encoders) != len(steps):
            raise ValueError(f"an ensemble needs one encoder per step function: {len(encoders)} vs {len(steps)}")
        self.encoders, self.steps = list(encoders), list(steps)
        member_axes = list(batch_axes) if batch_axes is not None else [None] * len(steps)
        self.batch_axes = {
            f"{index}/{key}": axis
            for index, axes in enumerate(member_axes)
            for key, axis in dict(axes or {"states": 1}).items()
        }

    def encode(self, source_ids: np.ndarray, source_lengths: np.ndarray) -> dict:
        state = {}
        for index, encode in enumerate(self.encoders):
            state.update({f"{index}/{key}": value for key, value in encode(source_ids, source_lengths).items()})
        return state

    def step(self, token_ids: np.ndarray, state: dict):
        total, updates = None, {}
        for index, step in enumerate(self.steps):
            prefix = f"{index}/"
            member = {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
            log_probs, member_updates = step(token_ids, member)
            if isinstance(log_probs, tuple):
                raise ValueError(
                    f"ensemble member {index}: its step returned a top-k selection; "
                    "an ensemble needs full log-probabilities"
                )
            if total is not None and log_probs.shape != total.shape:
                raise ValueError(
                    f"ensemble member {index}: log-probabilities of shape {log_probs.shape}, "
                    f"member 0 has {total.shape} (different target vocabularies?)"
                )
            total = log_probs.astype(np.float32) if total is None else total + log_probs
            updates.update({prefix + key: value for key, value in member_updates.items()})
        total /= len(self.steps)
        return total, updates


def ensemble_engine(engines: Sequence[StepEngine]) -> StepEngine:
    """One `StepEngine` that decodes `engines` as one model. The members may differ in shape
    and precision; they must agree on special ids and source reversal."""
    if not engines:
        raise ValueError("an ensemble needs at least one member")
    first = engines[0]
    for index, engine in enumerate(engines[1:], start=1):
        if engine.reverse_source != first.reverse_source:
            raise ValueError(f"ensemble member {index}: source reversal differs from member 0's")
        if (engine.bos_id, engine.eos_id) != (first.bos_id, first.eos_id):
            raise ValueError(f"ensemble member {index}: special ids differ from member 0's")
    # Full log-probabilities from every member: a top-k per member would not hold the mean's top-k.
    ensemble = Ensemble([e.encode for e in engines], [e.step for e in engines], [e.batch_axes for e in engines])
    return StepEngine(
        ensemble.encode, ensemble.step, first.bos_id, first.eos_id, first.reverse_source, ensemble.batch_axes
    )
