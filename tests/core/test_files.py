"""Atomic writes (core/files.py): a failed write leaves the previous file intact and says which file; every
kind of output file the toolkit writes goes through it."""
import errno
import json
import os

import numpy as np
import pytest
import torch

from core.config import save_config
from core.errors import OutputError
from core.files import atomic_path, write_text
from core.options import defaults
from dataprep.check import Probe, load_cache, save_cache
from evaluation.embeddings import Embeddings, load_embeddings, save_embeddings
from evaluation.reports import DetCurve, det_curve_png, read_score_file, write_score_file, write_threshold_file
from evaluation.trials import Trials
from model_files import save_model_file


def test_replaces_the_file_only_when_complete(tmp_path):
    path = str(tmp_path / "scores.txt")
    write_text(path, "old\n")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            open(tmp, "w").write("half")
            raise RuntimeError("writer crashed")
    assert open(path).read() == "old\n" and os.listdir(tmp_path) == ["scores.txt"]
    write_text(path, "new\n")
    assert open(path).read() == "new\n" and os.listdir(tmp_path) == ["scores.txt"]


def test_the_file_gets_the_permissions_open_would_give(tmp_path):
    """mkstemp makes its file private (0600); the output a user asked for is readable as any file they write."""
    mask = os.umask(0o027)
    try:
        write_text(str(tmp_path / "scores.txt"), "x\n")
        save_embeddings(Embeddings(["a.wav"], np.zeros((1, 2), np.float32), None), str(tmp_path / "emb"))
    finally:
        os.umask(mask)
    assert (tmp_path / "scores.txt").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "emb").stat().st_mode & 0o777 == 0o640


def test_disk_full_is_reported_and_the_previous_file_kept(tmp_path):
    path = str(tmp_path / "emb.npz")
    write_text(path, "previous")
    with pytest.raises(OutputError, match="emb.npz"):
        with atomic_path(path):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert open(path).read() == "previous" and os.listdir(tmp_path) == ["emb.npz"]
    with pytest.raises(OutputError, match="no_such_folder"):
        write_text(str(tmp_path / "no_such_folder" / "x.txt"), "x")


# ----------------------------------------------------------------------------- every writer of the project
def _writers(tmp_path):
    """name -> (write(version), load() -> something equal for equal versions) for each kind of output file."""
    def emb(v):
        return Embeddings(["a.wav", "b.wav"], np.full((2, 3), v, dtype=np.float32), None, np.ones(2, np.float32))

    trials = Trials(np.array([1, 0]), ["a.wav", "a.wav"], ["b.wav", "c.wav"])
    p = {name: str(tmp_path / name) for name in ("m.model", "e.npz", "s.txt", "t.json", "d.png", "c.yaml", "k.json")}
    return {
        "model file": (lambda v: save_model_file({"model": {"w": torch.full((2,), float(v))}}, p["m.model"]),
                       lambda: float(torch.load(p["m.model"], weights_only=True)["model"]["w"][0])),
        "embeddings / cohort / cache": (lambda v: save_embeddings(emb(v), p["e.npz"]),
                                        lambda: float(load_embeddings(p["e.npz"]).embeddings[0, 0])),
        "score file": (lambda v: write_score_file(p["s.txt"], trials, np.array([v, -v], dtype=float)),
                       lambda: float(read_score_file(p["s.txt"])[1][0])),
        "threshold file": (lambda v: write_threshold_file(p["t.json"], {"eer_threshold": v, "eer": 1.0,
                                                                         "min_dcf_threshold": {}}, {}),
                           lambda: json.load(open(p["t.json"]))["eer_threshold"]),
        "DET plot": (lambda v: det_curve_png([DetCurve("t", np.array([1.0, 0.5, 0.0]), np.array([0.0, 0.5 / v, 1.0]),
                                                       None, {})], p["d.png"]),
                     lambda: open(p["d.png"], "rb").read()),
        "config.yaml": (lambda v: save_config({**defaults(), "seed": int(v)}, p["c.yaml"]),
                        lambda: open(p["c.yaml"]).read()),
        "data check cache": (lambda v: save_cache(p["k.json"], {"x.wav": Probe(1, 2, int(v), 16000, 1, "")}),
                             lambda: load_cache(p["k.json"])["x.wav"].frames),
    }


WRITERS = ["model file", "embeddings / cohort / cache", "score file", "threshold file", "DET plot", "config.yaml",
           "data check cache"]


@pytest.mark.parametrize("name", WRITERS)
@pytest.mark.parametrize("fault", ["disk full at the end", "crash inside the writer"])
def test_a_failed_write_keeps_the_previous_file_and_names_it(tmp_path, monkeypatch, name, fault):
    """Write version 1, then fail writing version 2 part-way: version 1 is still there and loadable, no
    temporary file is left, and the error names the file (OutputError) or is the writer's own."""
    write, load = _writers(tmp_path)[name]
    write(1)
    first = load()
    files = sorted(os.listdir(tmp_path))
    real_replace = os.replace

    def disk_full(src, dst):
        with open(src, "r+b") as handle:  # what was written so far: half of it
            handle.truncate(os.path.getsize(src) // 2)
        raise OSError(errno.ENOSPC, "No space left on device")

    def crash(src, dst):
        raise RuntimeError("writer crashed")

    monkeypatch.setattr(os, "replace", disk_full if fault.startswith("disk") else crash)
    expected = OutputError if fault.startswith("disk") else RuntimeError
    with pytest.raises(expected) as err:
        write(2)
    monkeypatch.setattr(os, "replace", real_replace)
    if expected is OutputError:
        assert "No space left" in str(err.value) and str(tmp_path) in str(err.value)
    assert sorted(os.listdir(tmp_path)) == files and load() == first
    write(3)
    assert load() != first
