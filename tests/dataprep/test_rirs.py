"""RIRs from a folder (the original's glob) or from an index written by tools.index_rirs (tools/index_rirs.py)."""
import numpy as np
import pytest
import soundfile

from core.errors import DataError
from dataprep.rirs import find_rirs
from tools.index_rirs import main as index_main


def test_index_lists_the_good_files_and_the_augmenter_reads_it(tmp_path, capsys):
    root = tmp_path / "simulated_rirs"
    names = ["smallroom/Room001/Room001-00001.wav", "smallroom/Room001/Room001-00002.wav",
             "largeroom/Room007/Room007-00001.wav"]
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(str(root / name), np.r_[1.0, np.zeros(99)].astype(np.float32), 16000)
    (root / "largeroom/Room007/Room007-00002.wav").write_bytes(b"broken")
    index = tmp_path / "lists" / "rirs.txt"
    index_main(["--rir_path", str(root), "--out", str(index)])
    assert sorted(find_rirs(str(index))) == sorted(str(root / n) for n in names) == sorted(
        p for p in find_rirs(str(root)) if "00002.wav" not in p or "small" in p)
    assert not index.read_text().startswith("/")  # relative to the index: the data folder can move with it
    assert "1 RIR file(s) are unusable" in capsys.readouterr().err


def test_no_rirs_is_an_error_naming_the_layout(tmp_path):
    with pytest.raises(DataError, match="<room type>/<room>/<file>.wav"):
        find_rirs(str(tmp_path))
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(DataError, match="lists no files"):
        find_rirs(str(tmp_path / "empty.txt"))
