"""Find plug-ins by name, as voxceleb_trainer does: ``<kind>.<name>`` exposes one factory."""
from __future__ import annotations

import importlib
import os
from typing import Any, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FACTORY = {"models": "MainModel", "loss": "LossFunction", "optimizer": "Optimizer", "scheduler": "Scheduler"}
YAML_KEY = {"models": "model", "loss": "trainfunc", "optimizer": "optimizer", "scheduler": "scheduler"}


def available(kind: str) -> List[str]:
    """Module names found in the plug-in folder (sub-packages as 'Pkg.Module')."""
    names = []
    for dirpath, _, files in os.walk(os.path.join(ROOT, kind)):
        rel = os.path.relpath(dirpath, os.path.join(ROOT, kind))
        prefix = "" if rel == "." else rel.replace(os.sep, ".") + "."
        names += [prefix + f[:-3] for f in files if f.endswith(".py") and not f.startswith("_")]
    return sorted(names)


def get_plugin(kind: str, name: str) -> Any:
    """Return the factory of plug-in ``name`` of ``kind`` (models, loss, optimizer, scheduler)."""
    names = available(kind)
    if name not in names:
        raise ValueError(f"Unknown {YAML_KEY[kind]} '{name}': no module {kind}/{name.replace('.', '/')}.py. "
                         f"Available: {', '.join(names)}.")
    module = importlib.import_module(f"{kind}.{name}")
    return getattr(module, FACTORY[kind])
