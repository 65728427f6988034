"""Which files each data-parallel process embeds: shares of near-equal work, from the files' headers.

Every process of an evaluation, of ``python -m tools.embed`` or of training's periodic evaluation computes
the same split (it depends only on the files, their headers and the options), so no process has to send it
to the others. A file's work is the audio the model sees (:func:`extraction_samples`), not its length: the
whole-file input is capped at ``max_eval_seconds`` unless ``eval_long_files`` is ``chunks``, and every file
adds its ``num_eval`` crops. Files go longest first to the process with the least work so far (ties: the lower
rank), which keeps the shares within one file of each other and gives every process a similar mix of lengths,
so its length-sorted batches stay full. Within a share the files keep the order they were given in.
"""
from __future__ import annotations

import heapq
from typing import Any, Dict, List, Sequence

import numpy as np

from core.audio import SAMPLE_RATE, audio_lengths, frames_to_samples
from dataprep.lists import key_paths


def extraction_samples(lengths: Sequence[int], config: Dict[str, Any]) -> np.ndarray:
    """Samples the model embeds for each file of ``lengths`` samples (16 kHz), under the extraction options of
    ``config`` (``max_eval_seconds``, ``eval_long_files``, ``eval_frames``, ``num_eval``)."""
    whole = np.asarray(lengths, dtype=np.int64)
    cap = int(config["max_eval_seconds"] * SAMPLE_RATE)
    if cap > 0 and config["eval_long_files"] == "cut":
        whole = np.minimum(whole, cap)
    crops = config["num_eval"] * frames_to_samples(config["eval_frames"]) if config["eval_frames"] > 0 else 0
    return whole + crops


def split_by_work(work: Sequence[int], world: int) -> List[List[int]]:
    """The indices of ``work`` (one amount per file) that each of ``world`` processes takes: longest first to
    the least-loaded process (ties: the earlier file, the lower rank); each share in ascending index order.
    Deterministic: integer amounts, no floating-point sums."""
    if world < 1:
        raise ValueError(f"world must be at least 1, got {world}")
    amounts = [int(w) for w in work]
    order = sorted(range(len(amounts)), key=lambda i: (-amounts[i], i))
    loads = [(0, rank) for rank in range(world)]  # a heap of (work so far, rank)
    shares: List[List[int]] = [[] for _ in range(world)]
    for i in order:
        load, rank = heapq.heappop(loads)
        shares[rank].append(i)
        heapq.heappush(loads, (load + amounts[i], rank))
    return [sorted(share) for share in shares]


def file_shares(files: Sequence[str], root: str, config: Dict[str, Any], world: int) -> List[List[str]]:
    """The files (keys relative to ``root``, a folder or a Kaldi data folder) that each of ``world`` processes
    embeds, in the order of ``files``; the lengths are read from the headers (no decoding). One process takes
    every file without reading a header."""
    if world == 1:
        return [list(files)]
    lengths = audio_lengths(key_paths(list(files), root), "")
    return [[files[i] for i in share] for share in split_by_work(extraction_samples(lengths, config), world)]
