"""Audio files and the crop conventions shared by training and evaluation.

voxceleb_trainer's conventions: ``max_frames`` / ``eval_frames`` count 10 ms frames and a
crop holds ``frames * 160 + 240`` samples at 16 kHz; a file of at most a crop's length is
extended by wrap-around padding to one sample more than the crop (:func:`wrap_pad`).

Every reader returns 16 kHz mono float32: a file at another sample rate is resampled with
torchaudio, a multi-channel file is averaged to one channel. Each kind of conversion is logged
once per process (:func:`note_conversion`); the data check (:mod:`dataprep.check`) reports how
many files need it before a run starts.
"""
from __future__ import annotations

import logging
import math
import os
from typing import Sequence, Set

import numpy as np
import soundfile

from core.errors import DataError

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
HOP = 160  # samples per 10 ms frame
WINDOW_EXTRA = 240  # a 25 ms window needs 240 more samples than its hop
AUDIO_ERRORS = (OSError, RuntimeError, soundfile.LibsndfileError)
INT16_SCALE = np.float32(1.0 / 32768.0)  # libsndfile's int16 -> float scaling
_NOTED: Set[str] = set()  # conversions already logged by this process


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


def quiet_conversions(kinds: Sequence[str] = ("resample", "downmix")) -> None:
    """Do not log these conversions in this process (e.g. a loader worker, when the main process
    has reported them already)."""
    _NOTED.update(kinds)


def note_conversion(kind: str, message: str) -> None:
    """Log ``message`` as a warning the first time this process meets a conversion of ``kind``."""
    if kind not in _NOTED:
        _NOTED.add(kind)
        logger.warning("%s (logged once per run)", message)


def converted_length(frames: int, rate: int) -> int:
    """Length in samples at 16 kHz of ``frames`` samples at ``rate`` Hz (torchaudio's resampling)."""
    return frames if rate == SAMPLE_RATE else int(math.ceil(SAMPLE_RATE * frames / rate))


def resample(audio: np.ndarray, orig: int, new: int) -> np.ndarray:
    """torchaudio's band-limited sinc resampling from ``orig`` to ``new`` Hz (float32)."""
    if orig == new:
        return audio
    import torch  # imported here: the commands that only score never resample and do not pay torch's import
    import torchaudio.functional

    divisor = math.gcd(orig, new)
    return torchaudio.functional.resample(torch.from_numpy(np.ascontiguousarray(audio)), orig // divisor,
                                          new // divisor).numpy()


def open_audio(path: str) -> soundfile.SoundFile:
    """Open ``path`` and check it holds samples; any problem raises DataError naming the file."""
    try:
        handle = soundfile.SoundFile(path)
    except AUDIO_ERRORS as err:
        raise DataError(f"Cannot read audio file '{path}': {err}") from err
    if handle.frames == 0:
        handle.close()
        raise DataError(f"Audio file '{path}' is empty.")
    return handle


def is_native(handle: soundfile.SoundFile) -> bool:
    """True for a 16 kHz mono file: read as it is, and a crop can be read on its own."""
    return handle.samplerate == SAMPLE_RATE and handle.channels == 1


def read_frames(handle: soundfile.SoundFile, path: str, frames: int = -1, start: int = 0) -> np.ndarray:
    """``frames`` samples (all: -1) from ``start`` of an open 16 kHz mono file, float32 in [-1, 1].

    16-bit files (VoxCeleb, MUSAN) are read as int16 and scaled by 1/32768 here: the same values as
    libsndfile's float conversion, in half the time."""
    try:
        if start:
            handle.seek(start)
        if handle.subtype != "PCM_16":
            return handle.read(frames, dtype="float32", always_2d=True)[:, 0]
        pcm = handle.read(frames, dtype="int16", always_2d=True)[:, 0]
    except AUDIO_ERRORS as err:
        raise DataError(f"Cannot read audio file '{path}': {err}") from err
    return np.multiply(pcm, INT16_SCALE, dtype=np.float32)


def read_converted(handle: soundfile.SoundFile, path: str) -> np.ndarray:
    """The whole of an open file as 16 kHz mono float32 (averaged over channels, resampled)."""
    try:
        audio = handle.read(dtype="float32", always_2d=True)
    except AUDIO_ERRORS as err:
        raise DataError(f"Cannot read audio file '{path}': {err}") from err
    if audio.shape[1] > 1:
        note_conversion("downmix", f"Audio file '{path}' has {audio.shape[1]} channels: multi-channel files are "
                                   f"averaged to one channel")
        audio = audio.mean(axis=1, dtype=np.float32)[:, None]
    if handle.samplerate != SAMPLE_RATE:
        note_conversion("resample", f"Audio file '{path}' is at {handle.samplerate} Hz: files not at "
                                    f"{SAMPLE_RATE} Hz are resampled to it with torchaudio")
        return resample(audio[:, 0], handle.samplerate, SAMPLE_RATE)
    return audio[:, 0]


def load_audio(path: str) -> np.ndarray:
    """Read a file as 16 kHz mono float32 in [-1, 1]; any problem raises DataError naming the file."""
    with open_audio(path) as handle:
        return read_frames(handle, path) if is_native(handle) else read_converted(handle, path)


def audio_lengths(keys: Sequence[str], root: str) -> np.ndarray:
    """Length in samples at 16 kHz of every file ``root/key``, from the headers (no decoding)."""
    lengths = np.empty(len(keys), dtype=np.int64)
    for i, key in enumerate(keys):
        path = os.path.join(root, key)
        try:
            info = soundfile.info(path)
        except AUDIO_ERRORS as err:
            raise DataError(f"Cannot read audio file '{path}': {err}") from err
        lengths[i] = converted_length(info.frames, info.samplerate)
    return lengths
