"""LoRA (low-rank adaptation, Hu et al. 2021, arXiv 2106.09685) on the attention projections of a front-end.

An adapted projection computes W x + (alpha / r) B A x: W [out, in] is the pre-trained weight, frozen; A [r, in]
(random) and B [out, r] (zeros, so training starts from the pre-trained model) are the adapter, which trains. YAML
``lora_rank`` r (0: off), ``lora_alpha`` (None: 2 r, wespeaker's w2v-BERT 128 for r 64), ``lora_dropout``
(on the adapter's input), ``lora_targets`` (which of :data:`core.options.LORA_TARGETS` in every block;
default query and value).

* torchaudio's HuBERT / wav2vec 2.0 (``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``), transformers' w2v-BERT 2.0
  (``linear_q``, ``linear_k``, ``linear_v``, ``linear_out``) and WavLM's output projection are ``nn.Linear``
  modules: ``peft`` adapts them (``inject_adapter_in_model``; the module becomes a peft ``Linear`` whose
  ``base_layer`` holds W, its adapter ``lora_A.default`` / ``lora_B.default``).
* torchaudio's WavLM computes query, key and value with one ``nn.MultiheadAttention`` weight, ``in_proj_weight``
  [3 D, D] (q, k, v stacked), read by ``F.linear`` in ``WavLMSelfAttention``: peft adapts modules, not row blocks
  of a merged parameter, so :class:`MergedProjectionLoRA` (ours) adds the low-rank term to the chosen row blocks
  as a ``torch.nn.utils.parametrize`` parametrization of that weight (same maths as a per-projection adapter: row
  block j of W x is W_j x). Being in weight space, it cannot drop the adapter's input, so ``lora_dropout`` > 0 with
  query/key/value on WavLM is refused (wespeaker's w2v-BERT LoRA uses 0).

Only attention projections inside the transformer blocks are adapted: the modules the fast kernels read directly
(CNN, positional convolution: ``frontend/kernels.py``) never are, and a front-end with adapters never runs the
frozen-block path that casts weights once (LoRA with ``freeze_ssl`` is refused). :func:`merge_lora` folds the
adapters into W (evaluation, export); :func:`reconcile_state` loads a model file with adapters into a model
without (merged) and one without into a model with (the adapters start afresh).
"""
from __future__ import annotations

import logging
import math
from typing import Any, Dict, Iterable, List, Optional, Tuple

import torch
from torch import nn
from torch.nn.utils import parametrize

from core.errors import CheckpointError, ConfigError
from core.options import DEFAULT_LORA_TARGETS, lora_targets

logger = logging.getLogger(__name__)

# per front-end family: target -> the nn.Linear inside a transformer block that peft adapts
TORCHAUDIO_LINEARS = {"query": "attention.q_proj", "key": "attention.k_proj", "value": "attention.v_proj",
                      "output": "attention.out_proj"}
LINEARS: Dict[str, Dict[str, str]] = {
    "hubert": TORCHAUDIO_LINEARS, "wav2vec2": TORCHAUDIO_LINEARS,
    "wav2vec2-bert": {"query": "self_attn.linear_q", "key": "self_attn.linear_k", "value": "self_attn.linear_v",
                      "output": "self_attn.linear_out"},
    "wavlm": {"output": "attention.attention.out_proj"},
}
# WavLM: the merged projection (module inside a block, parameter) and the row block of each target
MERGED_PROJECTION = ("attention.attention", "in_proj_weight")
MERGED_ROWS = {"query": 0, "key": 1, "value": 2}
PEFT_ADAPTER = "default"
PARAMETRIZED = f"parametrizations.{MERGED_PROJECTION[1]}."  # in the state-dict keys of MergedProjectionLoRA


def lora_scaling(rank: int, alpha: Optional[float]) -> float:
    """alpha / r, with alpha None meaning 2 r (scaling 2)."""
    return 2.0 if alpha is None else float(alpha) / rank


class MergedProjectionLoRA(nn.Module):
    """LoRA on row blocks of a merged projection weight W [3 D, D] (WavLM's q, k, v), as a parametrization:
    W -> W + scaling * concat over blocks (B_j A_j on the chosen blocks, 0 elsewhere).

    Args:
        dim: D (W has 3 D rows); rank: r; scaling: alpha / r; blocks: the row blocks adapted (0 query, 1 key,
            2 value).
    Parameters ``lora_A`` [n, r, D] (peft's initialisation: Kaiming-uniform with a = sqrt(5)) and ``lora_B``
    [n, D, r] (zeros), n = len(blocks); ``blocks`` is kept in the model file so a file merges without its config.
    """

    def __init__(self, dim: int, rank: int, scaling: float, blocks: Iterable[int]):
        super().__init__()
        blocks = list(blocks)
        self.scaling = scaling
        self.register_buffer("blocks", torch.tensor(blocks, dtype=torch.long))
        self.lora_A = nn.Parameter(torch.empty(len(blocks), rank, dim))
        self.lora_B = nn.Parameter(torch.zeros(len(blocks), dim, rank))
        for a in self.lora_A:
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        self._rows = blocks  # python ints: no device sync in forward

    def delta(self) -> List[Tuple[int, torch.Tensor]]:
        """(row block, scaling * B_j A_j [D, D]) per adapted block."""
        return [(b, self.scaling * (self.lora_B[j] @ self.lora_A[j])) for j, b in enumerate(self._rows)]

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        parts = list(weight.chunk(3))  # [D, D] each: q, k, v
        for block, delta in self.delta():
            parts[block] = parts[block] + delta.to(weight.dtype)
        return torch.cat(parts)


def _check(frontend: nn.Module, rank: int, dropout: float, targets: Tuple[str, ...]) -> None:
    if rank < 0:
        raise ConfigError(f"lora_rank must be 0 (off) or positive, got {rank}.")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"lora_dropout must be in [0, 1), got {dropout}.")
    if frontend.freeze_ssl:
        raise ConfigError("lora_rank > 0 trains adapters inside the front-end, but freeze_ssl: true freezes it (eval "
                          "mode, no gradient): set freeze_ssl: false (the front-end's own weights stay frozen with "
                          "LoRA), or lora_rank: 0.")
    if not getattr(frontend, "freeze_cnn", True) or getattr(frontend, "feature_grad_mult", 1.0) != 1.0:
        raise ConfigError("With LoRA (lora_rank > 0) the front-end's own weights stay frozen, the input modules "
                          "included, but freeze_cnn: false (or feature_grad_mult) trains them: remove freeze_cnn / "
                          "feature_grad_mult, or set lora_rank: 0 for full fine-tuning.")
    if frontend.family == "wavlm" and dropout > 0 and set(targets) & set(MERGED_ROWS):
        raise ConfigError(f"lora_dropout {dropout} on WavLM's query/key/value: torchaudio's WavLM computes them with "
                          f"one merged weight (in_proj_weight), adapted in weight space, which cannot drop the "
                          f"adapter's input. Set lora_dropout: 0 (wespeaker's w2v-BERT LoRA uses 0), or "
                          f"lora_targets: [output] only.")
    if frontend.family not in LINEARS:
        raise ConfigError(f"LoRA is not available for the front-end family {frontend.family!r}.")


def add_lora(frontend: nn.Module, rank: int, alpha: Optional[float] = None, dropout: float = 0.0,
             targets: Any = DEFAULT_LORA_TARGETS) -> nn.Module:
    """Add LoRA adapters to ``targets`` of every transformer block of ``frontend`` (a
    :class:`frontend.base.LayerFrontend`) in place and freeze every other front-end weight. ``rank`` 0: nothing
    happens. Sets ``frontend.lora`` to the options (None without adapters). Returns ``frontend``."""
    frontend.lora = None
    if rank == 0:
        return frontend
    try:
        targets = tuple(lora_targets(targets))
    except ValueError as err:
        raise ConfigError(f"lora_targets: {err}") from err
    _check(frontend, rank, dropout, targets)
    frontend.model.requires_grad_(False)
    names = {id(m): n for n, m in frontend.model.named_modules()}
    linears = LINEARS[frontend.family]
    modules = [f"{names[id(layer)]}.{linears[t]}" for layer in frontend.transformer_layers() for t in targets
               if t in linears]
    if modules:
        from peft import LoraConfig, inject_adapter_in_model

        config = LoraConfig(r=rank, lora_alpha=rank * lora_scaling(rank, alpha), lora_dropout=dropout,
                            target_modules=modules, bias="none")
        inject_adapter_in_model(config, frontend.model, adapter_name=PEFT_ADAPTER)
    blocks = [MERGED_ROWS[t] for t in targets if t in MERGED_ROWS]
    if frontend.family == "wavlm" and blocks:
        module_name, param = MERGED_PROJECTION
        for layer in frontend.transformer_layers():
            attention = layer.get_submodule(module_name)
            parametrize.register_parametrization(attention, param, MergedProjectionLoRA(
                attention.embed_dim, rank, lora_scaling(rank, alpha), blocks))
            getattr(attention.parametrizations, param).original.requires_grad_(False)
    frontend.model.requires_grad_(False)
    for name, p in frontend.model.named_parameters():
        if is_adapter_key(name):
            p.requires_grad_(True)
    frontend.lora = {"rank": rank, "alpha": alpha, "dropout": dropout, "targets": list(targets)}
    frontend.derived.clear()
    count = sum(p.numel() for p in frontend.parameters() if p.requires_grad)
    logger.info("LoRA on the front-end: rank %d, scaling %g, dropout %g, targets %s of %d blocks: %d adapter "
                "parameters; the front-end's own weights are frozen", rank, lora_scaling(rank, alpha), dropout,
                ",".join(targets), len(frontend.transformer_layers()), count)
    return frontend


def is_adapter_key(name: str) -> bool:
    """Whether a parameter / state-dict name belongs to a LoRA adapter (peft's or ours)."""
    return ".lora_A." in name or ".lora_B." in name or name.endswith((".lora_A", ".lora_B", ".0.blocks"))


def adapter_deltas(frontend: nn.Module) -> List[torch.Tensor]:
    """The weight changes the adapters make, scaling * B A per adapted projection (WavLM's merged one: per row
    block), differentiable: what the regulariser toward the pre-trained weights measures with LoRA."""
    from peft.tuners.lora import LoraLayer

    out: List[torch.Tensor] = []
    for module in frontend.model.modules():
        if isinstance(module, LoraLayer):
            out.append(module.get_delta_weight(PEFT_ADAPTER))
        elif isinstance(module, MergedProjectionLoRA):
            out.extend(delta for _, delta in module.delta())
    return out


def merge_lora(frontend: nn.Module) -> nn.Module:
    """Fold every adapter into its weight (W + scaling B A) and remove it, in place: plain modules again, the
    same outputs (to float rounding), nothing left for the fast kernels to miss. Returns ``frontend``."""
    if not getattr(frontend, "lora", None):
        return frontend
    from peft.tuners.lora import LoraLayer

    for name, module in list(frontend.model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge(adapter_names=[PEFT_ADAPTER])
            parent, _, child = name.rpartition(".")
            setattr(frontend.model.get_submodule(parent) if parent else frontend.model, child,
                    module.get_base_layer())
        elif parametrize.is_parametrized(module, MERGED_PROJECTION[1]):
            with torch.no_grad():
                parametrize.remove_parametrizations(module, MERGED_PROJECTION[1], leave_parametrized=True)
            getattr(module, MERGED_PROJECTION[1]).requires_grad_(False)
    frontend.lora = None
    frontend.derived.clear()
    if hasattr(frontend, "_matmul_params"):
        del frontend._matmul_params
    return frontend


# ----------------------------------------------------------------------------- model files


def merge_state(state: Dict[str, torch.Tensor], scaling: float) -> Dict[str, torch.Tensor]:
    """A state dict with adapters -> the state of the same model without them (W + scaling B A, plain names)."""
    out = {k: v for k, v in state.items() if not is_adapter_key(k)}
    for key in [k for k in out if k.endswith(".base_layer.weight")]:  # peft
        prefix = key[:-len("base_layer.weight")]
        a, b = state[f"{prefix}lora_A.{PEFT_ADAPTER}.weight"], state[f"{prefix}lora_B.{PEFT_ADAPTER}.weight"]
        out[prefix + "weight"] = (out.pop(key).float() + scaling * (b.float() @ a.float())).to(state[key].dtype)
        if prefix + "base_layer.bias" in out:
            out[prefix + "bias"] = out.pop(prefix + "base_layer.bias")
    for key in [k for k in out if k.endswith(PARAMETRIZED + "original")]:  # ours (WavLM)
        prefix = key[:-len(PARAMETRIZED + "original")]
        lora = f"{prefix}{PARAMETRIZED}0."
        weight = out.pop(key)
        parts = list(weight.float().chunk(3))
        for j, block in enumerate(state[lora + "blocks"].tolist()):
            a, b = state[lora + "lora_A"][j].float(), state[lora + "lora_B"][j].float()
            parts[block] = parts[block] + scaling * (b @ a)
        out[prefix + MERGED_PROJECTION[1]] = torch.cat(parts).to(weight.dtype)
    return out


def reconcile_state(model_state: Dict[str, torch.Tensor], state: Dict[str, torch.Tensor], file_config: Dict[str, Any],
                    what: str) -> Dict[str, torch.Tensor]:
    """``state`` (of a model file) in the layout of ``model_state``: a file with adapters loaded into a model
    without is merged (a full fine-tuning stage after a LoRA stage; the scaling from the file's ``lora_rank`` and
    ``lora_alpha``); a file without adapters loaded into a model with them gets its weights renamed under the
    adapted modules and the model's own fresh adapters (a LoRA stage after a stage without). Otherwise unchanged.
    """
    model_lora, file_lora = any(map(is_adapter_key, model_state)), any(map(is_adapter_key, state))
    if file_lora and not model_lora:
        rank = file_config.get("lora_rank")
        if not rank:
            raise CheckpointError(f"{what} holds LoRA adapters but no lora_rank / lora_alpha in its config, so they "
                                  f"cannot be merged: load it with the YAML of the run that wrote it (lora_rank > 0).")
        logger.info("%s: its LoRA adapters merged into the front-end's weights (rank %d, scaling %g)", what, rank,
                    lora_scaling(rank, file_config.get("lora_alpha")))
        return merge_state(state, lora_scaling(rank, file_config.get("lora_alpha")))
    if model_lora and not file_lora:
        out = dict(state)
        for key in model_state:
            plain = key.replace(".base_layer.", ".").replace(PARAMETRIZED + "original", MERGED_PROJECTION[1])
            if plain != key and plain in out:
                out[key] = out.pop(plain)
            elif is_adapter_key(key):
                out[key] = model_state[key]
        logger.info("%s holds no LoRA adapters: its weights loaded under the model's fresh adapters", what)
        return out
    return state
