"""Loss plug-ins. The YAML value ``X`` of ``trainfunc`` names the module ``loss.X``, whose ``LossFunction`` is the
plug-in (:func:`core.plugins.get_plugin`). What :class:`SpeakerNet.SpeakerNet` and the trainer use of it, the
contract of every plug-in (:class:`LossPlugin` declares it; :func:`check_loss_plugin` checks it):

- ``LossFunction(nOut=, nClasses=, **config)``, an ``nn.Module`` (every option of the configuration is passed; a
  plug-in takes those it needs);
- ``forward(embeddings [B, D], labels [B])`` -> (mean loss, top-1 accuracy in %);
- ``set_margin(m)``: the margin the next forward applies; the trainer's margin schedule calls it before every
  optimizer step. A loss without a margin accepts the call and ignores it;
- ``margin``: the margin the next forward applies, read back (0.0 for a loss without one); the epoch record
  reports it.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

from core.errors import ConfigError


class LossPlugin(nn.Module):
    """The base of the loss plug-ins: a margin, set only through :meth:`set_margin` (``margin`` is read-only, so
    an assignment to it fails instead of silently adding an attribute the loss never reads)."""

    def __init__(self, margin: float = 0.0):
        super().__init__()
        self._margin = float(margin)

    @property
    def margin(self) -> float:
        """The margin the next forward applies."""
        return self._margin

    def set_margin(self, margin: float) -> None:
        """Apply ``margin`` from the next forward on (the margin schedule's value)."""
        self._margin = float(margin)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(mean loss, top-1 accuracy in %) of ``embeddings`` [B, D] with their ``labels`` [B]."""
        raise NotImplementedError


def check_loss_plugin(loss_fn: nn.Module) -> None:
    """Raise ConfigError, naming the plug-in, when ``loss_fn`` lacks what the trainer's margin schedule uses: a
    ``set_margin(m)`` method and a ``margin`` to read back."""
    missing = []
    if not callable(getattr(loss_fn, "set_margin", None)):
        missing.append("set_margin(margin) method")
    if not hasattr(loss_fn, "margin"):
        missing.append("margin attribute")
    if missing:
        module = type(loss_fn).__module__
        raise ConfigError(f"The loss plug-in '{module.removeprefix('loss.')}' ({module}.{type(loss_fn).__name__}) "
                          f"has no {' and no '.join(missing)}, which the trainer's margin schedule uses at every "
                          f"step: derive it from loss.LossPlugin (a loss without a margin overrides set_margin to "
                          f"ignore it, as loss/softmax.py does).")
