"""SGD with momentum 0.9 (as voxceleb_trainer) over the given parameter groups."""
import logging

import torch

logger = logging.getLogger(__name__)


def Optimizer(parameters, lr: float, **kwargs) -> torch.optim.Optimizer:
    logger.info("Optimizer: SGD, momentum 0.9")
    return torch.optim.SGD(parameters, lr=lr, momentum=0.9)
