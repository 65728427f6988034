"""Audio files and the crop conventions shared by training and evaluation.

voxceleb_trainer's conventions: ``max_frames`` / ``eval_frames`` count 10 ms frames and a
crop holds ``frames * 160 + 240`` samples at 16 kHz; a file of at most a crop's length is
extended by wrap-around padding to one sample more than the crop (:func:`wrap_pad`).
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import soundfile

from core.errors import DataError

SAMPLE_RATE = 16000
HOP = 160  # samples per 10 ms frame
WINDOW_EXTRA = 240  # a 25 ms window needs 240 more samples than its hop
AUDIO_ERRORS = (OSError, RuntimeError, soundfile.LibsndfileError)


def frames_to_samples(frames: int) -> int:
    """Crop length in samples for ``frames`` 10 ms frames: frames*160 + 240."""
    return frames * HOP + WINDOW_EXTRA


def wrap_pad(audio: np.ndarray, crop: int) -> np.ndarray:
    """The original's padding: a file of ``length <= crop`` samples (equal too) gets
    ``crop - length + 1`` samples by wrap-around, so it becomes ``crop + 1`` long; a longer
    file is returned unchanged (voxceleb_trainer ``loadWAV``)."""
    if audio.shape[0] > crop:
        return audio
    return np.pad(audio, (0, crop - audio.shape[0] + 1), mode="wrap")


def open_audio(path: str) -> soundfile.SoundFile:
    """Open ``path`` and check it is non-empty 16 kHz mono; any problem raises DataError naming the file."""
    try:
        handle = soundfile.SoundFile(path)
    except AUDIO_ERRORS as err:
        raise DataError(f"Cannot read audio file '{path}': {err}") from err
    problem = (f"has sample rate {handle.samplerate} Hz; {SAMPLE_RATE} Hz is required (resample it, e.g. with "
               f"sox or ffmpeg)." if handle.samplerate != SAMPLE_RATE else
               f"has {handle.channels} channels; mono is required." if handle.channels != 1 else
               "is empty." if handle.frames == 0 else "")
    if problem:
        handle.close()
        raise DataError(f"Audio file '{path}' {problem}")
    return handle


def read_frames(handle: soundfile.SoundFile, path: str, frames: int = -1, start: int = 0) -> np.ndarray:
    """``frames`` samples (all: -1) from ``start`` of an open file, as float32 in [-1, 1]."""
    try:
        if start:
            handle.seek(start)
        return handle.read(frames, dtype="float32", always_2d=True)[:, 0]
    except AUDIO_ERRORS as err:
        raise DataError(f"Cannot read audio file '{path}': {err}") from err


def load_audio(path: str) -> np.ndarray:
    """Read a 16 kHz mono file as float32 in [-1, 1]; any problem raises DataError naming the file."""
    with open_audio(path) as handle:
        return read_frames(handle, path)


def audio_lengths(keys: Sequence[str], root: str) -> np.ndarray:
    """Length in samples of every file ``root/key``, from the headers (no decoding)."""
    lengths = np.empty(len(keys), dtype=np.int64)
    for i, key in enumerate(keys):
        path = os.path.join(root, key)
        try:
            lengths[i] = soundfile.info(path).frames
        except AUDIO_ERRORS as err:
            raise DataError(f"Cannot read audio file '{path}': {err}") from err
    return lengths
