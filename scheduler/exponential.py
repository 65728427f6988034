"""Warm-up, then exponential decrease per iteration (wespeaker's ``ExponentialDecrease``).

Each parameter group keeps its own rate lr_g (LR_MHFA, LR_Transformer * LLRD_factor^i) and follows
  lr_g(t) = lr_g * w(t) * exp(t / T * ln(final_lr_ratio)),  T = max_epoch * steps_per_epoch,
with the warm-up factor w(t) = t / (warmup_epochs * steps_per_epoch) during the warm-up when
``warm_from_zero`` (else 1). wespeaker's frozen MHFA stage: SGD 0.1 -> 5e-3 (ratio 0.05), 3 warm-up epochs.
"""
import math
from typing import Tuple

import torch

from core.errors import ConfigError


def exponential_factor(step: int, total_steps: int, warmup_steps: int, final_lr_ratio: float,
                       warm_from_zero: bool = True) -> float:
    """The factor on each group's learning rate after ``step`` optimizer steps (module docstring)."""
    warm = step / warmup_steps if warm_from_zero and step < warmup_steps else 1.0
    return warm * math.exp(step / total_steps * math.log(final_lr_ratio))


def Scheduler(optimizer: torch.optim.Optimizer, max_epoch: int, steps_per_epoch: int, final_lr_ratio: float = 0.05,
              warmup_epochs: float = 0.0, warm_from_zero: bool = True,
              **kwargs) -> Tuple[torch.optim.lr_scheduler.LRScheduler, str]:
    """Returns (scheduler, 'iteration'): the trainer steps it after every optimizer step."""
    if not 0 < final_lr_ratio:
        raise ConfigError(f"final_lr_ratio must be positive, got {final_lr_ratio}")
    total = max(1, max_epoch * steps_per_epoch)
    warmup = max(1, round(warmup_epochs * steps_per_epoch)) if warmup_epochs > 0 else 0
    factor = lambda step: exponential_factor(step, total, warmup, final_lr_ratio, warm_from_zero)  # noqa: E731 (a one-line function, kept beside its use)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor), "iteration"
