"""Atomic writes (core/files.py): a failed write leaves the previous file intact and says which file."""
import errno
import os

import pytest

from core.errors import OutputError
from core.files import atomic_path, write_text


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


def test_disk_full_is_reported_and_the_previous_file_kept(tmp_path):
    path = str(tmp_path / "emb.npz")
    write_text(path, "previous")
    with pytest.raises(OutputError, match="emb.npz"):
        with atomic_path(path):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert open(path).read() == "previous" and os.listdir(tmp_path) == ["emb.npz"]
    with pytest.raises(OutputError, match="no_such_folder"):
        write_text(str(tmp_path / "no_such_folder" / "x.txt"), "x")
