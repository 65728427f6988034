"""MUSAN in the original's split layout: the chunk rule, the split tool (tools/split_musan.py), and the layout
check."""
import shutil

import numpy as np
import pytest
import soundfile

from core.errors import DataError
from dataprep.musan import chunk_starts, musan_files, split_musan
from tools.split_musan import main as split_main

RATE = 16000


@pytest.mark.parametrize("seconds,starts", [(4.0, []), (5.0, []), (5.0 + 1 / RATE, [0]), (8.0, [0]),
                                            (8.0 + 1 / RATE, [0, 3]), (11.5, [0, 3, 6]), (14.0, [0, 3, 6]),
                                            (14.0 + 1 / RATE, [0, 3, 6, 9])])
def test_chunk_rule_is_the_originals(seconds, starts):
    """voxceleb_trainer: range(0, len - 5 s, 3 s); a chunk must fit with at least one sample to spare."""
    assert chunk_starts(int(round(seconds * RATE))) == [s * RATE for s in starts]


def raw_musan(root, lengths):
    """A raw-MUSAN-shaped folder: category/subset/<name>.wav of the given lengths (int16 ramps)."""
    written = {}
    for category, subset in (("noise", "free-sound"), ("music", "fma"), ("speech", "librivox")):
        for k, n in enumerate(lengths):
            path = root / category / subset / f"{category}-{k:04d}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            audio = ((np.arange(n) * 7 + k) % 20000 - 10000).astype(np.int16)
            soundfile.write(str(path), audio, RATE, subtype="PCM_16")
            written[path] = audio
    return written


def test_split_tool_writes_the_originals_chunks_and_resumes(tmp_path, capsys):
    lengths = [5 * RATE, 9 * RATE + 123, 17 * RATE]
    written = raw_musan(tmp_path / "musan", lengths)
    split_main(["--musan", str(tmp_path / "musan"), "--out", str(tmp_path / "split")])
    total = 0
    for path, audio in written.items():
        folder = tmp_path / "split" / path.relative_to(tmp_path / "musan").with_suffix("")
        starts = list(range(0, len(audio) - 5 * RATE, 3 * RATE))
        chunks = sorted(folder.iterdir())
        assert [c.name for c in chunks] == [f"{s // RATE:05d}.wav" for s in starts]
        for chunk, start in zip(chunks, starts, strict=True):
            data, rate = soundfile.read(str(chunk), dtype="int16")
            assert rate == RATE and np.array_equal(data, audio[start:start + 5 * RATE])
        total += len(starts)
    files = musan_files(str(tmp_path / "split"))
    assert sum(map(len, files.values())) == total == 3 * (0 + 2 + 4)
    # a second run finds every recording done; a removed recording folder is made again

    shutil.rmtree(tmp_path / "split" / "noise" / "free-sound" / "noise-0002")
    counts = split_musan(str(tmp_path / "musan"), str(tmp_path / "split"))
    assert counts["skipped"] == 8 and counts["chunks_written"] == 4


def test_raw_musan_is_refused_naming_the_tool(tmp_path):
    raw_musan(tmp_path / "musan", [6 * RATE])
    with pytest.raises(DataError, match="raw MUSAN.*tools.split_musan"):
        musan_files(str(tmp_path / "musan"))


def test_a_missing_category_is_named(tmp_path):
    raw_musan(tmp_path / "musan", [6 * RATE])
    split_musan(str(tmp_path / "musan"), str(tmp_path / "split"))

    shutil.rmtree(tmp_path / "split" / "music")
    with pytest.raises(DataError, match="'music'"):
        musan_files(str(tmp_path / "split"))


def test_split_tool_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        split_main(["--musan", str(tmp_path / "nothing"), "--out", str(tmp_path / "split")])
    assert exit_.value.code == 2 and "No raw MUSAN recordings" in capsys.readouterr().err
