"""The callbacks of a run beside its checkpoints: the time budget, the schedule fitted to
it, the dev-sample metric, and the training-curve plot."""

from __future__ import annotations

import random
import time

import keras
import tensorflow as tf

from keras_s2s.config import Config
from keras_s2s.training.curves import plot_curves
from keras_s2s.training.data import PreparedData
from keras_s2s.training.distribution import log


class TimeBudget(keras.callbacks.Callback):
    """Stops training once `max_minutes` have passed.

    Checked after every batch on one machine. Under
    `MultiWorkerMirroredStrategy` all workers must stop at the same step, so
    the chief's clock decides at the end of each epoch and every worker
    learns the decision through an all-reduce.
    """

    def __init__(self, max_minutes: float | None, strategy=None, chief: bool = True):
        super().__init__()
        self.max_seconds = None if not max_minutes else 60.0 * max_minutes
        self.start = time.monotonic()
        self.stopped = False
        self.strategy = strategy
        self.chief = chief
        self.multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)

    def _over(self) -> bool:
        return bool(self.max_seconds) and time.monotonic() - self.start > self.max_seconds

    def _stop(self):
        if not self.stopped:
            log(f"time budget of {self.max_seconds / 60:.1f} minutes reached: stopping")
        self.stopped = True
        self.model.stop_training = True

    def on_train_batch_end(self, batch, logs=None):
        if not self.multi_worker and self._over():
            self._stop()

    def on_epoch_end(self, epoch, logs=None):
        if not (self.multi_worker and self.max_seconds):
            return
        vote = tf.constant(1.0 if self.chief and self._over() else 0.0)
        if float(self.strategy.reduce(tf.distribute.ReduceOp.SUM, vote, axis=None)) > 0:
            self._stop()


class FitScheduleToBudget(keras.callbacks.Callback):
    """Ends a cosine schedule's decay when the time budget ends.

    A planned cosine decay that a time budget cuts short stops at a high rate,
    which wastes the last epochs' gains. At the end of every epoch this
    callback measures the time per optimizer step over that epoch (its
    validation and dev decoding included), estimates the step at which the
    budget will stop training, and moves the end of the decay there: never
    past the schedule's first plan, so a budget that leaves room changes nothing.
    Under `MultiWorkerMirroredStrategy` the chief's estimate is shared with
    every worker through an all-reduce, so all replicas follow one schedule.

    Args:
        schedule: `PlannedCosineDecay`. The optimizer's schedule.
        budget: `TimeBudget`. Its clock and limit.
        strategy: the `tf.distribute` strategy of the run.
        chief: bool. Whether this process's clock decides.
        clock: callable returning seconds (for tests).
    """

    def __init__(self, schedule, budget, strategy=None, chief=True, clock=time.monotonic):
        super().__init__()
        self.schedule = schedule
        self.budget = budget
        self.planned_steps = schedule.first_total_steps
        self.strategy = strategy
        self.chief = chief
        self.clock = clock
        self.multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        self.mark = None

    def _iterations(self) -> int:
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def on_train_begin(self, logs=None):
        self.mark = (self.clock(), self._iterations())

    def estimate(self, now: float, step: int) -> float:
        """The step at which the budget will stop training, at the pace since the last mark."""
        then, step_then = self.mark
        remaining = self.budget.max_seconds - (now - self.budget.start)
        if step <= step_then or now <= then:
            return float(self.planned_steps)
        return step + max(0.0, remaining) * (step - step_then) / (now - then)

    def on_epoch_end(self, epoch, logs=None):
        if not self.budget.max_seconds:
            return
        now, step = self.clock(), self._iterations()
        total = min(float(self.planned_steps), self.estimate(now, step)) if self.chief else 0.0
        self.mark = (now, step)
        if self.multi_worker:
            total = float(self.strategy.reduce(tf.distribute.ReduceOp.SUM, tf.constant(total), axis=None))
        before = self.schedule.planned_total_steps
        self.schedule.plan(total)
        after = self.schedule.planned_total_steps
        if self.chief and abs(after - before) > 0.01 * max(before, 1):
            log(
                f"time budget: the learning-rate decay now ends at step {after} "
                f"(was {before}; {self.planned_steps} planned)"
            )


class DevMetric(keras.callbacks.Callback):
    """Greedy-decodes a dev sample each epoch and adds `val_bleu`/`val_chrf`
    or `val_per`/`val_wer` to the epoch logs."""

    def __init__(self, config: Config, data: PreparedData, sample_size: int):
        super().__init__()
        self.config = config
        self.data = data
        from keras_s2s.scores import inputs_to_decode, metric_kind

        self.kind = metric_kind(config)
        pairs = list(data.splits["dev"])
        # A seeded sample of distinct sources, with every pair of each.
        chosen = list(dict.fromkeys(p.source for p in pairs))
        random.Random(config.training.seed).shuffle(chosen)
        chosen = set(chosen[:sample_size])
        self.pairs = [p for p in pairs if p.source in chosen]
        self.sources = inputs_to_decode(self.kind, self.pairs)
        self.translator = None

    def on_epoch_end(self, epoch, logs=None):
        from keras_s2s.decoder import KerasTranslator
        from keras_s2s.scores import score_outputs

        if not self.sources or logs is None:
            return
        if self.translator is None:
            self.translator = KerasTranslator(
                self.model, self.config, self.data.source_tokenizer, self.data.target_tokenizer
            )
        hypotheses = self.translator.translate_best(self.sources, beam_size=1, batch_size=128)
        values = score_outputs(self.kind, self.pairs, hypotheses)
        if self.kind == "g2p":
            logs["val_per"], logs["val_wer"] = values["per"], values["wer"]
            summary = f"dev sample PER {values['per']:.2f}% WER {values['wer']:.2f}%"
        else:
            logs["val_bleu"], logs["val_chrf"] = values["bleu"], values["chrf"]
            summary = f"dev sample BLEU {values['bleu']:.2f} chrF {values['chrf']:.2f}"
        log(f"epoch {epoch + 1}: {summary} (greedy, {len(self.sources)} sentences)")


class CurvePlot(keras.callbacks.Callback):
    """Redraws `training_curves.png` from `train_log.csv` after every epoch."""

    def __init__(self, run_dir: str, enabled: bool = True):
        super().__init__()
        self.run_dir = run_dir
        self.enabled = enabled

    def on_epoch_end(self, epoch, logs=None):
        if self.enabled:
            try:
                plot_curves(self.run_dir)
            except Exception as error:  # A plot must never stop training.
                log(f"could not draw training curves: {error}")
