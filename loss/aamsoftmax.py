"""AAM-softmax (additive angular margin, ArcFace: Deng et al., CVPR 2019)."""
from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from loss import LossPlugin


def aam_logits(embeddings: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, margin: float,
               scale: float) -> torch.Tensor:
    """Additive-angular-margin logits.

    cos θ_j = <e/|e|, w_j/|w_j|>. The target logit becomes cos(θ_y + m) where
    cos θ_y > cos(π − m); elsewhere (the non-monotonic region) cos θ_y − sin(π − m)·m,
    as voxceleb_trainer's ``aamsoftmax`` (easy_margin off). All logits are scaled by s.

    Args:
        embeddings: [B, D]; weight: [C, D]; labels: [B] class indices.
    Returns:
        logits [B, C].
    """
    cosine = F.linear(F.normalize(embeddings), F.normalize(weight)).clamp(-1.0, 1.0)  # [B, C]
    sine = (1.0 - cosine.pow(2)).clamp(min=0.0).sqrt()
    phi = cosine * math.cos(margin) - sine * math.sin(margin)  # cos(θ + m)
    phi = torch.where(cosine > math.cos(math.pi - margin), phi, cosine - math.sin(math.pi - margin) * margin)
    one_hot = F.one_hot(labels, cosine.shape[1]).to(cosine.dtype)
    return scale * (one_hot * phi + (1.0 - one_hot) * cosine)


def ce_and_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(mean cross-entropy, top-1 accuracy in % of the logits with their margins), as voxceleb_trainer reports."""
    return F.cross_entropy(logits, labels), (logits.detach().argmax(dim=1) == labels).float().mean() * 100.0


class LossFunction(LossPlugin):
    """Cross-entropy over AAM-softmax logits.

    Args:
        nOut: embedding size; nClasses: number of training speakers;
        margin: m (original 0.2; 0.5 for large-margin fine-tuning); scale: s (30).
    The margin schedule changes m during training through ``set_margin`` (:class:`loss.LossPlugin`).
    """

    def __init__(self, nOut: int, nClasses: int, margin: float = 0.2, scale: float = 30.0, **kwargs):
        super().__init__(margin)
        self.scale = scale
        self.weight = nn.Parameter(torch.empty(nClasses, nOut))
        nn.init.xavier_normal_(self.weight, gain=1)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Returns (mean cross-entropy, top-1 accuracy in %)."""
        return ce_and_accuracy(aam_logits(embeddings, self.weight, labels, self.margin, self.scale), labels)
