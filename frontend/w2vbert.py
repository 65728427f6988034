"""w2v-BERT 2.0 front-end: waveform -> fbank features -> transformers' ``Wav2Vec2BertModel`` -> its L+1 layers.

A Hugging Face ``wav2vec2-bert`` folder (``facebook/w2v-bert-2.0``: ``config.json``, ``model.safetensors``,
``preprocessor_config.json``; read by :func:`frontend.hf.read_w2vbert_folder`) runs as transformers' own model:
torchaudio has no such conformer. Like every front-end (:class:`frontend.base.LayerFrontend`) it takes the raw
16 kHz waveform [B, N], with optional ``lengths`` for padded rows, and makes the model's input features itself as
the folder's ``SeamlessM4TFeatureExtractor`` does (``frontend/fbank.py``: 80 Kaldi fbank bins on the 16-bit scale,
per-utterance normalisation, 2 frames stacked to 160 values every 20 ms), each row from its own samples.

The layers are transformers' ``hidden_states`` (transformers >= 5), on the valid frames: layer 0 is the conformer
input (feature projection: layer norm, linear, dropout; padded frames zeroed; the encoder's dropout); layer l is
the output of conformer block l (its own final layer norm included; the encoder has no norm of its own). Padded
frames are masked in every block (attention mask; zeroed before each depthwise convolution, which is causal, so a
frame never sees later ones), so a padded row's valid frames equal the row computed alone. Where the extractor
pads an odd frame count with a masked half frame, the front-end returns only the valid frames:
T = floor(fbank frames / 2) per row.

The blocks run one by one here (not ``Wav2Vec2BertModel.forward``), so the shared options work as for WavLM:
LayerDrop (a dropped block passes its input on, as the other front-ends; YAML ``layer_drop``, default the
folder's ``layerdrop``), ``grad_checkpointing``, ``freeze_ssl``, ``freeze_cnn`` (here: the feature projection,
the only module before the blocks), ``layer_grad_mult``, ``normalize_input``, ``compile_frontend``, mixed
precision (the features are computed in float64 outside autocast). transformers' SpecAugment-style masking
(``mask_time_prob``, pre-training and ASR fine-tuning) is not applied, as no other front-end masks. The module
names stay transformers' (``model.encoder.layers.N.self_attn.linear_q``, ...), so ``peft`` can reach them.
``frontend_kernels``: no fast kernel of ``frontend/kernels.py`` applies (there is no CNN nor positional
convolution); ``auto`` and ``reference`` both run transformers' modules, ``auto`` adding the shared inference
paths (streaming layer sums, a frozen front-end in inference mode with its matmul weights cast once under autocast).
``feature_grad_mult`` (the gradient into a CNN) has nothing to act on and is refused.

transformers is imported when such a front-end is built, not with this module: its import takes seconds that runs
with the other front-ends should not pay.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Iterator, List, Optional

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from core.errors import CheckpointError, ConfigError
from frontend.base import Emit, LayerFrontend
from frontend.fbank import min_samples, w2vbert_features
from frontend.formats import load_checked
from frontend.frames import normalise_rows, pad_mask
from frontend.hf import W2VBERT, read_w2vbert_folder

logger = logging.getLogger(__name__)

# Model options the front-end never uses, turned off when the model is built: the adapter and the intermediate FFN
# come after the encoder output; masked_spec_embed exists only for SpecAugment-style masking.
ENCODER_ONLY = {"add_adapter": False, "use_intermediate_ffn_before_adapter": False, "mask_time_prob": 0.0,
                "mask_feature_prob": 0.0}


def build_w2vbert_model(config: Dict[str, Any], source: str) -> nn.Module:
    """transformers' ``Wav2Vec2BertModel`` of ``config`` (a ``config.json`` dict) without the modules after the
    encoder (:data:`ENCODER_ONLY`), randomly initialised."""
    from transformers import Wav2Vec2BertConfig, Wav2Vec2BertModel  # seconds to import: only when needed

    try:
        return Wav2Vec2BertModel(Wav2Vec2BertConfig.from_dict({**config, **ENCODER_ONLY}))
    except (TypeError, ValueError, KeyError, AttributeError) as err:
        raise CheckpointError(f"{source}: transformers cannot build a Wav2Vec2BertModel from its configuration "
                              f"({type(err).__name__}: {err}); the config.json may be damaged or of another "
                              f"transformers version.") from err


def additive_mask(valid: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The attention mask of padded rows, [B, 1, T, T] (a view): 0 where the key frame is one of the row's
    frames (``valid`` [B, T] True), the lowest value of ``dtype`` where it is padding. transformers' w2v-BERT
    encoder builds this one in 5.0; later versions build an equivalent one for their attention implementation, and
    their eager and sdpa attentions add this one to the scores as it is."""
    pad = (~valid)[:, None, None, :].to(dtype) * torch.finfo(dtype).min  # [B, 1, 1, T]
    return pad.expand(valid.shape[0], 1, valid.shape[1], valid.shape[1])


class W2VBertFrontend(LayerFrontend):
    """transformers' w2v-BERT 2.0 (``Wav2Vec2BertModel``) exposing all hidden layers of the raw waveform.

    Args:
        model: a ``transformers.Wav2Vec2BertModel`` (:func:`build_w2vbert_model`).
        num_mel_bins, stride: the feature extractor's (``preprocessor_config.json``).
        feature_grad_mult: must stay 1 (there is no CNN; the features carry no gradient).
        Others: :class:`frontend.base.LayerFrontend`. ``freeze_cnn`` freezes the feature projection.
    """

    def __init__(self, model: nn.Module, num_mel_bins: int = 80, stride: int = 2, normalize_input: bool = False,
                 freeze_cnn: bool = True, freeze_ssl: bool = False, feature_grad_mult: float = 1.0,
                 grad_checkpointing: bool = False, layer_grad_mult: float = 1.0,
                 architecture: Optional[Dict[str, Any]] = None, kernels: str = "auto"):
        if feature_grad_mult != 1.0:
            raise ConfigError(f"feature_grad_mult={feature_grad_mult} scales the gradient into a CNN feature encoder; "
                              f"w2v-BERT 2.0 has none (its input is fbank features, computed without gradient): "
                              f"remove feature_grad_mult (layer_grad_mult scales the gradient into the layers).")
        super().__init__(model, normalize_input=normalize_input, freeze_cnn=freeze_cnn, freeze_ssl=freeze_ssl,
                         layer_grad_mult=layer_grad_mult, grad_checkpointing=grad_checkpointing,
                         architecture=architecture, kernels=kernels)
        self.family = W2VBERT
        self.num_mel_bins, self.stride = num_mel_bins, stride

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    @property
    def layer_drop(self) -> float:
        """Probability of skipping a conformer block in training (YAML ``layer_drop``; the folder's ``layerdrop``)."""
        return self.model.config.layerdrop

    @property
    def min_samples(self) -> int:
        """The shortest waveform that gives one frame: 560 samples (35 ms: two fbank frames, stacked). A shorter
        one (or padded row) is a ValueError in :meth:`forward`; callers that know the file check this first."""
        return min_samples(self.stride)

    def transformer_layers(self) -> List[nn.Module]:
        """The L conformer blocks, in order (one optimizer group each for layer-wise learning rates)."""
        return list(self.model.encoder.layers)

    def input_modules(self) -> Iterator[nn.Module]:
        """The feature projection (layer norm and linear, 160 -> D): the only module before the blocks."""
        yield self.model.feature_projection

    def _check_lengths(self, wav: torch.Tensor, lengths: Optional[torch.Tensor]) -> None:
        shortest = wav.shape[1] if lengths is None else int(lengths.min())
        if shortest < self.min_samples:
            raise ValueError(f"w2v-BERT front-end: a waveform of {shortest} samples is shorter than {self.min_samples} "
                             f"(two 25 ms fbank frames 10 ms apart, stacked by {self.stride}): it gives no frame and "
                             f"cannot be embedded.")

    def _positions(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        """The encoder's position embeddings for x (rotary or Transformer-XL ones; None for w2v-BERT 2.0's
        ``relative_key``, which its attention computes). Made outside inference mode: the module keeps them
        (rotary's cache, Transformer-XL's table extended for a long input) for later calls, training included."""
        module = self.model.encoder.embed_positions
        if module is None:
            return None
        with torch.inference_mode(False):
            return module(x)

    def _run(self, wav: torch.Tensor, lengths: Optional[torch.Tensor], emit: Emit) -> Optional[torch.Tensor]:
        self._check_lengths(wav, lengths)
        if self.normalize_input:
            wav = normalise_rows(wav, lengths)
        features, frames = w2vbert_features(wav, lengths, self.num_mel_bins, self.stride)  # [B, T, 160], [B]
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_cnn):
            x = self.model.feature_projection(features)[0]  # [B, T, D]
        encoder = self.model.encoder
        valid = attention_mask = None
        if lengths is not None:
            valid = ~pad_mask(frames, x.shape[1])  # [B, T], True on a row's frames
            x = x.masked_fill(~valid[..., None], 0.0)
            attention_mask = additive_mask(valid, x.dtype)
        x = encoder.dropout(x)
        positions = self._positions(x)
        recompute = self.grad_checkpointing and self.model.training and torch.is_grad_enabled()
        low = self._reduced_weights(x.device) if self.freeze_ssl and self.kernels == "auto" else None
        emit(0, x)
        for index, layer in enumerate(self.transformer_layers(), start=1):
            if self.skip_block():
                emit(index, x)  # a dropped block passes its input through
                continue
            # the conv mask as transformers' encoder passes it: with right padding and a causal depthwise
            # convolution it changes only the padded frames' values
            args = (x, attention_mask, positions, valid)  # hidden states, attention, positions, conv mask
            if low is not None:  # frozen blocks under autocast: their matmul weights cast once, not every step
                out = torch.func.functional_call(layer, low[index - 1], args)
            elif recompute:
                out = checkpoint(layer, *args, use_reentrant=False)
            else:
                out = layer(*args)
            x = out[0] if isinstance(out, tuple) else out  # transformers 5.0 also returns the attention weights
            emit(index, x)
        return None if lengths is None else frames


def _frontend(model: nn.Module, features: Dict[str, int], config: Dict[str, Any], layer_drop: Optional[float],
              **options: Any) -> W2VBertFrontend:
    if layer_drop is not None:
        model.config.layerdrop = layer_drop
    architecture = {"family": W2VBERT, "config": dict(config), "features": dict(features)}
    return W2VBertFrontend(model, num_mel_bins=features["num_mel_bins"], stride=features["stride"],
                           architecture=architecture, **options)


def load_w2vbert_frontend(path: str, trust_checkpoint: bool = False, allow_partial_checkpoint: bool = False,
                          layer_drop: Optional[float] = None, **options: Any) -> W2VBertFrontend:
    """The front-end of a ``wav2vec2-bert`` folder, its weights loaded strictly.

    Every encoder tensor of the folder must find its place and every model tensor must be in the folder; with
    ``allow_partial_checkpoint`` unused tensors are dropped and missing ones keep their random initialisation,
    both logged by name; shape mismatches always fail. Tensors outside the encoder (task heads, the adapter,
    ``masked_spec_embed``) are set aside and counted in the log.

    Args:
        path: the folder (YAML ``pretrained_model_path``).
        layer_drop: None keeps the folder's ``layerdrop`` (0.1 for w2v-BERT 2.0); a number replaces it.
        options: of :class:`W2VBertFrontend` (normalize_input, freeze_cnn, freeze_ssl, feature_grad_mult,
            grad_checkpointing, layer_grad_mult, kernels).
    """
    folder = read_w2vbert_folder(path, trust_checkpoint)
    model = build_w2vbert_model(folder.config, f"wav2vec2-bert folder '{path}'")
    load_checked(model, folder.state, f"wav2vec2-bert folder '{path}'", allow_partial_checkpoint)
    frontend = _frontend(model, folder.features, folder.config, layer_drop, **options)
    logger.info("Loaded w2v-BERT front-end from %s (Hugging Face wav2vec2-bert folder, transformers' model): "
                "%d conformer layers (+ input), hidden size %d, LayerDrop %g, fbank %d x %d%s", path,
                frontend.num_layers - 1, frontend.hidden_size, frontend.layer_drop, frontend.num_mel_bins,
                frontend.stride, f"; ignored {len(folder.ignored)} tensors outside the encoder" if folder.ignored
                else "")
    return frontend


def w2vbert_from_architecture(architecture: Dict[str, Any], source: str, layer_drop: Optional[float] = None,
                              **options: Any) -> W2VBertFrontend:
    """A w2v-BERT front-end of the architecture a model file recorded (``{'family': 'wav2vec2-bert', 'config':
    config.json, 'features': {'num_mel_bins', 'stride'}}``), randomly initialised: the model file's tensors then
    fill it, so no pre-trained folder is read. ``options``: as :func:`load_w2vbert_frontend`'s."""
    try:
        config, features = dict(architecture["config"]), dict(architecture["features"])
        if not all(isinstance(features.get(key), int) for key in ("num_mel_bins", "stride")):
            raise ValueError(f"features {features!r} lack num_mel_bins or stride")
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{source}: its w2v-BERT front-end architecture cannot be read ({err}); the file is "
                              f"damaged or was edited: evaluate it with the YAML and pretrained_model_path of the run "
                              f"that wrote it.") from err
    return _frontend(build_w2vbert_model(config, source), features, config, layer_drop, **options)
