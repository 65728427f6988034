"""Speaker network (encoder + loss + regulariser), its trainer and checkpoint I/O."""
from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn
from tqdm import tqdm

from models.checkpoint_names import wavlm_state_to_torchaudio
from models.checkpoints import CheckpointError, load_torch_file, state_mismatch
from tools.logs import progress_options
from tools.plugins import get_plugin

logger = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{name}' requested but CUDA is not available; use device: cpu or auto.")
    return device


def weight_distance(params: Dict[str, nn.Parameter], anchor: Dict[str, torch.Tensor]) -> torch.Tensor:
    """r = Σ_p ‖θ_p − θ₀_p‖₂ (the norm, not squared) over parameters present in the anchor."""
    terms = [torch.linalg.vector_norm(p - anchor[name]) for name, p in params.items() if name in anchor]
    return torch.stack(terms).sum() if terms else torch.zeros(())


def total_loss(ce: torch.Tensor, reg: Optional[torch.Tensor], weight: float, mode: str) -> torch.Tensor:
    """Combine cross-entropy and the pre-trained-weight regulariser r.

    original (as the paper ran): CE/sg(CE) + w·r/(sg(r) + 1e-5), both terms ≈ 1;
    plain: CE + w·r. ``sg`` is stop-gradient. Without r, the loss is CE.
    """
    if reg is None or weight == 0:
        return ce
    if mode == "original":
        return ce / ce.detach() + weight * reg / (reg.detach() + 1e-5)
    return ce + weight * reg


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
        for i, param in enumerate(self._reg_params.values()):
            self.register_buffer(f"anchor_{i}", param.detach().clone(), persistent=False)

    def regulariser(self) -> Optional[torch.Tensor]:
        if not self._reg_params:
            return None
        anchor = {n: getattr(self, f"anchor_{i}") for i, n in enumerate(self._reg_params)}  # buffers move with .to()
        return weight_distance(self._reg_params, anchor)

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


def load_model_state(model: SpeakerNet, path: str, allow_partial: bool = False) -> Dict[str, Any]:
    """Load a model file strictly (ours or the original repo's); returns the whole file's dict.

    Missing, unexpected and mis-shaped tensors are reported by name; nothing is skipped
    silently (the original did).
    """
    obj = load_torch_file(path)
    state = obj["model"] if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict) else obj
    if not isinstance(state, dict):
        raise CheckpointError(f"'{path}' is not a model file (found {type(obj).__name__}).")
    state = translate_original_state(state)
    missing, unexpected, shapes, report = state_mismatch(model.state_dict(), state, shown=6)
    if shapes or (not allow_partial and (missing or unexpected)):
        raise CheckpointError(
            f"Model file '{path}' does not fit this model: {report}. Check model, nOut, head_nb, "
            f"compression_dim, nClasses and pretrained_model_path against the run that wrote it.")
    model.load_state_dict(state, strict=not allow_partial)
    return obj if isinstance(obj, dict) else {}


def save_atomic(obj: Dict[str, Any], path: str) -> None:
    """torch.save to a temporary file in the same folder, then rename: never a half-written file."""
    folder = os.path.dirname(os.path.abspath(path))
    handle, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".model")
    os.close(handle)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def find_checkpoints(model_dir: str) -> List[Tuple[int, str]]:
    """(epoch, path) of ``model%09d.model`` files, sorted by epoch."""
    if not os.path.isdir(model_dir):
        return []
    found = [(int(m.group(1)), os.path.join(model_dir, f))
             for f in os.listdir(model_dir) for m in [re.fullmatch(r"model(\d{9})\.model", f)] if m]
    return sorted(found)


# ----------------------------------------------------------------------------- trainer

class ModelTrainer:
    """Optimiser, scheduler, precision and the epoch loop for a :class:`SpeakerNet`."""

    def __init__(self, net: SpeakerNet, device: torch.device, optimizer: str, scheduler: str, lr: float,
                 LR_MHFA: float, LR_Transformer: float, LLRD_factor: float, margin: float = 0.2,
                 margin_warmup_epochs: float = 0.0, mixedprec: bool = False, **config: Any):
        self.model = net.to(device)
        self.device = device
        groups = net.encoder.parameter_groups(LR_MHFA, LR_Transformer, LLRD_factor,
                                              extra_backend=list(net.loss_fn.parameters()))
        self.optimizer = get_plugin("optimizer", optimizer)(groups, lr=lr, **config)
        self.scheduler, self.lr_step = get_plugin("scheduler", scheduler)(self.optimizer, **config)
        self.final_margin, self.margin_warmup = margin, margin_warmup_epochs
        self.amp_dtype = (torch.float16 if device.type == "cuda" else torch.bfloat16) if mixedprec else None
        self.scaler = torch.amp.GradScaler(device.type, enabled=mixedprec and device.type == "cuda")

    def margin_at(self, progress_epochs: float) -> float:
        """Linear margin ramp 0 -> margin over ``margin_warmup_epochs`` (fixed margin when 0)."""
        if self.margin_warmup <= 0:
            return self.final_margin
        return self.final_margin * min(1.0, progress_epochs / self.margin_warmup)

    def train_epoch(self, loader, epoch: int, verbose: bool = True) -> Dict[str, float]:
        """One pass over ``loader`` (epochs count from 1). Returns mean loss, accuracy, rate."""
        self.model.train()
        total_ce = total_acc = 0.0
        steps, samples, start = 0, 0, time.time()
        bar = tqdm(loader, desc=f"epoch {epoch}", disable=not verbose, leave=False, **progress_options())
        steps_per_epoch = max(1, len(loader))
        for step, (wav, labels) in enumerate(bar):
            self.model.loss_fn.margin = self.margin_at(epoch - 1 + step / steps_per_epoch)
            wav, labels = wav.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
            self.optimizer.zero_grad(set_to_none=True)
            with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                                enabled=self.amp_dtype is not None):
                loss, ce, acc = self.model(wav, labels)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.lr_step == "iteration":
                self.scheduler.step()
            steps += 1
            samples += wav.shape[0]
            total_ce += ce.item()
            total_acc += acc.item()
            bar.set_postfix(loss=f"{total_ce / steps:.3f}", acc=f"{total_acc / steps:.1f}%",
                            rate=f"{samples / (time.time() - start):.1f}/s", refresh=False)
        if self.lr_step == "epoch":
            self.scheduler.step()
        if steps == 0:
            raise RuntimeError("The training loader produced no batch: the list has fewer speakers/utterances "
                               "than one batch needs (lower batch_size or nPerSpeaker).")
        return {"loss": total_ce / steps, "acc": total_acc / steps, "rate": samples / (time.time() - start),
                "steps": steps, "margin": self.model.loss_fn.margin}

    def current_lr(self) -> float:
        return max(g["lr"] for g in self.optimizer.param_groups)

    def save(self, path: str, epoch: int, config: Dict[str, Any]) -> None:
        save_atomic({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                     "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                     "epoch": epoch, "config": {k: v for k, v in config.items()
                                                if isinstance(v, (int, float, str, bool))}}, path)

    def resume(self, path: str) -> int:
        """Restore model, optimiser and scheduler from our checkpoint; returns its epoch."""
        obj = load_model_state(self.model, path)
        for key, target in (("optimizer", self.optimizer), ("scheduler", self.scheduler), ("scaler", self.scaler)):
            if key not in obj:
                raise CheckpointError(f"'{path}' holds no {key} state, so it cannot be resumed; "
                                      f"start a new stage from it with initial_model instead.")
            target.load_state_dict(obj[key])
        return int(obj["epoch"])
