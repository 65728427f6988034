"""The layout: imports run one way (entry scripts -> runs -> model, data, evaluation -> plug-ins -> front-end and
data preparation -> core), no function-local imports of project modules, plug-in folders hold plug-ins only,
tests mirror the tree."""
import ast
import os

import pytest

from core.plugins import FACTORY, available, module_names
from tests.fakes import ROOT

# Lower layers never import higher ones; a module imports lower layers and its own package only.
LAYERS = {
    "core": 0,
    "frontend": 1, "dataprep": 1,
    "models": 2, "loss": 2, "optimizer": 2, "scheduler": 2, "synthetic": 2,
    "SpeakerNet": 3, "DatasetLoader": 3, "evaluation": 3,
    "runs": 4, "inference": 4,
    "trainSpeakerNet": 5, "trainSpeakerNet_Eval": 5, "tuneThreshold": 5, "tools": 5,
}
ENTRY_POINTS = {"trainSpeakerNet", "trainSpeakerNet_Eval", "tuneThreshold", "tools"}
CONTRACT_ALIASES = {("models", "ssl_frontend")}  # REFERENCE §4: from models.ssl_frontend import load_ssl_frontend


def project_files():
    for top in LAYERS:
        path = os.path.join(ROOT, top)
        if os.path.isfile(path + ".py"):
            yield top, path + ".py"
        for folder, _, files in os.walk(path):
            yield from ((top, os.path.join(folder, f)) for f in sorted(files) if f.endswith(".py"))


def project_imports(tree):
    """(node, first name of the imported module) of every import of a project module."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module]
        else:
            continue
        for name in names:
            if name.split(".")[0] in LAYERS:
                yield node, name.split(".")[0]


FILES = list(project_files())


@pytest.mark.parametrize("top,path", FILES, ids=[os.path.relpath(p, ROOT) for _, p in FILES])
def test_imports_run_one_way_and_at_the_top(top, path):
    tree = ast.parse(open(path, encoding="utf-8").read())
    top_level = set(map(id, tree.body))
    for node, target in project_imports(tree):
        where = f"{os.path.relpath(path, ROOT)}:{node.lineno} imports {target}"
        assert id(node) in top_level, f"{where} inside a function (a hidden edge)"
        if target == top:
            continue
        assert target not in ENTRY_POINTS, f"{where}: nothing imports an entry script"
        assert LAYERS[target] < LAYERS[top], f"{where}: layer {LAYERS[top]} may only import lower layers"


@pytest.mark.parametrize("kind", sorted(FACTORY))
def test_plugin_folders_hold_plugins_only(kind):
    names = module_names(kind)
    assert names, kind
    assert available(kind) == [n for n in names if (kind, n) not in CONTRACT_ALIASES]


def test_tests_mirror_the_packages():
    """Each package has its test folder (tests/<package>/), each top-level module its tests/test_<module>.py."""
    for top in LAYERS:
        if os.path.isdir(os.path.join(ROOT, top)):
            assert os.path.isdir(os.path.join(ROOT, "tests", top)), f"tests/{top}/ is missing"
        else:
            assert os.path.isfile(os.path.join(ROOT, "tests", f"test_{top}.py")), f"tests/test_{top}.py is missing"
