"""Frames and padding of the SSL front-end, in one place: how many CNN frames a row of samples gives, which
frames of a padded batch are padding, the attention masks of the transformer blocks for them, and the
normalisation of padded rows over their valid entries only.

Every function here is made of tensor operations only (no Python number read from a tensor), so the reference
path, the fast kernels (``frontend/kernels.py``) and the traced export (``inference/export.py``) all use them.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch


def valid_frames(blocks, lengths: torch.Tensor) -> torch.Tensor:
    """Frames of each row after the conv ``blocks`` (torchaudio ``ConvLayerBlock``s: ``kernel_size``, ``stride``):
    torchaudio's count, per block floor((n - k) / s) + 1, at least 0."""
    for block in blocks:
        lengths = torch.clamp(torch.div(lengths - block.kernel_size, block.stride, rounding_mode="floor") + 1, min=0)
    return lengths


def min_samples(blocks) -> int:
    """The fewest samples from which the CNN ``blocks`` make one frame: 400 (25 ms at 16 kHz) for the CNN of
    WavLM, HuBERT and wav2vec 2.0."""
    need = 1
    for block in reversed(list(blocks)):
        need = (need - 1) * block.stride + block.kernel_size
    return need


def pad_mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
    """[B, size] bool, True at the entries of each row past its ``lengths[b]`` valid ones (padding). ``size`` may
    be a traced tensor dimension (``x.shape[1]``)."""
    return torch.arange(size, device=lengths.device)[None, :] >= lengths[:, None]


def masked_norm(x: torch.Tensor, valid: torch.Tensor, count: torch.Tensor, dim: int, eps: float) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps), mean and biased variance along ``dim`` over the entries where ``valid``
    (0/1, broadcast to x) is 1; ``count``: their number (broadcast to the reduced shape)."""
    mean = (x * valid).sum(dim, keepdim=True) / count
    var = (((x - mean) * valid) ** 2).sum(dim, keepdim=True) / count
    return (x - mean) / torch.sqrt(var + eps)


def normalise_rows(wav: torch.Tensor, lengths: Optional[torch.Tensor]) -> torch.Tensor:
    """Each waveform [B, N] to zero mean and unit variance over its valid samples (``F.layer_norm`` of the row, eps
    1e-5: what ``normalize_input`` does); padded samples become 0."""
    if lengths is None:
        return torch.nn.functional.layer_norm(wav, wav.shape[-1:])
    valid = (~pad_mask(lengths, wav.shape[1])).to(wav.dtype)
    return masked_norm(wav, valid, lengths[:, None].to(wav.dtype).clamp(min=1), 1, 1e-5) * valid


def attention_masks(pad: torch.Tensor, dtype: torch.dtype, wavlm: bool
                    ) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """(attention_mask, key_padding_mask) of the transformer blocks for the padded frames ``pad`` [B, T]
    (True: padding): WavLM attention takes a key padding mask, additive, in the type of its position bias;
    wav2vec 2.0 / HuBERT an additive [B, 1, T, T] mask, as torchaudio's encoder makes it."""
    if wavlm:
        return None, torch.zeros(pad.shape, dtype=dtype, device=pad.device).masked_fill(pad, float("-inf"))
    frames = pad.shape[1]
    return (pad[:, None, None, :].to(dtype) * -10000.0).expand(pad.shape[0], 1, frames, frames), None
