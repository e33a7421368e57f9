"""Per-step learning-rate schedules for the generative trainers (RecBole's Trainer has none).

``lr_factor(step, warmup_steps, decay)`` multiplies each parameter group's base learning rate:

* ``constant``: linear warm-up over ``warmup_steps`` (0 = none), then 1;
* ``inverse_sqrt``: linear warm-up, then ``sqrt(warmup_steps / step)`` (T5's and TIGER's schedule;
  needs ``warmup_steps > 0``);
* ``cosine``: linear warm-up, then ``0.5 * (1 + cos(pi * p))`` with ``p = (step - warmup_steps) /
  (total_steps - warmup_steps)``: 1 right after the warm-up, 0 at ``total_steps`` (and after it).
  The horizon ``total_steps`` is the run's (or stage's) epochs x batches per epoch, set by the trainer
  (:meth:`StepSchedule.set_horizon`); an early stop ends the run before the learning rate reaches 0.
  The references' recipe (LC-Rec, LETTER, GRID, the scientific2018 reference: 1 % warm-up).

With a warm-up ratio (``warmup_ratio``) the warm-up is ``ceil(warmup_ratio * total_steps)`` steps and
replaces ``warmup_steps``. Steps count from 0 per optimizer, so every STREAM-Rec stage (a fresh
optimizer) restarts its schedule.
"""

from __future__ import annotations

import logging
import math

logger = logging.getLogger(__name__)

DECAYS = ("constant", "inverse_sqrt", "cosine")


def check_schedule(warmup_steps: int, decay: str, warmup_ratio: float | None = None) -> None:
    if decay not in DECAYS:
        raise ValueError(f"lr_decay={decay!r}: choose one of {DECAYS}")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps={warmup_steps} must be >= 0")
    if warmup_ratio is not None and not 0.0 <= warmup_ratio < 1.0:
        raise ValueError(f"warmup_ratio={warmup_ratio} must be in [0, 1)")
    if decay == "inverse_sqrt" and warmup_steps == 0 and not warmup_ratio:
        raise ValueError("lr_decay=inverse_sqrt needs warmup_steps > 0 (it decays as sqrt(warmup_steps / step))")


def lr_factor(step: int, warmup_steps: int, decay: str, total_steps: int | None = None) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based); ``cosine`` needs
    ``total_steps`` (the horizon)."""
    n = step + 1
    warm = n / warmup_steps if warmup_steps and n < warmup_steps else 1.0
    if decay == "inverse_sqrt" and n >= warmup_steps:
        return math.sqrt(warmup_steps / n)
    if decay == "cosine":
        if total_steps is None:
            raise ValueError("lr_decay=cosine needs the horizon total_steps (StepSchedule.set_horizon)")
        if step < warmup_steps:
            return warm
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return warm


class StepSchedule:
    """Sets ``lr = base_lr * lr_factor(step)`` on an optimizer before each of its steps."""

    def __init__(self, warmup_steps: int = 0, decay: str = "constant", warmup_ratio: float | None = None):
        warmup_ratio = None if warmup_ratio is None else float(warmup_ratio)
        check_schedule(int(warmup_steps), decay, warmup_ratio)
        self.warmup_steps, self.decay, self.warmup_ratio = int(warmup_steps), decay, warmup_ratio
        self.total_steps: int | None = None
        self._optimizer = None
        self.step_count = 0

    @property
    def active(self) -> bool:
        return self.warmup_steps > 0 or bool(self.warmup_ratio) or self.decay != "constant"

    def set_horizon(self, total_steps: int) -> None:
        """The number of optimizer steps the schedule spans (epochs x batches per epoch); resolves
        ``warmup_ratio`` into ``warmup_steps``."""
        self.total_steps = int(total_steps)
        if self.warmup_ratio is not None:
            self.warmup_steps = math.ceil(self.warmup_ratio * self.total_steps)
        if self.decay == "cosine" and self.warmup_steps >= self.total_steps:
            logger.warning("lr_decay=cosine: the warm-up (%d steps) spans the whole horizon (%d steps): the "
                           "learning rate never decays", self.warmup_steps, self.total_steps)

    def describe(self) -> dict:
        """What the run record says about the schedule."""
        return {"warmup_steps": self.warmup_steps, "decay": self.decay, "warmup_ratio": self.warmup_ratio,
                "total_steps": self.total_steps}

    def before_step(self, optimizer) -> float:
        """Set this step's learning rate on ``optimizer`` (a new optimizer restarts at step 0)."""
        if optimizer is not self._optimizer:
            self._optimizer, self.step_count = optimizer, 0
            for group in optimizer.param_groups:
                group["base_lr"] = group["lr"]
        factor = lr_factor(self.step_count, self.warmup_steps, self.decay, self.total_steps)
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        self.step_count += 1
        return factor
