"""The optimizer and its learning-rate schedules: the paper's halving SGD, and a cosine
decay whose end a time budget can move."""

from __future__ import annotations

import keras

from keras_s2s.config import Config


@keras.saving.register_keras_serializable(package="keras_s2s")
class PaperSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """The paper's rate: constant, then halved every `decay_every` epochs after `decay_start`.

    Args:
        initial: float. Starting learning rate (0.7 in the paper).
        steps_per_epoch: int. Batches per epoch.
        decay_start: float. Epoch after which halving begins (5).
        decay_every: float. Epochs between halvings (0.5).
    """

    def __init__(self, initial, steps_per_epoch, decay_start=5.0, decay_every=0.5):
        self.initial = float(initial)
        self.steps_per_epoch = int(steps_per_epoch)
        self.decay_start = float(decay_start)
        self.decay_every = float(decay_every)

    def __call__(self, step):
        epoch = keras.ops.cast(step, "float32") / float(self.steps_per_epoch)
        halvings = keras.ops.floor(keras.ops.maximum(epoch - self.decay_start, 0.0) / self.decay_every)
        return self.initial * keras.ops.power(0.5, halvings)

    def get_config(self):
        return {
            "initial": self.initial,
            "steps_per_epoch": self.steps_per_epoch,
            "decay_start": self.decay_start,
            "decay_every": self.decay_every,
        }


def learning_rate_schedule(config: Config, steps_per_epoch: int):
    """The learning rate: a float, or a schedule of the optimizer step."""
    training = config.training
    if training.optimizer == "paper_sgd":
        return PaperSchedule(
            training.learning_rate,
            steps_per_epoch,
            training.learning_rate_decay_start,
            training.learning_rate_decay_every,
        )
    if training.learning_rate_schedule == "cosine":
        total = max(1, training.epochs * steps_per_epoch)
        warmup = min(training.warmup_steps, total - 1)
        return PlannedCosineDecay(
            initial_learning_rate=training.learning_rate / 100 if warmup else training.learning_rate,
            decay_steps=total - warmup,
            alpha=training.final_learning_rate_ratio,
            warmup_target=training.learning_rate if warmup else None,
            warmup_steps=warmup,
        )
    return training.learning_rate


class PlannedCosineDecay(keras.optimizers.schedules.CosineDecay):
    """Keras' `CosineDecay` whose length can be re-planned while training.

    The number of decay steps lives in a variable read by the compiled train
    step, so `plan(total_steps)` moves the end of the decay (the step at which
    the rate reaches `alpha` of its peak) without rebuilding anything. With the
    first plan it computes exactly what `CosineDecay` does.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.first_decay_steps = self.decay_steps
        self.decay_steps = keras.Variable(
            float(self.first_decay_steps), dtype="float32", trainable=False, name="planned_decay_steps"
        )

    @property
    def first_total_steps(self) -> int:
        """The configured plan's last step (warm-up included)."""
        return int(self.first_decay_steps) + int(self.warmup_steps)

    @property
    def planned_total_steps(self) -> int:
        """The step at which the decay ends (warm-up included)."""
        return int(round(float(keras.ops.convert_to_numpy(self.decay_steps)))) + int(self.warmup_steps)

    def plan(self, total_steps: float) -> None:
        """Ends the decay at optimizer step `total_steps` (at least one decay step)."""
        self.decay_steps.assign(max(1.0, float(total_steps) - float(self.warmup_steps)))

    def get_config(self):
        return dict(super().get_config(), decay_steps=self.first_decay_steps)


def make_optimizer(config: Config, steps_per_epoch: int, rate=None) -> keras.optimizers.Optimizer:
    """The configured optimizer; `rate` (a float or schedule) replaces the configured rate."""
    rate = learning_rate_schedule(config, steps_per_epoch) if rate is None else rate
    clip = config.training.clip_norm or None
    if config.training.optimizer == "paper_sgd":
        return keras.optimizers.SGD(rate, global_clipnorm=clip)
    return keras.optimizers.Adam(rate, global_clipnorm=clip)
