"""Optimizer plug-ins (``optimizer.X`` exposes ``Optimizer(parameter_groups, lr, **config)``) and the
choice of torch's update implementation they share (``optimizer_impl``)."""
from typing import Any, Dict, Iterable

from core.errors import ConfigError
from core.options import OPTIMIZER_IMPLS

FUSED_DEVICES = ("cpu", "cuda")


def implementation(groups: Iterable[Any], optimizer_impl: str = "auto") -> Dict[str, Any]:
    """Keyword arguments selecting torch's update kernel for these parameter groups (or parameters).

    ``auto``: the fused kernel (one pass over parameters, gradients and state, on CPU and CUDA) when every
    parameter is a floating-point tensor on such a device, else torch's default. ``fused``: the fused
    kernel or a ConfigError. ``foreach``: the multi-tensor kernels. ``loop``: one tensor at a time (torch's
    default on CPU, as the original ran). All compute the same update up to float rounding.
    """
    params = [p for item in groups for p in (item["params"] if isinstance(item, dict) else [item])]
    fusable = all(p.is_floating_point() and p.device.type in FUSED_DEVICES for p in params)
    if optimizer_impl == "auto":
        return {"fused": True} if fusable else {}
    if optimizer_impl == "fused":
        if not fusable:
            raise ConfigError(f"optimizer_impl: fused needs floating-point parameters on {'/'.join(FUSED_DEVICES)}; "
                              f"use optimizer_impl: auto.")
        return {"fused": True}
    if optimizer_impl == "foreach":
        return {"foreach": True}
    if optimizer_impl == "loop":
        return {"foreach": False}
    raise ConfigError(f"optimizer_impl must be one of {', '.join(OPTIMIZER_IMPLS)}; got {optimizer_impl!r}")
