"""TorchScript and ONNX export of a speaker encoder: waveform [B, N] + lengths [B] -> embedding [B, nOut].

The exported model computes ``SpeakerEncoder.forward(wav, lengths)``, what the evaluation runs on a padded
batch: the whole-file embedding (before L2 normalisation) of each row's first ``lengths[b]`` samples, so
a row padded with anything gets the embedding of its unpadded samples. Input: 16 kHz mono float32
waveforms as read from files (samples in [-1, 1], not normalised by the caller: a model trained with
``normalize_input`` normalises each row over its valid samples inside the graph); every row at least
400 samples (one CNN frame). Dynamic batch and length. The evaluation's protocol around it (the
``num_eval`` crops, the ``max_eval_seconds`` cap, cosine scoring) is the caller's.

:class:`ExportableEncoder` runs the encoder's own torchaudio modules and back-end, in eval mode (no
dropout, no LayerDrop), with three steps written as tensor operations so that tracing keeps them general:

* padded rows through a group-norm CNN (Base-type models; the first block normalises each channel over
  time): the front-end runs such rows one at a time; here each row's mean and variance are taken over its
  valid frames only (masked statistics), which are the same numbers;
* the batch keeps its full frame count (the front-end cuts it to the longest row's, a Python number);
  frames past a row's length are masked as there (zeroed before the positional convolution, key padding
  mask in attention, masked MHFA pooling);
* ``normalize_input``: per row over its valid samples (the front-end normalises row by row);

and the weight-normed positional convolution as a plain convolution of the same effective weight (tracing
cannot take parametrizations). ``torch.jit.trace`` and the TorchScript-based ONNX exporter are deprecated in
recent PyTorch versions; they export this model with dynamic shapes in about a second. The torch.export-based
ONNX exporter (``dynamo=True``, which also needs onnxscript) exports the same module correctly too (tried: the
same 2e-7 differences), about 15 times slower on the tiny test model; it is the way once the TorchScript
exporter is removed.
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ConfigError, OutputError
from core.files import atomic_path
from frontend.ssl_frontend import attention_masks

Runner = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (wav [B, N] float32, lengths [B] int64) -> [B, D]
TRACE_LENGTHS = (16000, 12345)  # the example batch traced: two rows of different lengths (padding is traced)


def masked_norm(x: torch.Tensor, valid: torch.Tensor, count: torch.Tensor, dim: int, eps: float) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps), mean and biased variance along ``dim`` over the entries where ``valid``
    (0/1, broadcast to x) is 1; ``count``: their number (broadcast to the reduced shape)."""
    mean = (x * valid).sum(dim, keepdim=True) / count
    var = (((x - mean) * valid) ** 2).sum(dim, keepdim=True) / count
    return (x - mean) / torch.sqrt(var + eps)


def plain_conv(conv: nn.Conv1d) -> nn.Conv1d:
    """A copy of ``conv`` whose weight is a plain tensor (a weight-norm parametrization folded in)."""
    plain = nn.Conv1d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                      padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None)
    with torch.no_grad():
        plain.weight.copy_(conv.weight)
        if conv.bias is not None:
            plain.bias.copy_(conv.bias)
    return plain.to(conv.bias.device if conv.bias is not None else conv.weight.device)


class ExportableEncoder(nn.Module):
    """``encoder(wav, lengths)`` of a :class:`models.MHFA.SpeakerEncoder` (MHFA, CA-MHFA) in a form that
    traces with dynamic batch and length (module docstring). It shares the encoder's modules and puts them
    in eval mode, without gradients."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        frontend = encoder.frontend
        model, transformer = frontend.model, frontend.model.encoder.transformer
        for block in model.feature_extractor.conv_layers:
            norm = block.layer_norm
            if isinstance(norm, nn.GroupNorm) and norm.num_groups != norm.num_channels:
                raise ConfigError(f"Cannot export a CNN whose group norm has {norm.num_groups} groups for "
                                  f"{norm.num_channels} channels (only one group per channel, as WavLM/HuBERT).")
        self.normalize_input = frontend.normalize_input
        self.wavlm = frontend.family == "wavlm"
        self.conv_blocks = model.feature_extractor.conv_layers
        self.feature_projection = model.encoder.feature_projection
        self.pos_conv = plain_conv(transformer.pos_conv_embed.conv)
        self.pos_remove = transformer.pos_conv_embed.num_remove
        self.layer_norm, self.layer_norm_first = transformer.layer_norm, transformer.layer_norm_first
        self.layers = transformer.layers
        self.backend = encoder.backend
        self.eval().requires_grad_(False)

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """wav [B, N] float32 (rows padded after their length), lengths [B] int64 -> embeddings [B, nOut]."""
        if self.normalize_input:
            valid = (torch.arange(wav.shape[1], device=wav.device)[None, :] < lengths[:, None]).to(wav.dtype)
            wav = masked_norm(wav, valid, lengths[:, None].to(wav.dtype), 1, 1e-5) * valid
        x, frames = wav[:, None, :], lengths  # [B, 1, N]
        for block in self.conv_blocks:
            x = block.conv(x)  # [B, C, T]
            frames = torch.div(frames - block.kernel_size, block.stride, rounding_mode="floor") + 1
            norm = block.layer_norm
            if isinstance(norm, nn.GroupNorm):  # each channel over time: over the row's valid frames
                valid = (torch.arange(x.shape[2], device=x.device)[None, None, :] < frames[:, None, None]).to(x.dtype)
                x = masked_norm(x, valid, frames[:, None, None].to(x.dtype), 2, norm.eps)
                x = x * norm.weight[:, None] + norm.bias[:, None]
            elif norm is not None:
                x = norm(x)
            x = F.gelu(x)
        x = x.transpose(1, 2)  # [B, T, C]
        pad = torch.arange(x.shape[1], device=x.device)[None, :] >= frames[:, None]  # [B, T]
        x = self.feature_projection(x).masked_fill(pad[..., None], 0.0)  # [B, T, D]
        position = self.pos_conv(x.transpose(1, 2))  # [B, D, T (+1)]
        if self.pos_remove > 0:
            position = position[..., :-self.pos_remove]
        x = x + F.gelu(position).transpose(1, 2)
        if self.layer_norm_first:
            x = self.layer_norm(x)
        attention_mask, key_padding_mask = attention_masks(pad, x.dtype, self.wavlm)
        layers: List[torch.Tensor] = [x]
        position_bias: Optional[torch.Tensor] = None
        for layer in self.layers:
            x, position_bias = layer(x, attention_mask, position_bias=position_bias, key_padding_mask=key_padding_mask)
            layers.append(x)
        return self.backend(torch.stack(layers, dim=1), frames)  # [B, L+1, T, D] -> [B, nOut]


def example_inputs(device: torch.device) -> tuple:
    """The batch traced: rows of TRACE_LENGTHS samples of noise, zero-padded."""
    generator = torch.Generator().manual_seed(0)
    wav = torch.zeros(len(TRACE_LENGTHS), max(TRACE_LENGTHS))
    for row, n in enumerate(TRACE_LENGTHS):
        wav[row, :n] = 0.1 * torch.randn(n, generator=generator)
    return wav.to(device), torch.tensor(TRACE_LENGTHS, device=device)


@contextlib.contextmanager
def deprecated_exporters() -> Iterator[None]:
    """Silence the deprecation warnings of torch.jit and the TorchScript-based ONNX exporter (module doc)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        yield


def pad_batch(waves: Sequence[np.ndarray]) -> tuple:
    """(wav [B, N_max] float32 zero-padded, lengths [B] int64)."""
    lengths = np.array([len(w) for w in waves], dtype=np.int64)
    batch = np.zeros((len(waves), int(lengths.max())), dtype=np.float32)
    for row, w in enumerate(waves):
        batch[row, :len(w)] = w
    return batch, lengths


@torch.no_grad()
def largest_differences(run: Runner, encoder: nn.Module, waves: Sequence[np.ndarray]) -> Dict[str, float]:
    """Largest absolute difference between ``run`` and the PyTorch encoder, each wave alone (``single``) and
    all of them in one padded batch (``batch``); the reference is the encoder on each unpadded wave alone."""
    device = next(encoder.parameters()).device
    encoder.eval()
    want = np.concatenate([encoder(torch.from_numpy(w)[None].to(device)).float().cpu().numpy() for w in waves])
    single = max(float(np.abs(run(w[None], np.array([len(w)])) - want[i]).max()) for i, w in enumerate(waves))
    return {"single": single, "batch": float(np.abs(run(*pad_batch(waves)) - want).max())}


def torchscript_runner(path: str, device: torch.device) -> Runner:
    with deprecated_exporters():
        module = torch.jit.load(path, map_location=device)

    def run(wav: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(wav).to(device), torch.from_numpy(lengths).to(device)).cpu().numpy()
    return run


def onnx_runner(path: str) -> Runner:
    try:
        import onnxruntime  # an optional dependency: only ONNX export needs it
    except ImportError as err:
        raise ConfigError("ONNX export checks itself with onnxruntime: pip install onnx onnxruntime "
                          "(requirements.txt).") from err
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return lambda wav, lengths: session.run(None, {"wav": wav, "lengths": lengths})[0]


def export_torchscript(encoder: nn.Module, path: str) -> None:
    """Trace :class:`ExportableEncoder` of ``encoder`` on the encoder's device and save it
    (``torch.jit.load(path)(wav, lengths)``). The trace records that device (tensors made inside, e.g. the
    masks, are made there), so the file runs there: trace on the device it will run on."""
    module = ExportableEncoder(encoder)
    device = next(module.parameters()).device
    with deprecated_exporters():
        traced = torch.jit.trace(module, example_inputs(device), check_trace=False)
        torch.jit.save(traced, path)


def export_onnx(encoder: nn.Module, path: str, opset: int = 17) -> None:
    """ONNX graph of :class:`ExportableEncoder` of ``encoder``: inputs ``wav`` [batch, samples] float32 and
    ``lengths`` [batch] int64, output ``embedding`` [batch, nOut]."""
    module = ExportableEncoder(encoder)
    with deprecated_exporters():
        torch.onnx.export(module, example_inputs(next(module.parameters()).device), path,
                          input_names=["wav", "lengths"], output_names=["embedding"], opset_version=opset, dynamo=False,
                          dynamic_axes={"wav": {0: "batch", 1: "samples"}, "lengths": {0: "batch"},
                                        "embedding": {0: "batch"}})


def export_checked(kind: str, encoder: nn.Module, path: str, waves: Sequence[np.ndarray], tolerance: float,
                   opset: int = 17) -> Dict[str, float]:
    """Export ``encoder`` as ``kind`` ('torchscript' or 'onnx') to ``path``, load the written file back, compare
    it with the encoder on ``waves`` alone and as a padded batch (:func:`largest_differences`), and keep
    the file only when every difference is at most ``tolerance`` (else OutputError; ``path`` untouched)."""
    device = next(encoder.parameters()).device
    with atomic_path(path) as tmp:
        if kind == "torchscript":
            export_torchscript(encoder, tmp)
            run = torchscript_runner(tmp, device)
        elif kind == "onnx":
            export_onnx(encoder, tmp, opset)
            run = onnx_runner(tmp)
        else:
            raise ConfigError(f"Unknown export format {kind!r}: torchscript or onnx.")
        found = largest_differences(run, encoder, waves)
        if max(found.values()) > tolerance:
            raise OutputError(f"The {kind} export differs from the PyTorch model by up to {max(found.values()):.3g} "
                              f"(single inputs {found['single']:.3g}, padded batch {found['batch']:.3g}; tolerance "
                              f"{tolerance:g}); '{path}' was not written.")
    return found
