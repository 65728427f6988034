"""Cyclical learning rate per iteration, as the original's cyclr: CyclicLR(base_lr=1e-8, max_lr=1e-3) with
torch's other defaults (triangular, 2000 iterations up), for every parameter group alike."""
from typing import Tuple

import torch

BASE_LR, MAX_LR = 1e-8, 1e-3  # the original's constants


def Scheduler(optimizer: torch.optim.Optimizer, **kwargs) -> Tuple[torch.optim.lr_scheduler.LRScheduler, str]:
    """Returns (scheduler, 'iteration'): the trainer steps it after every optimizer step."""
    return torch.optim.lr_scheduler.CyclicLR(optimizer, base_lr=BASE_LR, max_lr=MAX_LR), "iteration"
