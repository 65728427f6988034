"""Model files: reading, writing, scanning a run's folder for them, and the speaker encoder built from one.

Ours hold ``model``, ``optimizer``, ... in one dict; the original repository's hold ``__S__.*`` / ``__L__.*`` keys
(:func:`translate_original_state`). Both load strictly; ours are written atomically (:func:`save_model_file`).
Ours are self-contained: the header, ``config`` (every option of the run) and ``frontend`` (the SSL architecture:
family and torchaudio builder arguments), rebuilds the model without the YAML or the pre-trained checkpoint
(:func:`apply_model_file`); files without ``frontend`` (the original's, older ones of ours) need both, as before.
A run's checkpoints are ``model%09d.model`` (one per epoch) and ``model%09d.step%09d.model`` (in an epoch)
(:func:`find_checkpoints`, :func:`find_step_checkpoints`).
"""
from __future__ import annotations

import logging
import os
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from core.config import MODEL_FILE, SSL_ARCHITECTURE, Config, require_paths
from core.errors import CheckpointError
from core.files import atomic_path
from core.options import MODEL, OPTIONS, PROTOCOL, with_role
from core.plugins import get_plugin
from frontend.formats import load_torch_file, state_mismatch
from frontend.lora import merge_lora, reconcile_state
from frontend.names import wavlm_state_to_torchaudio
from SpeakerNet import SpeakerNet

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- reading and loading

_ORIGINAL_PREFIXES = (("__S__.backend.", "encoder.backend."), ("__L__.", "loss_fn."))


def translate_original_state(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Model files of the original repository (``__S__.model.*`` official WavLM names,
    ``__S__.backend.*``, ``__L__.weight``; optionally ``module.``-prefixed) -> our names."""
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    if not any(k.startswith("__S__.") for k in state):
        return state
    wavlm = {k[len("__S__.model."):]: v for k, v in state.items() if k.startswith("__S__.model.")}
    converted, unknown = wavlm_state_to_torchaudio(wavlm)
    if unknown:
        raise CheckpointError(f"Original model file has front-end tensors with no known name: {unknown[:8]}")
    out = {f"encoder.frontend.model.{k}": v for k, v in converted.items()}
    for key, value in state.items():
        for old, new in _ORIGINAL_PREFIXES:
            if key.startswith(old):
                out[new + key[len(old):]] = value
    return out


def read_model_state(path: str) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """(the network's state in our key names, the whole file's dict) of a model file (ours or the original
    repo's)."""
    obj = load_torch_file(path)
    state = obj["model"] if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict) else obj
    if not isinstance(state, dict):
        raise CheckpointError(f"'{path}' is not a model file (found {type(obj).__name__}).")
    return translate_original_state(state), obj if isinstance(obj, dict) else {}


def average_states(states: List[Dict[str, torch.Tensor]], names: Sequence[str]) -> Dict[str, torch.Tensor]:
    """Element-wise mean of floating-point tensors (float64 sums, stored in their own type); other tensors
    (counters) from the last state. States that do not hold the same tensors are an error naming the file."""
    keys = set(states[0])
    for state, name in zip(states[1:], names[1:], strict=True):
        if set(state) != keys or any(state[k].shape != states[0][k].shape for k in keys):
            raise CheckpointError(f"'{name}' does not hold the same tensors as '{names[0]}' (another model or "
                                  f"configuration); average only checkpoints of one run.")
    out = {}
    for key, last in states[-1].items():
        if last.is_floating_point():
            out[key] = (sum(s[key].double() for s in states) / len(states)).to(last.dtype)
        else:
            out[key] = last.clone()
    return out


def load_model_state(model: SpeakerNet, path: str, allow_partial: bool = False) -> Dict[str, Any]:
    """Load a model file strictly (ours or the original repo's); returns the whole file's dict.

    Missing, unexpected and mis-shaped tensors are reported by name; nothing is skipped
    silently (the original did).
    """
    state, obj = read_model_state(path)
    what = f"Model file '{path}'"
    _load_checked(model, reconcile_state(model.state_dict(), state, obj.get("config") or {}, what), what,
                  allow_partial)
    return obj


def load_averaged_model_state(model: SpeakerNet, paths: Sequence[str]) -> None:
    """Load the average (:func:`average_states`) of several model files of one run, strictly (LoRA files into a
    model without adapters: each merged first, so the weights, not the factors, are averaged)."""
    if len(paths) == 1:
        load_model_state(model, paths[0])
        return
    own = model.state_dict()
    states = [reconcile_state(own, state, obj.get("config") or {}, f"Model file '{path}'")  # LoRA: merged each
              for path in paths for state, obj in [read_model_state(path)]]
    _load_checked(model, average_states(states, paths), f"The average of {', '.join(paths)}", False)


def _load_checked(model: SpeakerNet, state: Dict[str, torch.Tensor], what: str, allow_partial: bool) -> None:
    missing, unexpected, shapes, report = state_mismatch(model.state_dict(), state, shown=6)
    if shapes or (not allow_partial and (missing or unexpected)):
        raise CheckpointError(
            f"{what} does not fit this model: {report}. Check model, nOut, head_nb, "
            f"compression_dim, nClasses and pretrained_model_path against the run that wrote it.")
    model.load_state_dict(state, strict=not allow_partial)


# ----------------------------------------------------------------------------- the self-contained header

# Options a self-contained model file fixes (role ``model``: they shape its tensors or change its embeddings): a
# YAML or command-line value that differs is an error. The extraction protocol (role ``protocol``) it was trained
# with is a default. The roles are declared per option in core.options.ROLES; core.config's ladder applies them.
MODEL_FILE_KEYS = with_role(MODEL)
PROTOCOL_KEYS = with_role(PROTOCOL)
# The value of a model option a model file's ``config`` lacks because the file was written before the option
# existed: the behaviour the file was trained with (options not here take their default).
LEGACY_FILE_VALUES: Dict[str, Any] = {"context_average": True}  # CA-MHFA divided its logits by L before it


def resolved_model_options(config: Dict[str, Any]) -> Dict[str, Any]:
    """``config`` with the model options it leaves unset (None, e.g. ``head_nb``) replaced by the model
    plug-in's own values (``MainModel.option_defaults``): the values its model was built with."""
    own = getattr(get_plugin("models", config["model"]), "option_defaults", {})
    return {**config, **{key: value for key, value in own.items() if config.get(key) is None}}


def model_file_fields(net: SpeakerNet, config: Dict[str, Any]) -> Dict[str, Any]:
    """What a model file holds besides its tensors, to rebuild the model on its own: ``config`` (every
    option of the run) and ``frontend`` (the SSL front-end's architecture, when the encoder has one)."""
    config = resolved_model_options(config)  # a file records the numbers its model was built with, never None
    fields: Dict[str, Any] = {"config": {o.name: config[o.name] for o in OPTIONS}}
    architecture = getattr(getattr(net.encoder, "frontend", None), "architecture", None)
    if architecture is not None:
        fields["frontend"] = architecture
    return fields


def read_model_header(path: str) -> Optional[Dict[str, Any]]:
    """``{'config', 'frontend'}`` of a self-contained model file; None for a file without them (the original
    repository's, or ours from before model files held their architecture). The tensors are memory-mapped,
    not read."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not mappable (old serialisation) or unreadable: the plain reader says which
        obj = load_torch_file(path)
    if not (isinstance(obj, dict) and isinstance(obj.get("config"), dict) and "frontend" in obj):
        return None
    return {"config": obj["config"], "frontend": obj["frontend"]}


def _same(key: str, given: Any, saved: Any) -> bool:
    if key == "model":  # an alias (Baseline.Spk_Encoder) is the same model
        return given == saved or get_plugin("models", given) is get_plugin("models", saved)
    return given == saved


def apply_model_file(config: Dict[str, Any], sources: Optional[Dict[str, str]] = None) -> Config:
    """``config`` completed by its self-contained ``initial_model`` (unchanged for other files): the model-file
    rung of the option ladder (:meth:`core.config.Config.climb`).

    The file's model options (role ``model``) replace the configuration's; one given in ``sources`` (option ->
    where it was given, e.g. ``--nOut on the command line``; default: what a :class:`core.config.Config` records)
    with another value is a ConfigError naming both values and both places. Its extraction protocol (role
    ``protocol``) is used where ``sources`` gives none. The front-end is rebuilt from the file's ``frontend``
    (``ssl_architecture``, not an option), so ``pretrained_model_path`` is not read.
    """
    ladder = config if isinstance(config, Config) and sources is None else Config.given(config, sources or {})
    path = config["initial_model"]
    header = read_model_header(path) if path else None
    if header is None:
        return ladder.with_values({})
    saved = {**LEGACY_FILE_VALUES, **header["config"]}  # a file of a version without an option: its default

    def bad(key: str, value: Any, err: Exception) -> CheckpointError:
        return CheckpointError(f"Model file '{path}': bad saved value of '{key}': {value!r} ({err}).")

    out = ladder.climb(MODEL_FILE, saved, f"the model file '{path}'", agrees=_same, bad=bad)
    return out.with_values({"pretrained_model_path": "", SSL_ARCHITECTURE: header["frontend"]})


def with_model_file(config: Dict[str, Any], sources: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """``config`` completed by its ``initial_model`` when that is a self-contained model file
    (:func:`apply_model_file`; unchanged when scoring saved ``embeddings`` or without a model file).
    ``sources``: where options were given (default: what a :class:`core.config.Config` records of its YAML
    and command line). The result is a Config that records where each option came from."""
    if config["embeddings"] or not config["initial_model"]:
        return config
    require_paths(config, ["initial_model"])
    return apply_model_file(config, sources)


# ----------------------------------------------------------------------------- writing and scanning


def save_model_file(obj: Dict[str, Any], path: str) -> None:
    """torch.save to a temporary file in the same folder, then rename: never a half-written file."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def step_checkpoint_name(epochs_done: int, step: int) -> str:
    """The file of a checkpoint taken ``step`` optimizer steps into epoch ``epochs_done + 1``."""
    return f"model{epochs_done:09d}.step{step:09d}.model"


def _scan(model_dir: str, pattern: str) -> List[tuple]:
    """(the pattern's numbers..., path) of the files of ``model_dir`` matching ``pattern``, sorted."""
    if not os.path.isdir(model_dir):
        return []
    return sorted((*map(int, m.groups()), os.path.join(model_dir, f)) for f in os.listdir(model_dir)
                  for m in [re.fullmatch(pattern, f)] if m)


def find_step_checkpoints(model_dir: str) -> List[Tuple[int, int, str]]:
    """(epochs done, steps into the next epoch, path) of the in-epoch checkpoints (``save_every_steps``)."""
    return _scan(model_dir, r"model(\d{9})\.step(\d{9})\.model")


def find_checkpoints(model_dir: str) -> List[Tuple[int, str]]:
    """(epoch, path) of ``model%09d.model`` files, sorted by epoch."""
    return _scan(model_dir, r"model(\d{9})\.model")


# ----------------------------------------------------------------------------- the encoder of a model file


def build_speaker_encoder(config: Dict[str, Any], device: torch.device) -> nn.Module:
    """The encoder of a :class:`SpeakerNet` built from ``config`` (weights from ``initial_model`` when
    set), on ``device``: what evaluation, cohort making, verification, ``load_model`` and export run. LoRA
    adapters are merged into the front-end's weights (:func:`frontend.lora.merge_lora`): plain modules, the
    unmerged model's embeddings."""
    torch.manual_seed(config["seed"])
    net = SpeakerNet(**{**config, "weight_finetuning_reg": 0.0})  # no regulariser anchor needed to evaluate
    if config["initial_model"]:
        load_model_state(net, config["initial_model"])
        logger.info("Model %s loaded", config["initial_model"])
    else:
        logger.warning("No initial_model given: evaluating the untrained model (pre-trained front-end, "
                       "randomly initialised MHFA, seed %d).", config["seed"])
    if getattr(getattr(net.encoder, "frontend", None), "lora", None):
        merge_lora(net.encoder.frontend)
    return net.encoder.to(device)
