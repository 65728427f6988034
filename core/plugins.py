"""Find plug-ins by name, as voxceleb_trainer does: the YAML value ``X`` of ``model`` names the
module ``models.X``, which exposes ``MainModel`` (``loss.X``: ``LossFunction``,
``optimizer.X``: ``Optimizer``, ``scheduler.X``: ``Scheduler``)."""
from __future__ import annotations

import importlib
import os
import pkgutil
from typing import Any, List

from core.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FACTORY = {"models": "MainModel", "loss": "LossFunction", "optimizer": "Optimizer", "scheduler": "Scheduler"}
YAML_KEY = {"models": "model", "loss": "trainfunc", "optimizer": "optimizer", "scheduler": "scheduler"}


def module_names(kind: str) -> List[str]:
    """Every module in the plug-in folder ``kind`` (sub-packages as 'Pkg.Module'), found by pkgutil."""
    found = pkgutil.walk_packages([os.path.join(ROOT, kind)], prefix=f"{kind}.")  # the prefix lets it import
    return sorted(m.name[len(kind) + 1:] for m in found                          # sub-packages to walk them
                  if not m.ispkg and not m.name.rsplit(".", 1)[-1].startswith("_"))


def available(kind: str) -> List[str]:
    """The plug-ins of ``kind``: modules of its folder that expose the factory (imports them)."""
    return [name for name in module_names(kind)
            if hasattr(importlib.import_module(f"{kind}.{name}"), FACTORY[kind])]


def get_plugin(kind: str, name: str) -> Any:
    """Return the factory of plug-in ``name`` of ``kind`` (models, loss, optimizer, scheduler).

    An unknown name, or a module of the folder that is no plug-in, is a ConfigError that
    lists the real plug-ins.
    """
    if name in module_names(kind):
        factory = getattr(importlib.import_module(f"{kind}.{name}"), FACTORY[kind], None)
        if factory is not None:
            return factory
        problem = f"{kind}/{name.replace('.', '/')}.py is not a {YAML_KEY[kind]} plug-in (it has no {FACTORY[kind]})"
    else:
        problem = f"no module {kind}/{name.replace('.', '/')}.py"
    raise ConfigError(f"Unknown {YAML_KEY[kind]} '{name}': {problem}. Available: {', '.join(available(kind))}.")
