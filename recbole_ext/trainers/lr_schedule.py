"""Per-step learning-rate schedules for the generative trainers (RecBole's Trainer has none).

``lr_factor(step, warmup_steps, decay)`` multiplies each parameter group's base learning rate:

* ``constant``: linear warm-up over ``warmup_steps`` (0 = none), then 1;
* ``inverse_sqrt``: linear warm-up, then ``sqrt(warmup_steps / step)`` (T5's and TIGER's schedule;
  needs ``warmup_steps > 0``).

Steps count from 0 per optimizer, so every STREAM-Rec stage (a fresh optimizer) restarts its schedule.
"""

from __future__ import annotations

import math

DECAYS = ("constant", "inverse_sqrt")


def check_schedule(warmup_steps: int, decay: str) -> None:
    if decay not in DECAYS:
        raise ValueError(f"lr_decay={decay!r}: choose one of {DECAYS}")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps={warmup_steps} must be >= 0")
    if decay == "inverse_sqrt" and warmup_steps == 0:
        raise ValueError("lr_decay=inverse_sqrt needs warmup_steps > 0 (it decays as sqrt(warmup_steps / step))")


def lr_factor(step: int, warmup_steps: int, decay: str) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based)."""
    n = step + 1
    warm = n / warmup_steps if warmup_steps and n < warmup_steps else 1.0
    if decay == "inverse_sqrt" and n >= warmup_steps:
        return math.sqrt(warmup_steps / n)
    return warm


class StepSchedule:
    """Sets ``lr = base_lr * lr_factor(step)`` on an optimizer before each of its steps."""

    def __init__(self, warmup_steps: int = 0, decay: str = "constant"):
        check_schedule(int(warmup_steps), decay)
        self.warmup_steps, self.decay = int(warmup_steps), decay
        self._optimizer = None
        self.step_count = 0

    @property
    def active(self) -> bool:
        return self.warmup_steps > 0 or self.decay != "constant"

    def before_step(self, optimizer) -> float:
        """Set this step's learning rate on ``optimizer`` (a new optimizer restarts at step 0)."""
        if optimizer is not self._optimizer:
            self._optimizer, self.step_count = optimizer, 0
            for group in optimizer.param_groups:
                group["base_lr"] = group["lr"]
        factor = lr_factor(self.step_count, self.warmup_steps, self.decay)
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        self.step_count += 1
        return factor
