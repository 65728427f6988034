"""Adam over the given parameter groups (torch defaults otherwise, as the original)."""
import logging

import torch

logger = logging.getLogger(__name__)


def Optimizer(parameters, lr: float, **kwargs) -> torch.optim.Optimizer:
    logger.info("Optimizer: Adam")
    return torch.optim.Adam(parameters, lr=lr)
