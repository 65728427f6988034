"""Deterministic, VoxCeleb-shaped synthetic corpus for demos and tests.

Layout written under ``out_dir`` (all wavs 16 kHz mono int16)::

    train/idXXXXX/<session>/<nnnnn>.wav   train_list.txt  ("speaker_id id/session/nnnnn.wav")
    test/idYYYYY/<session>/<nnnnn>.wav    trials.txt      ("label enroll.wav test.wav")
    musan/{noise/free-sound,music/fma,speech/librivox}/<category>-<subset>-XXXX.wav
        raw-MUSAN-shaped recordings of 6-16 s (speech: one held-out synthetic talker per file;
        mix several files for babble, as voxceleb_trainer-style augmentation does)
    musan_split/<category>/<subset>/<recording>/<NNNNN>.wav
        the same cut into 5 s chunks by dataprep.musan, the layout the augmenter reads
    rir/{smallroom,mediumroom,largeroom}/RoomNNN/RoomNNN-NNNNN.wav

Voices come from ``synthetic.voices``.  Every random draw uses a generator derived from
``(seed, stream, index...)``, so the output is bit-for-bit reproducible and, e.g., the test
speakers do not depend on the number of training speakers.

Made by ``python -m tools.make_demo_data`` (see ``synthetic.demo``).
"""

from __future__ import annotations

import logging
import string
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import signal
from tqdm import tqdm

from dataprep.musan import split_musan
from synthetic.voices import SAMPLE_RATE, coloured_noise, sample_channel, sample_voice, synth_utterance

logger = logging.getLogger(__name__)

TRAIN_ID_BASE, TEST_ID_BASE = 10001, 20001  # speaker ids are "id" + 5 digits
MAX_SPEAKERS = 9999  # per split, keeps the two id ranges disjoint
SESSION_CHARS = np.array(list(string.ascii_letters + string.digits))
SESSION_ID_LEN = 11  # like a YouTube video id
MUSAN_FILES_PER_CATEGORY = 10
MUSAN_SECONDS = (6.0, 16.0)  # 1-4 chunks of 5 s each
# room type -> RT60 range (s); every RIR's RT60 stays within RT60_LIMITS
RIR_ROOM_TYPES = {"smallroom": (0.2, 0.4), "mediumroom": (0.35, 0.6), "largeroom": (0.5, 0.8)}
RT60_LIMITS = (0.2, 0.8)
ROOMS_PER_TYPE, RIRS_PER_ROOM = 3, 2
INT16_SCALE = 32767
# first key of each random stream (see child_rng)
(STREAM_TRAIN, STREAM_TEST, STREAM_TRIALS,
 STREAM_NOISE, STREAM_MUSIC, STREAM_SPEECH, STREAM_RIR) = range(7)


def child_rng(seed: int, *key: int) -> np.random.Generator:
    """Independent generator for ``key`` (non-negative ints) derived from ``seed``."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def write_wav(path: Path, x: np.ndarray) -> None:
    """Write float samples in [-1, 1] as 16 kHz mono PCM_16 (round(x * 32767))."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = np.round(np.clip(x, -1.0, 1.0) * INT16_SCALE).astype(np.int16)
    sf.write(str(path), pcm, SAMPLE_RATE, subtype="PCM_16")


def _session_id(rng: np.random.Generator) -> str:
    return "".join(rng.choice(SESSION_CHARS, SESSION_ID_LEN))


def write_speaker(root: Path, speaker: str, seed: int, stream: int, index: int, n_utts: int,
                  n_sessions: int, seconds: tuple[float, float]) -> list[tuple[str, str]]:
    """Write one speaker's utterances, spread evenly over random sessions (channels).

    Returns (session, relative path) per file; files are numbered 00001.. within a session.
    """
    rng = child_rng(seed, stream, index, 0)
    voice = sample_voice(rng)
    sessions = [(_session_id(rng), sample_channel(rng)) for _ in range(min(n_sessions, n_utts))]
    assignment = rng.permutation(np.arange(n_utts) % len(sessions))
    counts, files = [0] * len(sessions), []
    for utt, ses in enumerate(assignment):
        counts[ses] += 1
        name, channel = sessions[ses]
        rel = f"{speaker}/{name}/{counts[ses]:05d}.wav"
        urng = child_rng(seed, stream, index, utt + 1)
        write_wav(root / rel, synth_utterance(voice, channel, urng.uniform(*seconds), urng))
        files.append((name, rel))
    return files


def _pick_pairs(rng: np.random.Generator, pools: list[np.ndarray], n: int) -> np.ndarray:
    """n index pairs drawn without replacement, exhausting ``pools`` in order of preference;
    only if all pools together are too small are the remaining pairs drawn with replacement."""
    chosen = []
    for pool in pools:
        take = min(n - sum(len(c) for c in chosen), len(pool))
        chosen.append(pool[rng.choice(len(pool), take, replace=False)])
    missing = n - sum(len(c) for c in chosen)
    if missing > 0:
        everything = np.concatenate(pools)
        chosen.append(everything[rng.choice(len(everything), missing)])
    return np.concatenate(chosen)


def make_trials(speakers: list[str], sessions: list[str], paths: list[str], n_trials: int,
                rng: np.random.Generator) -> list[tuple[int, str, str]]:
    """n_trials // 2 target pairs (preferably across sessions) and the rest non-target pairs,
    enroll != test, in random order.  Inputs are parallel per-file lists."""
    spk, ses = np.array(speakers), np.array(sessions)  # sessions are compared within a speaker only
    same_spk = spk[:, None] == spk[None, :]
    np.fill_diagonal(same_spk, False)
    cross = same_spk & (ses[:, None] != ses[None, :])
    n_target = n_trials // 2
    target = _pick_pairs(rng, [np.argwhere(cross), np.argwhere(same_spk & ~cross)], n_target)
    nontarget = _pick_pairs(rng, [np.argwhere(spk[:, None] != spk[None, :])], n_trials - n_target)
    labels = np.repeat([1, 0], [len(target), len(nontarget)])
    pairs = np.concatenate([target, nontarget])
    order = rng.permutation(len(pairs))
    return [(int(labels[k]), paths[pairs[k, 0]], paths[pairs[k, 1]]) for k in order]


def _noise_clip(rng: np.random.Generator, n: int) -> np.ndarray:
    """Coloured noise (PSD ~ f^-slope, slope 0-2.5), optionally with 50/60 Hz hum
    harmonics and/or amplitude bursts."""
    x = coloured_noise(n, rng.uniform(0.0, 2.5), rng)
    t = np.arange(n) / SAMPLE_RATE
    if rng.random() < 0.4:
        hum = rng.choice([50.0, 60.0])
        x += rng.uniform(0.5, 2.0) * sum(np.sin(2 * np.pi * k * hum * t) / k for k in range(1, 6))
    if rng.random() < 0.4:
        envelope = np.full(n, 0.2)
        for _ in range(rng.integers(2, 8)):
            start, length = rng.integers(n), int(rng.uniform(0.05, 0.5) * SAMPLE_RATE)
            envelope[start:start + length] += rng.uniform(1.0, 4.0)
        x *= np.convolve(envelope, np.hanning(401) / np.hanning(401).sum(), mode="same")
    return x


def _music_clip(rng: np.random.Generator, n: int) -> np.ndarray:
    """2-3 harmonic voices (amplitude of harmonic k ~ k^-rolloff) playing random notes of a
    major scale, note changes every 1-2 beats at 70-160 bpm, plus kick and hi-hat."""
    beat, root = 60.0 / rng.uniform(70, 160), rng.integers(45, 60)  # s, MIDI note
    scale = np.array([0, 2, 4, 5, 7, 9, 11, 12, 14, 16])
    x = np.zeros(n)
    for octave in range(rng.integers(2, 4)):
        rolloff, pos = rng.uniform(0.8, 2.0), 0
        while pos < n:
            length = min(int(beat * rng.integers(1, 3) * SAMPLE_RATE), n - pos)
            freq = 440.0 * 2 ** ((root + 12 * octave + rng.choice(scale) - 69) / 12)
            t = np.arange(length) / SAMPLE_RATE
            harmonics = np.arange(1, 9)[np.arange(1, 9) * freq < 0.45 * SAMPLE_RATE]
            tone = (np.sin(2 * np.pi * freq * np.outer(t, harmonics)) @ harmonics ** -rolloff)
            envelope = np.minimum(t / 0.01, 1.0) * np.exp(-t / rng.uniform(0.2, 1.0))
            x[pos:pos + length] += tone * envelope
            pos += length
    hits = np.arange(0, n, int(beat * SAMPLE_RATE))
    t = np.arange(int(0.15 * SAMPLE_RATE)) / SAMPLE_RATE
    # kick: frequency 50 + 100 exp(-t / 0.03) Hz, integrated to a phase in cycles
    kick = np.sin(2 * np.pi * (50 * t + 3.0 * (1 - np.exp(-t / 0.03)))) * np.exp(-t / 0.05)
    hat = signal.sosfilt(signal.butter(2, 6000, "highpass", fs=SAMPLE_RATE, output="sos"),
                         rng.standard_normal(len(t))) * np.exp(-t / 0.02)
    for start in hits:
        stop = min(start + len(t), n)
        x[start:stop] += 2.0 * kick[:stop - start]
        half = min(start + int(beat * SAMPLE_RATE) // 2, n)
        x[half:min(half + len(t), n)] += 3.0 * hat[:min(half + len(t), n) - half]
    return x


def _speech_clip(rng: np.random.Generator, n: int) -> np.ndarray:
    """One held-out synthetic talker (never in train/test) through a random channel."""
    return synth_utterance(sample_voice(rng), sample_channel(rng), n / SAMPLE_RATE, rng)


MUSAN_CATEGORIES = {  # category -> (subset, stream, synthesiser)
    "noise": ("free-sound", STREAM_NOISE, _noise_clip),
    "music": ("fma", STREAM_MUSIC, _music_clip),
    "speech": ("librivox", STREAM_SPEECH, _speech_clip),
}


def write_musan(root: Path, seed: int, files_per_category: int = MUSAN_FILES_PER_CATEGORY) -> list[Path]:
    """``files_per_category`` clips of MUSAN_SECONDS per category, each normalised to a random
    peak in [0.3, 0.9]; returns the written paths."""
    written = []
    for category, (subset, stream, synth) in MUSAN_CATEGORIES.items():
        for k in range(files_per_category):
            rng = child_rng(seed, stream, k)
            x = synth(rng, int(rng.uniform(*MUSAN_SECONDS) * SAMPLE_RATE))
            x *= rng.uniform(0.3, 0.9) / (np.max(np.abs(x)) + 1e-12)
            path = root / category / subset / f"{category}-{subset}-{k:04d}.wav"
            write_wav(path, x)
            written.append(path)
    return written


def synth_rir(rt60: float, rng: np.random.Generator) -> np.ndarray:
    """Room impulse response: direct impulse after 1-6 ms, 3-8 early reflections, and a
    one-pole low-passed noise tail decaying by 60 dB per rt60 s (amplitude 10^(-3 t / rt60));
    length clip(1.2 rt60, 0.3, 1.0) s, peak 0.9."""
    n = int(np.clip(1.2 * rt60, 0.3, 1.0) * SAMPLE_RATE)
    direct = int(rng.uniform(0.001, 0.006) * SAMPLE_RATE)
    t = np.arange(n - direct) / SAMPLE_RATE
    tail = signal.lfilter([1.0 - 0.4], [1.0, -0.4], rng.standard_normal(n - direct))
    h = np.zeros(n)
    h[direct:] = tail * 10 ** (-3 * t / rt60) * rng.uniform(0.1, 0.4)
    h[direct] = 1.0
    reflections = direct + (rng.uniform(0.002, 0.04, rng.integers(3, 9)) * SAMPLE_RATE).astype(int)
    signs = rng.choice([-1.0, 1.0], len(reflections))
    h[reflections] += rng.uniform(0.2, 0.6, len(reflections)) * signs
    return 0.9 * h / np.max(np.abs(h))


def write_rirs(root: Path, seed: int, rooms_per_type: int = ROOMS_PER_TYPE,
               rirs_per_room: int = RIRS_PER_ROOM) -> list[Path]:
    """``rooms_per_type`` rooms per room type, ``rirs_per_room`` responses each (RT60 +-10 % around
    the room's value, which is uniform in the type's range, clipped to RT60_LIMITS);
    returns the written paths."""
    written = []
    for type_index, (room_type, rt60_range) in enumerate(RIR_ROOM_TYPES.items()):
        for room in range(1, rooms_per_type + 1):
            rng = child_rng(seed, STREAM_RIR, type_index, room)
            rt60 = rng.uniform(*rt60_range)
            for k in range(1, rirs_per_room + 1):
                path = root / room_type / f"Room{room:03d}" / f"Room{room:03d}-{k:05d}.wav"
                rir_rt60 = float(np.clip(rt60 * rng.uniform(0.9, 1.1), *RT60_LIMITS))
                write_wav(path, synth_rir(rir_rt60, rng))
                written.append(path)
    return written


def _check_sizes(n_train: int, n_test: int, utts: int, sessions: int, min_s: float, max_s: float,
                 n_trials: int, musan_files: int = MUSAN_FILES_PER_CATEGORY, rooms: int = ROOMS_PER_TYPE,
                 rirs: int = RIRS_PER_ROOM) -> None:
    """Raise ValueError for sizes that cannot give a valid corpus and trial list."""
    if not (1 <= n_train <= MAX_SPEAKERS and 2 <= n_test <= MAX_SPEAKERS):
        raise ValueError(f"need 1..{MAX_SPEAKERS} train and 2..{MAX_SPEAKERS} test speakers")
    if utts < 2 or sessions < 1 or n_trials < 2:
        raise ValueError("need >= 2 utterances and >= 1 session per speaker and >= 2 trials")
    if not 0 < min_s <= max_s:
        raise ValueError("need 0 < min_seconds <= max_seconds")
    if musan_files < 8 or rooms < 1 or rirs < 1:
        raise ValueError("need >= 8 MUSAN files per category (babble mixes up to 8) and >= 1 RIR room and response")


def make_corpus(out_dir: str, seed: int = 0, n_train_speakers: int = 50, n_test_speakers: int = 10,
                utts_per_speaker: int = 20, sessions_per_speaker: int = 4, min_seconds: float = 2.0,
                max_seconds: float = 6.0, n_trials: int = 4000,
                musan_files_per_category: int = MUSAN_FILES_PER_CATEGORY, rir_rooms_per_type: int = ROOMS_PER_TYPE,
                rirs_per_room: int = RIRS_PER_ROOM) -> dict:
    """Write the whole corpus under ``out_dir`` (must be empty or absent); return paths and counts.

    Train speakers are id10001.., test speakers id20001..; each has
    min(sessions_per_speaker, utts_per_speaker) sessions; utterance durations are uniform in
    [min_seconds, max_seconds] s; trials pair test files only (n_trials // 2 targets). MUSAN has
    ``musan_files_per_category`` recordings per category (babble mixes up to 8 speech files); the RIRs
    ``rir_rooms_per_type`` rooms of each type with ``rirs_per_room`` responses each.
    """
    _check_sizes(n_train_speakers, n_test_speakers, utts_per_speaker, sessions_per_speaker,
                 min_seconds, max_seconds, n_trials, musan_files_per_category, rir_rooms_per_type, rirs_per_room)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; remove it or choose another --out")
    jobs = [("train", STREAM_TRAIN, f"id{TRAIN_ID_BASE + i}", i) for i in range(n_train_speakers)]
    jobs += [("test", STREAM_TEST, f"id{TEST_ID_BASE + i}", i) for i in range(n_test_speakers)]
    files: dict[str, list[tuple[str, str, str]]] = {"train": [], "test": []}
    for split, stream, speaker, index in tqdm(jobs, desc="speakers", unit="spk", disable=None):
        written = write_speaker(out / split, speaker, seed, stream, index, utts_per_speaker,
                                sessions_per_speaker, (min_seconds, max_seconds))
        files[split] += [(speaker, session, rel) for session, rel in written]
    train_list = out / "train_list.txt"
    train_list.write_text("".join(f"{spk} {rel}\n" for spk, _, rel in files["train"]))
    test_speakers, test_sessions, test_paths = (list(col) for col in zip(*files["test"], strict=True))
    trials = make_trials(test_speakers, test_sessions, test_paths, n_trials,
                         child_rng(seed, STREAM_TRIALS))
    trials_path = out / "trials.txt"
    trials_path.write_text("".join(f"{label} {enroll} {test}\n" for label, enroll, test in trials))
    musan = write_musan(out / "musan", seed, musan_files_per_category)
    rirs = write_rirs(out / "rir", seed, rir_rooms_per_type, rirs_per_room)
    chunks = split_musan(str(out / "musan"), str(out / "musan_split"))["chunks_written"]
    logger.info("wrote %d train / %d test files, %d trials, %d musan, %d rir files to %s",
                len(files["train"]), len(files["test"]), len(trials), len(musan), len(rirs), out)
    return {
        "out_dir": str(out), "train_dir": str(out / "train"), "test_dir": str(out / "test"),
        "train_list": str(train_list), "trials": str(trials_path),
        "musan_dir": str(out / "musan_split"), "musan_raw_dir": str(out / "musan"), "rir_dir": str(out / "rir"),
        "n_train_speakers": n_train_speakers, "n_test_speakers": n_test_speakers,
        "n_train_files": len(files["train"]), "n_test_files": len(files["test"]),
        "n_trials": len(trials), "n_target_trials": sum(label for label, _, _ in trials),
        "n_musan_files": len(musan), "n_musan_chunks": chunks, "n_rir_files": len(rirs),
    }
