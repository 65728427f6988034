"""Tests for the synthetic demo corpus (synthetic/corpus.py, synthetic/voices.py)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from core.audio import SAMPLE_RATE
from synthetic.corpus import make_corpus, make_trials
from synthetic.voices import Channel, sample_voice, synth_utterance

SMALL = dict(n_train_speakers=4, n_test_speakers=3, utts_per_speaker=4, sessions_per_speaker=2,
             min_seconds=1.0, max_seconds=2.0, n_trials=40, musan_files_per_category=8, rir_rooms_per_type=2,
             rirs_per_room=1)
UTT_PATH = re.compile(r"^(id\d{5})/([A-Za-z0-9]{11})/\d{5}\.wav$")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return make_corpus(str(tmp_path_factory.mktemp("demo") / "data"), seed=0, **SMALL)


def _all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _read_lines(path: str) -> list[list[str]]:
    return [line.split() for line in Path(path).read_text().splitlines()]


def _assert_wav(path: Path, min_s: float, max_s: float) -> np.ndarray:
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.subtype) == (SAMPLE_RATE, 1, "PCM_16"), path
    assert min_s - 1 / SAMPLE_RATE <= info.duration <= max_s + 1 / SAMPLE_RATE, path
    audio, _ = sf.read(str(path))
    assert np.max(np.abs(audio)) > 0.05, f"{path} is (nearly) silent"
    return audio


def test_same_seed_gives_identical_bytes(corpus: dict, tmp_path: Path) -> None:
    again = make_corpus(str(tmp_path / "again"), seed=0, **SMALL)
    assert _all_files(Path(again["out_dir"])) == _all_files(Path(corpus["out_dir"]))


def test_different_seed_differs(corpus: dict, tmp_path: Path) -> None:
    other = make_corpus(str(tmp_path / "other"), seed=1, **SMALL)
    for key in ("train_list", "trials"):
        assert Path(other[key]).read_bytes() != Path(corpus[key]).read_bytes()
    first, second = (sf.read(str(Path(c["train_dir"]) / _read_lines(c["train_list"])[0][1]))[0]
                     for c in (corpus, other))
    assert first.shape != second.shape or not np.array_equal(first, second)


def test_train_list_layout(corpus: dict) -> None:
    lines = _read_lines(corpus["train_list"])
    n_files = SMALL["n_train_speakers"] * SMALL["utts_per_speaker"]
    assert len(lines) == corpus["n_train_files"] == n_files
    train = Path(corpus["train_dir"])
    for speaker, rel in lines:
        match = UTT_PATH.match(rel)
        assert match and match.group(1) == speaker, rel
        _assert_wav(train / rel, SMALL["min_seconds"], SMALL["max_seconds"])
    assert sorted(rel for _, rel in lines) == sorted(
        str(p.relative_to(train)) for p in train.rglob("*.wav"))
    sessions = {rel.rsplit("/", 1)[0] for _, rel in lines}
    assert len(sessions) == SMALL["n_train_speakers"] * SMALL["sessions_per_speaker"]


def test_trials_layout_and_labels(corpus: dict) -> None:
    trials = _read_lines(corpus["trials"])
    assert len(trials) == corpus["n_trials"] == SMALL["n_trials"]
    test_dir = Path(corpus["test_dir"])
    for label, enroll, test in trials:
        assert enroll != test and label in ("0", "1")
        assert label == str(int(enroll.split("/")[0] == test.split("/")[0]))
        for rel in (enroll, test):
            assert UTT_PATH.match(rel), rel
            _assert_wav(test_dir / rel, SMALL["min_seconds"], SMALL["max_seconds"])
    labels = [label for label, _, _ in trials]
    assert labels.count("1") == corpus["n_target_trials"] == SMALL["n_trials"] // 2
    # 3 speakers x 2 x 2 x 2 ordered cross-session pairs = 24 >= 20 targets: all cross-session
    targets = [(e, t) for label, e, t in trials if label == "1"]
    assert all(e.split("/")[1] != t.split("/")[1] for e, t in targets)


def test_make_trials_exhausts_distinct_pairs_before_repeating() -> None:
    speakers, sessions = ["a", "a", "a", "b", "b"], ["s1", "s1", "s2", "t1", "t1"]
    paths = [f"{k}.wav" for k in range(5)]
    trials = make_trials(speakers, sessions, paths, 30, np.random.default_rng(0))
    assert len(trials) == 30 and sum(label for label, _, _ in trials) == 15
    for label, enroll, test in trials:
        assert enroll != test
        assert label == int(speakers[paths.index(enroll)] == speakers[paths.index(test)])
    # only 8 ordered target pairs exist: all must be used before any is repeated
    same_speaker = {(paths[i], paths[j]) for i in range(5) for j in range(5)
                    if i != j and speakers[i] == speakers[j]}
    assert {(e, t) for label, e, t in trials if label == 1} == same_speaker


def test_train_and_test_speakers_disjoint(corpus: dict) -> None:
    train = {p.name for p in Path(corpus["train_dir"]).iterdir()}
    test = {p.name for p in Path(corpus["test_dir"]).iterdir()}
    assert len(train) == SMALL["n_train_speakers"] and len(test) == SMALL["n_test_speakers"]
    assert not train & test
    trial_speakers = {p.split("/")[0] for line in _read_lines(corpus["trials"]) for p in line[1:]}
    assert trial_speakers == test


def test_musan_layout(corpus: dict) -> None:
    """Raw-MUSAN-shaped recordings, and beside them the split layout the augmenter reads: 5 s chunks
    named by their start second (the original's rule)."""
    musan = Path(corpus["musan_raw_dir"])
    expected = {"noise": "free-sound", "music": "fma", "speech": "librivox"}
    assert {p.name for p in musan.iterdir()} == set(expected)
    for category, subset in expected.items():
        assert [p.name for p in (musan / category).iterdir()] == [subset]
        files = sorted((musan / category / subset).iterdir())
        assert len(files) == SMALL["musan_files_per_category"]
        for path in files:
            assert re.fullmatch(rf"{category}-{subset}-\d{{4}}\.wav", path.name), path
            audio = _assert_wav(path, 6.0, 16.0)
            chunks = sorted((Path(corpus["musan_dir"]) / category / subset / path.stem).iterdir())
            starts = range(0, len(audio) - 5 * 16000, 3 * 16000)
            assert [c.name for c in chunks] == [f"{s // 16000:05d}.wav" for s in starts]
            raw = sf.read(str(path), dtype="int16")[0]
            for chunk, start in zip(chunks, starts, strict=True):
                np.testing.assert_array_equal(sf.read(str(chunk), dtype="int16")[0], raw[start:start + 80000])
    assert corpus["n_musan_files"] == 3 * SMALL["musan_files_per_category"]


def test_rir_layout_and_decay(corpus: dict) -> None:
    paths = sorted(Path(corpus["rir_dir"]).glob("*/*/*.wav"))
    assert paths and len(paths) == corpus["n_rir_files"]
    assert {p.parts[-3] for p in paths} == {"smallroom", "mediumroom", "largeroom"}
    for path in paths:
        assert re.fullmatch(r"Room\d{3}", path.parts[-2]), path
        assert re.fullmatch(rf"{path.parts[-2]}-\d{{5}}\.wav", path.name), path
        h = _assert_wav(path, 0.3, 1.0)
        quarter = len(h) // 4
        assert np.sqrt(np.mean(h[-quarter:] ** 2)) < 0.1 * np.sqrt(np.mean(h[:quarter] ** 2))


def test_rejects_non_empty_dir_and_bad_sizes(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError):
        make_corpus(str(tmp_path), **SMALL)
    with pytest.raises(ValueError):
        make_corpus(str(tmp_path / "a"), **{**SMALL, "n_test_speakers": 1})
    with pytest.raises(ValueError):
        make_corpus(str(tmp_path / "b"), **{**SMALL, "min_seconds": 3.0, "max_seconds": 2.0})
    with pytest.raises(ValueError, match="MUSAN"):
        make_corpus(str(tmp_path / "c"), **{**SMALL, "musan_files_per_category": 7})


def _median_f0(x: np.ndarray) -> float:
    """Median autocorrelation pitch (Hz) of clearly periodic 64 ms frames."""
    lags = np.arange(SAMPLE_RATE // 420, SAMPLE_RATE // 55)
    estimates = []
    for start in range(0, len(x) - 1024, 512):
        frame = x[start:start + 1024] * np.hanning(1024)
        ac = np.correlate(frame, frame, "full")[1023:]
        lag = lags[np.argmax(ac[lags])]
        if ac[0] > 0 and ac[lag] > 0.5 * ac[0]:
            estimates.append(SAMPLE_RATE / lag)
    return float(np.median(estimates))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_synthesised_pitch_follows_voice_f0(seed: int) -> None:
    rng = np.random.default_rng(seed)
    voice = sample_voice(rng)
    clean = Channel(eq_sos=np.array([[1.0, 0, 0, 1, 0, 0]]), snr_db=60.0, noise_slope=0.0,
                    peak=0.5, f0_shift=1.0, tilt_shift=0.0)
    x = synth_utterance(voice, clean, 3.0, rng)
    assert len(x) == 3 * SAMPLE_RATE and np.max(np.abs(x)) <= 0.99
    assert abs(_median_f0(x) / voice.f0_mean - 1) < 0.2


def test_requested_sizes(tmp_path: Path) -> None:
    out = tmp_path / "sized"
    make_corpus(str(out), seed=3, n_train_speakers=2, n_test_speakers=2, utts_per_speaker=3,
                min_seconds=1, max_seconds=1.5, n_trials=10)
    assert len((out / "train_list.txt").read_text().splitlines()) == 6
    assert len((out / "trials.txt").read_text().splitlines()) == 10
