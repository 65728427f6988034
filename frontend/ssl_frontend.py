"""SSL speech transformer front-end: waveform -> stacked hidden layers.

``load_ssl_frontend(path)`` reads a pre-trained checkpoint in any supported format
(official WavLM, fairseq HuBERT / wav2vec 2.0, Hugging Face folder; detected from
the content, see ``frontend/detect.py``), builds torchaudio's model from
its configuration and returns an :class:`SSLFrontend` whose ``forward(wav)`` maps
``wav`` [B, N] (16 kHz, float32) to ``[B, L+1, T, D]``. A Hugging Face ``wav2vec2-bert`` folder
(w2v-BERT 2.0) has no torchaudio model: it becomes transformers' model in a
:class:`frontend.w2vbert.W2VBertFrontend`, with the same interface (:class:`frontend.base.LayerFrontend`,
which holds what both share).

Layer order (as the official WavLM ``extract_features(..., ret_layer_results=True)``):
index 0 is the transformer input (CNN features -> layer norm -> projection, plus
the convolutional positional embedding, then the encoder layer norm for
post-norm/Base models); index l = 1..L is the output of transformer block l.
For pre-norm (Large) models the last entry is the raw output of the last block,
*without* the encoder's final layer norm, as in the official layer results (and
as ``hidden_states`` of transformers >= 5; transformers 4.x applied the norm to
its last entry).

Two implementations, chosen by ``frontend_kernels`` (:data:`frontend.base.KERNELS`), compute the same layers:

* ``reference``: torchaudio's modules as they are, everywhere (the CNN feature encoder, the projection, the
  positional convolution and the blocks, the layers stacked; a padded batch of a group-norm CNN goes through
  the CNN row by row, as group norm normalises over the whole row). What to compare with when an embedding
  looks wrong;
* ``auto`` (the default): where no gradient flows, the fast kernels of ``frontend/kernels.py`` (the CNN as
  GEMMs with its first block folded, the positional convolution by FFT), the frozen blocks' matmul weights cast
  once under autocast (reduced-precision copies), and in inference the layers summed as they come (streaming
  layer sums) instead of stacked. Each is tested against ``reference`` (``tests/frontend/test_kernels.py``).

The steps both share (pad mask, attention masks, transformer input, the blocks) are the traceable functions of
this module and ``frontend/frames.py``; the export (``inference/export.py``) runs them too. The torchaudio
internals relied on (module attributes, the blocks' call) are pinned by ``tests/frontend/test_torchaudio_pins.py``.
"""
from __future__ import annotations

import functools
import logging
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from core.errors import CheckpointError, ConfigError
from frontend.base import Emit, LayerFrontend, ScaleGrad
from frontend.detect import build_torchaudio_model, make_model, read_ssl_checkpoint
from frontend.frames import attention_masks, min_samples, normalise_rows, pad_mask
from frontend.hf import W2VBERT, folder_model_type
from frontend.kernels import frozen_cnn, positional_conv_fft
from frontend.w2vbert import load_w2vbert_frontend, w2vbert_from_architecture

logger = logging.getLogger(__name__)

CNN_CHUNK_SECONDS = (20, 240)  # most audio per CNN call without gradients (CPU, CUDA): bounds its memory


def reference_cnn(extractor: nn.Module, wav: torch.Tensor, lengths: Optional[torch.Tensor]
                  ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """torchaudio's CNN feature encoder as it is: features [B, T, C] and the valid frames per row (None without
    ``lengths``). Group norm normalises each channel over the whole row, padding included, so padded rows of a
    group-norm CNN run one at a time (a layer-norm CNN's frames depend on their own samples only)."""
    if lengths is None or not isinstance(extractor.conv_layers[0].layer_norm, nn.GroupNorm):
        return extractor(wav, lengths)
    rows = [extractor(wav[i:i + 1, :int(n)], lengths[i:i + 1]) for i, n in enumerate(lengths)]
    features = nn.utils.rnn.pad_sequence([f[0] for f, _ in rows], batch_first=True)  # [B, T_max, C]
    return features, torch.cat([n for _, n in rows])


def transformer_input(model: nn.Module, features: torch.Tensor, pad: Optional[torch.Tensor],
                      positional: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> torch.Tensor:
    """Layer 0 from the CNN features [B, T, C]: the feature projection (layer norm, linear), padded frames
    (``pad`` [B, T], or None) zeroed as the official encoder does before the positional convolution, plus the
    positional embedding, then the encoder layer norm for post-norm (Base) models, then dropout: what
    torchaudio's ``Transformer._preprocess`` does after the projection. ``positional``: the positional
    embedding of x [B, T, D] (None: torchaudio's module ``pos_conv_embed``)."""
    x = model.encoder.feature_projection(features)  # [B, T, D]
    if pad is not None:
        x = x.masked_fill(pad[..., None], 0.0)
    transformer = model.encoder.transformer
    x = x + (transformer.pos_conv_embed(x) if positional is None else positional(x))
    if transformer.layer_norm_first:
        x = transformer.layer_norm(x)
    return transformer.dropout(x)


def run_block(layer: nn.Module, x: torch.Tensor, attention_mask: Optional[torch.Tensor],
              position_bias: Optional[torch.Tensor], key_padding_mask: Optional[torch.Tensor]
              ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """One torchaudio transformer block: (output, position bias for the next block; WavLM computes it in its
    first block and shares it, wav2vec 2.0 / HuBERT blocks return None)."""
    return layer(x, attention_mask, position_bias=position_bias, key_padding_mask=key_padding_mask)


class SSLFrontend(LayerFrontend):
    """torchaudio SSL model exposing all hidden layers (the shared options: :class:`frontend.base.LayerFrontend`).

    Args:
        model: a ``torchaudio.models.Wav2Vec2Model`` (WavLM, HuBERT or wav2vec 2.0).
        normalize_input: zero-mean/unit-variance normalise each waveform first
            (the released WavLM-Large was trained this way; the original MHFA
            recipe never does it, so it is off by default).
        freeze_cnn: keep the input modules (:meth:`input_modules`: CNN feature encoder, feature
            projection, positional convolution, encoder layer norm) fixed and skip their backward.
            The original never updates them either: it runs the CNN under ``no_grad``, but still
            computes the (unused) gradients of the feature layer norm, projection and positional conv.
        freeze_ssl: freeze the whole front-end: it runs in eval mode (no dropout, no
            layer drop) under ``no_grad``, so nothing is kept for backward.
        feature_grad_mult: scale of the gradient flowing into the CNN (fairseq's option of
            the same name). Needs ``freeze_cnn`` false. 0 is fairseq's: the CNN alone runs under
            ``no_grad`` and stays out of the optimizer, the other input modules train.
        layer_grad_mult: scale of the gradient flowing from the back-end into every returned
            layer (what wespeaker's ``feature_grad_mult`` does: 0.1 in its joint fine-tuning).
        grad_checkpointing: recompute each block in backward instead of storing its
            activations (joint fine-tuning of Large models on long crops).
        family: 'wavlm', 'hubert' or 'wav2vec2': selects the attention masks of padded batches
            (:func:`attention_masks`: WavLM blocks take a key padding mask, wav2vec 2.0 / HuBERT blocks
            an additive attention mask); :mod:`inference.export` reads it for the same choice.
        architecture: ``{'family': ..., 'config': torchaudio builder arguments}`` of ``model``: what a
            model file records to rebuild the front-end without the pre-trained checkpoint.
        kernels: ``auto`` (the fast kernels where they apply) or ``reference`` (torchaudio's modules only):
            module docstring. Same layers to float rounding; an attribute that may be changed at any time.
    """

    def __init__(self, model: nn.Module, normalize_input: bool = False, freeze_cnn: bool = True,
                 freeze_ssl: bool = False, feature_grad_mult: float = 1.0, grad_checkpointing: bool = False,
                 family: str = "wavlm", layer_grad_mult: float = 1.0,
                 architecture: Optional[Dict[str, Any]] = None, kernels: str = "auto"):
        if feature_grad_mult < 0:
            raise ConfigError(f"feature_grad_mult must be >= 0, got {feature_grad_mult}")
        if feature_grad_mult != 1.0 and (freeze_cnn or freeze_ssl):
            raise ConfigError(f"feature_grad_mult={feature_grad_mult} only scales the gradient of a trainable CNN, "
                              f"but the CNN is frozen (freeze_cnn={freeze_cnn}, freeze_ssl={freeze_ssl}): set "
                              f"`freeze_cnn: false` and `freeze_ssl: false`, or remove feature_grad_mult.")
        super().__init__(model, normalize_input=normalize_input, freeze_cnn=freeze_cnn, freeze_ssl=freeze_ssl,
                         layer_grad_mult=layer_grad_mult, grad_checkpointing=grad_checkpointing,
                         architecture=architecture, kernels=kernels)
        self.family = family
        self.feature_grad_mult = feature_grad_mult
        if not self.freeze_cnn and feature_grad_mult == 0.0:  # fairseq: the CNN under no_grad, no gradient at all
            self.model.feature_extractor.requires_grad_(False)

    @property
    def hidden_size(self) -> int:
        return self.model.encoder.feature_projection.projection.out_features

    @property
    def layer_drop(self) -> float:
        """Probability of skipping a block in training (YAML ``layer_drop``)."""
        return self.model.encoder.transformer.layer_drop

    @property
    def min_samples(self) -> int:
        """The shortest waveform, in samples, that gives one frame (400 for WavLM / HuBERT / wav2vec 2.0:
        25 ms at 16 kHz). A shorter one cannot be embedded: without gradients (evaluation) :meth:`forward`
        raises a ValueError that says so; callers that know the file check this first and name it."""
        return min_samples(self.model.feature_extractor.conv_layers)

    def transformer_layers(self) -> List[nn.Module]:
        """The L transformer blocks, in order (for layer-wise learning rates)."""
        return list(self.model.encoder.transformer.layers)

    def input_modules(self) -> Iterator[nn.Module]:
        """The modules outside the transformer blocks, in order: the CNN feature encoder
        (``feature_extractor``), the feature projection (its layer norm and linear projection), the
        positional convolution and the encoder layer norm (``transformer.layer_norm``). That layer norm is
        part of layer 0 for post-norm (Base) models; for pre-norm (Large) models it is the encoder's final
        layer norm, which no returned layer uses (module docstring). ``freeze_cnn`` freezes all four; when
        they train, they form the optimizer group ``frontend.input``."""
        yield self.model.feature_extractor
        yield self.model.encoder.feature_projection
        yield self.model.encoder.transformer.pos_conv_embed
        yield self.model.encoder.transformer.layer_norm

    def _cnn(self, wav: torch.Tensor, lengths: Optional[torch.Tensor]) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """CNN features [B, T, C] and valid frames per row (torchaudio's, None without ``lengths``).
        ``auto`` without gradients: :func:`frontend.kernels.frozen_cnn` (one GEMM for the first block, masked
        statistics for padded rows, bounded memory). Otherwise torchaudio's (:func:`reference_cnn`)."""
        if self.kernels == "auto" and not torch.is_grad_enabled():
            chunk = CNN_CHUNK_SECONDS[wav.device.type == "cuda"] * 16000
            return frozen_cnn(self.model.feature_extractor, wav, lengths, chunk, derived=self.derived)
        return reference_cnn(self.model.feature_extractor, wav, lengths)

    def _input(self, wav: torch.Tensor, lengths: Optional[torch.Tensor]
               ) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
        """Layer 0, the transformer input [B, T, D], with the valid frames [B] and the padded frames
        [B, T] of a padded batch (None, None without ``lengths``)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.feature_grad_mult != 0.0):
            features, frames = self._cnn(wav, lengths)
        pad = None
        if frames is not None:
            features = features[:, :int(frames.max())]
            pad = pad_mask(frames, features.shape[1])  # [B, T]
        if self.feature_grad_mult != 1.0 and features.requires_grad:
            features = ScaleGrad.apply(features, self.feature_grad_mult)
        positional = None  # torchaudio's positional convolution
        module = self.model.encoder.transformer.pos_conv_embed
        if self.kernels == "auto" and not torch.is_grad_enabled() and hasattr(module, "num_remove"):
            positional = functools.partial(positional_conv_fft, module, derived=self.derived)
        return transformer_input(self.model, features, pad, positional), frames, pad


    def _run(self, wav: torch.Tensor, lengths: Optional[torch.Tensor], emit: Emit) -> Optional[torch.Tensor]:
        """Run the front-end, handing each layer [B, T, D] to ``emit(index, layer)`` in order (index 0: the
        transformer input); returns the valid frames per row (None without ``lengths``)."""
        if self.normalize_input:
            wav = normalise_rows(wav, lengths)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_cnn):
            x, frames, pad = self._input(wav, lengths)  # [B, T, D]
        attention_mask, key_padding_mask = (None, None) if pad is None else attention_masks(
            pad, x.dtype, self.family == "wavlm")
        training = self.model.training
        recompute = self.grad_checkpointing and training and torch.is_grad_enabled()
        low = self._reduced_weights(x.device) if self.freeze_ssl and self.kernels == "auto" else None
        emit(0, x)
        position_bias = None  # WavLM: computed by block 1, shared by the others
        for index, layer in enumerate(self.transformer_layers(), start=1):
            if self.skip_block():
                emit(index, x)  # a dropped block passes its input through
                continue
            if low is not None:  # frozen blocks under autocast: their matmul weights cast once, not every step
                x, position_bias = torch.func.functional_call(
                    layer, low[index - 1], (x, attention_mask),
                    {"position_bias": position_bias, "key_padding_mask": key_padding_mask})
            elif recompute:
                x, position_bias = checkpoint(layer, x, attention_mask, position_bias, key_padding_mask,
                                              use_reentrant=False)
            else:
                x, position_bias = run_block(layer, x, attention_mask, position_bias, key_padding_mask)
            emit(index, x)
        return frames


def load_ssl_frontend(path: str, normalize_input: bool = False, freeze_cnn: bool = True,
                      trust_checkpoint: bool = False, layer_drop: Optional[float] = None, freeze_ssl: bool = False,
                      feature_grad_mult: float = 1.0, grad_checkpointing: bool = False,
                      allow_partial_checkpoint: bool = False, layer_grad_mult: float = 1.0,
                      kernels: str = "auto") -> LayerFrontend:
    """Load a pre-trained SSL checkpoint as a front-end returning all layers.

    Args:
        path: official WavLM file, fairseq HuBERT / wav2vec 2.0 file, or Hugging Face
            model folder (YAML ``pretrained_model_path``); the format is detected. A ``wav2vec2-bert``
            folder (w2v-BERT 2.0) gives a :class:`frontend.w2vbert.W2VBertFrontend` (transformers' model, its
            fbank features made from the waveform); every other format an :class:`SSLFrontend`.
        normalize_input, freeze_cnn, freeze_ssl, feature_grad_mult, layer_grad_mult, grad_checkpointing, kernels:
            see :class:`SSLFrontend` (and :class:`frontend.w2vbert.W2VBertFrontend`).
        trust_checkpoint: allow arbitrary unpickling of the file.
        layer_drop: probability of skipping a block in training; None keeps the checkpoint's
            own ``encoder_layerdrop`` (as the original, which builds WavLM from the checkpoint's
            config: 0.05 for WavLM Base+/Large); a number replaces it (0 turns it off).
        allow_partial_checkpoint: load even if tensors are unused or missing (logged by name).

    Returns:
        a front-end with ``forward(wav [B, N]) -> [B, L+1, T, D]``.

    Example:
        >>> frontend = load_ssl_frontend("WavLM-Base+.pt")  # doctest: +SKIP
        >>> frontend(torch.zeros(1, 16000)).shape  # doctest: +SKIP
        torch.Size([1, 13, 49, 768])
    """
    if layer_drop is not None and not 0.0 <= layer_drop < 1.0:
        raise ConfigError(f"layer_drop must be in [0, 1), got {layer_drop}")
    if folder_model_type(path) == W2VBERT:
        return load_w2vbert_frontend(path, trust_checkpoint=trust_checkpoint,
                                     allow_partial_checkpoint=allow_partial_checkpoint, layer_drop=layer_drop,
                                     normalize_input=normalize_input, freeze_cnn=freeze_cnn, freeze_ssl=freeze_ssl,
                                     feature_grad_mult=feature_grad_mult, grad_checkpointing=grad_checkpointing,
                                     layer_grad_mult=layer_grad_mult, kernels=kernels)
    ckpt = read_ssl_checkpoint(path, trust_checkpoint)
    model = build_torchaudio_model(ckpt, path, allow_partial=allow_partial_checkpoint)
    if layer_drop is not None:
        model.encoder.transformer.layer_drop = layer_drop
    frontend = SSLFrontend(model, normalize_input=normalize_input, freeze_cnn=freeze_cnn, freeze_ssl=freeze_ssl,
                           feature_grad_mult=feature_grad_mult, grad_checkpointing=grad_checkpointing,
                           family=ckpt.family, layer_grad_mult=layer_grad_mult, kernels=kernels,
                           architecture={"family": ckpt.family, "config": dict(ckpt.config)})
    logger.info("Loaded SSL front-end from %s (%s): %d layers (+ input), hidden size %d, LayerDrop %g%s",
                path, ckpt.source, frontend.num_layers - 1, frontend.hidden_size, frontend.layer_drop,
                f"; ignored {len(ckpt.ignored)} head tensors" if ckpt.ignored else "")
    return frontend


def ssl_frontend_from_architecture(architecture: Dict[str, Any], normalize_input: bool = False,
                                   freeze_cnn: bool = True, layer_drop: Optional[float] = None,
                                   freeze_ssl: bool = False, feature_grad_mult: float = 1.0,
                                   grad_checkpointing: bool = False, layer_grad_mult: float = 1.0,
                                   source: str = "model file", kernels: str = "auto") -> LayerFrontend:
    """A front-end of the architecture a model file recorded (``LayerFrontend.architecture``), randomly
    initialised: the model file's own tensors then fill it, so no pre-trained checkpoint is read.

    Args:
        architecture: ``{'family': 'wavlm' | 'hubert' | 'wav2vec2', 'config': torchaudio builder arguments}``, or
            w2v-BERT's (:func:`frontend.w2vbert.w2vbert_from_architecture`).
        source: where ``architecture`` came from, for the error message.
        Other arguments: as :func:`load_ssl_frontend`.
    Raises:
        CheckpointError: ``architecture`` is not a valid description (a damaged or edited file).
    """
    if isinstance(architecture, dict) and architecture.get("family") == W2VBERT:
        return w2vbert_from_architecture(architecture, source, layer_drop=layer_drop, normalize_input=normalize_input,
                                         freeze_cnn=freeze_cnn, freeze_ssl=freeze_ssl,
                                         feature_grad_mult=feature_grad_mult, grad_checkpointing=grad_checkpointing,
                                         layer_grad_mult=layer_grad_mult, kernels=kernels)
    try:
        family, config = architecture["family"], architecture["config"]
        if family not in ("wavlm", "hubert", "wav2vec2"):
            raise ValueError(f"unknown family {family!r}")
        model = make_model(family, config)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{source}: its front-end architecture {architecture!r} cannot be built ({err}); "
                              f"the file is damaged or was edited: evaluate it with the YAML and "
                              f"pretrained_model_path of the run that wrote it.") from err
    if layer_drop is not None:
        model.encoder.transformer.layer_drop = layer_drop
    return SSLFrontend(model, normalize_input=normalize_input, freeze_cnn=freeze_cnn, freeze_ssl=freeze_ssl,
                       feature_grad_mult=feature_grad_mult, grad_checkpointing=grad_checkpointing, family=family,
                       layer_grad_mult=layer_grad_mult, architecture={"family": family, "config": dict(config)},
                       kernels=kernels)
