"""SGD with momentum 0.9 (as voxceleb_trainer) over the given parameter groups; Nesterov and weight decay
as options (wespeaker's MHFA recipes: Nesterov, weight decay 1e-7)."""
import logging
from typing import Optional

import torch

from optimizer import implementation

logger = logging.getLogger(__name__)


def Optimizer(parameters, lr: float, weight_decay: Optional[float] = None, nesterov: bool = False,
              optimizer_impl: str = "auto", **kwargs) -> torch.optim.Optimizer:
    parameters = list(parameters)
    optimizer = torch.optim.SGD(parameters, lr=lr, momentum=0.9, nesterov=nesterov, weight_decay=weight_decay or 0.0,
                                **implementation(parameters, optimizer_impl))
    logger.info("Optimizer: SGD, momentum 0.9%s, weight decay %g", ", Nesterov" if nesterov else "",
                optimizer.defaults["weight_decay"])
    return optimizer
