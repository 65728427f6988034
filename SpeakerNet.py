"""The speaker network (encoder + loss + regulariser toward the pre-trained weights) and its model files.

Model files: ours (``model``, ``optimizer``, ... in one dict) and the original repository's
(``__S__.*`` / ``__L__.*`` keys), loaded strictly; written atomically. Ours are self-contained:
``config`` (every option of the run) and ``frontend`` (the SSL architecture: family and torchaudio
builder arguments) rebuild the model without the YAML or the pre-trained checkpoint
(:func:`apply_model_file`); files without ``frontend`` (the original's, older ones of ours) need
both, as before.
"""
from __future__ import annotations

import logging
import os
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from core.config import SSL_ARCHITECTURE, Config, require_paths
from core.errors import CheckpointError, ConfigError
from core.files import atomic_path
from core.options import OPTION_BY_NAME, OPTIONS, in_sections
from core.plugins import get_plugin
from frontend.formats import load_torch_file, state_mismatch
from frontend.names import official_pieces, wavlm_state_to_torchaudio

logger = logging.getLogger(__name__)


class _WeightDistance(torch.autograd.Function):
    """Σ ‖θ − θ₀‖₂ over pieces of a list of tensors with torch's multi-tensor kernels: tensor i is cut into
    ``pieces[i]`` equal blocks along dim 0, each its own norm (views; 1: the whole tensor). The differences are
    made once (forward) and turned into the gradient in place, block by block (backward); a zero norm has
    gradient 0, as ``torch.linalg.vector_norm``'s."""

    @staticmethod
    def forward(ctx, anchors: List[torch.Tensor], pieces: Tuple[int, ...],  # type: ignore[override]
                *params: torch.Tensor) -> torch.Tensor:
        diffs = torch._foreach_sub(params, anchors)
        blocks = [b for d, k in zip(diffs, pieces, strict=True) for b in (d.chunk(k) if k > 1 else (d,))]
        norms = torch._foreach_norm(blocks)
        ctx.diffs, ctx.blocks, ctx.norms = diffs, blocks, norms
        return torch.stack(norms).sum()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        diffs, blocks, ctx.diffs, ctx.blocks = ctx.diffs, ctx.blocks, None, None
        scales = [torch.where(n > 0, grad / n, torch.zeros_like(n)) for n in ctx.norms]
        torch._foreach_mul_(blocks, scales)  # d‖d‖/dθ = d/‖d‖ per block (views: in place in diffs), times grad
        return (None, None, *diffs)


def weight_distance(params: Dict[str, nn.Parameter], anchor: Dict[str, torch.Tensor],
                    pieces: Optional[Dict[str, int]] = None) -> torch.Tensor:
    """r = Σ ‖θ − θ₀‖₂ (the norm, not squared) over the parameters present in the anchor, as one fused
    reduction (:class:`_WeightDistance`; the original looped over the parameters in Python).

    Args:
        pieces: per name, the number of equal blocks along dim 0 that count as separate tensors (each its own
            norm); absent names are one tensor. WavLM's merged q/k/v ``in_proj`` is 3
            (:func:`frontend.names.official_pieces`): r is then summed over the official checkpoint's tensors.
    """
    names = [name for name in params if name in anchor]
    if not names:
        return torch.zeros(())
    pieces = pieces or {}
    return _WeightDistance.apply([anchor[n] for n in names], tuple(pieces.get(n, 1) for n in names),
                                 *[params[n] for n in names])


def total_loss(ce: torch.Tensor, reg: Optional[torch.Tensor], weight: float, mode: str) -> torch.Tensor:
    """Combine cross-entropy and the pre-trained-weight regulariser r.

    original (as the paper ran): CE/sg(CE) + w·r/(sg(r) + 1e-5), both terms ≈ 1; without r
    (``weight_finetuning_reg`` 0, or a frozen front-end) CE/sg(CE), so the CE gradient is
    always scaled by 1/CE. plain: CE + w·r. ``sg`` is stop-gradient.
    """
    with_reg = reg is not None and weight != 0
    if mode == "original":
        return ce / ce.detach() + (weight * reg / (reg.detach() + 1e-5) if with_reg else 0.0)
    return ce + weight * reg if with_reg else ce


class SpeakerNet(nn.Module):
    """``encoder`` (waveform -> embedding), ``loss_fn`` (embedding, label -> loss) and the
    regulariser toward the pre-trained front-end weights.

    Keyword arguments are the resolved configuration (YAML key names).
    """

    def __init__(self, model: str, trainfunc: str, weight_finetuning_reg: float = 0.0,
                 reg_loss: str = "original", **config: Any):
        super().__init__()
        self.encoder = get_plugin("models", model)(**config)
        self.loss_fn = get_plugin("loss", trainfunc)(**config)
        self.reg_weight, self.reg_mode = weight_finetuning_reg, reg_loss
        # θ₀ is copied once here (the original re-read the checkpoint every epoch); only
        # trainable tensors can move, so frozen ones are left out of r (their terms are 0),
        # and without a regulariser no copy is kept.
        self._reg_params = {n: p for n, p in self.encoder.frontend.named_parameters()
                            if p.requires_grad} if weight_finetuning_reg else {}
        # r sums over the official checkpoint's tensors: WavLM's merged q/k/v in_proj counts as its three
        self._reg_pieces = {n: k for n in self._reg_params if (k := official_pieces(n)) > 1}
        for i, param in enumerate(self._reg_params.values()):
            self.register_buffer(f"anchor_{i}", param.detach().clone(), persistent=False)

    def regulariser(self) -> Optional[torch.Tensor]:
        """r = Σ ‖θ − θ₀‖₂ over the trainable front-end tensors, as the original sums it over the official
        checkpoint's tensors (the official WavLM module's parameters): WavLM's q, k and v projections are
        three norms although torchaudio merges them into one ``in_proj`` tensor (a norm of the merged
        tensor would be sqrt(q² + k² + v²), not q + k + v); every other tensor is one-to-one. None without
        a regulariser (``weight_finetuning_reg`` 0) or with nothing trainable."""
        if not self._reg_params:
            return None
        anchor = {n: getattr(self, f"anchor_{i}") for i, n in enumerate(self._reg_params)}  # buffers move with .to()
        return weight_distance(self._reg_params, anchor, self._reg_pieces)

    def forward(self, wav: torch.Tensor, labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Args: wav [B, nPerSpeaker, S], labels [B]. Returns (total loss, CE, accuracy %)."""
        n_per = wav.shape[1]
        emb = self.encoder(wav.reshape(-1, wav.shape[-1]))  # [B*n, nOut]
        ce, acc = self.loss_fn(emb, labels.repeat_interleave(n_per))
        return total_loss(ce, self.regulariser(), self.reg_weight, self.reg_mode), ce, acc


# ----------------------------------------------------------------------------- checkpoints

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
    _load_checked(model, state, f"Model file '{path}'", allow_partial)
    return obj


def load_averaged_model_state(model: SpeakerNet, paths: Sequence[str]) -> None:
    """Load the average (:func:`average_states`) of several model files of one run, strictly."""
    if len(paths) == 1:
        load_model_state(model, paths[0])
        return
    states = [read_model_state(path)[0] for path in paths]
    _load_checked(model, average_states(states, paths), f"The average of {', '.join(paths)}", False)


def _load_checked(model: SpeakerNet, state: Dict[str, torch.Tensor], what: str, allow_partial: bool) -> None:
    missing, unexpected, shapes, report = state_mismatch(model.state_dict(), state, shown=6)
    if shapes or (not allow_partial and (missing or unexpected)):
        raise CheckpointError(
            f"{what} does not fit this model: {report}. Check model, nOut, head_nb, "
            f"compression_dim, nClasses and pretrained_model_path against the run that wrote it.")
    model.load_state_dict(state, strict=not allow_partial)


# Options a self-contained model file fixes (they shape its tensors or change its embeddings): a YAML or
# command-line value that differs is an error. The extraction protocol it was trained with is a default.
MODEL_FILE_KEYS = in_sections(("model",)) + ["normalize_input", "trainfunc", "nClasses", "subcenters"]
PROTOCOL_KEYS = in_sections(("extraction",))
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


def apply_model_file(config: Dict[str, Any], sources: Dict[str, str]) -> Dict[str, Any]:
    """``config`` completed by its self-contained ``initial_model`` (unchanged for other files).

    The file's model options (:data:`MODEL_FILE_KEYS`) replace the configuration's; one given in
    ``sources`` (option -> where it was given, e.g. ``--nOut on the command line``) with another value is
    a ConfigError naming both values and both places. Its extraction protocol (:data:`PROTOCOL_KEYS`) is
    used where ``sources`` gives none. The front-end is rebuilt from the file's ``frontend``
    (``ssl_architecture``, not an option), so ``pretrained_model_path`` is not read.
    """
    path = config["initial_model"]
    header = read_model_header(path) if path else None
    if header is None:
        return dict(config)
    saved, out, conflicts = header["config"], dict(config), []
    for key in MODEL_FILE_KEYS + PROTOCOL_KEYS:
        if key not in saved and key not in LEGACY_FILE_VALUES:  # a file of a version without this option: its default
            continue
        try:
            value = OPTION_BY_NAME[key].type(saved[key] if key in saved else LEGACY_FILE_VALUES[key])
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"Model file '{path}': bad saved value of '{key}': {saved[key]!r} ({err}).") from err
        if key in sources and key in MODEL_FILE_KEYS and not _same(key, config[key], value):
            conflicts.append(f"{key} is {config[key]!r} in {sources[key]} but {value!r} in the model file '{path}'")
        if key in MODEL_FILE_KEYS or key not in sources:
            out[key] = value
    if conflicts:
        raise ConfigError("; ".join(conflicts) + ". The model file defines the model it holds: remove those options "
                          "(or give the file's values), or give another model file.")
    out.update({"pretrained_model_path": "", SSL_ARCHITECTURE: header["frontend"]})
    return out


def with_model_file(config: Dict[str, Any], sources: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """``config`` completed by its ``initial_model`` when that is a self-contained model file
    (:func:`apply_model_file`; unchanged when scoring saved ``embeddings`` or without a model file).
    ``sources``: where options were given (default: what a :class:`core.config.Config` records of its YAML
    and command line). A Config stays one, with that record."""
    if config["embeddings"] or not config["initial_model"]:
        return config
    require_paths(config, ["initial_model"])
    if sources is None:
        sources = config.sources() if isinstance(config, Config) else {}
    resolved = apply_model_file(config, sources)
    return config.with_values(resolved) if isinstance(config, Config) else resolved


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


def build_encoder(config: Dict[str, Any], device: torch.device) -> nn.Module:
    """The encoder of a :class:`SpeakerNet` built from ``config`` (weights from ``initial_model`` when
    set), on ``device``: what evaluation, cohort making and verification run."""
    torch.manual_seed(config["seed"])
    net = SpeakerNet(**{**config, "weight_finetuning_reg": 0.0})  # no regulariser anchor needed to evaluate
    if config["initial_model"]:
        load_model_state(net, config["initial_model"])
        logger.info("Model %s loaded", config["initial_model"])
    else:
        logger.warning("No initial_model given: evaluating the untrained model (pre-trained front-end, "
                       "randomly initialised MHFA, seed %d).", config["seed"])
    return net.encoder.to(device)
