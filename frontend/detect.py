"""Tell the supported checkpoint formats apart by their content, read any of them, and build the model.

``read_ssl_checkpoint(path)`` returns the torchaudio builder arguments and the
tensors under torchaudio's names, whatever the format (see ``ACCEPTED_FORMATS``):
  * a folder                                  -> Hugging Face (frontend/hf.py)
  * ``cfg['model']`` or a legacy ``args``     -> fairseq HuBERT / wav2vec 2.0 (frontend/fairseq.py)
  * ``cfg`` with the model options at its top -> official WavLM (frontend/formats.py; names: frontend/names.py)
``make_model`` builds torchaudio's model from those arguments and ``build_torchaudio_model`` loads the tensors into it
strictly.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, NamedTuple

import torch
from torch import nn
from torchaudio.models import wav2vec2_model, wavlm_model

from frontend.fairseq import fairseq_state_to_torchaudio, is_fairseq_checkpoint, read_fairseq_encoder
from frontend.formats import (
    ACCEPTED_FORMATS,
    CheckpointError,
    fairseq_style_cfg_to_torchaudio,
    load_checked,
    load_torch_file,
    wavlm_cfg_to_torchaudio,
    wavlm_parts,
)
from frontend.hf import hf_config_to_torchaudio, hf_state_to_torchaudio, read_hf_folder
from frontend.names import wavlm_state_to_torchaudio

logger = logging.getLogger(__name__)


class SSLCheckpoint(NamedTuple):
    """A pre-trained SSL encoder, whatever file format it came in."""
    family: str  # 'wavlm', 'hubert' or 'wav2vec2'
    source: str  # the format found, for messages
    config: Dict[str, Any]  # torchaudio builder arguments (without aux_num_out)
    state: Dict[str, torch.Tensor]  # tensors under torchaudio's names
    unused: List[str]  # tensors of the file's encoder with no place in the model (file names)
    ignored: List[str]  # pre-training / fine-tuning heads, not part of the encoder


def _describe(obj: Any) -> str:
    if isinstance(obj, dict):
        keys = sorted(map(str, obj))[:10]
        if any(k.startswith(("__S__.", "module.__S__.")) for k in keys):
            return (f"keys {keys}: a model file written by the MHFA repository; give it as `initial_model`, "
                    f"not as `pretrained_model_path`")
        return f"a dict with keys {keys}"
    return f"a {type(obj).__name__}"


def read_ssl_checkpoint(path: str, trust_checkpoint: bool = False) -> SSLCheckpoint:
    """Detect the format of ``path`` from its content and read it.

    Args:
        path: checkpoint file or Hugging Face model folder.
        trust_checkpoint: allow arbitrary unpickling (legacy fairseq ``args`` Namespace, omegaconf objects).

    Raises:
        CheckpointError: missing or unreadable file, or a content that is none of ``ACCEPTED_FORMATS``.
    """
    if os.path.isdir(path):
        hf = read_hf_folder(path, trust_checkpoint)
        state, unused = hf_state_to_torchaudio(hf.state, hf.family)
        return SSLCheckpoint(hf.family, "Hugging Face folder", hf_config_to_torchaudio(hf.config, path), state,
                             unused, hf.head)
    obj = load_torch_file(path, trust_checkpoint)
    if is_fairseq_checkpoint(obj):
        enc = read_fairseq_encoder(obj, path)
        state, unused = fairseq_state_to_torchaudio(enc.state)
        return SSLCheckpoint(enc.family, f"fairseq {enc.family} ({enc.layout})",
                             fairseq_style_cfg_to_torchaudio(enc.cfg, f"fairseq model config of '{path}'"), state,
                             unused, enc.head)
    parts = wavlm_parts(obj)
    if parts is not None:
        state, unused = wavlm_state_to_torchaudio(parts[1])
        config = wavlm_cfg_to_torchaudio(parts[0], f"WavLM cfg of '{path}'")
        return SSLCheckpoint("wavlm", "official WavLM", config, state, unused, [])
    raise CheckpointError(f"'{path}' is not a supported SSL checkpoint: found {_describe(obj)}. "
                          f"Accepted: {ACCEPTED_FORMATS}.")


def make_model(family: str, config: Dict[str, Any]) -> nn.Module:
    """torchaudio's model of ``family`` ('wavlm', 'hubert' or 'wav2vec2') from its builder arguments
    ``config`` (without ``aux_num_out``), randomly initialised."""
    config = dict(config, aux_num_out=None)
    return wavlm_model(**config) if family == "wavlm" else wav2vec2_model(**config)


def build_torchaudio_model(ckpt: SSLCheckpoint, path: str, allow_partial: bool = False) -> nn.Module:
    """Build the torchaudio model of ``ckpt`` and load its tensors strictly.

    Every tensor of the file's encoder must find its place and every model tensor
    must be in the file. With ``allow_partial`` (YAML ``allow_partial_checkpoint``),
    unused tensors are dropped and missing ones keep their random initialisation,
    both logged by name; shape mismatches always fail.
    """
    model = make_model(ckpt.family, ckpt.config)
    load_checked(model, ckpt.state, f"Checkpoint '{path}' ({ckpt.source}, {ckpt.family})", allow_partial, ckpt.unused)
    return model
