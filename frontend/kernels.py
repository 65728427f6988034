"""The fast kernels of the SSL front-end: named implementations of what torchaudio's modules compute, used when
``frontend_kernels`` is ``auto`` (``reference`` runs torchaudio's modules as they are, see
``frontend/ssl_frontend.py``). Each is tested against that reference path (``tests/frontend/test_kernels.py``).

* :func:`frozen_cnn`, the CNN feature encoder without gradients (``freeze_cnn``, a frozen front-end, extraction),
  in bounded memory. Same maths as torchaudio's ``FeatureExtractor`` (conv -> norm -> GELU per block):

  - the folded first block (:func:`conv_group_norm_gelu`): the first block of Base-type models (one input
    channel, group norm with one group per channel, normalising each channel over time) is one batched GEMM.
    Its convolution is linear in the unfolded input windows u_t (k samples), so each channel's mean and variance
    over time follow from the windows' mean m and covariance S: mean_c = w_c·m (+ bias), var_c = w_cᵀ S w_c.
    The normalisation then folds into per-row weights and biases, w'_c = w_c γ_c / σ_c and
    b'_c = β_c − mean_c γ_c / σ_c, and the block is GELU(w' u + b'). This replaces three passes over its
    [B, 512, 3200 / s] output (the largest tensor of the model) by one. The statistics are taken in float32
    over each row's valid windows, so a padded batch equals its rows computed alone;
  - the CNN as GEMMs (:func:`_cnn_gemm`, CPU): the other blocks run time-major, each convolution as one or two
    GEMMs that read its input in place (taps taken ``stride`` at a time are contiguous rows), the whole batch in
    one product: 15-20 % faster than oneDNN's convolutions in float32 here, and faster in bfloat16;
  - GELU in place; rows go through the CNN in groups of at most ``chunk_samples`` samples, so its transient
    memory (the first block's output is 512 values per 5 samples) does not grow with the batch; only the
    features, [B, T, 512] at 50 frames/s, are kept.
* :func:`positional_conv_fft`, the positional convolution without gradients through the FFT.
* :func:`masked_cnn`, the CNN of a padded batch in one pass, group norms over each row's valid frames (masked
  statistics): traceable, what the export runs (the reference runs such rows one at a time).
* :class:`DerivedWeights`, the one place that makes and invalidates weights derived from the parameters (the
  GEMM layout of the convolutions, the kernel's transform, the reduced-precision copies of the frozen blocks'
  matmul weights under autocast).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Hashable, Iterable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from frontend.frames import masked_norm, min_samples, pad_mask, valid_frames


class DerivedWeights:
    """Tensors derived from parameters (a cast copy, a rearrangement, a transform), each kept under a name and
    remade when it is stale: when one of its parameters changed in place (an optimizer step, a model file loaded
    with ``load_state_dict``: the tensor's version counter), was replaced or moved (its storage), or when the
    rest of its key (dtype, device, length) differs. One per front-end; the entries are made outside inference
    mode and autograd, so they can be reused by any later call."""

    def __init__(self) -> None:
        self._entries: Dict[str, Tuple[Hashable, Any]] = {}

    @staticmethod
    def key(params: Iterable[torch.Tensor], extra: Hashable = None) -> Hashable:
        return extra, tuple((p.data_ptr(), p._version) for p in params)

    def get(self, name: str, params: Iterable[torch.Tensor], extra: Hashable, make: Callable[[], Any]) -> Any:
        """The entry ``name``, made by ``make()`` unless it exists with the same key (``params``' storages and
        versions, ``extra``)."""
        key = self.key(params, extra)
        entry = self._entries.get(name)
        if entry is None or entry[0] != key:
            with torch.inference_mode(False), torch.no_grad():
                entry = self._entries[name] = (key, make())
        return entry[1]

    def peek(self, name: str) -> Any:
        """The entry ``name`` as it is kept (None: not made yet), without checking it."""
        entry = self._entries.get(name)
        return None if entry is None else entry[1]

    def clear(self) -> None:
        """Drop every entry (they are remade when next asked for)."""
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


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
            mask = (~pad_mask(frames.to(u.device), u.shape[1]))[..., None]
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


def _tap_major(conv: nn.Module, dtype: torch.dtype, derived: DerivedWeights, name: str) -> torch.Tensor:
    """conv.weight [out, in, k] as [(tap, in), out] in ``dtype`` (kept in ``derived`` as ``name``)."""
    return derived.get(name, [conv.weight], dtype, lambda: conv.weight.detach().to(dtype).permute(2, 1, 0).reshape(
        -1, conv.out_channels))


def _conv_rows(x: torch.Tensor, conv: nn.Module, dtype: torch.dtype, weight: torch.Tensor) -> torch.Tensor:
    """A strided convolution of the time-major rows x [R, C], where every sequence's length (rows) is a
    multiple of the stride s, as GEMMs that read x in place: out[r] = b + sum_j x[s r + j] W_j, the taps
    j taken s at a time, each group a [R, s C] view of x with row stride s C. The last rows of the
    buffer skip the taps that would read past its end; those outputs lie past every sequence's valid
    frames, as do the outputs that read across into the next sequence. ``weight``: :func:`_tap_major` of
    ``conv``. Returns [R / s, C_out]."""
    kernel, stride = conv.kernel_size[0], conv.stride[0]
    channels = x.shape[1]
    rows = x.shape[0] // stride
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


def _cnn_gemm(blocks, wav: torch.Tensor, lengths: Optional[torch.Tensor], derived: DerivedWeights) -> torch.Tensor:
    """The CNN of :func:`frozen_cnn` on CPU, time-major, every convolution as GEMMs on views of its input
    (:func:`_conv_rows`; no unfolded copies, and the batch in one product): each row is padded so that
    its first block's frames are a multiple of the product of the later strides, then the blocks run
    on the flattened [B T, C] rows. Returns [B, T', C], T' >= the batch's frames T (the frames past T
    are padding), in the autocast type under CPU autocast."""
    first, rest, offset = blocks[0], blocks[1:], 1
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
        rest, offset = blocks, 0
        x = wav[:, :row].to(dtype).reshape(-1, 1)  # [B N, 1]: one channel
    with torch.autocast("cpu", enabled=False):
        for index, block in enumerate(rest, start=offset):
            x = _conv_rows(x, block.conv, dtype, _tap_major(block.conv, dtype, derived, f"cnn.{index}.tap_major"))
            if block.layer_norm is not None:
                norm = block.layer_norm
                x = F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
            x = torch.ops.aten.gelu_(x)
    return x.view(wav.shape[0], -1, x.shape[-1])  # [B, padded / multiple, C]; the frames past T are padding


def frozen_cnn(extractor: nn.Module, wav: torch.Tensor, lengths: Optional[torch.Tensor],
               chunk_samples: int, gemm: Optional[bool] = None, derived: Optional[DerivedWeights] = None
               ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """torchaudio ``FeatureExtractor`` output without gradients: features [B, T, C] and the valid frames
    per row (None without ``lengths``), in groups of rows of at most ``chunk_samples`` samples.

    ``gemm``: the convolutions as GEMMs on time-major rows (:func:`_cnn_gemm`; measured faster on CPU
    in float32 and bfloat16) or the modules' own (cuDNN on CUDA); None: GEMMs on CPU where the blocks
    allow (:func:`_gemm_ready`). ``derived``: where the GEMM layouts of the weights are kept (None: made for
    this call only)."""
    derived = DerivedWeights() if derived is None else derived
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
            parts.append(_cnn_gemm(blocks, part, part_lengths, derived)[:, :total])
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


def positional_conv_fft(module: nn.Module, x: torch.Tensor, derived: Optional[DerivedWeights] = None) -> torch.Tensor:
    """torchaudio's ``ConvolutionalPositionalEmbedding`` (grouped convolution over time, kernel K, padding
    K // 2, the last frame dropped for even K, then GELU) of x [B, T, D], without gradients, through the
    FFT: per frequency, each group's channel mixing is a small matrix product, about 1/20 of the direct
    convolution's FLOPs for WavLM Base (K = 128, 16 groups of 48). Computed in float32.

    out[b, c, t] = bias[c] + Σ_{i in group(c)} Σ_j W[c, i, j] x[b, i, t + j - K // 2], t < T: the linear
    convolution of x with the reversed kernel, read from index t + K - 1 - K // 2. ``derived``: where the
    kernel's transform is kept (None: made for this call only).
    """
    derived = DerivedWeights() if derived is None else derived
    conv = module.conv
    groups, kernel, pad = conv.groups, conv.kernel_size[0], conv.padding[0]
    batch, frames, dim = x.shape
    size = frames + kernel - 1
    n = 1 << (size - 1).bit_length()  # power of two >= the full convolution's length
    with torch.autocast(x.device.type, enabled=False):
        def transform() -> torch.Tensor:  # [F, G, out, in]: the kernel's transform (weight norm applied)
            w = torch.fft.rfft(conv.weight.float().flip(-1), n=n)  # [D, D / G, F]
            per = dim // groups
            return w.view(groups, per, per, -1).permute(3, 0, 1, 2).contiguous()

        w = derived.get("positional_fft", list(conv.parameters()), (n, x.device), transform)
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


def masked_cnn(blocks, wav: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """torchaudio's CNN (``FeatureExtractor``) of a padded batch wav [B, N] in one pass, the group norms taking
    each channel's statistics over the row's valid frames only (what the row alone gives), in tensor operations
    only (traceable with dynamic batch and length; gradients flow). Returns features [B, T, C] with all the
    batch's T frames (those past a row's valid ones hold values computed from padding) and the valid frames [B]."""
    for block in blocks:
        norm = block.layer_norm
        if isinstance(norm, nn.GroupNorm) and norm.num_groups != norm.num_channels:
            raise ValueError(f"masked_cnn takes group norms of one group per channel (WavLM / HuBERT), not "
                             f"{norm.num_groups} groups of {norm.num_channels} channels.")
    x, frames = wav[:, None, :], lengths  # [B, 1, N]
    for block in blocks:
        x = block.conv(x)  # [B, C, T]
        frames = valid_frames([block], frames)
        norm = block.layer_norm
        if isinstance(norm, nn.GroupNorm):  # each channel over time: over the row's valid frames
            valid = (~pad_mask(frames, x.shape[2]))[:, None, :].to(x.dtype)
            x = masked_norm(x, valid, frames[:, None, None].to(x.dtype).clamp(min=1), 2, norm.eps)
            if norm.affine:
                x = x * norm.weight[:, None] + norm.bias[:, None]
        elif norm is not None:
            x = norm(x)
        x = F.gelu(x)
    return x.transpose(1, 2), frames
