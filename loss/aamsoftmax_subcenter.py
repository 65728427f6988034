"""Sub-center AAM-softmax with inter-top-k penalty (wespeaker ``arc_margin_intertopk_subcenter``, used by its
MHFA recipes).

Sub-center ArcFace (Deng et al., ECCV 2020): each speaker has K centres and cos θ_j is the largest cosine
to speaker j's centres. Inter-top-k (Zhao et al., arXiv 2110.05042): the k non-target speakers with the
largest cosines get cos(θ_j - m'), a harder negative, with m' = inter_margin · margin / 0.2 (0 while the
margin is at most 0.001), so the penalty grows with the margin schedule. The target gets cos(θ_y + m),
or cos θ_y - (1 + cos(π - m)) where cos θ_y <= cos(π - m) (wespeaker's continuous variant). All times s.
wespeaker can turn the penalty off (its ``do_lm: True`` sets k = 0 and m' = 0; here ``inter_topk: 0``), but
its v4 MHFA LMFT configs do not set ``do_lm``: they keep k = 5, so m' = 0.15 at margin 0.5.
"""
from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from loss import LossPlugin
from loss.aamsoftmax import ce_and_accuracy


def subcenter_intertopk_logits(embeddings: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, margin: float,
                               scale: float, subcenters: int, topk: int, inter_margin: float) -> torch.Tensor:
    """Args: embeddings [B, D]; weight [C*K, D] (centres of class c at rows c*K .. c*K+K-1); labels [B].
    Returns: logits [B, C] (module docstring)."""
    cosine = F.linear(F.normalize(embeddings), F.normalize(weight))  # [B, C*K]
    cosine = cosine.reshape(cosine.shape[0], -1, subcenters).amax(dim=2).clamp(-1.0, 1.0)  # [B, C]
    sine = (1.0 - cosine.pow(2)).clamp(min=0.0).sqrt()
    phi = cosine * math.cos(margin) - sine * math.sin(margin)  # cos(θ + m)
    phi = torch.where(cosine > math.cos(math.pi - margin), phi, cosine - (1.0 + math.cos(math.pi - margin)))
    one_hot = F.one_hot(labels, cosine.shape[1]).to(cosine.dtype)
    logits = one_hot * phi + (1.0 - one_hot) * cosine
    m_prime = inter_margin * margin / 0.2 if margin > 0.001 else 0.0
    if topk > 0:
        hard = torch.topk(cosine.detach() - 2.0 * one_hot, topk, dim=1).indices  # the target excluded
        hard_mask = torch.zeros_like(cosine).scatter_(1, hard, 1.0)
        phi_hard = cosine * math.cos(m_prime) + sine * math.sin(m_prime)  # cos(θ - m')
        logits = logits + hard_mask * (phi_hard - cosine)
    return scale * logits


class LossFunction(LossPlugin):
    """Cross-entropy over sub-center inter-top-k AAM logits; the margin schedule sets m (``set_margin``).

    Args: nOut, nClasses; margin m, scale s (wespeaker 32); subcenters K (3); inter_topk k (5);
    inter_margin m' at margin 0.2 (0.06).
    """

    def __init__(self, nOut: int, nClasses: int, margin: float = 0.2, scale: float = 30.0, subcenters: int = 3,
                 inter_topk: int = 5, inter_margin: float = 0.06, **kwargs):
        super().__init__(margin)
        self.scale = scale
        self.subcenters, self.topk, self.inter_margin = subcenters, min(inter_topk, nClasses - 1), inter_margin
        self.weight = nn.Parameter(torch.empty(nClasses * subcenters, nOut))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Returns (mean cross-entropy, top-1 accuracy in %)."""
        logits = subcenter_intertopk_logits(embeddings, self.weight, labels, self.margin, self.scale,
                                            self.subcenters, self.topk, self.inter_margin)
        return ce_and_accuracy(logits, labels)
