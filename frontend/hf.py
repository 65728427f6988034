"""Hugging Face ``transformers`` model folders: configuration and parameter names.

A folder holds ``config.json`` (``model_type`` ``wavlm``, ``hubert`` or ``wav2vec2``)
and the weights in ``model.safetensors`` or ``pytorch_model.bin`` (or sharded, with a
``.index.json``), as ``save_pretrained`` writes them. Files of task models
(``WavLMForXVector``, ``Wav2Vec2ForCTC``, ...) keep the encoder under ``wavlm.`` /
``hubert.`` / ``wav2vec2.``; their heads are not part of the encoder.
``do_stable_layer_norm`` marks pre-norm (Large-style) models. These become torchaudio's models.

A ``wav2vec2-bert`` folder (w2v-BERT 2.0, ``facebook/w2v-bert-2.0``) also holds ``preprocessor_config.json``,
the ``SeamlessM4TFeatureExtractor`` that makes its input features; it is read by :func:`read_w2vbert_folder` and
runs as transformers' own model (``frontend/w2vbert.py``), as torchaudio has no conformer of its kind.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from frontend.formats import HF_COLUMN, CheckpointError, config_reader, encoder_options, load_torch_file
from frontend.names import name_regex, rename_state

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
PRETRAIN_ONLY = re.compile(r"masked_spec_embed")
HEAD_PREFIXES = ("adapter.",)  # modules after the encoder output in the bare model
CONFIG_FILE = "config.json"

W2VBERT = "wav2vec2-bert"  # the model_type of w2v-BERT 2.0 folders
W2VBERT_PREFIX = "wav2vec2_bert."  # where task models (Wav2Vec2BertForCTC, ...) keep the encoder
W2VBERT_HEADS = ("adapter.", "intermediate_ffn.")  # modules after the encoder output in the bare model
FEATURE_FILE = "preprocessor_config.json"
FEATURE_EXTRACTOR = "SeamlessM4TFeatureExtractor"

_POS = "encoder.transformer.pos_conv_embed.conv."
_LAYER = "encoder.transformer.layers.{i}."
_COMMON = [
    ("feature_extractor.conv_layers.{i}.conv.{p}", "feature_extractor.conv_layers.{i}.conv.{p}"),
    ("feature_extractor.conv_layers.{i}.layer_norm.{p}", "feature_extractor.conv_layers.{i}.layer_norm.{p}"),
    ("feature_projection.layer_norm.{p}", "encoder.feature_projection.layer_norm.{p}"),
    ("feature_projection.projection.{p}", "encoder.feature_projection.projection.{p}"),
    ("encoder.pos_conv_embed.conv.bias", _POS + "bias"),
    ("encoder.pos_conv_embed.conv.parametrizations.weight.original0", _POS + "parametrizations.weight.original0"),
    ("encoder.pos_conv_embed.conv.parametrizations.weight.original1", _POS + "parametrizations.weight.original1"),
    ("encoder.pos_conv_embed.conv.weight_g", _POS + "parametrizations.weight.original0"),  # older files
    ("encoder.pos_conv_embed.conv.weight_v", _POS + "parametrizations.weight.original1"),
    ("encoder.layer_norm.{p}", "encoder.transformer.layer_norm.{p}"),
    ("encoder.layers.{i}.layer_norm.{p}", _LAYER + "layer_norm.{p}"),
    ("encoder.layers.{i}.final_layer_norm.{p}", _LAYER + "final_layer_norm.{p}"),
    ("encoder.layers.{i}.feed_forward.intermediate_dense.{p}", _LAYER + "feed_forward.intermediate_dense.{p}"),
    ("encoder.layers.{i}.feed_forward.output_dense.{p}", _LAYER + "feed_forward.output_dense.{p}"),
]
_KEYS = {
    "wav2vec2": _COMMON + [
        ("encoder.layers.{i}.attention.{w}_proj.{p}", _LAYER + "attention.{w}_proj.{p}"),
        ("encoder.layers.{i}.attention.out_proj.{p}", _LAYER + "attention.out_proj.{p}")],
    "wavlm": _COMMON + [
        ("encoder.layers.{i}.attention.out_proj.{p}", _LAYER + "attention.attention.out_proj.{p}"),
        ("encoder.layers.{i}.attention.gru_rel_pos_const", _LAYER + "attention.gru_rel_pos_const"),
        ("encoder.layers.{i}.attention.gru_rel_pos_linear.{p}", _LAYER + "attention.gru_rel_pos_linear.{p}"),
        ("encoder.layers.{i}.attention.rel_attn_embed.weight", _LAYER + "attention.rel_attn_embed.weight")],
}
_KEYS["hubert"] = _KEYS["wav2vec2"]
_TO_TORCHAUDIO = {family: [(name_regex(h), t) for h, t in keys] for family, keys in _KEYS.items()}
_HF_QKV = name_regex("encoder.layers.{i}.attention.{w}_proj.{p}")
_WAVLM_IN_PROJ = _LAYER + "attention.attention.in_proj_{p}"


class HFModel(NamedTuple):
    """What a Hugging Face folder says about its encoder."""
    family: str  # 'wavlm', 'hubert' or 'wav2vec2'
    config: Dict[str, Any]  # config.json
    state: Dict[str, torch.Tensor]  # encoder tensors, HF names, task prefix removed
    head: List[str]  # tensors of task heads / adapters (not part of the encoder)


def read_weights(folder: str, trust_checkpoint: bool) -> Dict[str, torch.Tensor]:
    """Every tensor of a folder's weights (``model.safetensors``, ``pytorch_model.bin``, or their shards), by name."""
    files = []
    for name in WEIGHT_FILES:
        index = os.path.join(folder, name + ".index.json")
        if os.path.isfile(os.path.join(folder, name)):
            files = [os.path.join(folder, name)]
        elif os.path.isfile(index):
            with open(index, encoding="utf-8") as handle:
                files = [os.path.join(folder, f) for f in sorted(set(json.load(handle)["weight_map"].values()))]
        if files:
            break
    if not files:
        raise CheckpointError(
            f"Hugging Face folder '{folder}' has a config.json but no weights (found: {sorted(os.listdir(folder))}). "
            f"Expected model.safetensors or pytorch_model.bin (or a sharded .index.json); download the weight "
            f"files too, e.g. with huggingface_hub.snapshot_download.")
    state: Dict[str, torch.Tensor] = {}
    for file in files:
        if file.endswith(".safetensors"):
            try:
                state.update(load_file(file))
            except (SafetensorError, OSError) as err:
                raise CheckpointError(f"Could not read weights '{file}': {err}. The file may be truncated; "
                                      f"download it again.") from err
        else:
            state.update(load_torch_file(file, trust_checkpoint))
    return state


def _read_json(path: str) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"'{path}' is not valid JSON ({err}); download it again.") from err


def read_config(folder: str) -> Dict[str, Any]:
    """The ``config.json`` of a Hugging Face model folder (errors name the folder and what it lacks)."""
    config_path = os.path.join(folder, CONFIG_FILE)
    if not os.path.isfile(config_path):
        found = sorted(os.listdir(folder))[:10]
        raise CheckpointError(f"'{folder}' is a folder but has no config.json (found: {found}); "
                              f"a Hugging Face model folder needs config.json plus model.safetensors or "
                              f"pytorch_model.bin. For other formats give the checkpoint file itself.")
    return _read_json(config_path)


def folder_model_type(path: str) -> Optional[str]:
    """The ``model_type`` of the Hugging Face folder ``path``; None when ``path`` is no folder with a readable
    ``config.json`` (the readers then say what is wrong)."""
    try:
        config = read_config(path) if os.path.isdir(path) else {}
    except CheckpointError:
        return None
    return config.get("model_type") if isinstance(config, dict) else None


def read_hf_folder(folder: str, trust_checkpoint: bool = False) -> HFModel:
    """Read ``config.json`` and the weights of a Hugging Face model folder."""
    config = read_config(folder)
    family = config.get("model_type")
    if family not in _KEYS:
        also = (" A wav2vec2-bert (w2v-BERT 2.0) folder runs as transformers' model: load it with "
                "load_ssl_frontend (YAML pretrained_model_path)." if family == W2VBERT else "")
        raise CheckpointError(f"Hugging Face folder '{folder}' has model_type {family!r}; supported are "
                              f"{sorted([*_KEYS, W2VBERT])} (WavLM, HuBERT, wav2vec 2.0 as torchaudio's models; "
                              f"w2v-BERT 2.0 as transformers').{also}")
    state = read_weights(folder, trust_checkpoint)
    prefix = f"{family}."
    if any(k.startswith(prefix) for k in state):  # a task model: the encoder lives under its prefix
        head = sorted(k for k in state if not k.startswith(prefix))
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    else:
        head = sorted(k for k in state if k.startswith(HEAD_PREFIXES))
        state = {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIXES)}
    return HFModel(family, config, state, head)


class W2VBertFolder(NamedTuple):
    """What a ``wav2vec2-bert`` folder says about its encoder and its input features."""
    config: Dict[str, Any]  # config.json, as written
    features: Dict[str, int]  # the feature extractor's options the front-end uses: num_mel_bins, stride
    state: Dict[str, torch.Tensor]  # encoder tensors (transformers' Wav2Vec2BertModel names)
    ignored: List[str]  # tensors outside the encoder: task heads, adapter, pre-training's masked_spec_embed


def w2vbert_feature_options(features: Dict[str, Any], config: Dict[str, Any], folder: str) -> Dict[str, int]:
    """``num_mel_bins`` and ``stride`` of a ``preprocessor_config.json``, checked: a SeamlessM4TFeatureExtractor
    at 16 kHz whose stacked frames have the conformer's input size (``feature_projection_input_dim``).
    Its ``padding_value`` does not matter: padded frames are masked."""
    path = os.path.join(folder, FEATURE_FILE)
    kind = features.get("feature_extractor_type")
    if kind != FEATURE_EXTRACTOR:
        raise CheckpointError(f"'{path}' describes a {kind!r}; a wav2vec2-bert folder's input features are made by "
                              f"the {FEATURE_EXTRACTOR} (w2v-BERT 2.0's), the only one supported.")
    rate = features.get("sampling_rate", 16000)
    if rate != 16000:
        raise CheckpointError(f"'{path}' sets sampling_rate={rate!r}; the toolkit reads audio at 16000 Hz only.")
    bins, stride = features.get("num_mel_bins", 80), features.get("stride", 2)
    if not (isinstance(bins, int) and isinstance(stride, int) and bins > 0 and stride > 0):
        raise CheckpointError(f"'{path}' sets num_mel_bins={bins!r}, stride={stride!r}; expected positive integers.")
    width = config.get("feature_projection_input_dim", 160)
    if bins * stride != width:
        raise CheckpointError(f"'{path}' makes features of num_mel_bins x stride = {bins} x {stride} = {bins * stride} "
                              f"values, but '{folder}/config.json' expects feature_projection_input_dim={width}: the "
                              f"two files are of different models; download the folder again.")
    return {"num_mel_bins": bins, "stride": stride}


def read_w2vbert_folder(folder: str, trust_checkpoint: bool = False) -> W2VBertFolder:
    """Read a ``wav2vec2-bert`` folder: ``config.json``, ``preprocessor_config.json`` and the encoder's weights
    (a task model's under ``wav2vec2_bert.``; heads, the adapter, the intermediate FFN and the pre-training
    ``masked_spec_embed`` are set aside as ``ignored``)."""
    config = read_config(folder)
    if config.get("model_type") != W2VBERT:
        raise CheckpointError(f"'{folder}/config.json' has model_type {config.get('model_type')!r}, not {W2VBERT!r}.")
    feature_path = os.path.join(folder, FEATURE_FILE)
    if not os.path.isfile(feature_path):
        raise CheckpointError(f"wav2vec2-bert folder '{folder}' has no {FEATURE_FILE}: it defines the model's input "
                              f"features (the {FEATURE_EXTRACTOR}); download it with the model, e.g. with "
                              f"huggingface_hub.snapshot_download.")
    features = w2vbert_feature_options(_read_json(feature_path), config, folder)
    state = read_weights(folder, trust_checkpoint)
    ignored: List[str] = []
    if any(k.startswith(W2VBERT_PREFIX) for k in state):  # a task model: the encoder lives under its prefix
        ignored = sorted(k for k in state if not k.startswith(W2VBERT_PREFIX))
        state = {k[len(W2VBERT_PREFIX):]: v for k, v in state.items() if k.startswith(W2VBERT_PREFIX)}
    ignored += sorted(k for k in state if k.startswith(W2VBERT_HEADS) or PRETRAIN_ONLY.fullmatch(k))
    state = {k: v for k, v in state.items() if not (k.startswith(W2VBERT_HEADS) or PRETRAIN_ONLY.fullmatch(k))}
    return W2VBertFolder(config, features, state, ignored)


def hf_config_to_torchaudio(config: Dict[str, Any], folder: str) -> Dict[str, Any]:
    """``config.json`` -> ``wav2vec2_model`` / ``wavlm_model`` arguments (without ``aux_num_out``)."""
    get = config_reader(config, lambda key: f"'{folder}/config.json' lacks the key '{key}'; it may be damaged or "
                                            f"not an audio model's config.")
    family = config["model_type"]
    checks = [("hidden_act", "gelu"), ("feat_extract_activation", "gelu"), ("layer_norm_eps", 1e-5)]
    if family == "hubert":
        checks += [("conv_pos_batch_norm", False), ("feat_proj_layer_norm", True)]
    for key, supported in checks:
        if get(key, supported) != supported:
            raise CheckpointError(f"'{folder}/config.json' sets {key}={config[key]!r}; only {supported!r} is "
                                  f"supported by torchaudio's {family} model.")
    norm = get("feat_extract_norm", "group")
    if norm not in ("group", "layer"):
        raise CheckpointError(f"'{folder}/config.json' sets feat_extract_norm={norm!r}; expected 'group' or 'layer'.")
    dims, kernels, strides = get("conv_dim"), get("conv_kernel"), get("conv_stride")
    if not len(dims) == len(kernels) == len(strides):
        raise CheckpointError(f"'{folder}/config.json' has conv_dim, conv_kernel and conv_stride of different lengths "
                              f"({len(dims)}, {len(kernels)}, {len(strides)}); it may be damaged.")
    conv = list(zip(dims, kernels, strides, strict=True))
    out = dict(extractor_mode=f"{norm}_norm", extractor_conv_layer_config=[tuple(int(v) for v in c) for c in conv],
               **encoder_options(get, HF_COLUMN))
    if family == "wavlm":
        out.update(encoder_num_buckets=int(get("num_buckets", 320)),
                   encoder_max_distance=int(get("max_bucket_distance", 800)))
    return out


def hf_state_to_torchaudio(state: Dict[str, torch.Tensor], family: str) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Rename HF encoder tensors to torchaudio's (WavLM q/k/v are concatenated into ``in_proj``).

    Returns:
        (converted state, HF names with no place in the encoder; ``masked_spec_embed``,
        used only for pre-training, is left out of both).
    """
    return rename_state(state, _TO_TORCHAUDIO[family], PRETRAIN_ONLY,
                        (_HF_QKV, _WAVLM_IN_PROJ) if family == "wavlm" else None)
