"""AdamW over the given parameter groups (torch defaults otherwise, as the original)."""
import logging
from typing import Optional

import torch

from optimizer import implementation

logger = logging.getLogger(__name__)


def Optimizer(parameters, lr: float, weight_decay: Optional[float] = None, optimizer_impl: str = "auto",
              **kwargs) -> torch.optim.Optimizer:
    """``weight_decay`` None keeps torch's AdamW default (0.01), which the original used."""
    parameters = list(parameters)
    optimizer = torch.optim.AdamW(parameters, lr=lr, **({} if weight_decay is None else {"weight_decay": weight_decay}),
                                  **implementation(parameters, optimizer_impl))
    logger.info("Optimizer: AdamW, weight decay %g%s", optimizer.defaults["weight_decay"],
                ", fused" if optimizer.defaults.get("fused") else "")
    return optimizer
