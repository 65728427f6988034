"""Evaluation input per file: ``num_eval`` evenly spaced crops and the whole file (the original protocol),
and the policy for files longer than ``max_eval_seconds``."""
from __future__ import annotations

import logging
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from core.audio import SAMPLE_RATE, frames_to_samples, load_audio, wrap_pad
from core.errors import ConfigError, DataError
from core.options import LONG_FILE_MODES
from dataprep.lists import key_paths

logger = logging.getLogger(__name__)


def eval_crop_starts(length: int, crop: int, num_eval: int) -> np.ndarray:
    """Start samples of ``num_eval`` evenly spaced crops: linspace(0, length - crop, num_eval)."""
    return np.linspace(0, length - crop, num=num_eval).astype(np.int64)


def eval_crops(audio: np.ndarray, eval_frames: int, num_eval: int) -> np.ndarray:
    """``num_eval`` evenly spaced crops [num_eval, samples]; eval_frames 0 gives the whole file once."""
    if eval_frames == 0:
        return audio[None, :]
    crop = frames_to_samples(eval_frames)
    audio = wrap_pad(audio, crop)
    return np.stack([audio[s:s + crop] for s in eval_crop_starts(audio.shape[0], crop, num_eval)])


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
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def shortest_input(encoder: torch.nn.Module) -> int:
    """The fewest samples ``encoder`` embeds: the ``min_samples`` of its front-end
    (:attr:`frontend.ssl_frontend.SSLFrontend.min_samples`, one CNN frame: 400), 1 when none of its modules has one."""
    for module in encoder.modules():
        need = getattr(module, "min_samples", None)
        if isinstance(need, int):
            return need
    return 1


def require_embeddable(paths: Sequence[str], lengths: Sequence[int], need: int, max_samples: Optional[int] = None,
                       long_files: str = "cut") -> None:
    """Check that every whole-file input is at least ``need`` samples (:func:`shortest_input`) long.

    Args:
        paths: the audio files; lengths: their lengths in samples at 16 kHz.
        max_samples, long_files: the whole-file cap and its policy (:func:`whole_file_pieces`).
    Raises:
        DataError: naming each file shorter than ``need`` (crops are wrap-padded to their length; the whole
            file is not), also when the data check (``check_data``, ``min_audio_seconds``) was skipped.
        ConfigError: ``max_eval_seconds`` (``max_samples``) cuts a whole-file piece shorter than ``need``.
    """
    short = [(path, int(n)) for path, n in zip(paths, lengths, strict=True) if n < need]
    if short:
        listed = "; ".join(f"'{path}' ({n} samples)" for path, n in short[:10]) + ("; ..." if len(short) > 10 else "")
        raise DataError(f"{len(short)} audio file(s) shorter than one frame of the front-end ({need} samples, "
                        f"{need / 16:g} ms at 16 kHz) cannot be embedded: {listed}. Remove them (and their trials) "
                        f"or replace them; the data check (check_data: true, min_audio_seconds) finds such files "
                        f"before extraction.")
    if max_samples is None:
        return
    for path, n in zip(paths, lengths, strict=True):
        piece = min(b - a for a, b in whole_file_pieces(int(n), max_samples, long_files))
        if piece < need:
            raise ConfigError(f"max_eval_seconds {max_samples / SAMPLE_RATE:g} (eval_long_files: {long_files}) cuts "
                              f"'{path}' to {piece} samples, fewer than one frame of the front-end ({need} samples): "
                              f"set max_eval_seconds to at least {2 * need / SAMPLE_RATE:g} (or 0: no cap).")


class EvalDataset(torch.utils.data.Dataset):
    """Evaluation input per file: (crops [num_eval, S], whole-file pieces [p][N_p], key).

    The whole file is one piece unless it is longer than ``max_eval_samples``; then it is
    cut or split as ``whole_file_pieces`` says, and logged. A file shorter than ``min_samples``
    (:func:`shortest_input` of the encoder) is a DataError naming it (:func:`require_embeddable`).
    """

    def __init__(self, keys: Sequence[str], test_path: str, eval_frames: int, num_eval: int,
                 max_eval_samples: Optional[int] = None, long_files: str = "cut", min_samples: int = 1):
        self.keys, self.test_path = list(keys), test_path
        self.paths = key_paths(self.keys, test_path)
        self.eval_frames, self.num_eval, self.max_eval_samples = eval_frames, num_eval, max_eval_samples
        self.long_files, self.min_samples = long_files, min_samples

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, List[torch.Tensor], str]:
        audio = load_audio(self.paths[i])
        require_embeddable([self.paths[i]], [audio.shape[0]], self.min_samples, self.max_eval_samples, self.long_files)
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
