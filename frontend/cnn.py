"""The input modules of a frozen front-end (CNN feature encoder, positional convolution), computed faster
and in bounded memory.

Same maths as torchaudio's ``FeatureExtractor`` (conv -> norm -> GELU per block), for use when no
gradient flows into the CNN (``freeze_cnn``, a frozen front-end, extraction):

* The first block of Base-type models (one input channel, group norm with one group per channel,
  normalising each channel over time) is one batched GEMM. Its convolution is linear in the
  unfolded input windows u_t (k samples), so each channel's mean and variance over time follow
  from the windows' mean m and covariance S: mean_c = w_c·m (+ bias), var_c = w_cᵀ S w_c. The
  normalisation then folds into per-row weights and biases, w'_c = w_c γ_c / σ_c and
  b'_c = β_c − mean_c γ_c / σ_c, and the block is GELU(w' u + b'). This replaces three passes over
  its [B, 512, 3200 / s] output (the largest tensor of the model) by one. The statistics are taken
  in float32 over each row's valid windows, so a padded batch equals its rows computed alone.
* GELU is applied in place; rows go through the CNN in groups of at most ``chunk_samples``
  samples, so its transient memory (the first block's output is 512 values per 5 samples) does
  not grow with the batch; only the features, [B, T, 512] at 50 frames/s, are kept.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn


def valid_frames(blocks, lengths: torch.Tensor) -> torch.Tensor:
    """Frames of each row after the conv ``blocks`` (torchaudio's count, per block floor((n - k) / s) + 1,
    at least 0)."""
    for block in blocks:
        lengths = torch.clamp(torch.div(lengths - block.kernel_size, block.stride, rounding_mode="floor") + 1, min=0)
    return lengths


def foldable(block: nn.Module) -> bool:
    """Whether ``block`` is a one-channel convolution followed by a per-channel group norm."""
    norm = block.layer_norm
    return (isinstance(norm, nn.GroupNorm) and block.conv.in_channels == 1 and block.conv.groups == 1
            and norm.num_groups == block.conv.out_channels and norm.affine)


def conv_group_norm_gelu(block: nn.Module, wav: torch.Tensor, frames: Optional[torch.Tensor],
                         time_major: bool = False) -> torch.Tensor:
    """GELU(GroupNorm(Conv1d(wav))) of a :func:`foldable` block as one GEMM (module docstring).

    Args:
        wav: [B, N] waveforms; frames: [B] valid output frames per row (None: all).
        time_major: return [B, T, C] instead of [B, C, T].
    Returns:
        [B, C, T] (or [B, T, C]); frames past a row's valid count hold values computed from padding.
    """
    conv, norm = block.conv, block.layer_norm
    windows = wav.unfold(-1, block.kernel_size, block.stride)  # [B, T, k], a view
    with torch.autocast(wav.device.type, enabled=False):
        u = windows.float()
        if frames is None:
            count = torch.full((u.shape[0], 1), float(u.shape[1]), device=u.device)
            mean_u = u.mean(1)  # [B, k]
            centred = u - mean_u[:, None]
        else:
            mask = (torch.arange(u.shape[1], device=u.device)[None] < frames[:, None].to(u.device))[..., None]
            count = frames.to(u.device, torch.float32).clamp(min=1)[:, None]
            mean_u = (u * mask).sum(1) / count
            centred = (u - mean_u[:, None]) * mask
        cov = centred.transpose(1, 2) @ centred / count[..., None]  # [B, k, k]
        w = conv.weight.float().flatten(1)  # [C, k]
        mean = mean_u @ w.T  # [B, C]
        var = ((w @ cov) * w).sum(-1).clamp(min=0)  # [B, C]
        if conv.bias is not None:
            mean = mean + conv.bias.float()
        scale = norm.weight.float() * torch.rsqrt(var + norm.eps)  # [B, C]
        weight = w * scale[..., None]  # [B, C, k]
        bias = norm.bias.float() - mean * scale + (0.0 if conv.bias is None else conv.bias.float() * scale)
    dtype = torch.get_autocast_dtype(wav.device.type) if torch.is_autocast_enabled(wav.device.type) else wav.dtype
    # the bias as one more input column of ones: the output is written once, by the GEMM
    ones = torch.ones(windows.shape[0], windows.shape[1], 1, dtype=dtype, device=wav.device)
    inputs = torch.cat([windows.to(dtype), ones], dim=-1)  # [B, T, k + 1]
    weight = torch.cat([weight, bias[..., None]], dim=-1).to(dtype)  # [B, C, k + 1]
    out = torch.bmm(inputs, weight.transpose(1, 2)) if time_major else torch.bmm(weight, inputs.transpose(1, 2))
    return torch.ops.aten.gelu_(out)


def _channels_last(wav: torch.Tensor, blocks) -> bool:
    """Whether to run the blocks time-major (channels last): measured faster for bfloat16 convolutions on
    CPU (oneDNN), slower for float32; only where the norms are layer norms over channels (or none)."""
    reduced = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    return (wav.device.type == "cpu" and (reduced or wav.dtype == torch.bfloat16)
            and all(b.layer_norm is None or isinstance(b.layer_norm, nn.LayerNorm) for b in blocks))


def _blocks_time_major(x: torch.Tensor, blocks) -> torch.Tensor:
    """[B, T, C] through the conv blocks as 2-D convolutions on channels-last [B, C, 1, T] views."""
    for block in blocks:
        conv = block.conv
        y = x.transpose(1, 2).unsqueeze(2)  # [B, C, 1, T], channels-last strides
        y = F.conv2d(y, conv.weight.unsqueeze(2), conv.bias, stride=(1, conv.stride[0]))
        x = y.squeeze(2).transpose(1, 2)  # [B, T, C]
        if block.layer_norm is not None:
            norm = block.layer_norm
            x = F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
        x = torch.ops.aten.gelu_(x)
    return x


def frozen_cnn(extractor: nn.Module, wav: torch.Tensor, lengths: Optional[torch.Tensor],
               chunk_samples: int) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """torchaudio ``FeatureExtractor`` output without gradients: features [B, T, C] and the valid frames
    per row (None without ``lengths``), in groups of rows of at most ``chunk_samples`` samples."""
    blocks = list(extractor.conv_layers)
    fold = foldable(blocks[0])
    time_major = _channels_last(wav, blocks[1:] if fold else blocks)
    rows = max(1, chunk_samples // max(1, wav.shape[1]))
    parts = []
    for start in range(0, wav.shape[0], rows):
        part = wav[start:start + rows]
        if fold:
            first = None if lengths is None else valid_frames(blocks[:1], lengths[start:start + rows])
            x = conv_group_norm_gelu(blocks[0], part, first, time_major=time_major)
            rest = blocks[1:]
        else:
            x, rest = (part.unsqueeze(-1) if time_major else part.unsqueeze(1)), blocks
        if time_major:
            parts.append(_blocks_time_major(x, rest))
            continue
        for block in rest:
            x = block.conv(x)
            if block.layer_norm is not None:
                x = block.layer_norm(x)
            x = torch.ops.aten.gelu_(x)
        parts.append(x.transpose(1, 2))
    features = parts[0] if len(parts) == 1 else torch.cat(parts)
    return features, None if lengths is None else valid_frames(blocks, lengths)


def positional_conv_fft(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """torchaudio's ``ConvolutionalPositionalEmbedding`` (grouped convolution over time, kernel K, padding
    K // 2, the last frame dropped for even K, then GELU) of x [B, T, D], without gradients, through the
    FFT: per frequency, each group's channel mixing is a small matrix product, about 1/20 of the direct
    convolution's FLOPs for WavLM Base (K = 128, 16 groups of 48). Computed in float32.

    out[b, c, t] = bias[c] + Σ_{i in group(c)} Σ_j W[c, i, j] x[b, i, t + j - K // 2], t < T: the linear
    convolution of x with the reversed kernel, read from index t + K - 1 - K // 2.
    """
    conv = module.conv
    groups, kernel, pad = conv.groups, conv.kernel_size[0], conv.padding[0]
    batch, frames, dim = x.shape
    size = frames + kernel - 1
    n = 1 << (size - 1).bit_length()  # power of two >= the full convolution's length
    with torch.autocast(x.device.type, enabled=False):
        # the kernel's transform, remade for a new length or changed weights (weight norm's parameters)
        key = (n, x.device, tuple((p.data_ptr(), p._version) for p in conv.parameters()))
        cache = getattr(module, "_fft_cache", None)
        if cache is None or cache[0] != key:
            with torch.inference_mode(False), torch.no_grad():
                w = torch.fft.rfft(conv.weight.float().flip(-1), n=n)  # [D, D / G, F] (weight norm applied)
                per = dim // groups
                w = w.view(groups, per, per, -1).permute(3, 0, 1, 2).contiguous()  # [F, G, out, in]
            cache = (key, w)
            module._fft_cache = cache
        w = cache[1]
        xf = torch.fft.rfft(x.float().transpose(1, 2), n=n)  # [B, D, F]
        xf = xf.view(batch, groups, dim // groups, -1).permute(3, 1, 2, 0)  # [F, G, in, B]
        yf = torch.matmul(w, xf)  # [F, G, out, B]
        y = torch.fft.irfft(yf.permute(3, 1, 2, 0).reshape(batch, dim, -1), n=n)  # [B, D, n]
        start = kernel - 1 - pad
        y = y[:, :, start:start + frames]
        if conv.bias is not None:
            y = y + conv.bias.float()[None, :, None]
        y = torch.nn.functional.gelu(y)
    return y.transpose(1, 2).to(x.dtype)
