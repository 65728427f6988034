"""SSL front-end + CA-MHFA back-end: context-aware multi-head factorized attentive pooling
(Peng et al., ICASSP 2025, arXiv 2409.15234).

The keys K' and values V' [B, T, c] are MHFA's (two softmax-weighted layer sums, each compressed).
Each of G groups has L learnable queries q_{g,-R..R} (L odd, R = (L-1)/2) that look at the L frames
around t; the logit of group g at frame t is

    a_{g,t} = s * sum_{j=-R..R} q_{g,j} . K'_{t+j}        (K' = 0 beyond the utterance)

with s = 1 (``context_average`` false, the default: the first author's code) or s = 1/L (true: the
paper's equation), i.e. a 1-D convolution over time with c input channels, G output channels and
kernel L, without bias. Softmax over time per group, attentive pooling of V' per group,
concatenation, a linear projection to the embedding. L = 1 is MHFA's attention without its bias;
keys and values are shared across groups. Padded frames of a batch are zero keys for their
neighbours (as beyond the utterance) and get no attention, so a padded batch gives the embeddings of
its rows one by one.

The first author's code (Wespeaker_SSL, ``MHFA_Group_Conv2D``, pooling ``G_MHFA_Conv2D``) computes the
same logits with ``Conv2d(1, group, (head_nb // group + 1, c), padding=((head_nb // group) // 2, 0),
bias=False)`` over the compressed keys: its ``group`` is our G (``head_nb``), its
``head_nb // group + 1`` our L (``context``), its weight [G, 1, L, c] our ``att_conv.weight`` [G, c, L]
transposed, and it has no 1/L. His configuration (head_nb 256, group 64) is our default: G = 64, L = 5.
"""
from __future__ import annotations

import logging
from typing import Any, Optional

import torch
from torch import nn

from core.errors import ConfigError
from models.MHFA import MHFA, SpeakerEncoder, build_frontend

logger = logging.getLogger(__name__)


class CAMHFA(MHFA):
    """Context-aware MHFA: ``head_nb`` groups G of ``context`` queries L each (see the module doc).
    Parameter names are MHFA's, with ``att_conv`` [G, c, L] instead of ``att_head``."""

    def __init__(self, num_layers: int, inputs_dim: int, head_nb: int = 64, compression_dim: int = 128,
                 outputs_dim: int = 256, context: int = 5, context_average: bool = False):
        if context < 1 or context % 2 == 0:
            raise ConfigError(f"'context' (CA-MHFA) must be a positive odd number of frames, got {context}.")
        super().__init__(num_layers, inputs_dim, head_nb, compression_dim, outputs_dim)
        del self.att_head
        self.context = context
        self.logit_scale = 1.0 / context if context_average else 1.0
        self.att_conv = nn.Conv1d(compression_dim, head_nb, kernel_size=context, padding=context // 2, bias=False)

    def attention_logits(self, k: torch.Tensor, pad: Optional[torch.Tensor]) -> torch.Tensor:
        """k [B, T, c] -> logits [B, T, G]; padded frames of k are zeroed first (no context from them)."""
        if pad is not None:
            k = k.masked_fill(pad[..., None], 0.0)
        logits = self.att_conv(k.transpose(1, 2)).transpose(1, 2)
        return logits if self.logit_scale == 1.0 else logits * self.logit_scale


def MainModel(pretrained_model_path: str, nOut: int = 256, head_nb: Optional[int] = None, compression_dim: int = 128,
              context: int = 5, context_average: bool = False, **options: Any) -> SpeakerEncoder:
    """Build the SSL + CA-MHFA speaker encoder from a pre-trained checkpoint (front-end options as for MHFA).
    ``head_nb`` None (not set): :data:`MainModel.option_defaults` (64 groups, the first author's)."""
    head_nb = MainModel.option_defaults["head_nb"] if head_nb is None else head_nb
    frontend = build_frontend(pretrained_model_path, **options)
    backend = CAMHFA(frontend.num_layers, frontend.hidden_size, head_nb=head_nb, compression_dim=compression_dim,
                     outputs_dim=nOut, context=context, context_average=context_average)
    logger.info("CA-MHFA back-end: %d layer weights, %d groups of %d queries, compression %d, embedding %d, "
                "logit factor %s", frontend.num_layers, head_nb, context, compression_dim, nOut,
                f"1/{context}" if context_average else "1")
    return SpeakerEncoder(frontend, backend)


# This model's values of the shared model options left unset (None): model_files.model_file_fields records them.
MainModel.option_defaults = {"head_nb": 64}  # type: ignore[attr-defined]
