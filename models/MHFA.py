"""SSL front-end + MHFA back-end (Peng et al., SLT 2022).

MHFA, multi-head factorized attentive pooling, on stacked layers X [B, L+1, T, D]:
  K = sum_l softmax(w_k)_l X_l,  V = sum_l softmax(w_v)_l X_l          [B, T, D]
  K' = Linear_k(K), V' = Linear_v(V)                                    [B, T, c]
  A = softmax_over_time(Linear_att(K'))                                 [B, T, H]
  P_h = sum_t A[t, h] V'[t]                                             [B, H, c]
  e = Linear_out(flatten(P))                                            [B, nOut]
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import nn

from core.options import DEFAULT_LORA_TARGETS
from frontend.base import LayerFrontend
from frontend.frames import pad_mask
from frontend.lora import add_lora
from frontend.ssl_frontend import load_ssl_frontend, ssl_frontend_from_architecture

logger = logging.getLogger(__name__)


class MHFA(nn.Module):
    """Multi-head factorized attentive pooling.

    Args:
        num_layers: L + 1, number of stacked hidden sequences (from the front-end;
            the original hard-coded 13).
        inputs_dim: D, hidden size of the front-end.
        head_nb: H, number of attention heads (YAML ``head_nb``).
        compression_dim: c (YAML ``compression_dim``).
        outputs_dim: embedding size (YAML ``nOut``).
    Parameter names follow the original (``weights_k``, ``cmp_linear_k``, ...).
    """

    def __init__(self, num_layers: int, inputs_dim: int, head_nb: int = 32, compression_dim: int = 128,
                 outputs_dim: int = 256):
        super().__init__()
        self.weights_k = nn.Parameter(torch.ones(num_layers))
        self.weights_v = nn.Parameter(torch.ones(num_layers))
        self.cmp_linear_k = nn.Linear(inputs_dim, compression_dim)
        self.cmp_linear_v = nn.Linear(inputs_dim, compression_dim)
        self.att_head = nn.Linear(compression_dim, head_nb)
        self.pooling_fc = nn.Linear(head_nb * compression_dim, outputs_dim)

    def attention_logits(self, k: torch.Tensor, pad: Optional[torch.Tensor]) -> torch.Tensor:
        """Compressed keys k [B, T, c] (pad [B, T]: padded frames, or None) -> logits [B, T, H]: one query per
        head, frame by frame."""
        return self.att_head(k)

    def layer_weights(self) -> torch.Tensor:
        """[2, L+1]: the softmax-normalised layer weights of the keys (row 0) and of the values (row 1)."""
        return torch.stack([self.weights_k.softmax(dim=0), self.weights_v.softmax(dim=0)])

    def forward(self, x: torch.Tensor, frame_lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Args: x [B, L+1, T, D]; frame_lengths [B] valid frames (None: all). Returns: [B, nOut]."""
        b, layers, t, d = x.shape
        kv = torch.matmul(self.layer_weights().to(x.dtype), x.reshape(b, layers, t * d))  # [B, 2, T*D], one pass
        return self.pool(kv[:, 0].view(b, t, d), kv[:, 1].view(b, t, d), frame_lengths)

    def pool(self, k: torch.Tensor, v: torch.Tensor, frame_lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """From the layer-weighted keys k and values v [B, T, D] (frame_lengths as :meth:`forward`) on."""
        k = self.cmp_linear_k(k)  # [B, T, c]
        v = self.cmp_linear_v(v)  # [B, T, c]
        pad = None
        if frame_lengths is not None:
            pad = pad_mask(frame_lengths.to(k.device), k.shape[1])
        logits = self.attention_logits(k, pad)  # [B, T, H]
        if pad is not None:  # padded frames get no attention
            logits = logits.masked_fill(pad[..., None], float("-inf"))
        att = logits.softmax(dim=1)  # [B, T, H], normalised over time
        pooled = torch.einsum("bth,btc->bhc", att, v)  # [B, H, c]
        return self.pooling_fc(pooled.flatten(1))  # [B, nOut]


class SpeakerEncoder(nn.Module):
    """Waveform -> speaker embedding: ``frontend`` (SSL layers) then ``backend`` (MHFA)."""

    def __init__(self, frontend: LayerFrontend, backend: MHFA):
        super().__init__()
        self.frontend = frontend
        self.backend = backend

    def forward(self, wav: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Args: wav [B, N]; lengths [B] valid samples of padded rows (None: all whole).
        Returns: [B, nOut], for padded rows equal to the embedding of the unpadded input."""
        if not torch.is_grad_enabled() and self.frontend.kernels == "auto" and hasattr(self.backend, "layer_weights"):
            # inference: the layers are summed as they come, never stored (streaming layer sums)
            kv, frames = self.frontend.weighted_layers(wav, self.backend.layer_weights(), lengths)
            return self.backend.pool(kv[0], kv[1], frames)
        if lengths is None:
            return self.backend(self.frontend(wav))
        layers, frames = self.frontend(wav, lengths)
        return self.backend(layers, frames)

    def parameter_groups(self, lr_backend: float, lr_transformer: float, llrd_factor: float,
                         extra_backend: List[nn.Parameter] = ()) -> List[Dict[str, Any]]:
        """Optimizer groups as the original: back-end (+ loss) at ``LR_MHFA``, transformer
        block i (0-based) at ``LR_Transformer * LLRD_factor**i``. Frozen parameters are in
        no group: the input modules (CNN, feature projection, positional conv) unless
        ``freeze_cnn`` is false (then they form the group ``frontend.input`` at
        ``LR_Transformer``), and every front-end parameter under ``freeze_ssl``. With LoRA only the adapters
        train: block i's adapters form its group ``transformer.i``.
        """
        groups = [{"params": list(self.backend.parameters()) + list(extra_backend), "lr": lr_backend,
                   "name": "MHFA"}]
        inputs = [p for m in self.frontend.input_modules() for p in m.parameters() if p.requires_grad]
        if inputs:
            groups.append({"params": inputs, "lr": lr_transformer, "name": "frontend.input"})
        for i, layer in enumerate(self.frontend.transformer_layers()):
            params = [p for p in layer.parameters() if p.requires_grad]
            if params:
                groups.append({"params": params, "lr": lr_transformer * llrd_factor ** i,
                               "name": f"transformer.{i}"})
        return groups


def build_frontend(pretrained_model_path: str, normalize_input: bool = False, trust_checkpoint: bool = False,
                   freeze_ssl: bool = False, freeze_cnn: bool = True, feature_grad_mult: float = 1.0,
                   layer_drop: Optional[float] = None, grad_checkpointing: bool = False,
                   allow_partial_checkpoint: bool = False, layer_grad_mult: float = 1.0,
                   ssl_architecture: Optional[Dict[str, Any]] = None, initial_model: str = "",
                   compile_frontend: bool = False, frontend_kernels: str = "auto", lora_rank: int = 0,
                   lora_alpha: Optional[float] = None, lora_dropout: float = 0.0,
                   lora_targets: Sequence[str] = DEFAULT_LORA_TARGETS, **kwargs: Any) -> LayerFrontend:
    """The SSL front-end of a back-end plug-in, from the front-end options of a configuration (those of
    :func:`frontend.ssl_frontend.load_ssl_frontend`). With ``ssl_architecture`` (the architecture a
    self-contained model file ``initial_model`` records) it is built from that, untrained, and
    ``pretrained_model_path`` is not read: the model file's tensors fill it. ``compile_frontend``:
    :meth:`LayerFrontend.compile_blocks`. ``frontend_kernels``: 'auto' or 'reference' (``LayerFrontend.kernels``).
    ``lora_*``: LoRA adapters on the attention projections (:func:`frontend.lora.add_lora`; rank 0: none)."""
    shared = dict(normalize_input=normalize_input, freeze_cnn=freeze_cnn, layer_drop=layer_drop, freeze_ssl=freeze_ssl,
                  feature_grad_mult=feature_grad_mult, grad_checkpointing=grad_checkpointing,
                  layer_grad_mult=layer_grad_mult, kernels=frontend_kernels)
    if ssl_architecture is not None:
        frontend = ssl_frontend_from_architecture(ssl_architecture, source=f"Model file '{initial_model}'", **shared)
    else:
        frontend = load_ssl_frontend(pretrained_model_path, trust_checkpoint=trust_checkpoint,
                                     allow_partial_checkpoint=allow_partial_checkpoint, **shared)
    add_lora(frontend, lora_rank, lora_alpha, lora_dropout, lora_targets)
    if compile_frontend:
        frontend.compile_blocks()
    return frontend


def MainModel(pretrained_model_path: str, nOut: int = 256, head_nb: Optional[int] = None, compression_dim: int = 128,
              **options: Any) -> SpeakerEncoder:
    """Build the SSL + MHFA speaker encoder from a pre-trained checkpoint.

    Front-end options (YAML keys of the same names) are those of
    :func:`frontend.ssl_frontend.load_ssl_frontend`; by default the input modules are
    frozen (the original never updates them) and the transformer blocks are fine-tuned.
    ``head_nb`` None (not set): :data:`MainModel.option_defaults` (32).
    """
    head_nb = MainModel.option_defaults["head_nb"] if head_nb is None else head_nb
    frontend = build_frontend(pretrained_model_path, **options)
    backend = MHFA(frontend.num_layers, frontend.hidden_size, head_nb=head_nb,
                   compression_dim=compression_dim, outputs_dim=nOut)
    logger.info("MHFA back-end: %d layer weights, %d heads, compression %d, embedding %d",
                frontend.num_layers, head_nb, compression_dim, nOut)
    return SpeakerEncoder(frontend, backend)


# This model's values of the shared model options left unset (None): model_files.model_file_fields records them.
MainModel.option_defaults = {"head_nb": 32}  # type: ignore[attr-defined]
