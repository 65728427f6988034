"""Cyclical learning rate per iteration, as the original's cyclr: CyclicLR(base_lr=1e-8, max_lr=1e-3) with
torch's other defaults (triangular, 2000 iterations up), for every parameter group alike.

Those defaults include ``cycle_momentum=True``: SGD's momentum, or Adam/AdamW's beta1, runs the opposite way
between 0.9 (at the lowest rate, and at the start) and 0.8 (at the highest). Kept on purpose, as the original's
call does with SGD. With adam/adamw the original's call failed in torch of its time (CyclicLR then cycled
only ``momentum`` and refused optimizers without it; beta1 came with pytorch PR #113548), so there is no
original run to match; the same call in current torch cycles beta1 and that is what this does.
"""
from typing import Tuple

import torch

BASE_LR, MAX_LR = 1e-8, 1e-3  # the original's constants


def Scheduler(optimizer: torch.optim.Optimizer, **kwargs) -> Tuple[torch.optim.lr_scheduler.LRScheduler, str]:
    """Returns (scheduler, 'iteration'): the trainer steps it after every optimizer step."""
    return torch.optim.lr_scheduler.CyclicLR(optimizer, base_lr=BASE_LR, max_lr=MAX_LR), "iteration"
