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
* On CPU the other blocks run time-major, each convolution as one or two GEMMs that read its input in
  place (taps taken ``stride`` at a time are contiguous rows), the whole batch in one product:
  15-20 % faster than oneDNN's convolutions in float32 here, and faster in bfloat16.
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


def _gemm_ready(blocks) -> bool:
    """Whether :func:`_cnn_gemm` handles these blocks: plain convolutions (no padding, dilation or groups)
    whose norms, after a :func:`foldable` first block, are layer norms over channels or none."""
    rest = blocks[1:] if foldable(blocks[0]) else blocks
    return (all(b.conv.groups == 1 and b.conv.padding == (0,) and b.conv.dilation == (1,) for b in blocks)
            and all(b.layer_norm is None or isinstance(b.layer_norm, nn.LayerNorm) for b in rest))


def _tap_major(conv: nn.Module, dtype: torch.dtype) -> torch.Tensor:
    """conv.weight [out, in, k] as [(tap, in), out] in ``dtype``, kept on the module and remade when
    the weight changes (a model file loaded)."""
    key = (dtype, conv.weight.data_ptr(), conv.weight._version)
    cache = getattr(conv, "_tap_major", None)
    if cache is None or cache[0] != key:
        with torch.inference_mode(False), torch.no_grad():
            weight = conv.weight.detach().to(dtype).permute(2, 1, 0).reshape(-1, conv.out_channels)
        cache = conv._tap_major = (key, weight)
    return cache[1]


def _conv_rows(x: torch.Tensor, conv: nn.Module, dtype: torch.dtype) -> torch.Tensor:
    """A strided convolution of the time-major rows x [R, C], where every sequence's length (rows) is a
    multiple of the stride s, as GEMMs that read x in place: out[r] = b + sum_j x[s r + j] W_j, the taps
    j taken s at a time, each group a [R, s C] view of x with row stride s C. The last rows of the
    buffer skip the taps that would read past its end; those outputs lie past every sequence's valid
    frames, as do the outputs that read across into the next sequence. Returns [R / s, C_out]."""
    kernel, stride = conv.kernel_size[0], conv.stride[0]
    channels = x.shape[1]
    rows = x.shape[0] // stride
    weight = _tap_major(conv, dtype)
    out = None
    for first in range(0, kernel, stride):
        taps = min(stride, kernel - first)
        count = rows - -(-(first + taps - stride) // stride) if first + taps > stride else rows
        view = x.as_strided((count, taps * channels), (stride * channels, 1), x.storage_offset() + first * channels)
        w = weight[first * channels:(first + taps) * channels]
        if out is None:
            out = torch.mm(view, w) if conv.bias is None else torch.addmm(conv.bias.to(dtype), view, w)
        else:
            out[:count].addmm_(view, w)
    return out


def _cnn_gemm(blocks, wav: torch.Tensor, lengths: Optional[torch.Tensor]) -> torch.Tensor:
    """The CNN of :func:`frozen_cnn` on CPU, time-major, every convolution as GEMMs on views of its input
    (:func:`_conv_rows`; no unfolded copies, and the batch in one product): each row is padded so that
    its first block's frames are a multiple of the product of the later strides, then the blocks run
    on the flattened [B T, C] rows. Returns [B, T', C], T' >= the batch's frames T (the frames past T
    are padding), in the autocast type under CPU autocast."""
    first, rest = blocks[0], blocks[1:]
    frames = int(valid_frames(blocks[:1], torch.tensor(wav.shape[1])))
    multiple = 1
    for block in rest:
        multiple *= block.conv.stride[0]
    padded = -(-frames // multiple) * multiple
    samples = (padded - 1) * first.conv.stride[0] + first.conv.kernel_size[0]
    dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else wav.dtype
    row = padded * first.conv.stride[0]  # samples per row of the flattened first convolution (no fold)
    wav = F.pad(wav, (0, max(samples, row) - wav.shape[1]))  # zeros after the last sample (or cut unused ones)
    if foldable(first):
        valid = valid_frames(blocks[:1], lengths) if lengths is not None else torch.full((wav.shape[0],), frames)
        x = conv_group_norm_gelu(first, wav[:, :samples], valid, time_major=True).reshape(-1, first.conv.out_channels)
    else:
        rest = blocks
        x = wav[:, :row].to(dtype).reshape(-1, 1)  # [B N, 1]: one channel
    with torch.autocast("cpu", enabled=False):
        for block in rest:
            x = _conv_rows(x, block.conv, dtype)
            if block.layer_norm is not None:
                norm = block.layer_norm
                x = F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
            x = torch.ops.aten.gelu_(x)
    return x.view(wav.shape[0], -1, x.shape[-1])  # [B, padded / multiple, C]; the frames past T are padding


def min_samples(blocks) -> int:
    """The fewest samples from which the CNN ``blocks`` (torchaudio ``ConvLayerBlock``s, each with ``kernel_size``
    and ``stride``) make one frame: 400 (25 ms at 16 kHz) for the CNN of WavLM, HuBERT and wav2vec 2.0."""
    need = 1
    for block in reversed(list(blocks)):
        need = (need - 1) * block.stride + block.kernel_size
    return need


def frozen_cnn(extractor: nn.Module, wav: torch.Tensor, lengths: Optional[torch.Tensor],
               chunk_samples: int, gemm: Optional[bool] = None) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """torchaudio ``FeatureExtractor`` output without gradients: features [B, T, C] and the valid frames
    per row (None without ``lengths``), in groups of rows of at most ``chunk_samples`` samples.

    ``gemm``: the convolutions as GEMMs on time-major rows (:func:`_cnn_gemm`; measured faster on CPU
    in float32 and bfloat16) or the modules' own (cuDNN on CUDA); None: GEMMs on CPU where the blocks
    allow (:func:`_gemm_ready`)."""
    blocks = list(extractor.conv_layers)
    shortest = int(wav.shape[1]) if lengths is None or lengths.numel() == 0 else int(lengths.min())
    if int(valid_frames(blocks, torch.tensor(shortest))) < 1:
        need = min_samples(blocks)
        raise ValueError(f"A waveform of {shortest} samples is shorter than one frame of the front-end's CNN "
                         f"({need} samples, {need / 16:g} ms at 16 kHz): give it at least {need} samples.")
    fold = foldable(blocks[0])
    if gemm is None:
        gemm = wav.device.type == "cpu"
    gemm = gemm and _gemm_ready(blocks)
    rows = max(1, chunk_samples // max(1, wav.shape[1]))
    total = int(valid_frames(blocks, torch.tensor(wav.shape[1])))
    parts = []
    for start in range(0, wav.shape[0], rows):
        part = wav[start:start + rows]
        part_lengths = None if lengths is None else lengths[start:start + rows]
        if gemm:
            parts.append(_cnn_gemm(blocks, part, part_lengths)[:, :total])
            continue
        if fold:
            first = None if part_lengths is None else valid_frames(blocks[:1], part_lengths)
            x = conv_group_norm_gelu(blocks[0], part, first)
            rest = blocks[1:]
        else:
            x, rest = part.unsqueeze(1), blocks
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
