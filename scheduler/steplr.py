"""Step decay: multiply every learning rate by ``lr_decay`` every ``test_interval`` epochs."""
from typing import Tuple

import torch


def Scheduler(optimizer: torch.optim.Optimizer, test_interval: int, lr_decay: float,
              **kwargs) -> Tuple[torch.optim.lr_scheduler.LRScheduler, str]:
    """Returns (scheduler, 'epoch'): the trainer steps it once per epoch."""
    sched = torch.optim.lr_scheduler.StepLR(optimizer, step_size=test_interval, gamma=lr_decay)
    return sched, "epoch"
