"""Training data: the training list, random crops, MUSAN/RIR augmentation, the speaker-aware batch sampler.

Crop conventions (frames of 10 ms, wrap-around padding of short files) are voxceleb_trainer's,
see :mod:`core.audio`. Evaluation input is in :mod:`evaluation.dataset`.
"""
from __future__ import annotations

import glob
import logging
import os
from collections import defaultdict
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from scipy import signal

from core.audio import frames_to_samples, load_audio, open_audio, read_frames, wrap_pad
from core.errors import DataError

logger = logging.getLogger(__name__)


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


def random_start(length: int, crop: int, rng: np.random.Generator) -> int:
    """The original's training crop start on a file of ``length`` samples (already wrap-padded,
    so ``length > crop``): ``int(random() * (length - crop))``, in [0, length - crop - 1]."""
    return int(rng.random() * (length - crop))


def read_random_segment(path: str, length: int, rng: np.random.Generator) -> np.ndarray:
    """``random_segment(load_audio(path), length, rng)`` (same random draw, same samples), reading
    only the segment from disk when the file is longer than ``length``."""
    with open_audio(path) as handle:
        frames = handle.frames
        if frames <= length:  # wrap-padded: the whole file is needed
            return random_segment(read_frames(handle, path), length, rng)
        segment = read_frames(handle, path, length, start=random_start(frames, length, rng))
    if segment.shape[0] != length:
        raise DataError(f"Audio file '{path}' holds fewer samples than its header says ({frames}); it is "
                        f"probably truncated: re-create or remove it.")
    return segment


def random_segment(audio: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """One random segment of ``length`` samples (wrap-padded first if not longer), as voxceleb_trainer's
    ``loadWAV``: pad, then start at ``int(random() * (padded length - length))``."""
    audio = wrap_pad(audio, length)
    start = random_start(audio.shape[0], length, rng)
    return audio[start:start + length]


def train_crop(audio: np.ndarray, max_frames: int, rng: np.random.Generator) -> np.ndarray:
    """One random crop of ``max_frames`` frames (wrap-padded first if too short)."""
    return random_segment(audio, frames_to_samples(max_frames), rng)


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
