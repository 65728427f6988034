"""What every SSL front-end shares: all hidden layers of a batch, the freezing and gradient options, and the
inference paths that never store the layers.

A front-end (:class:`LayerFrontend`) maps a 16 kHz waveform [B, N] to its L+1 hidden sequences [B, L+1, T, D]
(REFERENCE §1 and §4). Two kinds derive from it: :class:`frontend.ssl_frontend.SSLFrontend` (torchaudio's WavLM,
HuBERT, wav2vec 2.0) and :class:`frontend.w2vbert.W2VBertFrontend` (transformers' w2v-BERT 2.0 conformer). Each
says what its modules are (:meth:`~LayerFrontend.transformer_layers`, :meth:`~LayerFrontend.input_modules`, ...)
and how it runs them (:meth:`~LayerFrontend._run`, handing each layer on as it comes); everything else lives
here, so MHFA, CA-MHFA, the layer-wise learning rates, the regulariser and evaluation treat both alike.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch
from torch import nn

from core.errors import ConfigError
from frontend.kernels import DerivedWeights

logger = logging.getLogger(__name__)

KERNELS = ("auto", "reference")  # frontend_kernels: the fast kernels where they apply, or the modules only

Emit = Callable[[int, torch.Tensor], None]  # emit(index, layer [B, T, D]): index 0 is the transformer input


class ScaleGrad(torch.autograd.Function):
    """Identity forward; multiplies the gradient by ``scale`` (fairseq's ``GradMultiply``)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:  # type: ignore[override]
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return grad * ctx.scale, None


class LayerFrontend(nn.Module):
    """A pre-trained SSL model exposing all hidden layers (the part every front-end shares).

    Args:
        model: the pre-trained model (``self.model``; its parameter names are what model files hold).
        normalize_input: zero-mean/unit-variance normalise each waveform first (off by default: the original
            MHFA recipe never does it).
        freeze_cnn: keep the input modules (:meth:`input_modules`) fixed and skip their backward.
        freeze_ssl: freeze the whole front-end: it runs in eval mode (no dropout, no layer drop) under
            ``no_grad``, so nothing is kept for backward.
        layer_grad_mult: scale of the gradient flowing from the back-end into every returned layer (what
            wespeaker's ``feature_grad_mult`` does: 0.1 in its joint fine-tuning).
        grad_checkpointing: recompute each block in backward instead of storing its activations.
        architecture: what a model file records to rebuild the front-end without the pre-trained checkpoint
            (``{'family': ..., 'config': ...}``).
        kernels: ``auto`` or ``reference`` (YAML ``frontend_kernels``): ``auto`` adds, where no gradient flows,
            the streaming layer sums of :meth:`weighted_layers`, a frozen front-end's layers computed in
            inference mode and its blocks' matmul weights cast once under autocast, plus the fast kernels a
            subclass has; ``reference`` runs the modules only. An attribute that may be changed at any time.
    """

    def __init__(self, model: nn.Module, normalize_input: bool = False, freeze_cnn: bool = True,
                 freeze_ssl: bool = False, layer_grad_mult: float = 1.0, grad_checkpointing: bool = False,
                 architecture: Optional[Dict[str, Any]] = None, kernels: str = "auto"):
        super().__init__()
        if kernels not in KERNELS:
            raise ConfigError(f"frontend_kernels must be one of {', '.join(KERNELS)}, got {kernels!r}")
        if layer_grad_mult < 0:
            raise ConfigError(f"layer_grad_mult must be >= 0, got {layer_grad_mult}")
        self.model = model
        self.architecture = architecture
        self.normalize_input = normalize_input
        self.freeze_ssl = freeze_ssl
        self.freeze_cnn = freeze_cnn or freeze_ssl
        self.layer_grad_mult = layer_grad_mult
        self.grad_checkpointing = grad_checkpointing
        self.kernels = kernels
        self.derived = DerivedWeights()  # weights derived from the parameters (kernels.py)
        if self.freeze_cnn:
            for module in self.input_modules():
                module.requires_grad_(False)
        if freeze_ssl:
            self.model.requires_grad_(False)
            self.model.eval()

    # ------------------------------------------------------------------ what a subclass says about its model

    @property
    def hidden_size(self) -> int:
        """D, the size of every returned layer."""
        raise NotImplementedError

    @property
    def layer_drop(self) -> float:
        """Probability of skipping a block in training (YAML ``layer_drop``)."""
        raise NotImplementedError

    @property
    def min_samples(self) -> int:
        """The shortest waveform, in samples, that gives one frame; a shorter one cannot be embedded."""
        raise NotImplementedError

    def transformer_layers(self) -> List[nn.Module]:
        """The L blocks, in order (one optimizer group each for layer-wise learning rates)."""
        raise NotImplementedError

    def input_modules(self) -> Iterator[nn.Module]:
        """The trainable modules before the first block (``freeze_cnn`` freezes them; when they train they
        form the optimizer group ``frontend.input``)."""
        raise NotImplementedError

    def _run(self, wav: torch.Tensor, lengths: Optional[torch.Tensor], emit: Emit) -> Optional[torch.Tensor]:
        """Run the model, handing each layer [B, T, D] to ``emit(index, layer)`` in order (index 0: the
        transformer input); returns the valid frames per row (None without ``lengths``)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ shared

    @property
    def num_layers(self) -> int:
        """L + 1: the number of hidden sequences returned per input."""
        return len(self.transformer_layers()) + 1

    def train(self, mode: bool = True) -> "LayerFrontend":
        """A frozen front-end (``freeze_ssl``) stays in eval mode."""
        super().train(mode)
        if self.freeze_ssl:
            self.model.eval()
        return self

    def compile_blocks(self, backend: str = "inductor") -> "LayerFrontend":
        """``torch.compile`` every block in place (dynamic shapes: crops and whole files of any length; parameter
        names unchanged, so model files are the same). Same maths: outputs and gradients equal the eager blocks'
        to float rounding (tested with the ``aot_eager`` backend)."""
        for layer in self.transformer_layers():
            layer.compile(backend=backend, dynamic=True)
        logger.info("Transformer blocks compiled with torch.compile (backend %s); the first batches compile.", backend)
        return self

    def skip_block(self) -> bool:
        """LayerDrop: whether this training step skips the next block (a dropped block passes its input on)."""
        return self.model.training and self.layer_drop > 0 and torch.rand(1).item() < self.layer_drop

    def forward(self, wav: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> Any:
        """All layers of a batch.

        Args:
            wav: [B, N] float32, 16 kHz.
            lengths: [B] valid samples per row (None: every row is whole). Padded rows give, on their valid
                frames, the same layers as the unpadded input alone.
        Returns:
            [B, L+1, T, D]; with ``lengths``, the pair (layers, valid frames per row [B]).
        """
        if self.freeze_ssl and self.kernels == "auto":
            layers, frames = self._frozen_layers(wav, lengths)
        elif self.freeze_ssl:  # reference: the layers stacked, without gradients
            with torch.no_grad():
                layers, frames = self._layers(wav, lengths)
        else:
            layers, frames = self._layers(wav, lengths)
        if self.layer_grad_mult != 1.0 and layers.requires_grad:
            layers = ScaleGrad.apply(layers, self.layer_grad_mult)
        return layers if lengths is None else (layers, frames)

    def weighted_layers(self, wav: torch.Tensor, weights: torch.Tensor, lengths: Optional[torch.Tensor] = None
                        ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Weighted sums of the layers, sum_l weights[s, l] * layer_l, without storing the layers when no
        gradient is needed (extraction; float32 sums: the streaming layer sums of ``auto``; ``reference`` stacks
        the layers, then sums).

        Args:
            wav, lengths: as :meth:`forward`; weights: [S, L+1].
        Returns:
            ([S, B, T, D], valid frames per row [B] or None without ``lengths``).
        """
        if torch.is_grad_enabled() or self.kernels == "reference":  # training: autograd keeps the layers
            out = self.forward(wav, lengths)
            layers, frames = out if lengths is not None else (out, None)
            return torch.einsum("bltd,sl->sbtd", layers, weights), frames
        return self._inference_run(
            wav, lengths, lambda x: torch.zeros((weights.shape[0],) + x.shape, device=x.device),
            lambda sums, index, x: sums.addcmul_(weights[:, index, None, None, None].detach().float(), x[None]))

    def _frozen_layers(self, wav: torch.Tensor, lengths: Optional[torch.Tensor]
                       ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The layers of a frozen front-end: computed under inference mode straight into one tensor made
        outside it (the back-end's backward may keep it), of the dtype the blocks compute in (bfloat16
        under mixed precision: half the memory); nothing else is kept."""
        count = self.num_layers
        return self._inference_run(
            wav, lengths, lambda x: torch.empty((x.shape[0], count) + x.shape[1:], dtype=x.dtype, device=x.device),
            lambda out, index, x: out[:, index].copy_(x))

    def _inference_run(self, wav: torch.Tensor, lengths: Optional[torch.Tensor],
                       make: Callable[[torch.Tensor], torch.Tensor],
                       put: Callable[[torch.Tensor, int, torch.Tensor], Any]
                       ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """:meth:`_run` under inference mode into one tensor made outside it (usable in autograd later):
        ``make(layer 0)`` creates it, ``put(tensor, index, layer)`` adds each layer. Returns the tensor and the
        valid frames (None without ``lengths``)."""
        out: List[torch.Tensor] = []

        def emit(index: int, x: torch.Tensor) -> None:
            if not out:
                with torch.inference_mode(False):
                    out.append(make(x))
            put(out[0], index, x)

        with torch.inference_mode():
            frames = self._run(wav, lengths, emit)
        return out[0], None if frames is None else frames.clone()

    def _reduced_weights(self, device: torch.device) -> Optional[List[Dict[str, torch.Tensor]]]:
        """Under autocast, per block, copies in the autocast type of the weights autocast casts for every
        matmul (linear layers, attention input projection), kept in :attr:`derived` (remade when a weight
        changes, e.g. a model file loaded); the blocks' results are the same as autocast's own casting. None
        outside autocast."""
        if not torch.is_autocast_enabled(device.type):
            return None
        dtype = torch.get_autocast_dtype(device.type)
        params = getattr(self, "_matmul_params", None)
        if params is None:  # the parameter objects stay (moves and loads change their data: the key)
            params = self._matmul_params = [
                (i, name, p) for i, layer in enumerate(self.transformer_layers())
                for name, p in layer.named_parameters() if name.endswith(("in_proj_weight", "in_proj_bias"))
                or isinstance(layer.get_submodule(name.rpartition(".")[0]), nn.Linear)]

        def copies() -> List[Dict[str, torch.Tensor]]:
            out: List[Dict[str, torch.Tensor]] = [{} for _ in self.transformer_layers()]
            for i, name, p in params:
                out[i][name] = p.detach().to(device=device, dtype=dtype)
            return out

        return self.derived.get("blocks.reduced", [p for _, _, p in params], (dtype, device), copies)

    def _layers(self, wav: torch.Tensor, lengths: Optional[torch.Tensor]
                ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """[B, L+1, T, D] (stacked, in autograd when enabled) and the valid frames."""
        layers: List[torch.Tensor] = []
        frames = self._run(wav, lengths, lambda index, x: layers.append(x))
        return torch.stack(layers, dim=1), frames
