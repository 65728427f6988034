"""Data: list reading, audio loading and cropping, augmentation, batch sampling.

Conventions of voxceleb_trainer: ``max_frames`` counts 10 ms frames and a crop
holds ``max_frames * 160 + 240`` samples at 16 kHz; files shorter than a crop
are extended by wrap-around padding.
"""
from __future__ import annotations

import glob
import logging
import os
from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import soundfile
import torch
from scipy import signal

from tools.config import LONG_FILE_MODES

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
HOP = 160  # samples per 10 ms frame
WINDOW_EXTRA = 240  # a 25 ms window needs 240 more samples than its hop


def frames_to_samples(frames: int) -> int:
    """Crop length in samples for ``frames`` 10 ms frames: frames*160 + 240."""
    return frames * HOP + WINDOW_EXTRA


class DataError(ValueError):
    """A list or audio file cannot be used; the message names it."""


def read_speaker_list(list_path: str) -> Tuple[List[str], List[str]]:
    """(speaker id, relative path) per line of a ``speaker_id relative/path.wav`` list."""
    speakers, files = [], []
    with open(list_path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2:
                raise DataError(f"{list_path}, line {number}: expected 'speaker_id relative/path.wav', "
                                f"got {line.strip()!r}")
            speakers.append(fields[0])
            files.append(fields[1])
    if not files:
        raise DataError(f"Training list '{list_path}' has no entries.")
    return speakers, files


def read_train_list(list_path: str, train_path: str) -> Tuple[List[str], List[int], List[str]]:
    """Read a VoxCeleb training list (``speaker_id relative/path.wav`` per line).

    Returns:
        (file paths joined with train_path, label per file, speakers in sorted order = label names).
    """
    per_file, files = read_speaker_list(list_path)
    speakers = sorted(set(per_file))
    index = {spk: i for i, spk in enumerate(speakers)}
    return [os.path.join(train_path, f) for f in files], [index[spk] for spk in per_file], speakers


_AUDIO_ERRORS = (OSError, RuntimeError, soundfile.LibsndfileError)


def _open_audio(path: str) -> soundfile.SoundFile:
    """Open ``path`` and check it is non-empty 16 kHz mono; any problem raises DataError naming the file."""
    try:
        handle = soundfile.SoundFile(path)
    except _AUDIO_ERRORS as err:
        raise DataError(f"Cannot read audio file '{path}': {err}") from err
    problem = (f"has sample rate {handle.samplerate} Hz; {SAMPLE_RATE} Hz is required (resample it, e.g. with "
               f"sox or ffmpeg)." if handle.samplerate != SAMPLE_RATE else
               f"has {handle.channels} channels; mono is required." if handle.channels != 1 else
               "is empty." if handle.frames == 0 else "")
    if problem:
        handle.close()
        raise DataError(f"Audio file '{path}' {problem}")
    return handle


def _read(handle: soundfile.SoundFile, path: str, frames: int = -1, start: int = 0) -> np.ndarray:
    try:
        if start:
            handle.seek(start)
        return handle.read(frames, dtype="float32", always_2d=True)[:, 0]
    except _AUDIO_ERRORS as err:
        raise DataError(f"Cannot read audio file '{path}': {err}") from err


def load_audio(path: str) -> np.ndarray:
    """Read a 16 kHz mono file as float32 in [-1, 1]; any problem raises DataError naming the file."""
    with _open_audio(path) as handle:
        return _read(handle, path)


def read_random_segment(path: str, length: int, rng: np.random.Generator) -> np.ndarray:
    """``random_segment(load_audio(path), length, rng)`` (same random draw, same samples), reading
    only the segment from disk when the file is longer than ``length``."""
    with _open_audio(path) as handle:
        frames = handle.frames
        if frames < length:  # wrap-padded: the whole file is needed
            return random_segment(_read(handle, path), length, rng)
        segment = _read(handle, path, length, start=int(rng.integers(0, frames - length + 1)))
    if segment.shape[0] != length:
        raise DataError(f"Audio file '{path}' holds fewer samples than its header says ({frames}); it is "
                        f"probably truncated: re-create or remove it.")
    return segment


def wrap_pad(audio: np.ndarray, length: int) -> np.ndarray:
    """Extend ``audio`` to at least ``length`` samples by wrap-around padding."""
    if audio.shape[0] >= length:
        return audio
    return np.pad(audio, (0, length - audio.shape[0]), mode="wrap")


def eval_crop_starts(length: int, crop: int, num_eval: int) -> np.ndarray:
    """Start samples of ``num_eval`` evenly spaced crops: linspace(0, length - crop, num_eval)."""
    return np.linspace(0, length - crop, num=num_eval).astype(np.int64)


def random_segment(audio: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """One random segment of ``length`` samples (wrap-padded first if too short)."""
    audio = wrap_pad(audio, length)
    start = int(rng.integers(0, audio.shape[0] - length + 1))
    return audio[start:start + length]


def train_crop(audio: np.ndarray, max_frames: int, rng: np.random.Generator) -> np.ndarray:
    """One random crop of ``max_frames`` frames (wrap-padded first if too short)."""
    return random_segment(audio, frames_to_samples(max_frames), rng)


def eval_crops(audio: np.ndarray, eval_frames: int, num_eval: int) -> np.ndarray:
    """``num_eval`` evenly spaced crops [num_eval, samples]; eval_frames 0 gives the whole file once."""
    if eval_frames == 0:
        return audio[None, :]
    crop = frames_to_samples(eval_frames)
    audio = wrap_pad(audio, crop)
    return np.stack([audio[s:s + crop] for s in eval_crop_starts(audio.shape[0], crop, num_eval)])


def mean_power_db(audio: np.ndarray) -> float:
    """10·log10(mean(x²) + 1e-4), the level used for SNR as in voxceleb_trainer."""
    return float(10.0 * np.log10(np.mean(audio ** 2) + 1e-4))


def scale_to_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """Scale ``noise`` so that mean_power_db(clean) - mean_power_db(noise) = snr_db (in that measure)."""
    gain_db = mean_power_db(clean) - mean_power_db(noise) - snr_db
    return noise * np.sqrt(10.0 ** (gain_db / 10.0))


class Augmenter:
    """MUSAN noise/music/babble and RIR reverberation, one of six choices per utterance.

    Choices (uniform): clean, reverb, music, speech (babble), noise, speech + music.
    SNR ranges (dB): noise 0–15, speech 13–20, music 5–15; files overlaid: noise 1,
    speech 3–8, music 1. Layouts: ``musan_path/<category>/<subset>/<file>.wav``,
    ``rir_path/<room type>/<room>/<file>.wav``.
    """

    SNR = {"noise": (0.0, 15.0), "speech": (13.0, 20.0), "music": (5.0, 15.0)}
    COUNT = {"noise": (1, 1), "speech": (3, 8), "music": (1, 1)}
    CHOICES = ("clean", "reverb", "music", "speech", "noise", "speech+music")

    def __init__(self, musan_path: str, rir_path: str):
        self.noise_files: Dict[str, List[str]] = {}
        for category in self.SNR:
            files = sorted(glob.glob(os.path.join(musan_path, category, "*", "*.wav")))
            if not files:
                raise DataError(f"No MUSAN '{category}' files found as {musan_path}/{category}/<subset>/<file>.wav;"
                                f" fix musan_path or set augment: false.")
            self.noise_files[category] = files
        self.rir_files = sorted(glob.glob(os.path.join(rir_path, "*", "*", "*.wav")))
        if not self.rir_files:
            raise DataError(f"No RIR files found as {rir_path}/<room type>/<room>/<file>.wav; "
                            f"fix rir_path or set augment: false.")

    def additive(self, audio: np.ndarray, category: str, rng: np.random.Generator) -> np.ndarray:
        low, high = self.COUNT[category]
        count = min(int(rng.integers(low, high + 1)), len(self.noise_files[category]))
        picks = rng.choice(len(self.noise_files[category]), size=count, replace=False)
        noises = []
        for pick in picks:
            noise = read_random_segment(self.noise_files[category][pick], audio.shape[0], rng)
            noises.append(scale_to_snr(audio, noise, float(rng.uniform(*self.SNR[category]))))
        return np.sum(noises, axis=0) + audio

    def reverberate(self, audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        rir = load_audio(self.rir_files[int(rng.integers(len(self.rir_files)))])
        rir = rir / np.sqrt(np.sum(rir ** 2))
        return signal.fftconvolve(audio, rir, mode="full")[:audio.shape[0]].astype(np.float32)

    def __call__(self, audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        choice = self.CHOICES[int(rng.integers(len(self.CHOICES)))]
        if choice == "reverb":
            return self.reverberate(audio, rng)
        if choice == "speech+music":
            return self.additive(self.additive(audio, "speech", rng), "music", rng)
        if choice != "clean":
            return self.additive(audio, choice, rng)
        return audio


class TrainDataset(torch.utils.data.Dataset):
    """Training crops. An item is a group of indices (one speaker) -> ([n, samples], label)."""

    def __init__(self, train_list: str, train_path: str, max_frames: int, augment: bool = False,
                 musan_path: str = "", rir_path: str = "", seed: int = 0, **kwargs):
        self.files, self.labels, self.speakers = read_train_list(train_list, train_path)
        self.max_frames = max_frames
        self.augmenter = Augmenter(musan_path, rir_path) if augment else None
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def reseed(self, stream: int) -> None:
        """Switch to random stream ``stream`` (one per loader worker and epoch)."""
        self.rng = np.random.default_rng([self.seed, stream])

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, group: Sequence[int]) -> Tuple[torch.Tensor, int]:
        crops = []
        for index in group:
            audio = read_random_segment(self.files[index], frames_to_samples(self.max_frames), self.rng)
            if self.augmenter is not None:
                audio = self.augmenter(audio, self.rng)
            crops.append(audio)
        return torch.from_numpy(np.stack(crops).astype(np.float32)), self.labels[group[0]]


class SpeakerBatchSampler(torch.utils.data.Sampler):
    """voxceleb_trainer's sampler: groups of ``nPerSpeaker`` utterances, never the same
    speaker twice in one batch, at most ``max_seg_per_spk`` utterances per speaker.

    Per epoch (``set_epoch``): shuffle with seed+epoch; per speaker keep
    floor(min(n, max_seg_per_spk) / nPerSpeaker) groups; shuffle the groups; walk
    them, dropping a group whose speaker is already in the batch being filled;
    drop the tail that does not fill a batch (times ``num_replicas``); rank r gets
    the r-th contiguous, equal share. Yields groups (lists of dataset indices);
    the DataLoader's ``batch_size`` assembles them into batches.
    """

    def __init__(self, labels: Sequence[int], batch_size: int, nPerSpeaker: int = 1, max_seg_per_spk: int = 500,
                 seed: int = 0, num_replicas: int = 1, rank: int = 0, **kwargs):
        self.labels = list(labels)
        self.batch_size, self.per_speaker, self.max_seg = batch_size, nPerSpeaker, max_seg_per_spk
        self.seed, self.num_replicas, self.rank = seed, num_replicas, rank
        self.epoch = 0
        self._made: Tuple[int, List[List[int]]] = (-1, [])  # (epoch, its groups): made once per epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def groups(self) -> List[List[int]]:
        """This epoch's groups (made on first use; ``len(loader)`` and iteration share them)."""
        if self._made[0] != self.epoch:
            self._made = (self.epoch, self._make_groups())
        return self._made[1]

    def _make_groups(self) -> List[List[int]]:
        rng = np.random.default_rng(self.seed + self.epoch)
        by_speaker: Dict[int, List[int]] = defaultdict(list)
        for index in rng.permutation(len(self.labels)):
            by_speaker[self.labels[index]].append(int(index))
        groups, owners = [], []
        for speaker in sorted(by_speaker):
            utts = by_speaker[speaker]
            usable = min(len(utts), self.max_seg) // self.per_speaker * self.per_speaker
            for start in range(0, usable, self.per_speaker):
                groups.append(utts[start:start + self.per_speaker])
                owners.append(speaker)
        kept: List[List[int]] = []
        in_batch: set = set()
        for g in rng.permutation(len(groups)):
            if len(kept) % self.batch_size == 0:
                in_batch = set()
            if owners[g] not in in_batch:
                in_batch.add(owners[g])
                kept.append(groups[g])
        total = len(kept) // (self.batch_size * self.num_replicas) * self.batch_size * self.num_replicas
        share = total // self.num_replicas
        return kept[self.rank * share:(self.rank + 1) * share]

    def __iter__(self):
        return iter(self.groups())

    def __len__(self) -> int:
        return len(self.groups())


def collate_groups(items: List[Tuple[torch.Tensor, int]]) -> Tuple[torch.Tensor, torch.Tensor]:
    """[(crops [n, S], label)] -> (wav [B, n, S], labels [B])."""
    return torch.stack([w for w, _ in items]), torch.tensor([label for _, label in items])


def worker_init(worker_id: int) -> None:
    """DataLoader hook: torch gives each worker a distinct seed drawn from the (seeded) main RNG."""
    torch.utils.data.get_worker_info().dataset.reseed(torch.initial_seed() % 2 ** 63)


def whole_file_pieces(length: int, max_samples: Optional[int], long_files: str = "cut") -> List[Tuple[int, int]]:
    """(start, stop) of the pieces the whole-file embedding is made of.

    Up to ``max_samples`` (None: no cap) the file is one piece. Beyond it, ``cut`` keeps
    the first ``max_samples`` (the original's behaviour) and ``chunks`` splits the file
    into the fewest consecutive pieces of near-equal length (differing by at most one
    sample) that are each at most ``max_samples`` long, so no piece is a short tail.
    """
    if long_files not in LONG_FILE_MODES:
        raise ValueError(f"eval_long_files must be one of {LONG_FILE_MODES}, got {long_files!r}")
    if not max_samples or length <= max_samples:
        return [(0, length)]
    if long_files == "cut":
        return [(0, max_samples)]
    count = -(-length // max_samples)
    bounds = [length * k // count for k in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


class EvalDataset(torch.utils.data.Dataset):
    """Evaluation input per file: (crops [num_eval, S], whole-file pieces [p][N_p], key).

    The whole file is one piece unless it is longer than ``max_eval_samples``; then it is
    cut or split as ``whole_file_pieces`` says, and logged.
    """

    def __init__(self, keys: Sequence[str], test_path: str, eval_frames: int, num_eval: int,
                 max_eval_samples: Optional[int] = None, long_files: str = "cut"):
        self.keys, self.test_path = list(keys), test_path
        self.eval_frames, self.num_eval, self.max_eval_samples = eval_frames, num_eval, max_eval_samples
        self.long_files = long_files

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, List[torch.Tensor], str]:
        audio = load_audio(os.path.join(self.test_path, self.keys[i]))
        crops = eval_crops(audio, self.eval_frames, self.num_eval)
        pieces = whole_file_pieces(audio.shape[0], self.max_eval_samples, self.long_files)
        if len(pieces) > 1:
            logger.info("%s: %.1f s, whole-file embedding = length-weighted mean over %d pieces of %.1f s "
                        "(longer than max_eval_seconds %.2f s; eval_long_files: chunks)", self.keys[i],
                        audio.shape[0] / SAMPLE_RATE, len(pieces), (pieces[0][1] - pieces[0][0]) / SAMPLE_RATE,
                        self.max_eval_samples / SAMPLE_RATE)
        elif pieces[0][1] < audio.shape[0]:
            logger.info("%s: %.1f s, whole-file embedding uses the first %.1f s (max_eval_seconds; "
                        "eval_long_files: chunks would use all of it)",
                        self.keys[i], audio.shape[0] / SAMPLE_RATE, self.max_eval_samples / SAMPLE_RATE)
        return (torch.from_numpy(crops), [torch.from_numpy(audio[a:b]) for a, b in pieces], self.keys[i])
