"""The speaker network (encoder + loss + regulariser toward the pre-trained weights).

Its model files (reading, writing, the original repository's, the self-contained header, checkpoint scanning) live in
:mod:`model_files`; this module reads and writes no file.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from core.plugins import get_plugin
from frontend.lora import adapter_deltas
from frontend.names import official_pieces


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
        # With LoRA the front-end's own weights are frozen and θ − θ₀ is what the adapters add (frontend.lora).
        self._reg_lora = bool(weight_finetuning_reg and getattr(self.encoder.frontend, "lora", None))
        self._reg_params = {n: p for n, p in self.encoder.frontend.named_parameters()
                            if p.requires_grad} if weight_finetuning_reg and not self._reg_lora else {}
        # r sums over the official checkpoint's tensors: WavLM's merged q/k/v in_proj counts as its three
        self._reg_pieces = {n: k for n in self._reg_params if (k := official_pieces(n)) > 1}
        for i, param in enumerate(self._reg_params.values()):
            self.register_buffer(f"anchor_{i}", param.detach().clone(), persistent=False)

    def regulariser(self) -> Optional[torch.Tensor]:
        """r = Σ ‖θ − θ₀‖₂ over the trainable front-end tensors, as the original sums it over the official
        checkpoint's tensors (the official WavLM module's parameters): WavLM's q, k and v projections are
        three norms although torchaudio merges them into one ``in_proj`` tensor (a norm of the merged
        tensor would be sqrt(q² + k² + v²), not q + k + v); every other tensor is one-to-one. None without
        a regulariser (``weight_finetuning_reg`` 0) or with nothing trainable. With LoRA, θ − θ₀ of an adapted
        weight is its adapter's scaling·B·A (:func:`frontend.lora.adapter_deltas`, WavLM's q/k/v blocks apart)."""
        if self._reg_lora:
            return torch.stack([torch.linalg.vector_norm(d) for d in adapter_deltas(self.encoder.frontend)]).sum()
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
