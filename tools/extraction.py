"""Batched, length-bucketed embedding extraction (eval mode, no_grad, optional autocast).

Protocols: ``original`` (eval_frames > 0: ``num_eval`` evenly spaced crops of
``eval_frames`` frames plus the whole file) and ``full`` (eval_frames = 0: whole file only).

Batching never pads. Crops all have the same length, so the crops of consecutive files
go through the model together. Whole files go together only when their lengths are
exactly equal (files are visited in length order so equal lengths are adjacent).
Padding is not used because the front-end cannot mask it: the Base CNN's first layer
group-normalises over time and torchaudio's WavLM attention takes no key-padding mask
here, so a padded file would get a different embedding.
The whole-file input is capped at ``max_eval_seconds`` (the original's 700,000 samples,
set for GPU memory); every file that is cut is logged with its length.
"""
from __future__ import annotations

import contextlib
import logging
import os
from typing import Dict, Hashable, List, Sequence

import numpy as np
import soundfile
import torch
from tqdm import tqdm

from DatasetLoader import SAMPLE_RATE, DataError, EvalDataset, frames_to_samples
from tools.evaluation import Embeddings
from tools.logs import progress_options

logger = logging.getLogger(__name__)


def audio_lengths(keys: Sequence[str], root: str) -> np.ndarray:
    """Length in samples of every file, from the headers (no decoding)."""
    lengths = np.empty(len(keys), dtype=np.int64)
    for i, key in enumerate(keys):
        path = os.path.join(root, key)
        try:
            lengths[i] = soundfile.info(path).frames
        except (OSError, RuntimeError, soundfile.LibsndfileError) as err:
            raise DataError(f"Cannot read audio file '{path}': {err}") from err
    return lengths


class _Batcher:
    """Collects equal-length waveforms and runs the encoder once ``limit`` samples are queued."""

    def __init__(self, encoder: torch.nn.Module, device: torch.device, limit: int, autocast: bool):
        self.encoder, self.device, self.limit, self.autocast = encoder, device, limit, autocast
        self.out: Dict[Hashable, np.ndarray] = {}
        self.wavs: List[torch.Tensor] = []
        self.slots: List[Hashable] = []

    def add(self, wav: torch.Tensor, slot: Hashable) -> None:
        """Queue ``wav`` [S] whose embedding goes to ``out[slot]``."""
        if self.wavs and (wav.shape[0] != self.wavs[0].shape[0] or (len(self.wavs) + 1) * wav.shape[0] > self.limit):
            self.flush()
        self.wavs.append(wav)
        self.slots.append(slot)

    def flush(self) -> None:
        if not self.wavs:
            return
        batch = torch.stack(self.wavs).to(self.device)  # [B, S]
        context = (torch.autocast(self.device.type, dtype=torch.bfloat16 if self.device.type == "cpu"
                                  else torch.float16) if self.autocast else contextlib.nullcontext())
        with context:
            emb = self.encoder(batch).float().cpu().numpy()  # [B, D]
        for row, slot in zip(emb, self.slots):
            self.out[slot] = row
        self.wavs, self.slots = [], []


@torch.no_grad()
def extract_embeddings(encoder: torch.nn.Module, keys: List[str], test_path: str, eval_frames: int,
                       num_eval: int, max_eval_seconds: float, device: torch.device, workers: int = 0,
                       verbose: bool = True, batch_seconds: float = 60.0, autocast: bool = False) -> Embeddings:
    """Embeddings of every file: whole file (capped at ``max_eval_seconds``) and, when
    ``eval_frames`` > 0, ``num_eval`` evenly spaced crops of ``eval_frames`` frames.

    Args:
        encoder: waveform [B, S] -> embeddings [B, D].
        keys: file paths relative to ``test_path``.
        batch_seconds: most audio per forward pass (a longer single file still goes alone).
        autocast: bfloat16 (CPU) / float16 (CUDA) autocast; scores then differ slightly.
    Returns:
        Embeddings in the order of ``keys``; ``crop_embeddings`` [N, num_eval, D] or None.
    """
    if not keys:
        raise ValueError("No files to extract embeddings for (empty key list).")
    was_training = encoder.training
    encoder.eval()
    max_samples = int(max_eval_seconds * SAMPLE_RATE) if max_eval_seconds > 0 else None
    durations = audio_lengths(keys, test_path)
    lengths = np.minimum(durations, max_samples) if max_samples else durations
    order = np.argsort(lengths, kind="stable")  # equal lengths become neighbours
    dataset = EvalDataset([keys[i] for i in order], test_path, eval_frames, num_eval, max_samples)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers)
    limit = int(batch_seconds * SAMPLE_RATE)
    whole = _Batcher(encoder, device, limit, autocast)
    crops = _Batcher(encoder, device, max(limit, frames_to_samples(eval_frames)), autocast)
    for position, (crop_wav, whole_wav, _) in enumerate(
            tqdm(loader, desc="extracting", disable=not verbose, **progress_options())):
        index = int(order[position])
        whole.add(whole_wav, index)
        if eval_frames > 0:
            for j, wav in enumerate(crop_wav):
                crops.add(wav, (index, j))
    whole.flush()
    crops.flush()
    encoder.train(was_training)
    crop_embeddings = None
    if eval_frames > 0:
        crop_embeddings = np.stack([np.stack([crops.out[(i, j)] for j in range(num_eval)])
                                    for i in range(len(keys))])  # [N, num_eval, D]
    return Embeddings(list(keys), np.stack([whole.out[i] for i in range(len(keys))]), crop_embeddings,
                      (durations / SAMPLE_RATE).astype(np.float32))
