"""Batched, length-bucketed embedding extraction (eval mode, inference mode, optional autocast).

Protocols: ``original`` (eval_frames > 0: ``num_eval`` evenly spaced crops of
``eval_frames`` frames plus the whole file) and ``full`` (eval_frames = 0: whole file only).

Crops all have the same length, so the crops of consecutive files go through the
model together. Whole files are visited in length order and batched with padding
when the longest of a batch is at most ``pad_ratio`` (1.25) times the shortest; the
padded rows are masked (``encoder(wav, lengths)``: per-row CNN where it normalises
over time, padded frames zeroed before the positional convolution, key padding
masks in attention, masked MHFA pooling), so their embeddings equal one-by-one
extraction to float precision.
The whole-file input is capped at ``max_eval_seconds`` (the original's 700,000 samples,
set for GPU memory). A longer file is, with ``long_files`` ``cut`` (the original), cut to
its first ``max_eval_seconds``; with ``chunks``, split into the fewest near-equal
consecutive pieces within the cap, each embedded like a whole file, and its embedding is
the length-weighted mean of the piece embeddings (before any normalisation; one piece
per file gives exactly the usual embedding). Either way every such file is logged.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Dict, Hashable, List

import numpy as np
import torch
from tqdm import tqdm

from core.audio import SAMPLE_RATE, audio_lengths, frames_to_samples
from core.device import autocast_dtype
from core.errors import DataError
from core.logs import progress_options
from dataprep.lists import key_paths
from evaluation.dataset import EvalDataset, require_embeddable, shortest_input, whole_file_pieces
from evaluation.embeddings import Embeddings

logger = logging.getLogger(__name__)


class _Batcher:
    """Collects waveforms and runs the encoder once ``limit`` padded samples are queued.

    Waveforms of different lengths share a batch (padded, with their lengths passed to
    the encoder) only while longest <= ``pad_ratio`` * shortest.
    """

    def __init__(self, encoder: torch.nn.Module, device: torch.device, limit: int, autocast: bool,
                 pad_ratio: float = 1.0):
        self.encoder, self.device, self.limit, self.autocast = encoder, device, limit, autocast
        self.pad_ratio = pad_ratio
        self.out: Dict[Hashable, np.ndarray] = {}
        self.wavs: List[torch.Tensor] = []
        self.slots: List[Hashable] = []

    def add(self, wav: torch.Tensor, slot: Hashable) -> None:
        """Queue ``wav`` [S] whose embedding goes to ``out[slot]``."""
        if self.wavs:
            sizes = [w.shape[0] for w in self.wavs] + [wav.shape[0]]
            if max(sizes) > self.pad_ratio * min(sizes) or len(sizes) * max(sizes) > self.limit:
                self.flush()
        self.wavs.append(wav)
        self.slots.append(slot)

    def flush(self) -> None:
        if not self.wavs:
            return
        lengths = torch.tensor([w.shape[0] for w in self.wavs])
        batch = torch.nn.utils.rnn.pad_sequence(self.wavs, batch_first=True).to(self.device)  # [B, S_max]
        context = (torch.autocast(self.device.type, dtype=autocast_dtype(self.device)) if self.autocast
                   else contextlib.nullcontext())
        with context:
            if bool((lengths == lengths[0]).all()):
                emb = self.encoder(batch)
            else:
                emb = self.encoder(batch, lengths.to(self.device))
        for row, slot in zip(emb.float().cpu().numpy(), self.slots, strict=True):
            self.out[slot] = row
        self.wavs, self.slots = [], []


def combine_pieces(rows: np.ndarray, sizes: List[int]) -> np.ndarray:
    """Whole-file embedding from the embeddings ``rows`` [k, D] of a file's k pieces of ``sizes`` samples:
    the one piece's embedding, or the length-weighted mean of the pieces' embeddings."""
    if len(sizes) == 1:
        return rows[0]
    weights = np.array(sizes, dtype=np.float64)
    return (weights @ rows.astype(np.float64) / weights.sum()).astype(np.float32)


@torch.inference_mode()
def extract_embeddings(encoder: torch.nn.Module, keys: List[str], test_path: str, eval_frames: int,
                       num_eval: int, max_eval_seconds: float, device: torch.device, workers: int = 0,
                       verbose: bool = True, batch_seconds: float = 60.0, autocast: bool = False,
                       pad_ratio: float = 1.25, long_files: str = "cut") -> Embeddings:
    """Embeddings of every file: whole file (capped at ``max_eval_seconds``) and, when
    ``eval_frames`` > 0, ``num_eval`` evenly spaced crops of ``eval_frames`` frames.

    Args:
        encoder: waveform [B, S] -> embeddings [B, D].
        keys: file paths relative to ``test_path``.
        batch_seconds: most audio per forward pass (a longer single file still goes alone).
        autocast: bfloat16 (CPU) / float16 (CUDA) autocast; scores then differ slightly.
        pad_ratio: whole files share a padded batch while longest <= pad_ratio * shortest
            (1.0: equal lengths only).
        long_files: ``cut`` or ``chunks``, for files longer than ``max_eval_seconds``
            (module docstring).
    Returns:
        Embeddings in the order of ``keys``; ``crop_embeddings`` [N, num_eval, D] or None.
    Raises:
        DataError: a file is shorter than the front-end's one frame (:func:`evaluation.dataset.require_embeddable`),
            named, before any extraction.
    """
    if not keys:
        raise DataError("No files to extract embeddings for (empty key list).")
    was_training = encoder.training
    encoder.eval()
    max_samples = int(max_eval_seconds * SAMPLE_RATE) if max_eval_seconds > 0 else None
    paths = key_paths(keys, test_path)
    durations = audio_lengths(paths, "")
    need = shortest_input(encoder)
    require_embeddable(paths, durations, need, max_samples, long_files)  # before any work; the reader checks again
    lengths = np.array([max(b - a for a, b in whole_file_pieces(int(d), max_samples, long_files))
                        for d in durations])  # the longest whole-file piece of each file, from the headers
    order = np.argsort(lengths, kind="stable")  # equal lengths become neighbours
    dataset = EvalDataset([keys[i] for i in order], test_path, eval_frames, num_eval, max_samples, long_files,
                          min_samples=need)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers)
    limit = int(batch_seconds * SAMPLE_RATE)
    whole = _Batcher(encoder, device, limit, autocast, pad_ratio=pad_ratio)
    crops = _Batcher(encoder, device, max(limit, frames_to_samples(eval_frames)), autocast)
    sizes: Dict[int, List[int]] = {}  # file -> its whole-file pieces' lengths, as read
    for position, (crop_wav, whole_wavs, _) in enumerate(
            tqdm(loader, desc="extracting", disable=not verbose, **progress_options())):
        index = int(order[position])
        sizes[index] = [int(wav.shape[0]) for wav in whole_wavs]
        for k, wav in enumerate(whole_wavs):
            whole.add(wav, (index, k))
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
    whole_embeddings = np.stack([combine_pieces(np.stack([whole.out[(i, k)] for k in range(len(sizes[i]))]),
                                                sizes[i]) for i in range(len(keys))])
    return Embeddings(list(keys), whole_embeddings, crop_embeddings, (durations / SAMPLE_RATE).astype(np.float32))
