"""Training: corpus -> tokenizers -> tf.data -> Keras `fit` under `tf.distribute`.

`train(config, run_dir)` (in `run.py`) is the recipe; each module beside it holds one of
its parts: `distribution` (strategy, chief, worker directories), `data` (splits and
tokenizers), `optimizer` (optimizers and learning-rate schedules), `checkpoints`
(atomic checkpoints, weight averaging, the resumable backup), `callbacks` (time budget,
schedule fitted to it, dev metric, curve plot) and `curves` (the plot).
"""

from keras_s2s.training.callbacks import CurvePlot, DevMetric, FitScheduleToBudget, TimeBudget
from keras_s2s.training.checkpoints import AtomicBackupAndRestore, AtomicCheckpoint, average_weights, weights_digest
from keras_s2s.training.curves import plot_curves
from keras_s2s.training.data import PreparedData, prepare_data
from keras_s2s.training.distribution import choose_strategy, is_chief, worker_scratch_dir, worker_task
from keras_s2s.training.optimizer import PaperSchedule, PlannedCosineDecay, learning_rate_schedule, make_optimizer
from keras_s2s.training.run import train

__all__ = [
    "AtomicBackupAndRestore",
    "AtomicCheckpoint",
    "CurvePlot",
    "DevMetric",
    "FitScheduleToBudget",
    "PaperSchedule",
    "PlannedCosineDecay",
    "PreparedData",
    "TimeBudget",
    "average_weights",
    "choose_strategy",
    "is_chief",
    "learning_rate_schedule",
    "make_optimizer",
    "plot_curves",
    "prepare_data",
    "train",
    "weights_digest",
    "worker_scratch_dir",
    "worker_task",
]
