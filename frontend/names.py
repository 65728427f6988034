"""Parameter names of SSL checkpoints and their renaming to torchaudio's.

The official WavLM names (microsoft/unilm ``WavLM.py``), shared by fairseq's wav2vec 2.0 /
HuBERT except for the attention (``frontend/fairseq.py``); Hugging Face names
are in ``frontend/hf.py``. One renaming routine serves all three formats.
"""
from __future__ import annotations

import re
from typing import Dict, List, Optional, Tuple

import torch

# (official name, torchaudio name); {i} is a layer index, {p} is weight or bias.
# Official names are those of microsoft/unilm WavLM.py; fairseq's wav2vec 2.0 / HuBERT
# use the same names for everything but the attention (see frontend/fairseq.py).
FAIRSEQ_STYLE_KEYS = [
    ("feature_extractor.conv_layers.{i}.0.{p}", "feature_extractor.conv_layers.{i}.conv.{p}"),
    ("feature_extractor.conv_layers.{i}.2.{p}", "feature_extractor.conv_layers.{i}.layer_norm.{p}"),  # group norm
    ("feature_extractor.conv_layers.{i}.2.1.{p}", "feature_extractor.conv_layers.{i}.layer_norm.{p}"),  # layer norm
    ("layer_norm.{p}", "encoder.feature_projection.layer_norm.{p}"),
    ("post_extract_proj.{p}", "encoder.feature_projection.projection.{p}"),
    ("encoder.pos_conv.0.bias", "encoder.transformer.pos_conv_embed.conv.bias"),
    ("encoder.pos_conv.0.weight_g", "encoder.transformer.pos_conv_embed.conv.parametrizations.weight.original0"),
    ("encoder.pos_conv.0.weight_v", "encoder.transformer.pos_conv_embed.conv.parametrizations.weight.original1"),
    ("encoder.layer_norm.{p}", "encoder.transformer.layer_norm.{p}"),
    ("encoder.layers.{i}.self_attn_layer_norm.{p}", "encoder.transformer.layers.{i}.layer_norm.{p}"),
    ("encoder.layers.{i}.fc1.{p}", "encoder.transformer.layers.{i}.feed_forward.intermediate_dense.{p}"),
    ("encoder.layers.{i}.fc2.{p}", "encoder.transformer.layers.{i}.feed_forward.output_dense.{p}"),
    ("encoder.layers.{i}.final_layer_norm.{p}", "encoder.transformer.layers.{i}.final_layer_norm.{p}"),
]
CNN_GROUP_NORM, CNN_LAYER_NORM = FAIRSEQ_STYLE_KEYS[1][0], FAIRSEQ_STYLE_KEYS[2][0]
WAVLM_KEYS = FAIRSEQ_STYLE_KEYS + [
    ("encoder.layers.{i}.self_attn.out_proj.{p}", "encoder.transformer.layers.{i}.attention.attention.out_proj.{p}"),
    ("encoder.layers.{i}.self_attn.relative_attention_bias.weight",
     "encoder.transformer.layers.{i}.attention.rel_attn_embed.weight"),
    ("encoder.layers.{i}.self_attn.grep_linear.{p}", "encoder.transformer.layers.{i}.attention.gru_rel_pos_linear.{p}"),
    ("encoder.layers.{i}.self_attn.grep_a", "encoder.transformer.layers.{i}.attention.gru_rel_pos_const"),
]
OFFICIAL_QKV = "encoder.layers.{i}.self_attn.{w}_proj.{p}"
TORCHAUDIO_QKV = "encoder.transformer.layers.{i}.attention.attention.in_proj_{p}"
# Pre-training-only tensors (masking, HuBERT label embeddings and projection, wav2vec 2.0
# quantizer): not part of the encoder, legitimately unused.
PRETRAIN_ONLY = re.compile(r"mask_emb|label_embs_concat|(final_proj|project_q|quantizer|target_glu)\..*")


def name_regex(template: str) -> "re.Pattern[str]":
    """Compile a name template: {i} matches a layer index, {p} weight|bias, {w} q|k|v."""
    pattern = re.escape(template)
    for field, sub in (("i", r"\d+"), ("p", "weight|bias"), ("w", "q|k|v")):
        pattern = pattern.replace(re.escape("{%s}" % field), f"(?P<{field}>{sub})")
    return re.compile(pattern)


def rename_key(name: str, pairs: List[Tuple["re.Pattern[str]", str]]) -> Optional[str]:
    """The new name of ``name`` under the first matching (regex, template) pair, or None."""
    for regex, template in pairs:
        match = regex.fullmatch(name)
        if match:
            return template.format(**match.groupdict())
    return None


_TO_TORCHAUDIO = [(name_regex(o), t) for o, t in WAVLM_KEYS]


QKV = Tuple["re.Pattern[str]", str]  # (regex of a q/k/v tensor name, template of the other side's name)


def rename_state(state: Dict[str, torch.Tensor], pairs: List[Tuple["re.Pattern[str]", str]],
                 skip: "re.Pattern[str]" = PRETRAIN_ONLY,
                 qkv: Optional[QKV] = None) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Rename a checkpoint's tensors to torchaudio's names by (regex, template) ``pairs``.

    With ``qkv``, the separate q/k/v projections of each layer (names matching its regex)
    are concatenated, in the order q, k, v, into one tensor named by its template, as
    ``torch.nn.MultiheadAttention``'s ``in_proj`` expects.

    Returns:
        (converted state, names that have no place in the encoder; names matching ``skip``,
        tensors used only for pre-training, are left out of both).
    """
    out: Dict[str, torch.Tensor] = {}
    parts: Dict[Tuple[str, str], Dict[str, Tuple[str, torch.Tensor]]] = {}
    unknown: List[str] = []
    for name, tensor in state.items():
        match = qkv[0].fullmatch(name) if qkv else None
        if match:
            parts.setdefault((match["i"], match["p"]), {})[match["w"]] = (name, tensor)
            continue
        new = rename_key(name, pairs)
        if new is not None:
            out[new] = tensor
        elif not skip.fullmatch(name):
            unknown.append(name)
    for (layer, kind), found in parts.items():
        if set(found) != {"q", "k", "v"}:
            unknown.extend(name for name, _ in found.values())
            continue
        out[qkv[1].format(i=layer, p=kind)] = torch.cat([found[w][1] for w in "qkv"])
    return out, unknown


_MERGED_QKV = re.compile(r"(?:.+\.)?" + name_regex(TORCHAUDIO_QKV).pattern)


def official_pieces(name: str) -> int:
    """How many tensors of the official checkpoint a torchaudio parameter holds: 3 for WavLM's merged
    attention input projection (``...attention.attention.in_proj_weight`` [3D, D] / ``in_proj_bias`` [3D]:
    the official q, k, v projections stacked, in that order, along dim 0, :func:`rename_state`), 1 for every
    other tensor (one-to-one renamings; torchaudio's HuBERT / wav2vec 2.0 keep q, k, v apart, as fairseq).
    ``name`` may carry a prefix (``model.``, ``encoder.frontend.model.``)."""
    return 3 if _MERGED_QKV.fullmatch(name) else 1


def wavlm_state_to_torchaudio(state: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Rename an official WavLM state dict to torchaudio's names (:func:`rename_state`; q/k/v
    concatenated). Returns (converted state, official names with no place in the encoder)."""
    return rename_state(state, _TO_TORCHAUDIO, qkv=(name_regex(OFFICIAL_QKV), TORCHAUDIO_QKV))
