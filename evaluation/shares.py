"""Which files each data-parallel process embeds: shares of whole chunks of the batch plan, of near-equal work,
from the files' headers.

Every process of an evaluation, of ``python -m tools.embed`` or of training's periodic evaluation computes
the same split (it depends only on the files, their headers and the options), so no process has to send it
to the others. The split never cuts a batch: it deals out the *chunks* of the batch plan of the whole list
(:func:`evaluation.extraction.batch_chunks`: runs of consecutive files in extraction order, length order, cut
where one extraction of all the files runs both its queues, whole files and crops, before the next file, or
forced after ``CHUNK_BATCHES`` batch limits of audio). The chunks depend on the list and the options, not on the
number of processes, and each process extracts its share with their numbers, so it runs exactly the batches one
process runs for those files: with the same kernels (device, and on CPU the same torch thread count) the
embeddings are bit-identical to one process's, and so are the score files.

A chunk's work is the audio the model sees of its files (:func:`extraction_samples`), not their length: the
whole-file input is capped at ``max_eval_seconds`` unless ``eval_long_files`` is ``chunks``, and every file
adds its ``num_eval`` crops. Chunks go longest first to the process with the least work so far (ties: the
earlier chunk, the lower rank), which keeps the shares within one chunk of each other. Within a share the
files keep the order they were given in.
"""
from __future__ import annotations

import heapq
from typing import Any, Dict, List, NamedTuple, Sequence

import numpy as np

from core.audio import SAMPLE_RATE, audio_lengths, frames_to_samples
from dataprep.lists import key_paths
from evaluation.extraction import batch_chunks, whole_pieces


class Share(NamedTuple):
    """One process's files (in the order of the list) and their chunks of the list's batch plan
    (``extract_embeddings(..., chunks=share.chunks)``)."""
    files: List[str]
    chunks: List[int]


def extraction_samples(lengths: Sequence[int], config: Dict[str, Any]) -> np.ndarray:
    """Samples the model embeds for each file of ``lengths`` samples (16 kHz), under the extraction options of
    ``config`` (``max_eval_seconds``, ``eval_long_files``, ``eval_frames``, ``num_eval``)."""
    whole = np.asarray(lengths, dtype=np.int64)
    cap = int(config["max_eval_seconds"] * SAMPLE_RATE)
    if cap > 0 and config["eval_long_files"] == "cut":
        whole = np.minimum(whole, cap)
    crops = config["num_eval"] * frames_to_samples(config["eval_frames"]) if config["eval_frames"] > 0 else 0
    return whole + crops


def extraction_chunks(lengths: Sequence[int], config: Dict[str, Any]) -> np.ndarray:
    """Each file's chunk of the batch plan of a list of files of ``lengths`` samples (from the headers), under
    the extraction options of ``config`` (:func:`evaluation.pipeline.extract_files`'s)."""
    return batch_chunks(whole_pieces(lengths, config["max_eval_seconds"], config["eval_long_files"]),
                        config["eval_frames"], config["num_eval"], config["eval_batch_seconds"])


def split_by_work(work: Sequence[int], world: int) -> List[List[int]]:
    """The indices of ``work`` (one amount per item) that each of ``world`` processes takes: longest first to
    the least-loaded process (ties: the earlier item, the lower rank); each share in ascending index order.
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


def split_chunks(chunks: Sequence[int], work: Sequence[int], world: int) -> List[List[int]]:
    """The files (indices of ``chunks``, each file's chunk, and ``work``, each file's work) that each of
    ``world`` processes takes: whole chunks, dealt out by :func:`split_by_work` on their work; each share in
    ascending index order."""
    chunks = np.asarray(chunks, dtype=np.int64)
    count = int(chunks.max()) + 1 if len(chunks) else 0
    totals = np.zeros(count, dtype=np.int64)
    np.add.at(totals, chunks, np.asarray(work, dtype=np.int64))  # integer sums
    members: List[List[int]] = [[] for _ in range(count)]
    for i, chunk in enumerate(chunks.tolist()):
        members[chunk].append(i)
    return [sorted(i for chunk in share for i in members[chunk]) for share in split_by_work(totals, world)]


def extraction_shares(files: Sequence[str], root: str, config: Dict[str, Any], world: int) -> List[Share]:
    """The share of each of ``world`` processes of ``files`` (keys relative to ``root``, a folder or a Kaldi
    data folder), with the files' chunks of the batch plan of all of ``files``; the lengths are read from the
    headers (no decoding). Depends on ``world`` only in how the chunks are dealt out."""
    lengths = audio_lengths(key_paths(list(files), root), "")
    chunks = extraction_chunks(lengths, config)
    shares = split_chunks(chunks, extraction_samples(lengths, config), world)
    return [Share([files[i] for i in share], [int(chunks[i]) for i in share]) for share in shares]


def file_shares(files: Sequence[str], root: str, config: Dict[str, Any], world: int) -> List[List[str]]:
    """The files of each process's share (:func:`extraction_shares`), in the order of ``files``. One process
    takes every file without reading a header."""
    if world == 1:
        return [list(files)]
    return [share.files for share in extraction_shares(files, root, config, world)]
