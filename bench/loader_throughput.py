#!/usr/bin/env python
"""Augmented training samples per second: the project's loader against a whole-file loader written the
original's way, in one process, alternating, on the same list.

Both produce 3 s crops (max_frames 300) with augmentation on (MUSAN split chunks + RIRs, one of six
choices per utterance). The original's way (voxceleb_trainer / the MHFA repo's DatasetLoader, re-written
here): read the whole file as float64, wrap-pad, crop with ``random.random()``; noises read whole and
wrap-padded the same way; reverberation with ``scipy.signal.convolve`` of the RIR read again each time;
float64 throughout, cast at the end. The project's loader (``DatasetLoader.TrainDataset``): reads only the
crop of a long file, float32 throughout, FFT convolution, RIRs kept in memory. Loader workers are off, so
the figures are per process (workers multiply both alike).

Data: ``--data`` (a demo corpus made by tools.make_demo_data, default demo/data); made in a temporary
folder if absent. Prints samples/s per round, the medians and their ratio.

Usage: python bench/loader_throughput.py [--data demo/data] [--items 300] [--rounds 3]
"""
from __future__ import annotations

import argparse
import glob
import os
import random
import statistics
import sys
import tempfile
import time

import numpy
import soundfile
from scipy import signal

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from DatasetLoader import TrainDataset  # noqa: E402 (after the project root is put on sys.path)
from synthetic.corpus import make_corpus  # noqa: E402 (after the project root is put on sys.path)

MAX_FRAMES = 300


def load_wav_original(filename: str, max_frames: int) -> numpy.ndarray:
    """The original's training read: the whole file (float64), wrap-pad, one random crop; [1, samples]."""
    max_audio = max_frames * 160 + 240
    audio, _ = soundfile.read(filename)
    if audio.shape[0] <= max_audio:
        audio = numpy.pad(audio, (0, max_audio - audio.shape[0] + 1), "wrap")
    start = int(random.random() * (audio.shape[0] - max_audio))
    return numpy.stack([audio[start:start + max_audio]], axis=0).astype(numpy.float64)


class OriginalLoader:
    """The original's dataset + augmentation, straightforwardly (see the module doc)."""

    SNR = {"noise": [0, 15], "speech": [13, 20], "music": [5, 15]}
    COUNT = {"noise": [1, 1], "speech": [3, 8], "music": [1, 1]}

    def __init__(self, train_list: str, train_path: str, musan_path: str, rir_path: str):
        lines = open(train_list).read().split("\n")
        self.files = [os.path.join(train_path, line.split()[1]) for line in lines if line.strip()]
        self.noises = {}
        for f in glob.glob(os.path.join(musan_path, "*/*/*/*.wav")):
            self.noises.setdefault(f.split("/")[-4], []).append(f)
        self.rirs = glob.glob(os.path.join(rir_path, "*/*/*.wav"))

    def additive(self, category: str, audio: numpy.ndarray) -> numpy.ndarray:
        clean_db = 10 * numpy.log10(numpy.mean(audio ** 2) + 1e-4)
        picks = random.sample(self.noises[category], random.randint(*self.COUNT[category]))
        noises = []
        for noise in picks:
            noise_audio = load_wav_original(noise, MAX_FRAMES)
            snr = random.uniform(*self.SNR[category])
            noise_db = 10 * numpy.log10(numpy.mean(noise_audio[0] ** 2) + 1e-4)
            noises.append(numpy.sqrt(10 ** ((clean_db - noise_db - snr) / 10)) * noise_audio)
        return numpy.sum(numpy.concatenate(noises, axis=0), axis=0, keepdims=True) + audio

    def reverberate(self, audio: numpy.ndarray) -> numpy.ndarray:
        rir, _ = soundfile.read(random.choice(self.rirs))
        rir = numpy.expand_dims(rir.astype(numpy.float64), 0)
        rir = rir / numpy.sqrt(numpy.sum(rir ** 2))
        return signal.convolve(audio, rir, mode="full")[:, :audio.shape[1]]

    def __getitem__(self, index: int) -> numpy.ndarray:
        audio = load_wav_original(self.files[index], MAX_FRAMES)
        kind = random.randint(0, 5)
        if kind == 1:
            audio = self.reverberate(audio)
        elif kind == 2:
            audio = self.additive("music", audio)
        elif kind == 3:
            audio = self.additive("speech", audio)
        elif kind == 4:
            audio = self.additive("noise", audio)
        elif kind == 5:
            audio = self.additive("music", self.additive("speech", audio))
        return audio.astype(numpy.float32)


def rate(get, indices) -> float:
    start = time.perf_counter()
    for i in indices:
        get(i)
    return len(indices) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="demo/data", help="demo corpus folder (made if absent)")
    parser.add_argument("--items", type=int, default=300, help="samples per timed round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    args = parser.parse_args()
    data = args.data
    if not os.path.isfile(os.path.join(data, "train_list.txt")):
        data = os.path.join(tempfile.mkdtemp(), "data")
        make_corpus(data, n_train_speakers=20, utts_per_speaker=10)
    paths = dict(train_list=os.path.join(data, "train_list.txt"), train_path=os.path.join(data, "train"),
                 musan_path=os.path.join(data, "musan_split"), rir_path=os.path.join(data, "rir"))
    ours = TrainDataset(**paths, max_frames=MAX_FRAMES, augment=True, seed=0)
    original = OriginalLoader(**paths)
    random.seed(0)
    order = numpy.random.default_rng(0).integers(len(ours), size=args.items).tolist()
    seconds = [soundfile.info(f).duration for f in ours.files]
    print(f"{len(ours)} files ({min(seconds):.1f}-{max(seconds):.1f} s, mean {numpy.mean(seconds):.1f} s), "
          f"3 s crops, augmentation on, {args.items} samples per round, one process")
    rate(lambda i: ours[[i]], order[:20])  # warm both (page cache, RIR cache, imports)
    rate(original.__getitem__, order[:20])
    figures = {"ours": [], "original": []}
    for r in range(args.rounds):
        figures["original"].append(rate(original.__getitem__, order))
        figures["ours"].append(rate(lambda i: ours[[i]], order))
        print(f"round {r + 1}: original {figures['original'][-1]:.1f} samples/s, ours {figures['ours'][-1]:.1f}")
    o, p = statistics.median(figures["original"]), statistics.median(figures["ours"])
    print(f"median: original {o:.1f} samples/s, ours {p:.1f} samples/s, ratio {p / o:.2f}x")


if __name__ == "__main__":
    main()
