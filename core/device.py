"""The device and the mixed-precision type, chosen once and passed down."""
from __future__ import annotations

import torch

from core.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when available, else CPU; 'cpu', 'cuda' and 'cuda:N' are taken as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"device '{name}' is not a device name; use auto, cpu, cuda or cuda:N.") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' requested but CUDA is not available; use device: cpu or auto.")
    return device


def autocast_dtype(device: torch.device) -> torch.dtype:
    """The reduced precision of mixed-precision runs: float16 on CUDA (with grad scaling), bfloat16 elsewhere."""
    return torch.float16 if device.type == "cuda" else torch.bfloat16
