"""Writers of the official checkpoint formats, for the demo and the tests only.

Random-weight models in the real file layouts (official WavLM ``{'cfg', 'model'}`` files,
fairseq HuBERT / wav2vec 2.0 files, and Hugging Face ``wav2vec2-bert`` folders as transformers writes
them), so the demo and the tests exercise the same readers as real checkpoints (``frontend/``).
Each writer is the inverse of a reader there.
"""
from __future__ import annotations

import argparse
import os
import re
from typing import Any, Dict, List, Optional, Tuple

import torch
from torchaudio.models import wavlm_model

from frontend.fairseq import FAIRSEQ_KEYS, FAMILIES, FINETUNED_HEAD, FINETUNED_PREFIX
from frontend.formats import ENCODER_OPTIONS, FAIRSEQ_COLUMN, ConvLayers
from frontend.names import (
    CNN_GROUP_NORM,
    CNN_LAYER_NORM,
    OFFICIAL_QKV,
    PRETRAIN_ONLY,
    QKV,
    TORCHAUDIO_QKV,
    WAVLM_KEYS,
    name_regex,
    rename_key,
)

# A tiny WavLM: 7-layer CNN (64 channels, group norm, the Base layout of strides, 20 ms hop)
# and 2 post-norm transformer blocks of 128 dims. Small enough to fine-tune on 2 CPU cores.
TINY_WAVLM: Dict[str, Any] = dict(
    extractor_mode="group_norm",
    extractor_conv_layer_config=[(64, 10, 5)] + [(64, 3, 2)] * 4 + [(64, 2, 2)] * 2,
    extractor_conv_bias=False,
    encoder_embed_dim=128, encoder_projection_dropout=0.0,
    encoder_pos_conv_kernel=16, encoder_pos_conv_groups=4,
    encoder_num_layers=2, encoder_num_heads=4, encoder_num_buckets=32, encoder_max_distance=128,
    encoder_attention_dropout=0.0, encoder_ff_interm_features=512, encoder_ff_interm_dropout=0.0,
    encoder_dropout=0.0, encoder_layer_norm_first=False, encoder_layer_drop=0.0,
)
# WavLM Base / Base+ size (12 blocks of 768, 512-channel CNN) with the official Base+
# dropouts, for benchmarks with random weights.
WAVLM_BASE: Dict[str, Any] = dict(
    TINY_WAVLM, extractor_conv_layer_config=[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2,
    encoder_embed_dim=768, encoder_projection_dropout=0.1, encoder_pos_conv_kernel=128, encoder_pos_conv_groups=16,
    encoder_num_layers=12, encoder_num_heads=12, encoder_num_buckets=320, encoder_max_distance=800,
    encoder_attention_dropout=0.1, encoder_ff_interm_features=3072, encoder_dropout=0.1, encoder_layer_drop=0.05,
)
# WavLM Large size (24 pre-norm blocks of 1024, layer-norm CNN), official dropouts; benchmarks only.
WAVLM_LARGE: Dict[str, Any] = dict(
    WAVLM_BASE, extractor_mode="layer_norm", encoder_embed_dim=1024, encoder_num_layers=24, encoder_num_heads=16,
    encoder_ff_interm_features=4096, encoder_layer_norm_first=True,
)

_TO_OFFICIAL = {"group_norm": [(name_regex(t), o) for o, t in WAVLM_KEYS if o != CNN_LAYER_NORM],
                "layer_norm": [(name_regex(t), o) for o, t in WAVLM_KEYS if o != CNN_GROUP_NORM]}
_TO_FAIRSEQ = {"group_norm": [(name_regex(t), f) for f, t in FAIRSEQ_KEYS if f != CNN_LAYER_NORM],
               "layer_norm": [(name_regex(t), f) for f, t in FAIRSEQ_KEYS if f != CNN_GROUP_NORM]}


def unrename_state(state: Dict[str, torch.Tensor], pairs: List[Tuple["re.Pattern[str]", str]], target: str,
                   qkv: Optional[QKV] = None) -> Dict[str, torch.Tensor]:
    """Inverse of :func:`frontend.names.rename_state` (to write checkpoints in ``target``'s format): every
    torchaudio tensor must have a name there; with ``qkv``, ``in_proj`` is split into q, k, v."""
    out: Dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        match = qkv[0].fullmatch(name) if qkv else None
        if match:
            for which, part in zip("qkv", tensor.chunk(3), strict=True):
                out[qkv[1].format(i=match["i"], w=which, p=match["p"])] = part.clone()
            continue
        new = rename_key(name, pairs)
        if new is None:
            raise KeyError(f"no {target} name for torchaudio parameter '{name}'")
        out[new] = tensor.clone()
    return out


def torchaudio_state_to_wavlm(state: Dict[str, torch.Tensor], extractor_mode: str) -> Dict[str, torch.Tensor]:
    """Inverse of :func:`frontend.names.wavlm_state_to_torchaudio` (used to write official-format files).

    Args:
        extractor_mode: torchaudio's ``group_norm`` or ``layer_norm`` (the official
            names of the CNN normalisation differ between the two).
    """
    return unrename_state(state, _TO_OFFICIAL[extractor_mode], "official WavLM",
                          qkv=(name_regex(TORCHAUDIO_QKV), OFFICIAL_QKV))


def format_conv_layers(layers: ConvLayers) -> str:
    """Inverse of :func:`frontend.formats.parse_conv_layers` (a plain list literal)."""
    return "[" + ", ".join(f"({c}, {k}, {s})" for c, k, s in layers) + "]"


def torchaudio_to_fairseq_style_cfg(config: Dict[str, Any]) -> Dict[str, Any]:
    """Inverse of :func:`frontend.formats.fairseq_style_cfg_to_torchaudio`."""
    return {
        "extractor_mode": "default" if config["extractor_mode"] == "group_norm" else "layer_norm",
        "conv_feature_layers": format_conv_layers(config["extractor_conv_layer_config"]),
        **{keys[FAIRSEQ_COLUMN][0]: config[name] for name, _, *keys in ENCODER_OPTIONS},
        "activation_fn": "gelu",
        "feature_grad_mult": 1.0 if config["encoder_layer_norm_first"] else 0.1,
    }


def torchaudio_to_wavlm_cfg(config: Dict[str, Any]) -> Dict[str, Any]:
    """Inverse of :func:`frontend.formats.wavlm_cfg_to_torchaudio`: official cfg names and values."""
    return dict(torchaudio_to_fairseq_style_cfg(config),
                num_buckets=config["encoder_num_buckets"], max_distance=config["encoder_max_distance"],
                relative_position_embedding=True, gru_rel_pos=True,
                # the released Large model was trained on normalised input
                normalize=config["encoder_layer_norm_first"])


def write_wavlm_checkpoint(path: str, torchaudio_config: Dict[str, Any], state: Dict[str, torch.Tensor]) -> None:
    """Write a torchaudio WavLM model as an official ``{'cfg', 'model'}`` file."""
    cfg = torchaudio_to_wavlm_cfg(torchaudio_config)
    model = torchaudio_state_to_wavlm(state, torchaudio_config["extractor_mode"])
    model["mask_emb"] = torch.zeros(torchaudio_config["encoder_embed_dim"]).uniform_()
    torch.save({"cfg": cfg, "model": model}, path)



def torchaudio_state_to_fairseq(state: Dict[str, torch.Tensor], extractor_mode: str) -> Dict[str, torch.Tensor]:
    """Inverse of :func:`frontend.fairseq.fairseq_state_to_torchaudio` (to write fairseq-format files)."""
    return unrename_state(state, _TO_FAIRSEQ[extractor_mode], "fairseq")


def _pretraining_tensors(family: str, dim: int, conv_channels: int) -> Dict[str, torch.Tensor]:
    """Random stand-ins for the tensors a pre-training checkpoint carries besides the encoder."""
    if family == "hubert":
        return {"mask_emb": torch.rand(dim), "label_embs_concat": torch.randn(504, 16),
                "final_proj.weight": torch.randn(16, dim), "final_proj.bias": torch.zeros(16)}
    return {"mask_emb": torch.rand(dim), "quantizer.vars": torch.randn(1, 640, 16),
            "quantizer.weight_proj.weight": torch.randn(640, conv_channels),
            "quantizer.weight_proj.bias": torch.zeros(640), "project_q.weight": torch.randn(16, 16),
            "project_q.bias": torch.zeros(16), "final_proj.weight": torch.randn(16, dim),
            "final_proj.bias": torch.zeros(16)}


def write_fairseq_checkpoint(path: str, family: str, torchaudio_config: Dict[str, Any],
                             state: Dict[str, torch.Tensor], layout: str = "modern",
                             finetuned: bool = False) -> None:
    """Write a torchaudio wav2vec 2.0 / HuBERT model in a fairseq file layout.

    Args:
        family: 'hubert' or 'wav2vec2' (model name and pre-training tensors).
        torchaudio_config: the ``wav2vec2_model`` arguments the state belongs to.
        state: torchaudio state dict of the model.
        layout: 'modern' (``cfg`` dict) or 'legacy' (``args`` Namespace).
        finetuned: write a CTC fine-tuned file (``w2v_encoder.w2v_model.`` keys, ``w2v_args``, CTC head).
    """
    if family not in FAMILIES or layout not in ("modern", "legacy"):
        raise ValueError(f"family must be one of {FAMILIES} and layout 'modern' or 'legacy'")
    dim = torchaudio_config["encoder_embed_dim"]
    name_key = "_name" if layout == "modern" else "arch"
    model_cfg = dict(torchaudio_to_fairseq_style_cfg(torchaudio_config), **{name_key: family})
    tensors = torchaudio_state_to_fairseq(state, torchaudio_config["extractor_mode"])
    tensors.update(_pretraining_tensors(family, dim, torchaudio_config["extractor_conv_layer_config"][-1][0]))
    task = {"_name": "hubert_pretraining" if family == "hubert" else "audio_pretraining", "normalize": False}
    if finetuned:
        tensors = {FINETUNED_PREFIX + k: v for k, v in tensors.items() if not PRETRAIN_ONLY.fullmatch(k)}
        tensors.update({FINETUNED_HEAD + "weight": torch.randn(32, dim), FINETUNED_HEAD + "bias": torch.zeros(32)})
        w2v_args: Any = ({"model": model_cfg, "task": task} if layout == "modern"
                         else argparse.Namespace(**model_cfg))
        model_cfg = {name_key: family + "_ctc", "w2v_path": "pretrained.pt", "w2v_args": w2v_args}
    if layout == "legacy":
        obj = {"args": argparse.Namespace(**model_cfg), "model": tensors}
    else:
        obj = {"args": None, "cfg": {"model": model_cfg, "task": task}, "model": tensors}
    torch.save(obj, path)


def write_tiny_wavlm(path: str, seed: int, config: Dict[str, Any] = TINY_WAVLM) -> None:
    """A random-weight WavLM written in the official format (official parameter names)."""
    torch.manual_seed(seed)
    model = wavlm_model(**config, aux_num_out=None)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_wavlm_checkpoint(path, config, model.state_dict())


# A tiny w2v-BERT 2.0: transformers' Wav2Vec2BertModel with 2 conformer blocks of 32 dims, otherwise w2v-BERT 2.0's
# layout (relative_key positions, swish, 160-value input; masked_spec_embed saved as in the released folder), no
# dropout and no LayerDrop. Small enough to fine-tune on 2 CPU cores.
TINY_W2VBERT: Dict[str, Any] = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, conv_depthwise_kernel_size=5,
    left_max_position_embeddings=8, right_max_position_embeddings=2, layerdrop=0.0, conformer_conv_dropout=0.0,
)


def write_tiny_w2vbert(folder: str, seed: int, config: Dict[str, Any] = TINY_W2VBERT, **features: Any) -> None:
    """A random-weight w2v-BERT 2.0 written as a Hugging Face ``wav2vec2-bert`` folder, as transformers writes
    one (``Wav2Vec2BertModel.save_pretrained``: ``config.json``, ``model.safetensors``;
    ``SeamlessM4TFeatureExtractor(**features).save_pretrained``: ``preprocessor_config.json``). The weights are
    moved off their initial values (norms at 1, biases at 0), so that a tensor loaded into the wrong place shows.
    transformers is imported here, not with this module (its import takes seconds)."""
    from transformers import SeamlessM4TFeatureExtractor, Wav2Vec2BertConfig, Wav2Vec2BertModel

    torch.manual_seed(seed)
    model = Wav2Vec2BertModel(Wav2Vec2BertConfig(**config))
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    model.save_pretrained(folder)
    SeamlessM4TFeatureExtractor(**features).save_pretrained(folder)
