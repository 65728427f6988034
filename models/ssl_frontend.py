"""SSL speech transformer front-end: waveform -> stacked hidden layers.

``load_ssl_frontend(path)`` reads a pre-trained checkpoint, builds torchaudio's
model from its configuration and returns an :class:`SSLFrontend` whose
``forward(wav)`` maps ``wav`` [B, N] (16 kHz, float32) to ``[B, L+1, T, D]``.

Layer order (as the official WavLM ``extract_features(..., ret_layer_results=True)``):
index 0 is the transformer input (CNN features -> layer norm -> projection, plus
the convolutional positional embedding, then the encoder layer norm for
post-norm/Base models); index l = 1..L is the output of transformer block l.
For pre-norm (Large) models the last entry is the raw output of the last block,
*without* the encoder's final layer norm, as in the official layer results.
"""
from __future__ import annotations

import logging
from typing import Dict, Iterator, List

import torch
import torch.nn.functional as F
from torch import nn
from torchaudio.models import wavlm_model

from models.checkpoints import (CheckpointError, read_wavlm_checkpoint, wavlm_cfg_to_torchaudio,
                                wavlm_state_to_torchaudio)

logger = logging.getLogger(__name__)


class SSLFrontend(nn.Module):
    """torchaudio SSL model exposing all hidden layers.

    Args:
        model: a ``torchaudio.models.Wav2Vec2Model`` (WavLM, HuBERT or wav2vec 2.0).
        normalize_input: zero-mean/unit-variance normalise each waveform first
            (the released WavLM-Large was trained this way; the original MHFA
            recipe never does it, so it is off by default).
        freeze_cnn: keep the CNN feature encoder fixed and skip its backward
            (the original never updates it either, but wastes its gradients).
    """

    def __init__(self, model: nn.Module, normalize_input: bool = False, freeze_cnn: bool = True):
        super().__init__()
        self.model = model
        self.normalize_input = normalize_input
        self.freeze_cnn = freeze_cnn
        if freeze_cnn:
            self.model.feature_extractor.requires_grad_(False)

    @property
    def num_layers(self) -> int:
        """L + 1: the number of hidden sequences returned per input."""
        return len(self.model.encoder.transformer.layers) + 1

    @property
    def hidden_size(self) -> int:
        return self.model.encoder.feature_projection.projection.out_features

    def transformer_layers(self) -> List[nn.Module]:
        """The L transformer blocks, in order (for layer-wise learning rates)."""
        return list(self.model.encoder.transformer.layers)

    def input_modules(self) -> Iterator[nn.Module]:
        """Modules before the first block: CNN, feature projection, positional conv."""
        yield self.model.feature_extractor
        yield self.model.encoder.feature_projection
        yield self.model.encoder.transformer.pos_conv_embed
        yield self.model.encoder.transformer.layer_norm

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """Args: wav [B, N] float32. Returns: [B, L+1, T, D]."""
        if self.normalize_input:
            wav = F.layer_norm(wav, wav.shape[-1:])
        if self.freeze_cnn:
            with torch.no_grad():
                features, _ = self.model.feature_extractor(wav, None)  # [B, T, C]
        else:
            features, _ = self.model.feature_extractor(wav, None)
        encoder = self.model.encoder
        x, _ = encoder._preprocess(features, None)  # projection: [B, T, D]
        transformer = encoder.transformer
        x = transformer._preprocess(x)  # + positional conv (and layer norm for post-norm models)
        layers = [x]
        position_bias = None
        for layer in transformer.layers:
            if self.training and transformer.layer_drop > 0 and torch.rand(1).item() < transformer.layer_drop:
                layers.append(x)  # a dropped block passes its input through
                continue
            x, position_bias = layer(x, None, position_bias=position_bias)
            layers.append(x)
        return torch.stack(layers, dim=1)  # [B, L+1, T, D]


def _build_wavlm(path: str, trust_checkpoint: bool) -> nn.Module:
    cfg, state = read_wavlm_checkpoint(path, trust_checkpoint)
    config = wavlm_cfg_to_torchaudio(cfg)
    model = wavlm_model(**config, aux_num_out=None)
    converted, unknown = wavlm_state_to_torchaudio(state)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(converted))
    mis_shaped = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
                  for k, v in converted.items() if k in expected and v.shape != expected[k].shape]
    if unknown or missing or mis_shaped:
        raise CheckpointError(
            f"Checkpoint '{path}' does not match the WavLM architecture its own cfg describes: "
            f"unused tensors {unknown[:8]}, missing tensors {missing[:8]}, shape mismatches {mis_shaped[:8]}. "
            f"The file may be damaged or its cfg edited.")
    model.load_state_dict(converted, strict=True)
    return model


def load_ssl_frontend(path: str, normalize_input: bool = False, freeze_cnn: bool = True,
                      trust_checkpoint: bool = False, layer_drop: float = 0.0) -> SSLFrontend:
    """Load a pre-trained SSL checkpoint as a front-end returning all layers.

    Args:
        path: official WavLM checkpoint (``{'cfg': ..., 'model': ...}``).
        normalize_input: normalise each waveform (see :class:`SSLFrontend`).
        freeze_cnn: freeze the CNN feature encoder.
        trust_checkpoint: allow arbitrary unpickling of the file.
        layer_drop: probability of skipping a block in training (0 keeps the checkpoint's setting off).

    Returns:
        SSLFrontend with ``forward(wav [B, N]) -> [B, L+1, T, D]``.
    """
    model = _build_wavlm(path, trust_checkpoint)
    model.encoder.transformer.layer_drop = layer_drop
    frontend = SSLFrontend(model, normalize_input=normalize_input, freeze_cnn=freeze_cnn)
    logger.info("Loaded SSL front-end from %s: %d layers (+ input), hidden size %d",
                path, frontend.num_layers - 1, frontend.hidden_size)
    return frontend


def pretrained_state(frontend: SSLFrontend) -> Dict[str, torch.Tensor]:
    """Detached copy of the front-end's current parameters (the regularisation anchor θ₀)."""
    return {name: p.detach().clone() for name, p in frontend.named_parameters()}
