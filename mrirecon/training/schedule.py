"""When a training run does what, defined once for both trainers (Lightning's, training/run.py, and the
pipeline's, distributed/pipeline.py): batch limits, the end of training and the validation schedule.

Lightning's semantics are the definition: `limit_*_batches` is a fraction of an epoch's batches (<= 1) or a
number of batches (> 1); `max_steps` counts training batches (-1: no limit) and ends training inside an
epoch, which is then validated; an epoch is validated when `check_val_every_n_epoch` divides its number
(1-based). Every epoch ends with last.ckpt, validated or not.
"""
from __future__ import annotations

from ..config import TrainConfig


def batch_limit(num_batches: int, limit: float) -> int:
    """How many of an epoch's `num_batches` batches `limit` keeps (at least one when there are any)."""
    return max(1, min(num_batches, int(num_batches * limit) if limit <= 1.0 else int(limit)))


def lightning_limit(value: float) -> int | float:
    """A limit as Lightning's Trainer reads it: a float is a fraction, an int a count (the config holds a
    float either way: 2.0 means two batches)."""
    return int(value) if value > 1 else value


def training_done(t: TrainConfig, epoch: int, step: int) -> bool:
    """Whether training ends before epoch `epoch` (0-based), `step` batches having been trained."""
    return epoch >= t.max_epochs or 0 < t.max_steps <= step


def validation_due(t: TrainConfig, epoch: int, epoch_done: bool, step: int) -> bool:
    """Whether to validate after training epoch `epoch` (0-based) up to `step` batches: a completed epoch on
    the check_val_every_n_epoch schedule, or the epoch that max_steps ended."""
    return epoch_done and (epoch + 1) % t.check_val_every_n_epoch == 0 or 0 < t.max_steps <= step
