"""TorchScript and ONNX export of a speaker encoder: waveform [B, N] + lengths [B] -> embedding [B, nOut].

The exported model computes ``SpeakerEncoder.forward(wav, lengths)``, what the evaluation runs on a padded
batch: the whole-file embedding (before L2 normalisation) of each row's first ``lengths[b]`` samples, so
a row padded with anything gets the embedding of its unpadded samples. Input: 16 kHz mono float32
waveforms as read from files (samples in [-1, 1], not normalised by the caller: a model trained with
``normalize_input`` normalises each row over its valid samples inside the graph); every row at least
400 samples (one CNN frame). Dynamic batch and length. The evaluation's protocol around it (the
``num_eval`` crops, the ``max_eval_seconds`` cap, cosine scoring) is the caller's.

:class:`ExportableEncoder` runs the encoder's own torchaudio modules and back-end, in eval mode (no
dropout, no LayerDrop), through the front-end's own traceable functions (``frontend/frames.py``,
``frontend/ssl_frontend.py``, ``frontend/kernels.py``), no copy of them:

* padded rows through a group-norm CNN (Base-type models; the first block normalises each channel over
  time): :func:`frontend.kernels.masked_cnn`, each row's mean and variance over its valid frames only
  (masked statistics; the reference path runs such rows one at a time: the same numbers);
* the batch keeps its full frame count (the front-end cuts it to the longest row's, a Python number);
  frames past a row's length are masked as there (:func:`frontend.frames.pad_mask`: zeroed before the
  positional convolution, attention masks, masked MHFA pooling);
* ``normalize_input``: :func:`frontend.frames.normalise_rows`, as the front-end;
* layer 0 by :func:`frontend.ssl_frontend.transformer_input`, the blocks by
  :func:`frontend.ssl_frontend.run_block`;

and the weight-normed positional convolution by torchaudio's own ``forward`` on a plain convolution of the same
effective weight (:class:`PlainPositional`; tracing cannot take parametrizations). ``torch.jit.trace`` and the
TorchScript-based ONNX exporter are deprecated in
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
from torch import nn

from core.errors import ConfigError, OutputError
from core.files import atomic_path
from frontend.frames import attention_masks, normalise_rows, pad_mask
from frontend.kernels import masked_cnn
from frontend.ssl_frontend import SSLFrontend, run_block, transformer_input

Runner = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (wav [B, N] float32, lengths [B] int64) -> [B, D]
TRACE_LENGTHS = (16000, 12345)  # the example batch traced: two rows of different lengths (padding is traced)


def plain_conv(conv: nn.Conv1d) -> nn.Conv1d:
    """A copy of ``conv`` whose weight is a plain tensor (a weight-norm parametrization folded in)."""
    plain = nn.Conv1d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                      padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None)
    with torch.no_grad():
        plain.weight.copy_(conv.weight)
        if conv.bias is not None:
            plain.bias.copy_(conv.bias)
    return plain.to(conv.bias.device if conv.bias is not None else conv.weight.device)


class PlainPositional(nn.Module):
    """torchaudio's ``ConvolutionalPositionalEmbedding`` (its own ``forward``, not a copy) on :func:`plain_conv`
    of its convolution."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.conv = plain_conv(module.conv)
        self.num_remove = module.num_remove
        self._forward = type(module).forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(self, x)


class ExportableEncoder(nn.Module):
    """``encoder(wav, lengths)`` of a :class:`models.MHFA.SpeakerEncoder` (MHFA, CA-MHFA) in a form that
    traces with dynamic batch and length (module docstring). It shares the encoder's modules and puts them
    in eval mode, without gradients."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        frontend = encoder.frontend
        if not isinstance(frontend, SSLFrontend):
            raise ConfigError(f"Export (tools.export) traces the torchaudio front-ends (WavLM, HuBERT, wav2vec 2.0) "
                              f"only; this model's front-end is a {type(frontend).__name__} (w2v-BERT 2.0: "
                              f"transformers' conformer on fbank features made per row), which has no traceable "
                              f"path yet. Embed with inference.load_model or trainSpeakerNet_Eval.py instead.")
        model, transformer = frontend.model, frontend.model.encoder.transformer
        for block in model.feature_extractor.conv_layers:
            norm = block.layer_norm
            if isinstance(norm, nn.GroupNorm) and norm.num_groups != norm.num_channels:
                raise ConfigError(f"Cannot export a CNN whose group norm has {norm.num_groups} groups for "
                                  f"{norm.num_channels} channels (only one group per channel, as WavLM/HuBERT).")
        self.normalize_input = frontend.normalize_input
        self.wavlm = frontend.family == "wavlm"
        self.model = model
        self.positional = PlainPositional(transformer.pos_conv_embed)
        self.backend = encoder.backend
        self.eval().requires_grad_(False)

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """wav [B, N] float32 (rows padded after their length), lengths [B] int64 -> embeddings [B, nOut]."""
        if self.normalize_input:
            wav = normalise_rows(wav, lengths)
        features, frames = masked_cnn(self.model.feature_extractor.conv_layers, wav, lengths)  # [B, T, C]
        pad = pad_mask(frames, features.shape[1])  # [B, T]
        x = transformer_input(self.model, features, pad, self.positional)  # [B, T, D]
        attention_mask, key_padding_mask = attention_masks(pad, x.dtype, self.wavlm)
        layers: List[torch.Tensor] = [x]
        position_bias: Optional[torch.Tensor] = None
        for layer in self.model.encoder.transformer.layers:
            x, position_bias = run_block(layer, x, attention_mask, position_bias, key_padding_mask)
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
