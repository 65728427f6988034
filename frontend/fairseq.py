"""fairseq HuBERT and wav2vec 2.0 checkpoints: configuration and parameter names.

File layouts (as fairseq's ``checkpoint_utils`` writes them):
  modern:  ``{'cfg': {'model': {...}, 'task': {...}}, 'model': state_dict}``
  legacy:  ``{'args': argparse.Namespace(...), 'model': state_dict}`` (loads only
           with ``trust_checkpoint``: a Namespace needs unpickling)
Pre-trained files (``_name``/``arch`` ``wav2vec2`` or ``hubert``) have plain keys
(``encoder.layers.0.fc1.weight``). Fine-tuned files (``wav2vec_ctc``, ``hubert_ctc``)
keep the encoder under ``w2v_encoder.w2v_model.`` and its configuration in
``w2v_args``; their CTC head ``w2v_encoder.proj`` is not part of the encoder.
Both families map to ``torchaudio.models.wav2vec2_model`` (torchaudio's HuBERT
builders use the same model class).
"""
from __future__ import annotations

import argparse
from typing import Any, Dict, List, NamedTuple, Tuple

import torch

from core.errors import CheckpointError
from frontend.names import FAIRSEQ_STYLE_KEYS, name_regex, rename_state

FINETUNED_PREFIX = "w2v_encoder.w2v_model."
FINETUNED_HEAD = "w2v_encoder.proj."  # CTC output layer of fine-tuned models
FAMILIES = ("hubert", "wav2vec2")

FAIRSEQ_KEYS = FAIRSEQ_STYLE_KEYS + [
    ("encoder.layers.{i}.self_attn.{w}_proj.{p}", "encoder.transformer.layers.{i}.attention.{w}_proj.{p}"),
    ("encoder.layers.{i}.self_attn.out_proj.{p}", "encoder.transformer.layers.{i}.attention.out_proj.{p}"),
]
_TO_TORCHAUDIO = [(name_regex(f), t) for f, t in FAIRSEQ_KEYS]


class FairseqEncoder(NamedTuple):
    """What a fairseq file says about its encoder."""
    family: str  # 'hubert' or 'wav2vec2'
    layout: str  # 'modern' or 'legacy', plus ', fine-tuned' when prefixed
    cfg: Dict[str, Any]  # the encoder's fairseq model options
    state: Dict[str, torch.Tensor]  # encoder tensors, fairseq names, prefix removed
    head: List[str]  # tensors of fine-tuning heads (not part of the encoder)


def as_dict(obj: Any) -> Dict[str, Any]:
    """A config section as a dict: dict, argparse.Namespace or omegaconf DictConfig (trusted files)."""
    if obj is None:
        return {}
    if isinstance(obj, argparse.Namespace):
        return dict(vars(obj))
    if hasattr(obj, "items"):
        return {k: v for k, v in obj.items()}
    raise CheckpointError(f"expected a config section (dict or Namespace), found {type(obj).__name__}")


def is_fairseq_checkpoint(obj: Any) -> bool:
    """True for a fairseq layout: a state dict plus ``cfg['model']`` or a legacy ``args``."""
    if not (isinstance(obj, dict) and isinstance(obj.get("model"), dict)):
        return False
    cfg = obj.get("cfg")
    if cfg is not None and hasattr(cfg, "get") and cfg.get("model") is not None:
        return True
    return cfg is None and obj.get("args") is not None


def _model_name(cfg: Dict[str, Any]) -> str:
    return str(cfg.get("_name") or cfg.get("arch") or "")


def read_fairseq_encoder(obj: Dict[str, Any], path: str) -> FairseqEncoder:
    """Split a loaded fairseq checkpoint into encoder config and encoder tensors.

    Args:
        obj: the loaded file (see :func:`is_fairseq_checkpoint`).
        path: its name, for errors.
    """
    modern = obj.get("cfg") is not None
    model_cfg = as_dict(as_dict(obj["cfg"]).get("model")) if modern else as_dict(obj["args"])
    name, state = _model_name(model_cfg), obj["model"]
    finetuned = any(k.startswith(FINETUNED_PREFIX) for k in state)
    if finetuned or model_cfg.get("w2v_args") is not None or name.endswith("_ctc"):
        w2v_args = model_cfg.get("w2v_args")
        if w2v_args is None:
            raise CheckpointError(
                f"fairseq checkpoint '{path}' is fine-tuned ({name or 'no model name'}) but holds no w2v_args, so "
                f"its encoder architecture is unknown (fairseq would read it from w2v_path="
                f"{model_cfg.get('w2v_path')!r}). Load the pre-trained checkpoint it was fine-tuned from instead.")
        w2v_args = as_dict(w2v_args)
        model_cfg = as_dict(w2v_args["model"]) if w2v_args.get("model") is not None else w2v_args
        name = _model_name(model_cfg) or name
        head = sorted(k for k in state if not k.startswith(FINETUNED_PREFIX))
        state = {k[len(FINETUNED_PREFIX):]: v for k, v in state.items() if k.startswith(FINETUNED_PREFIX)}
    else:
        head = []
    if "label_embs_concat" in state or name.startswith("hubert"):
        family = "hubert"
    elif name.startswith("wav2vec") or not name:
        family = "wav2vec2"
    else:
        raise CheckpointError(
            f"fairseq checkpoint '{path}' holds a '{name}' model; supported are HuBERT and wav2vec 2.0 "
            f"(_name/arch 'hubert', 'wav2vec2' or their '_ctc' fine-tuned versions).")
    layout = ("modern" if modern else "legacy") + (", fine-tuned" if head or finetuned else "")
    return FairseqEncoder(family, layout, model_cfg, state, head)


def fairseq_state_to_torchaudio(state: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Rename encoder tensors to torchaudio's names (:func:`frontend.names.rename_state`).

    Returns:
        (converted state, names with no place in the encoder; pre-training-only
        tensors such as ``label_embs_concat``, ``final_proj``, ``quantizer`` are left out of both).
    """
    return rename_state(state, _TO_TORCHAUDIO)
