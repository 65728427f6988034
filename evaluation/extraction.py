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

The batch plan: a batch runs when the next input does not join it (:func:`joins_batch`, the one rule), and
the files, in length order, fall into *chunks* (:func:`batch_chunks`): a chunk starts where both queues
(whole files, crops) run before the file's first input joins them, so a chunk's batches hold its files only,
or where the chunk before holds ``CHUNK_BATCHES`` batch limits of inputs (a forced cut: both queues run
there, so no list goes long without a cut). The chunks follow from the files' header lengths, their order
and the options alone; every extraction runs both queues at each chunk change, so any list of whole chunks,
given their chunk numbers (``chunks``, :mod:`evaluation.shares`), runs exactly the batches one extraction
of all the files runs for them, and the same kernels give bit-identical embeddings. Natural cuts are where
one extraction runs its batches anyway; only the forced cuts add batches: at most one part-filled batch per
queue per ``CHUNK_BATCHES`` (16) batch limits of inputs, while data-parallel shares stay within one chunk
(about 16 batches) of each other.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Dict, Hashable, List, Optional, Sequence, Tuple

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
PAD_RATIO = 1.25  # whole files of lengths within this ratio share a padded batch
CHUNK_BATCHES = 16  # a forced cut once a chunk holds this many batch limits of audio (module docstring)


def joins_batch(count: int, shortest: int, longest: int, size: int, limit: int, pad_ratio: float) -> bool:
    """The batching rule: whether an input of ``size`` samples joins the ``count`` queued inputs of
    ``shortest``..``longest`` samples (a batch padded to its longest), or the queue runs first. It joins an
    empty queue, else while the longest is at most ``pad_ratio`` times the shortest and the padded batch holds
    at most ``limit`` samples."""
    if count == 0:
        return True
    shortest, longest = min(shortest, size), max(longest, size)
    return longest <= pad_ratio * shortest and (count + 1) * longest <= limit


class _Batcher:
    """Collects waveforms and runs the encoder when the next one does not join them (:func:`joins_batch`:
    lengths within ``pad_ratio``, at most ``limit`` padded samples), or on :meth:`flush`."""

    def __init__(self, encoder: torch.nn.Module, device: torch.device, limit: int, autocast: bool,
                 pad_ratio: float = 1.0):
        self.encoder, self.device, self.limit, self.autocast = encoder, device, limit, autocast
        self.pad_ratio = pad_ratio
        self.out: Dict[Hashable, np.ndarray] = {}
        self.wavs: List[torch.Tensor] = []
        self.slots: List[Hashable] = []

    def add(self, wav: torch.Tensor, slot: Hashable) -> None:
        """Queue ``wav`` [S] whose embedding goes to ``out[slot]``."""
        sizes = [w.shape[0] for w in self.wavs]
        if not joins_batch(len(sizes), min(sizes, default=0), max(sizes, default=0), wav.shape[0], self.limit,
                           self.pad_ratio):
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


class _Queue:
    """A queue of the batch plan reduced to what :func:`joins_batch` reads: how many inputs, shortest, longest."""

    def __init__(self, limit: int, pad_ratio: float):
        self.limit, self.pad_ratio = limit, pad_ratio
        self.count = self.shortest = self.longest = 0

    def runs_before(self, size: int) -> bool:
        """Whether nothing queued goes into the batch of an input of ``size`` samples: the queue is empty or
        runs first."""
        return self.count == 0 or not joins_batch(self.count, self.shortest, self.longest, size, self.limit,
                                                  self.pad_ratio)

    def add(self, size: int) -> None:
        if self.runs_before(size):
            self.count, self.shortest, self.longest = 0, size, size
        self.count += 1
        self.shortest, self.longest = min(self.shortest, size), max(self.longest, size)

    def clear(self) -> None:
        self.count = 0


def file_order(pieces: Sequence[Sequence[int]]) -> np.ndarray:
    """The order extraction visits files of whole-file ``pieces`` (their lengths): by the longest piece, ties
    in the order given (a stable sort), so equal lengths become neighbours."""
    return np.argsort(longest_pieces(pieces), kind="stable")


def longest_pieces(pieces: Sequence[Sequence[int]]) -> np.ndarray:
    """The length of each file's longest whole-file piece (what extraction orders files by), int64 [N]."""
    return np.array([max(p) for p in pieces], dtype=np.int64)


def whole_pieces(lengths: Sequence[int], max_eval_seconds: float, long_files: str = "cut") -> List[List[int]]:
    """The lengths of each file's whole-file pieces (:func:`evaluation.dataset.whole_file_pieces`) for files of
    ``lengths`` samples (16 kHz, from the headers) under the cap ``max_eval_seconds`` (0: none)."""
    cap = int(max_eval_seconds * SAMPLE_RATE) if max_eval_seconds > 0 else None
    return [[b - a for a, b in whole_file_pieces(int(n), cap, long_files)] for n in lengths]


def batch_limits(eval_frames: int, batch_seconds: float) -> Tuple[int, int]:
    """Most padded samples per forward pass of the whole files' queue and of the crops' (at least one crop)."""
    limit = int(batch_seconds * SAMPLE_RATE)
    return limit, max(limit, frames_to_samples(eval_frames))


def batch_chunks(pieces: Sequence[Sequence[int]], eval_frames: int, num_eval: int, batch_seconds: float,
                 pad_ratio: float = PAD_RATIO) -> np.ndarray:
    """The chunk of each file in the batch plan of a list (module docstring), numbered 0, 1, ... in extraction
    order, from the lengths alone.

    Args:
        pieces: each file's whole-file piece lengths (:func:`whole_pieces`, from the headers), in the order of
            the list.
        eval_frames, num_eval, batch_seconds, pad_ratio: as :func:`extract_embeddings` takes them.
    Returns:
        int64 [N], in the order of ``pieces``: a file starts a new chunk where both queues run before its first
        input joins them (the batching rule, :func:`joins_batch`), or where the inputs of the chunk so far are
        ``CHUNK_BATCHES`` times the batch limit or more (a forced cut).
    """
    crops, crop_samples = (num_eval, frames_to_samples(eval_frames)) if eval_frames > 0 else (0, 0)
    whole_limit, crop_limit = batch_limits(eval_frames, batch_seconds)
    whole, crop = _Queue(whole_limit, pad_ratio), _Queue(crop_limit, 1.0)
    chunks = np.zeros(len(pieces), dtype=np.int64)
    chunk, work = 0, 0
    for position, i in enumerate(file_order(pieces)):
        sizes = [int(n) for n in pieces[i]]
        if position and (work >= CHUNK_BATCHES * whole_limit
                         or (whole.runs_before(sizes[0]) and (crops == 0 or crop.runs_before(crop_samples)))):
            chunk, work = chunk + 1, 0
            whole.clear()
            crop.clear()
        chunks[i] = chunk
        for size in sizes:
            whole.add(size)
        for _ in range(crops):
            crop.add(crop_samples)
        work += sum(sizes) + crops * crop_samples
    return chunks


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
                       pad_ratio: float = PAD_RATIO, long_files: str = "cut",
                       chunks: Optional[Sequence[int]] = None) -> Embeddings:
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
        chunks: each key's chunk in the batch plan of a longer list that ``keys`` are whole chunks of (a share of
            :mod:`evaluation.shares`; within a chunk, the keys in that list's order): the batches are then the
            ones an extraction of that list runs for them; None: this list's own plan (:func:`batch_chunks`).
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
    pieces = whole_pieces(durations, max_eval_seconds, long_files)  # from the headers
    if chunks is None:
        chunks = batch_chunks(pieces, eval_frames, num_eval, batch_seconds, pad_ratio)
    chunks = np.asarray(chunks, dtype=np.int64)
    if chunks.shape != (len(keys),):
        raise ValueError(f"chunks: one per key ({len(keys)}), got {chunks.shape}")
    # a chunk at a time, each in length order (ties: the order of keys), as one extraction of the whole list
    order = np.lexsort((longest_pieces(pieces), chunks))
    dataset = EvalDataset([keys[i] for i in order], test_path, eval_frames, num_eval, max_samples, long_files,
                          min_samples=need)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers)
    whole_limit, crop_limit = batch_limits(eval_frames, batch_seconds)
    whole = _Batcher(encoder, device, whole_limit, autocast, pad_ratio=pad_ratio)
    crops = _Batcher(encoder, device, crop_limit, autocast)
    sizes: Dict[int, List[int]] = {}  # file -> its whole-file pieces' lengths, as read
    for position, (crop_wav, whole_wavs, _) in enumerate(
            tqdm(loader, desc="extracting", disable=not verbose, **progress_options())):
        index = int(order[position])
        if position and chunks[index] != chunks[order[position - 1]]:  # a cut of the plan: no batch spans it
            whole.flush()
            crops.flush()
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
