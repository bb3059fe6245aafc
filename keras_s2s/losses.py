"""The training loss: token cross-entropy averaged over real target tokens."""

from __future__ import annotations

import keras
from keras import ops


class SequenceCrossEntropy(keras.losses.Loss):
    """Cross-entropy of logits against target ids, with optional label smoothing.

    Used with the pipeline's target mask as sample weight, so the mean runs
    over real target tokens only (`reduction="mean_with_sample_weight"`).

    Args:
        label_smoothing: float. Share of the target mass spread uniformly.
    """

    def __init__(self, label_smoothing: float = 0.0, name: str = "sequence_cross_entropy"):
        super().__init__(name=name, reduction="mean_with_sample_weight")
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        log_probs = ops.log_softmax(ops.cast(y_pred, "float32"), axis=-1)
        y_true = ops.cast(y_true, "int32")
        # (batch, time)
        gold = ops.squeeze(
            ops.take_along_axis(log_probs, ops.expand_dims(y_true, -1), axis=-1), -1
        )
        if not self.label_smoothing:
            return -gold
        uniform = ops.mean(log_probs, axis=-1)
        return -(1.0 - self.label_smoothing) * gold - self.label_smoothing * uniform

    def get_config(self):
        return {"label_smoothing": self.label_smoothing, "name": self.name}
