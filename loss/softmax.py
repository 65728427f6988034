"""Plain softmax: a linear classifier (with bias) and cross-entropy (voxceleb_trainer ``softmax``). No margin:
a margin schedule has nothing to change here."""
from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

from loss import LossPlugin
from loss.aamsoftmax import ce_and_accuracy


class LossFunction(LossPlugin):
    """Cross-entropy over a linear classifier's logits; no margin (``margin`` stays 0.0)."""

    def __init__(self, nOut: int, nClasses: int, **kwargs):
        super().__init__(margin=0.0)
        self.fc = nn.Linear(nOut, nClasses)

    def set_margin(self, margin: float) -> None:
        """No margin here: the margin schedule's value is accepted and ignored (``margin`` stays 0.0)."""

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Returns (mean cross-entropy, top-1 accuracy in %)."""
        return ce_and_accuracy(self.fc(embeddings), labels)
