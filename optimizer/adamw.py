"""AdamW over the given parameter groups (torch defaults otherwise, as the original)."""
import logging
from typing import Optional

import torch

logger = logging.getLogger(__name__)


def Optimizer(parameters, lr: float, weight_decay: Optional[float] = None, **kwargs) -> torch.optim.Optimizer:
    """``weight_decay`` None keeps torch's AdamW default (0.01), which the original used."""
    optimizer = torch.optim.AdamW(parameters, lr=lr, **({} if weight_decay is None else {"weight_decay": weight_decay}))
    logger.info("Optimizer: AdamW, weight decay %g", optimizer.defaults["weight_decay"])
    return optimizer
