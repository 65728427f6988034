"""Training data: the training list, random crops, MUSAN/RIR augmentation (the original's or wespeaker's), the
batch samplers (the original's speaker-aware one, wespeaker's every-utterance-once one).

Crop conventions (frames of 10 ms, wrap-around padding of short files) are voxceleb_trainer's,
see :mod:`core.audio`. Evaluation input is in :mod:`evaluation.dataset`.
"""
from __future__ import annotations

import functools
import logging
import math
from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from scipy import signal

from core.audio import (
    SAMPLE_RATE,
    frames_to_samples,
    is_native,
    load_audio,
    open_audio,
    quiet_conversions,
    read_converted,
    read_frames,
    resample,
    wrap_pad,
)
from core.errors import ConfigError, DataError
from core.interrupt import ignore_in_worker
from dataprep.lists import Entry, read_training_entries, speaker_labels
from dataprep.musan import musan_files, recordings
from dataprep.rirs import find_rirs

logger = logging.getLogger(__name__)
RIR_CACHE_SIZE = 1024  # RIRs kept in memory per process (simulated RIRs: <= 64 KB each)


def read_speaker_list(list_path: str) -> Tuple[List[str], List[str]]:
    """(speaker id, relative path) per line of a ``speaker_id relative/path.wav`` list (or of a Kaldi data
    folder: speaker, wav.scp path)."""
    entries = read_training_entries(list_path, "")
    return [e.speaker for e in entries], [e.path for e in entries]


def read_train_list(list_path: str, train_path: str) -> Tuple[List[str], List[int], List[str]]:
    """Read a training list (VoxCeleb list or Kaldi data folder, :mod:`dataprep.lists`).

    Returns:
        (file paths joined with train_path, label per file, speakers in sorted order = label names).
    """
    entries = read_training_entries(list_path, train_path)
    labels, speakers = speaker_labels(entries)
    return [e.path for e in entries], labels, speakers


def random_start(length: int, crop: int, rng: np.random.Generator) -> int:
    """The original's training crop start on a file of ``length`` samples (already wrap-padded,
    so ``length > crop``): ``int(random() * (length - crop))``, in [0, length - crop - 1]."""
    return int(rng.random() * (length - crop))


def read_random_segment(path: str, length: int, rng: np.random.Generator) -> np.ndarray:
    """``random_segment(load_audio(path), length, rng)`` (same random draw, same samples), reading
    only the segment from disk when the file is 16 kHz mono and longer than ``length``."""
    with open_audio(path) as handle:
        frames = handle.frames
        if not is_native(handle):  # resampled / averaged as a whole first
            return random_segment(read_converted(handle, path), length, rng)
        if frames <= length:  # wrap-padded: the whole file is needed
            return random_segment(read_frames(handle, path), length, rng)
        segment = read_frames(handle, path, length, start=random_start(frames, length, rng))
    if segment.shape[0] != length:
        raise DataError(f"Audio file '{path}' holds fewer samples than its header says ({frames}); it is "
                        f"probably truncated: re-create or remove it.")
    return segment


def read_speed_segment(path: str, length: int, speed: float, rng: np.random.Generator) -> np.ndarray:
    """A random segment of ``length`` samples of the file played ``speed`` times faster (speed
    perturbation: the audio resampled by 1/speed with torchaudio, so pitch and tempo change together,
    as wespeaker's). Only the ceil(length * speed) + 1 source samples the segment needs are resampled."""
    if speed == 1.0:
        return read_random_segment(path, length, rng)
    source = read_random_segment(path, int(math.ceil(length * speed)) + 1, rng)
    return resample(source, int(round(SAMPLE_RATE * speed)), SAMPLE_RATE)[:length]


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
    flat = audio.reshape(-1)
    return float(10.0 * np.log10(np.dot(flat, flat) / max(flat.size, 1) + 1e-4))


def snr_gain(clean_db: float, noise_db: float, snr_db: float) -> float:
    """Amplitude gain that puts a noise of level ``noise_db`` at ``snr_db`` below ``clean_db`` (the original's
    formula: sqrt(10^((clean_db - noise_db - snr) / 10)))."""
    return float(np.sqrt(10.0 ** ((clean_db - noise_db - snr_db) / 10.0)))


@functools.lru_cache(maxsize=RIR_CACHE_SIZE)
def normalised_rir(path: str) -> np.ndarray:
    """An RIR scaled to unit energy (kept in memory by each process)."""
    rir = load_audio(path)
    energy = float(np.sum(rir.astype(np.float64) ** 2))
    if not energy > 0.0:
        raise DataError(f"RIR file '{path}' is silent (zero energy); remove it from rir_path.")
    return rir / np.float32(np.sqrt(energy))


def reverberate(audio: np.ndarray, rir_files: Sequence[str], rng: np.random.Generator) -> np.ndarray:
    """``audio`` convolved ("full") with a random RIR of ``rir_files`` scaled to unit energy, truncated to its
    length (the original's and wespeaker's reverberation alike)."""
    rir = normalised_rir(rir_files[int(rng.integers(len(rir_files)))])
    return signal.fftconvolve(audio, rir, mode="full")[:audio.shape[0]].astype(np.float32)


class Augmenter:
    """MUSAN noise/music/babble and RIR reverberation (voxceleb_trainer's ``AugmentWAV``).

    Choices: clean, reverb, music, speech (babble), noise, speech + music; the original draws one of the six
    uniformly (``aug_prob`` None). With ``aug_prob`` p (wespeaker: 0.6) an utterance is augmented with
    probability p, by one of the five others drawn uniformly. SNR ranges (dB): noise 0–15, speech 13–20,
    music 5–15; files overlaid: noise 1, speech 3–8, music 1; each noise file gives a random segment of the
    crop's length (wrap-padded when the 5 s chunk is shorter). Layouts: ``musan_path`` is voxceleb_trainer's
    split MUSAN (:mod:`dataprep.musan`), ``rir_path`` a folder or index (:mod:`dataprep.rirs`). RIRs are
    normalised to unit energy, convolved ("full") and truncated to the crop; each process keeps the RIRs it
    has read in memory.
    """

    SNR = {"noise": (0.0, 15.0), "speech": (13.0, 20.0), "music": (5.0, 15.0)}
    COUNT = {"noise": (1, 1), "speech": (3, 8), "music": (1, 1)}
    CHOICES = ("clean", "reverb", "music", "speech", "noise", "speech+music")

    def __init__(self, musan_path: str, rir_path: str, aug_prob: Optional[float] = None):
        self.noise_files: Dict[str, List[str]] = musan_files(musan_path)
        self.rir_files = find_rirs(rir_path)
        if aug_prob is not None and not 0.0 <= aug_prob <= 1.0:
            raise ConfigError(f"aug_prob must be in [0, 1] (or null for the original's six-way choice), "
                              f"got {aug_prob}.")
        self.aug_prob = aug_prob

    def additive(self, audio: np.ndarray, category: str, rng: np.random.Generator) -> np.ndarray:
        low, high = self.COUNT[category]
        count = min(int(rng.integers(low, high + 1)), len(self.noise_files[category]))
        picks = rng.choice(len(self.noise_files[category]), size=count, replace=False)
        clean_db = mean_power_db(audio)
        total = audio.copy()
        for pick in picks:
            noise = read_random_segment(self.noise_files[category][pick], audio.shape[0], rng)
            gain = snr_gain(clean_db, mean_power_db(noise), float(rng.uniform(*self.SNR[category])))
            total += np.multiply(noise, np.float32(gain), out=noise)
        return total

    def reverberate(self, audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return reverberate(audio, self.rir_files, rng)

    def choose(self, rng: np.random.Generator) -> str:
        if self.aug_prob is None:
            return self.CHOICES[int(rng.integers(len(self.CHOICES)))]
        if rng.random() >= self.aug_prob:
            return "clean"
        return self.CHOICES[1 + int(rng.integers(len(self.CHOICES) - 1))]

    def __call__(self, audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        choice = self.choose(rng)
        if choice == "reverb":
            return self.reverberate(audio, rng)
        if choice == "speech+music":
            return self.additive(self.additive(audio, "speech", rng), "music", rng)
        if choice != "clean":
            return self.additive(audio, choice, rng)
        return audio


def read_chunk(path: str, length: int, rng: np.random.Generator) -> np.ndarray:
    """wespeaker's ``get_random_chunk`` on a file: ``length`` samples from a start uniform in
    [0, samples - length], or, from a shorter file, the file repeated from its start. Only the chunk is read
    when the file is 16 kHz mono."""
    with open_audio(path) as handle:
        if is_native(handle) and handle.frames >= length:
            chunk = read_frames(handle, path, length, start=int(rng.integers(0, handle.frames - length + 1)))
            if chunk.shape[0] != length:
                raise DataError(f"Audio file '{path}' holds fewer samples than its header says ({handle.frames}); "
                                f"it is probably truncated: re-create or remove it.")
            return chunk
        audio = read_converted(handle, path) if not is_native(handle) else read_frames(handle, path)
    if audio.shape[0] == 0:
        raise DataError(f"Audio file '{path}' is empty; remove it from musan_path.")
    if audio.shape[0] >= length:
        start = int(rng.integers(0, audio.shape[0] - length + 1))
        return audio[start:start + length]
    return np.tile(audio, length // audio.shape[0] + 1)[:length]


class WespeakerAugmenter:
    """wespeaker's augmentation (``wespeaker/dataset/processor.py``, ``add_reverb_noise``): with probability
    ``aug_prob`` (default 0.6) an utterance gets, 50/50, reverberation or one additive noise, then is rescaled to
    peak 1 (x / (max|x| + 1e-4)); the others pass unchanged.

    Reverberation: a random RIR of ``rir_path``, scaled to unit energy, convolved ("full") and truncated to the
    utterance. Noise: one recording drawn uniformly from all of raw MUSAN (``musan_path``:
    ``<category>/<subset>/<recording>.wav``), a random chunk of the utterance's length (repeated from its start
    when shorter), at an SNR drawn from the range of its category (noise 0–15, speech 10–30, music 5–15 dB),
    levels as :func:`mean_power_db`.
    """

    SNR = {"noise": (0.0, 15.0), "speech": (10.0, 30.0), "music": (5.0, 15.0)}

    def __init__(self, musan_path: str, rir_path: str, aug_prob: Optional[float] = None):
        self.noises = recordings(musan_path)
        self.rir_files = find_rirs(rir_path)
        self.aug_prob = 0.6 if aug_prob is None else aug_prob
        if not 0.0 <= self.aug_prob <= 1.0:
            raise ConfigError(f"aug_prob must be in [0, 1], got {aug_prob}.")

    def reverberate(self, audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return reverberate(audio, self.rir_files, rng)

    def add_noise(self, audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        category, path = self.noises[int(rng.integers(len(self.noises)))]
        noise = read_chunk(path, audio.shape[0], rng)
        gain = snr_gain(mean_power_db(audio), mean_power_db(noise), float(rng.uniform(*self.SNR[category])))
        return audio + noise * np.float32(gain)

    def __call__(self, audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if not rng.random() < self.aug_prob:
            return audio
        out = self.reverberate(audio, rng) if rng.random() < 0.5 else self.add_noise(audio, rng)
        return (out / (np.max(np.abs(out)) + 1e-4)).astype(np.float32)


AUGMENTERS = {"original": Augmenter, "wespeaker": WespeakerAugmenter}
SPEEDS = (1.0, 0.9, 1.1)  # speed perturbation: class offset k * speakers for SPEEDS[k], as wespeaker


class TrainDataset(torch.utils.data.Dataset):
    """Training crops. An item is a group of indices (one speaker) -> ([n, samples], label).

    ``entries``: the list as already read (default: read ``train_list``). ``keep`` (per list entry) drops entries
    the data check found unusable; labels are given over the whole list, so dropping never renumbers speakers.
    ``augment_mode`` chooses the augmentation (:class:`Augmenter`, :class:`WespeakerAugmenter`).
    With ``speed_perturb`` each group is read at a speed drawn from 1.0 / 0.9 / 1.1 and its label is
    ``speaker + k * speakers`` (3x the classes, as wespeaker).
    """

    def __init__(self, train_list: str, train_path: str, max_frames: int, augment: bool = False,
                 musan_path: str = "", rir_path: str = "", seed: int = 0, aug_prob: Optional[float] = None,
                 speed_perturb: bool = False, keep: Optional[Sequence[bool]] = None,
                 entries: Optional[List[Entry]] = None, augment_mode: str = "original", **kwargs):
        entries = entries if entries is not None else read_training_entries(train_list, train_path)
        labels, self.speakers = speaker_labels(entries)
        if keep is not None:
            entries = [e for e, k in zip(entries, keep, strict=True) if k]
            labels = [lb for lb, k in zip(labels, keep, strict=True) if k]
        self.files, self.labels = [e.path for e in entries], labels
        self.max_frames = max_frames
        self.augmenter = AUGMENTERS[augment_mode](musan_path, rir_path, aug_prob) if augment else None
        self.speeds = SPEEDS if speed_perturb else SPEEDS[:1]
        self.num_classes = len(self.speakers) * len(self.speeds)
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def reseed(self, stream: int) -> None:
        """Switch to random stream ``stream`` (one per loader worker and epoch)."""
        self.rng = np.random.default_rng([self.seed, stream])

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, group: Sequence[int]) -> Tuple[torch.Tensor, int]:
        speed = int(self.rng.integers(len(self.speeds))) if len(self.speeds) > 1 else 0
        crops = []
        for index in group:
            audio = read_speed_segment(self.files[index], frames_to_samples(self.max_frames), self.speeds[speed],
                                       self.rng)
            if self.augmenter is not None:
                audio = self.augmenter(audio, self.rng)
            crops.append(audio)
        return torch.from_numpy(np.stack(crops).astype(np.float32)), self.labels[group[0]] + speed * len(self.speakers)


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


class UtteranceBatchSampler(torch.utils.data.Sampler):
    """wespeaker's epoch: every utterance once, in random order, batches as they come (a speaker may appear
    twice in one batch).

    Per epoch (``set_epoch``): a permutation with seed+epoch; the tail that does not fill a batch on every
    process is dropped (wespeaker runs ``utterances // processes // batch`` steps); rank r takes batches
    r, r + num_replicas, r + 2 num_replicas, ... of it. (wespeaker's rank takes every num_replicas-th utterance:
    the same distribution; whole batches make the batches of k processes those of one process accumulating k,
    so a global batch trains the same on any number of processes.) Yields one-utterance groups, as
    :class:`SpeakerBatchSampler` with ``nPerSpeaker`` 1.
    """

    def __init__(self, labels: Sequence[int], batch_size: int, seed: int = 0, num_replicas: int = 1, rank: int = 0,
                 **kwargs):
        self.size, self.batch_size = len(labels), batch_size
        self.seed, self.num_replicas, self.rank = seed, num_replicas, rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size // (self.batch_size * self.num_replicas) * self.batch_size

    def __iter__(self):
        order = np.random.default_rng(self.seed + self.epoch).permutation(self.size)
        batches = order[:len(self) * self.num_replicas].reshape(-1, self.batch_size)
        return iter([[int(i)] for i in batches[self.rank::self.num_replicas].reshape(-1)])


SAMPLERS = {"speaker": SpeakerBatchSampler, "utterance": UtteranceBatchSampler}


def collate_groups(items: List[Tuple[torch.Tensor, int]]) -> Tuple[torch.Tensor, torch.Tensor]:
    """[(crops [n, S], label)] -> (wav [B, n, S], labels [B])."""
    return torch.stack([w for w, _ in items]), torch.tensor([label for _, label in items])


def worker_init(worker_id: int) -> None:
    """DataLoader hook: torch gives each worker a distinct seed drawn from the (seeded) main RNG."""
    torch.utils.data.get_worker_info().dataset.reseed(torch.initial_seed() % 2 ** 63)
    quiet_conversions()  # the data check has reported them in the main process
    ignore_in_worker()  # SIGINT/SIGTERM: the training process stops at a step boundary and ends the workers
