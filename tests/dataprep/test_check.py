"""The data check: each bad-input kind gets its reason at its list line; conversions are counted, not
refused; the cache makes the next run probe nothing; drop mode keeps the good entries."""
import logging

import numpy as np
import pytest
import soundfile

import dataprep.check
from core.errors import DataError
from dataprep.check import check_files, enforce

RATE = 16000


@pytest.fixture
def files(tmp_path):
    """name -> path of one file of each kind."""
    def wav(name, data, rate=RATE, **kw):
        soundfile.write(str(tmp_path / name), data, rate, **kw)
    noise = (0.1 * np.random.default_rng(0).standard_normal(RATE)).astype(np.float32)
    wav("good.wav", noise)
    wav("good.flac", noise)
    wav("k8.wav", noise[:8000], 8000)
    wav("stereo.wav", np.stack([noise, noise], 1))
    wav("short.wav", noise[:800])
    wav("nosamples.wav", np.zeros(0, dtype=np.float32))
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "garbage.wav").write_bytes(b"this is not audio at all" * 10)
    data = (tmp_path / "good.flac").read_bytes()
    (tmp_path / "truncated.flac").write_bytes(data[:len(data) // 2])  # header says 1 s, half is there
    names = ["good.wav", "good.flac", "k8.wav", "stereo.wav", "short.wav", "nosamples.wav", "empty.wav",
             "garbage.wav", "truncated.flac", "missing.wav"]
    return {n: str(tmp_path / n) for n in names}


EXPECTED = {"short.wav": "too short", "nosamples.wav": "no samples", "empty.wav": "empty file",
            "garbage.wav": "unreadable audio", "truncated.flac": "truncated", "missing.wav": "missing"}


def test_each_bad_kind_has_its_reason_at_its_line(files, tmp_path):
    names = list(files)
    report = check_files([files[n] for n in names], [f"list.txt:{i + 1}" for i in range(len(names))],
                         min_seconds=0.25)
    good = [n for n, ok in zip(names, report.good, strict=True) if ok]
    assert good == ["good.wav", "good.flac", "k8.wav", "stereo.wav"]
    got = {p.path.split("/")[-1]: (p.where, p.reason) for p in report.problems}
    assert set(got) == set(EXPECTED)
    for name, fragment in EXPECTED.items():
        assert got[name][0] == f"list.txt:{names.index(name) + 1}" and fragment in got[name][1], got[name]
    assert report.converted == {"resampled from 8000 Hz to 16000 Hz": 1, "averaged from 2 channels to one": 1}
    with pytest.raises(DataError) as err:
        enforce(report, "Training list 'list.txt'", drop=False)
    message = str(err.value)
    assert "6 of 10 entries are unusable" in message and "drop_bad_data" in message
    assert f"list.txt:10: {files['missing.wav']}: missing" in message


def test_drop_mode_keeps_the_good_entries_and_counts_the_rest(files, caplog):
    names = list(files)
    report = check_files([files[n] for n in names], names, min_seconds=0.25)
    with caplog.at_level(logging.WARNING):
        keep = enforce(report, "Training list", drop=True)
    assert keep == report.good and sum(keep) == 4
    assert any("dropping 6 of 10 entries" in r.message for r in caplog.records)
    only_bad = check_files([files["missing.wav"]], ["x:1"])
    with pytest.raises(DataError, match="no usable entries"):
        enforce(only_bad, "Training list", drop=True)


def test_the_cache_makes_the_next_run_probe_nothing(files, tmp_path, monkeypatch):
    cache = str(tmp_path / "cache" / "check.json")
    paths = list(files.values())
    first = check_files(paths, paths, 0.25, cache)
    calls = []
    real = dataprep.check.probe
    monkeypatch.setattr(dataprep.check, "probe", lambda p, s: calls.append(p) or real(p, s))
    assert check_files(paths, paths, 0.25, cache) == first and calls == []
    # a changed file is probed again (size differs), and its new state is what counts
    soundfile.write(files["short.wav"], np.zeros(RATE, dtype=np.float32) + 0.1, RATE)
    again = check_files(paths, paths, 0.25, cache)
    assert calls == [files["short.wav"]] and sum(again.good) == sum(first.good) + 1
    # a corrupt cache is ignored with a warning, not a crash
    open(cache, "w").write("{not json")
    assert check_files(paths, paths, 0.25, cache).good == again.good
