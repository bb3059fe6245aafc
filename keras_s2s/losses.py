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
        logits = ops.cast(y_pred, "float32")
        # The fused sparse op is cheaper than gathering from log_softmax and
        # compiles under XLA. It runs on `(tokens, vocabulary)`: torch's
        # cross-entropy wants the classes on axis 1, and on a 3-D input that
        # leaves the time axis behind them and a much slower softmax kernel.
        nll = ops.sparse_categorical_crossentropy(
            ops.reshape(ops.cast(y_true, "int32"), (-1,)),
            ops.reshape(logits, (-1, ops.shape(logits)[-1])),
            from_logits=True,
        )
        nll = ops.reshape(nll, ops.shape(y_true))
        if not self.label_smoothing:
            return nll
        uniform = ops.mean(ops.log_softmax(logits, axis=-1), axis=-1)
        return (1.0 - self.label_smoothing) * nll - self.label_smoothing * uniform

    def get_config(self):
        return {"label_smoothing": self.label_smoothing, "name": self.name}
