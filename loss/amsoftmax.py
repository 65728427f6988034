"""AM-softmax (additive margin, CosFace: Wang et al., CVPR 2018; voxceleb_trainer ``amsoftmax``)."""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from loss import LossPlugin
from loss.aamsoftmax import ce_and_accuracy


def am_logits(embeddings: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, margin: float,
              scale: float) -> torch.Tensor:
    """s * (cos θ_j - m·[j = y]): the target cosine lowered by the margin. Args: embeddings [B, D],
    weight [C, D], labels [B]. Returns: logits [B, C]."""
    cosine = F.linear(F.normalize(embeddings), F.normalize(weight))  # [B, C]
    return scale * (cosine - margin * F.one_hot(labels, cosine.shape[1]).to(cosine.dtype))


class LossFunction(LossPlugin):
    """Cross-entropy over AM-softmax logits; the margin schedule sets m (``set_margin``)."""

    def __init__(self, nOut: int, nClasses: int, margin: float = 0.2, scale: float = 30.0, **kwargs):
        super().__init__(margin)
        self.scale = scale
        self.weight = nn.Parameter(torch.empty(nClasses, nOut))
        nn.init.xavier_normal_(self.weight, gain=1)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Returns (mean cross-entropy, top-1 accuracy in %)."""
        return ce_and_accuracy(am_logits(embeddings, self.weight, labels, self.margin, self.scale), labels)
