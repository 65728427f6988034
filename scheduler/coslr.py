"""Cosine annealing per epoch, as the original's coslr: CosineAnnealingLR(T_max=8, eta_min=6e-6) whatever
max_epoch is (with more than 8 epochs the rate climbs back up: a cosine of period 16 epochs)."""
from typing import Tuple

import torch

T_MAX, ETA_MIN = 8, 6e-6  # the original's constants


def Scheduler(optimizer: torch.optim.Optimizer, **kwargs) -> Tuple[torch.optim.lr_scheduler.LRScheduler, str]:
    """Returns (scheduler, 'epoch'): the trainer steps it once per epoch."""
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=T_MAX, eta_min=ETA_MIN), "epoch"
