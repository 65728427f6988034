"""Plain softmax: a linear classifier (with bias) and cross-entropy (voxceleb_trainer ``softmax``). No margin:
a margin schedule has nothing to change here."""
from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

from loss.aamsoftmax import ce_and_accuracy


class LossFunction(nn.Module):
    def __init__(self, nOut: int, nClasses: int, **kwargs):
        super().__init__()
        self.fc = nn.Linear(nOut, nClasses)
        self.margin = 0.0  # the trainer sets it; unused

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Returns (mean cross-entropy, top-1 accuracy in %)."""
        return ce_and_accuracy(self.fc(embeddings), labels)
