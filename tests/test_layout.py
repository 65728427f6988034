"""The layout: imports run one way (entry scripts -> runs -> model files -> model, data, evaluation -> plug-ins ->
front-end and data preparation -> core; the demo and test data of ``synthetic/`` above the method, imported only by
the tools, the benchmarks and the tests), no function-local imports of project modules, every top-level package or
module placed in the table of layers, plug-in folders hold plug-ins only, tests mirror the tree and every module with
logic has a test module of its own.

An import is an ``import`` statement, a ``from ... import`` (relative ones resolved against the importing
module's package), or a call of ``importlib.import_module`` / ``__import__`` with a literal name. A call with a
computed name is a hidden edge the checker cannot follow: allowed only in the files of ``DYNAMIC_IMPORTS``.

A test module covers ``tests/<package>/test_<module>.py``'s module (``tests/test_<module>.py`` for a top-level
module), and every module whose path (``package/module.py``) its docstring names.

The checks run on the tree here, and on small violating sources (``test_checker_*``) to show they catch them.
"""
import ast
import os
import re
import sys

import pytest

from core.plugins import FACTORY, available, module_names
from tests.fakes import ROOT

# Lower layers never import higher ones; a module imports lower layers and its own package only.
LAYERS = {
    "core": 0,
    "frontend": 1, "dataprep": 1,
    "models": 2, "loss": 2, "optimizer": 2, "scheduler": 2,
    "SpeakerNet": 3, "DatasetLoader": 3, "evaluation": 3,
    "model_files": 4,
    "runs": 5, "inference": 5, "synthetic": 5,
    "trainSpeakerNet": 6, "trainSpeakerNet_Eval": 6, "tuneThreshold": 6, "tools": 6, "bench": 6,
}
# Nothing imports these: the commands, the command-line tools and the benchmarks (scripts run by hand).
ENTRY_POINTS = {"trainSpeakerNet", "trainSpeakerNet_Eval", "tuneThreshold", "tools", "bench"}
# Packages above the method: importable only by these packages (and the tests, which the layer check does not read).
IMPORTED_ONLY_BY = {"synthetic": {"tools", "bench"}}
# What a package imports of the project, as its __init__ docstring states it (checked both ways).
DECLARED_IMPORTS = {"core": set(), "evaluation": {"core", "dataprep"}}
# Top-level folders that are no package of the project: not scanned, need no place in LAYERS.
NOT_PACKAGES = {
    "tests": "the tests themselves",
    "log": "the training logs' README (no code)",
    "exps": "experiment outputs (no code)",
    "yaml": "configurations (no code)",
}
# Packages of LAYERS without a test folder or test modules of their own.
UNTESTED = {"bench": "benchmarks: measurement scripts run by hand, on the toolkit's tested code"}
# Files that may call importlib.import_module / __import__ with a computed name, and why.
DYNAMIC_IMPORTS = {
    "core/plugins.py": "plug-ins are found by name by design: the YAML value X of `model` names the module models.X "
                       "(likewise loss, optimizer, scheduler)",
}
# Files that may import project modules inside a function, which ones, and why: still edges of the layers, only made
# when the function runs. Nothing else defers a project import.
DEFERRED_IMPORTS = {
    "runs/evaluate.py": ({"core", "model_files"}, "re-scoring saved embeddings (the eval command with --embeddings) "
                         "must not pay torch's import: the model, its files and the launcher of data-parallel "
                         "processes are imported when a model is evaluated (tests/runs/test_evaluate.py checks it)"),
    "evaluation/pipeline.py": ({"core", "evaluation"}, "the same: extraction (torch) and the data-parallel gather are "
                               "imported when embeddings are extracted"),
}
# Modules covered by a test module that does not name them in its docstring yet (that test module is edited
# elsewhere): module -> the covering test module. An entry goes once that docstring names the module.
COVERED_BY = {}
# Modules with logic and no test yet: module -> what is missing. An entry goes once a test module covers it.
NO_TEST_YET = {}
CONTRACT_ALIASES = {("models", "ssl_frontend")}  # REFERENCE §4: from models.ssl_frontend import load_ssl_frontend


# ----------------------------------------------------------------------------- the checker


def module_name(relpath):
    """Dotted module name of a file path relative to the root ('frontend/__init__.py' -> 'frontend')."""
    parts = relpath[:-len(".py")].split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def resolve(relpath, level, name):
    """The absolute name of a relative import (``level`` dots, then ``name`` or None) in the file ``relpath``,
    or None when it climbs above the top level."""
    package = module_name(relpath).split(".")
    if not relpath.endswith("__init__.py"):
        package = package[:-1]
    if level - 1 >= len(package):
        return None
    base = package[:len(package) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def is_import_call(node):
    """Whether ``node`` calls importlib.import_module, import_module or __import__."""
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    return name in ("import_module", "__import__")


def literal(node):
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def imports(tree, relpath):
    """(node, absolute module name or None, at the top) of every import of ``tree``: None for a relative import
    above the top level or a call with a computed name. An import statement is at the top when it is a statement
    of the module's body, a call when it is outside any function, lambda and class."""
    nested = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            nested.update(id(n) for n in ast.walk(node) if n is not node)
    top_level = set(map(id, tree.body))
    for node in tree.body:  # `if TYPE_CHECKING:` at the top: imports for annotations, at the top too
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            top_level.update(map(id, node.body))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node, alias.name, id(node) in top_level
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                yield node, node.module, id(node) in top_level
            else:
                yield node, resolve(relpath, node.level, node.module), id(node) in top_level
        elif is_import_call(node):
            name = literal(node.args[0]) if node.args else None
            package = next((literal(k.value) for k in node.keywords if k.arg == "package"), None)
            if len(node.args) > 1 and isinstance(node.func, ast.Attribute) and node.func.attr == "import_module":
                package = literal(node.args[1])
            if name is not None and name.startswith("."):
                level = len(name) - len(name.lstrip("."))
                name = (resolve(package.replace(".", "/") + "/__init__.py", level, name[level:] or None)
                        if package else None)
            yield node, name, id(node) not in nested


def violations(relpath, source):
    """What the file ``relpath`` (of the package or module LAYERS[relpath's first part]) breaks, one line each."""
    top = relpath.split("/")[0].removesuffix(".py")
    found = []
    for node, name, at_top in imports(ast.parse(source), relpath):
        where = f"{relpath}:{node.lineno}"
        if name is None:
            if isinstance(node, ast.ImportFrom):
                found.append(f"{where}: relative import above the top level")
            elif relpath not in DYNAMIC_IMPORTS:
                found.append(f"{where}: import with a computed name (a hidden edge); if by design, name the file "
                             f"and the reason in DYNAMIC_IMPORTS")
            continue
        target = name.split(".")[0]
        if target not in LAYERS:
            continue
        where = f"{where} imports {target}"
        deferred = target in DEFERRED_IMPORTS.get(relpath, ((), ""))[0]
        if not at_top and not deferred:
            found.append(f"{where} not at the top of the module (in a function, class or block: a hidden edge); if "
                         f"by design, name the file, the module and the reason in DEFERRED_IMPORTS")
        if target == top:
            continue
        if target in ENTRY_POINTS:
            found.append(f"{where}: nothing imports an entry script")
        elif top in LAYERS and LAYERS[target] >= LAYERS[top]:
            found.append(f"{where}: layer {LAYERS[top]} may only import lower layers")
        if target in IMPORTED_ONLY_BY and top not in IMPORTED_ONLY_BY[target]:
            found.append(f"{where}: only {sorted(IMPORTED_ONLY_BY[target])} and the tests may import {target}")
    return found


def project_imports(relpath, source):
    """The top-level project packages and modules the file imports (other than its own)."""
    top = relpath.split("/")[0].removesuffix(".py")
    return {name.split(".")[0] for _, name, _ in imports(ast.parse(source), relpath)
            if name and name.split(".")[0] in LAYERS} - {top}


def has_logic(source):
    """Whether a module holds more than a docstring, imports and ``__all__`` (re-exports)."""
    body = ast.parse(source).body
    return any(not (isinstance(n, (ast.Import, ast.ImportFrom))
                    or (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))
                    or (isinstance(n, ast.Assign) and [ast.unparse(t) for t in n.targets] == ["__all__"]))
               for n in body)


def own_test_module(relpath):
    """tests/<package>/test_<module>.py (tests/test_<module>.py for a top-level module), in lower case (the test
    module of models/CAMHFA.py may be tests/models/test_camhfa.py)."""
    parts = relpath.split("/")
    folder = ["tests"] + parts[:1] if len(parts) > 1 else ["tests"]
    return "/".join(folder + [f"test_{parts[-1]}"]).lower()


def covered_paths(docstring):
    """The module paths (package/module.py) a test module's docstring names."""
    return set(re.findall(r"(?<![\w/])((?:\w+/)+\w+\.py)\b", docstring or ""))


def untested(modules, test_modules):
    """The modules (relpath -> source) with logic that no test module (relpath -> source) covers."""
    covered = {path for source in test_modules.values()
               for path in covered_paths(ast.get_docstring(ast.parse(source)))}
    own = {path.lower() for path in test_modules}
    return [path for path, source in sorted(modules.items())
            if has_logic(source) and own_test_module(path) not in own and path not in covered]


# ----------------------------------------------------------------------------- the tree


def read(relpath):
    with open(os.path.join(ROOT, relpath), encoding="utf-8") as f:
        return f.read()


def project_files():
    """Paths, relative to the root, of the .py files of every package and module of LAYERS."""
    for top in LAYERS:
        if os.path.isfile(os.path.join(ROOT, top + ".py")):
            yield top + ".py"
        for folder, dirs, files in os.walk(os.path.join(ROOT, top)):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            rel = os.path.relpath(folder, ROOT).replace(os.sep, "/")
            yield from (f"{rel}/{f}" for f in sorted(files) if f.endswith(".py"))


def top_level_code():
    """Names of the top-level packages (folders with .py files) and modules of the repository."""
    for entry in sorted(os.listdir(ROOT)):
        path = os.path.join(ROOT, entry)
        if entry.startswith(".") or entry in NOT_PACKAGES:
            continue
        if os.path.isfile(path) and entry.endswith(".py"):
            yield entry[:-len(".py")]
        elif os.path.isdir(path) and any(f.endswith(".py") for _, _, files in os.walk(path) for f in files):
            yield entry


def tree_test_modules():
    found = {}
    for folder, dirs, files in os.walk(os.path.join(ROOT, "tests")):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for f in files:
            if f.startswith("test_") and f.endswith(".py"):
                path = os.path.relpath(os.path.join(folder, f), ROOT).replace(os.sep, "/")
                found[path] = read(path)
    return found


FILES = list(project_files())


@pytest.mark.parametrize("path", FILES)
def test_imports_run_one_way_and_at_the_top(path):
    assert violations(path, read(path)) == []


def test_every_package_is_in_the_table_of_layers():
    missing = [name for name in top_level_code() if name not in LAYERS]
    assert not missing, (f"{missing}: not in LAYERS (tests/test_layout.py). A new package or top-level module must "
                         f"be placed in the table of layers (or, if it holds no code of the project, in NOT_PACKAGES)")


@pytest.mark.parametrize("package", sorted(DECLARED_IMPORTS))
def test_packages_import_what_their_docstring_says(package):
    """The package's __init__ docstring states its project imports, in the sentence 'Imports ...'; so do its files."""
    doc = ast.get_docstring(ast.parse(read(f"{package}/__init__.py")))
    sentence = re.search(r"Imports [^.]*\.", doc)
    assert sentence, f"{package}/__init__.py: its docstring does not say what the package imports ('Imports ...')"
    stated = set(re.findall(r"``(\w+)``", sentence.group())) & set(LAYERS)
    real = set().union(*(project_imports(p, read(p)) for p in FILES if p.startswith(package + "/")))
    assert stated == real == DECLARED_IMPORTS[package], (package, sentence.group(), real)


@pytest.mark.parametrize("kind", sorted(FACTORY))
def test_plugin_folders_hold_plugins_only(kind):
    names = module_names(kind)
    assert names, kind
    assert available(kind) == [n for n in names if (kind, n) not in CONTRACT_ALIASES]


def test_tests_mirror_the_packages():
    """Each package has its test folder (tests/<package>/), each top-level module its tests/test_<module>.py."""
    for top in set(LAYERS) - set(UNTESTED):
        if os.path.isdir(os.path.join(ROOT, top)):
            assert os.path.isdir(os.path.join(ROOT, "tests", top)), f"tests/{top}/ is missing"
        else:
            assert os.path.isfile(os.path.join(ROOT, "tests", f"test_{top}.py")), f"tests/test_{top}.py is missing"


def test_every_module_with_logic_has_a_test_module():
    modules = {p: read(p) for p in FILES if p.split("/")[0].removesuffix(".py") not in UNTESTED}
    tests = tree_test_modules()
    missing = untested(modules, tests)
    unlisted = [path for path in missing if path not in COVERED_BY and path not in NO_TEST_YET]
    assert not unlisted, (f"{unlisted}: no test module. Write tests/<package>/test_<module>.py, or name the module's "
                          f"path (package/module.py) in the docstring of the test module that covers it")
    stale = sorted((set(COVERED_BY) | set(NO_TEST_YET)) - set(missing))
    assert not stale, f"{stale} now have a test module: remove them from COVERED_BY / NO_TEST_YET"
    assert all(test in tests for test in COVERED_BY.values()), COVERED_BY


# ----------------------------------------------------------------------------- the checker catches violations


@pytest.mark.parametrize("relpath,source,expected", [
    ("core/errors.py", "from frontend.names import rename_key\n", "layer 0 may only import lower layers"),
    # a relative import stays in its top-level package, or climbs above the top level (an ImportError)
    ("frontend/formats.py", "from ..synthetic.checkpoints import TINY_WAVLM\n", "relative import above the top"),
    ("models/Baseline/Spk_Encoder.py", "from ... import SpeakerNet\n", "relative import above the top level"),
    ("core/__init__.py", "from .. import models\n", "relative import above the top level"),
    ("core/audio.py", "import importlib\nm = importlib.import_module('evaluation.trials')\n", "imports evaluation"),
    ("core/audio.py", "from importlib import import_module\nm = import_module('.trials', package='evaluation')\n",
     "imports evaluation"),
    ("core/audio.py", "m = __import__('runs.train')\n", "imports runs"),
    ("frontend/hf.py", "def f():\n    import core.errors\n", "not at the top of the module"),
    ("frontend/hf.py", "def f():\n    from . import names\n", "not at the top of the module"),
    ("models/Baseline/Spk_Encoder.py", "class A:\n    from ..MHFA import MHFA\n", "not at the top of the module"),
    ("frontend/hf.py", "import importlib\ndef f():\n    return importlib.import_module('core.errors')\n",
     "not at the top of the module"),
    ("frontend/hf.py", "import importlib\ndef f(x):\n    return importlib.import_module(x)\n", "computed name"),
    ("evaluation/cache.py", "f = lambda n: __import__(n)\n", "computed name"),
    ("runs/train.py", "from synthetic.corpus import make_corpus\n", "only ['bench', 'tools'] and the tests"),
    ("SpeakerNet.py", "import synthetic.checkpoints\n", "only ['bench', 'tools'] and the tests"),
    ("trainSpeakerNet.py", "from synthetic.demo import make_demo_data\n", "only ['bench', 'tools'] and the tests"),
    ("tools/embed.py", "from bench import throughput\n", "nothing imports an entry script"),
    # a declared deferral covers its file and its modules only, and is still checked for layers
    ("runs/evaluate.py", "def f():\n    from runs import train\n", "not at the top of the module"),
    ("runs/train.py", "def f():\n    from model_files import find_checkpoints\n", "not at the top of the module"),
    ("evaluation/pipeline.py", "def f():\n    from runs import train\n", "layer 3 may only import lower layers"),
    ("evaluation/pipeline.py", "if x:\n    from runs import train\n", "layer 3 may only import lower layers"),
])
def test_checker_reports_violations(relpath, source, expected):
    found = violations(relpath, source)
    assert any(expected in line for line in found), found


@pytest.mark.parametrize("relpath,source", [
    ("frontend/hf.py", "from . import names\nfrom .formats import config_reader\nfrom core import errors\n"),
    ("models/Baseline/Spk_Encoder.py", "from .. import MHFA\nfrom ..MHFA import MHFA as M\nfrom . import x\n"),
    ("frontend/__init__.py", "from .ssl_frontend import load_ssl_frontend\n"),
    ("tools/make_demo_data.py", "from synthetic.demo import make_demo_data\n"),
    ("bench/throughput.py", "import importlib\nm = importlib.import_module('synthetic.checkpoints')\n"),
    ("core/plugins.py", "import importlib\ndef get(kind, name):\n    return importlib.import_module(f'{kind}.{name}')\n"
     ),
    ("runs/evaluate.py", "def f():\n    from model_files import find_checkpoints\n    from core import device\n"),
    ("evaluation/pipeline.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from core.distributed "
     "import Context\n"),
])
def test_checker_accepts_allowed_imports(relpath, source):
    assert violations(relpath, source) == []


def test_checker_resolves_relative_imports():
    found = lambda relpath, source: {n for _, n, _ in imports(ast.parse(source), relpath)}  # noqa: E731 (a local one-liner)
    assert found("frontend/hf.py", "from . import names\nfrom .formats import x\n") == {"frontend", "frontend.formats"}
    assert found("frontend/__init__.py", "from .hf import x\n") == {"frontend.hf"}
    assert found("models/Baseline/Spk_Encoder.py", "from .. import MHFA\nfrom ..MHFA import M\n") == {
        "models", "models.MHFA"}
    assert found("models/Baseline/Spk_Encoder.py", "from ...core import errors\n") == {None}
    assert found("SpeakerNet.py", "from . import x\n") == {None}


def test_checker_finds_unlisted_packages(tmp_path, monkeypatch):
    for folder in ("newpkg", "docs", ".hidden", "tests"):
        (tmp_path / folder).mkdir()
    (tmp_path / "newpkg" / "mod.py").write_text("x = 1\n")
    (tmp_path / ".hidden" / "mod.py").write_text("x = 1\n")
    (tmp_path / "tests" / "test_mod.py").write_text("x = 1\n")
    (tmp_path / "docs" / "index.md").write_text("no code\n")
    (tmp_path / "script.py").write_text("x = 1\n")
    (tmp_path / "core.py").write_text("x = 1\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", str(tmp_path))
    assert list(top_level_code()) == ["core", "newpkg", "script"]
    with pytest.raises(AssertionError, match=r"\['newpkg', 'script'\].*must be placed in the table of layers"):
        test_every_package_is_in_the_table_of_layers()


def test_checker_finds_modules_without_tests():
    modules = {
        "evaluation/trials.py": "def read(): pass\n",            # own test module
        "evaluation/qmf.py": "def qmf(): pass\n",                # named by a test module's docstring
        "evaluation/cohort.py": "def cohort(): pass\n",          # named only in a comment: not covered
        "evaluation/__init__.py": '"""Doc."""\nfrom evaluation.trials import read\n__all__ = ["read"]\n',
        "loss/__init__.py": "",
        "optimizer/__init__.py": "def implementation(): pass\n",
        "SpeakerNet.py": "class SpeakerNet: pass\n",
        "models/CAMHFA.py": "class CAMHFA: pass\n",                # its test module in lower case
        "DatasetLoader.py": "class Loader: pass\n",
    }
    tests = {
        "tests/evaluation/test_trials.py": '"""Trials."""\n',
        "tests/evaluation/test_pipeline.py": '"""The pipeline (evaluation/pipeline.py, evaluation/qmf.py)."""\n'
                                             "# evaluation/cohort.py\n",
        "tests/test_SpeakerNet.py": "",
        "tests/models/test_camhfa.py": "",
    }
    assert untested(modules, tests) == ["DatasetLoader.py", "evaluation/cohort.py", "optimizer/__init__.py"]
