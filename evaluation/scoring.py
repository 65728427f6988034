"""Scoring maths on embedding arrays: cosine trials, mean subtraction, AS-norm / S-norm.

Pure functions (arrays in, arrays out; no file I/O). Trials are given as row indices
into the embedding matrices, so one key -> row mapping serves every step; :func:`score_all`
maps the trials of one or several lists to rows once and scores them all.

Original protocol (voxceleb_trainer ``evaluateFromList``), embeddings L2-normalised:
  s1 = mean_{i,j} <c_e,i, c_t,j>   (crop x crop cosine matrix; equals <mean_i c_e,i, mean_j c_t,j>)
  s2 = <w_e, w_t>                  (whole-file embeddings)
  score = (s1 + s2) / 2, or s2 alone without crops.
AS-norm (Matejka et al., Interspeech 2017; wespeaker ``score_norm.py``): with mu_x, sigma_x the
mean and standard deviation of the top-N cosines of x against the cohort,
  s' = ((s - mu_e) / sigma_e + (s - mu_t) / sigma_t) / 2;  S-norm takes N = the whole cohort.
"""
from __future__ import annotations

import mmap
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, NamedTuple, Optional, Tuple

import numpy as np
from threadpoolctl import threadpool_limits

from core.config import available_cpus
from core.errors import ConfigError
from core.forks import CAN_FORK, Forked
from evaluation.embeddings import Embeddings, trial_rows
from evaluation.trials import Trials

TRIAL_CHUNK = 2048  # trials per gather: 2 x 2 MB of 256-d rows stay in cache for the dot products
COHORT_CHUNK = 4096  # files per cohort matrix product ([4096, 5994] float32 = 98 MB)


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """x / max(||x||_2, 1e-12) along the last axis, as float32."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), np.float32(1e-12))


def subtract_mean(x: np.ndarray, mean: Optional[np.ndarray]) -> np.ndarray:
    """x - mean (broadcast over the last axis); ``mean`` None leaves x unchanged.

    Done before L2 normalisation, as wespeaker's ``score.py`` (``cal_mean``) does.
    """
    return x if mean is None else np.asarray(x, dtype=np.float32) - np.asarray(mean, dtype=np.float32)


def worker_count() -> int:
    """Threads for the row-parallel loops: the CPUs this process may use, at most 8."""
    return max(1, min(8, available_cpus()))


def in_threads(task: Callable[[int, int], None], total: int, chunk: int) -> None:
    """Run ``task(start, stop)`` over [0, total) in blocks of ``chunk`` on a thread pool.

    NumPy's ``take``, ``einsum`` and matrix products release the GIL, so the blocks run in
    parallel; each task writes its own slice of a preallocated output.
    """
    starts = range(0, total, chunk)
    workers = worker_count()
    if workers == 1 or len(starts) == 1:
        for start in starts:
            task(start, min(start + chunk, total))
        return
    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(lambda start: task(start, min(start + chunk, total)), starts):
            pass  # re-raises a task's exception here


def pair_dots(a: np.ndarray, b: np.ndarray, rows_a: np.ndarray, rows_b: np.ndarray) -> np.ndarray:
    """s_n = <a[rows_a[n]], b[rows_b[n]]> for every n, in float32 chunks; returns float64 [N].

    The random row gathers are the cost (2 KB per trial for 256-d float32): ``np.take``
    into cache-sized blocks of ``TRIAL_CHUNK`` trials is ~2x faster than fancy indexing of
    the whole list, and running the blocks on all cores (``in_threads``) ~2x again on 2.

    Args:
        a, b: [F, D] matrices (normalised embeddings).
        rows_a, rows_b: [N] int row indices (the two sides of each trial).
    """
    out = np.empty(len(rows_a), dtype=np.float64)

    def block(start: int, stop: int) -> None:
        out[start:stop] = np.einsum("nd,nd->n", np.take(a, rows_a[start:stop], axis=0),
                                    np.take(b, rows_b[start:stop], axis=0))

    in_threads(block, len(rows_a), TRIAL_CHUNK)
    return out


def row_norms(x: np.ndarray) -> np.ndarray:
    """L2 norm of each row of x, accumulated in float64 ([F] float64), in parallel blocks."""
    out = np.empty(len(x), dtype=np.float64)

    def block(start: int, stop: int) -> None:
        rows = x[start:stop]
        out[start:stop] = np.sqrt(np.einsum("fd,fd->f", rows, rows, dtype=np.float64))

    in_threads(block, len(x), COHORT_CHUNK * 4)
    return out


def protocol_parts(whole: np.ndarray, enroll: np.ndarray, test: np.ndarray,
                   crops: Optional[np.ndarray] = None) -> Tuple[Optional[np.ndarray], np.ndarray]:
    """The two halves of the original protocol (module docstring): (s1 from the crops, or None without
    crops; s2 from the whole files), [N] float64 each, for trials given as row indices."""
    whole = np.asarray(whole, dtype=np.float32)
    norms = np.maximum(row_norms(whole), 1e-12)  # [F]
    s2 = pair_dots(whole, whole, enroll, test) / (norms[enroll] * norms[test])  # no normalised copy of `whole`
    if crops is None:
        return None, s2
    mean_crop = np.concatenate([l2_normalise(crops[i:i + COHORT_CHUNK]).mean(axis=1)  # [F, D], in blocks: no
                                for i in range(0, len(crops), COHORT_CHUNK)])  # full normalised copy of all crops
    return pair_dots(mean_crop, mean_crop, enroll, test), s2


def trial_scores(whole: np.ndarray, enroll: np.ndarray, test: np.ndarray,
                 crops: Optional[np.ndarray] = None) -> np.ndarray:
    """Original-protocol scores (module docstring) for trials given as row indices.

    Args:
        whole: [F, D] whole-file embeddings (any scale; normalised here).
        enroll, test: [N] row indices of each trial's two files.
        crops: [F, num_eval, D] crop embeddings, or None (score = s2).
    Returns:
        [N] float64 scores.
    """
    s1, s2 = protocol_parts(whole, enroll, test, crops)
    return s2 if s1 is None else (s1 + s2) / 2.0


SELECTION_SAMPLE = 512  # columns whose top values give each row's lower bound of its n-th largest (top_n_moments)
SELECT_ROWS = 128  # rows selected at a time by cohort_stats: 128 x 5,994 float32 = 3 MB, about a core's L2


def top_n_moments(sims: np.ndarray, top_n: int, in_place: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """Mean and (population) standard deviation of the ``top_n`` largest values of each row.

    Exact, and several times faster than ``np.partition`` over whole rows for AS-norm's 300 of ~6,000: the
    ``k``-th largest of a row's first ``SELECTION_SAMPLE`` columns, k = 1.3 x n x sample / C + 6, is almost always
    below the row's n-th largest (the sample holds about n x sample / C of the row's top n); the values at or above
    it (about 1.35 n per row) are gathered and only they are partitioned. The gather takes their flat positions
    (one ``np.flatnonzero``) and each row's count from those positions by a search, as ``np.compress`` with
    ``np.count_nonzero`` per row would at a third more cost. A row with fewer than n such values (about 1 in 1,000
    rows for 300 of 5,994, columns in no particular order) takes the whole-row partition instead, so the result is
    exact either way.
    Population std (ddof 0), as wespeaker's ``bin/score_norm.py`` (``np.std`` of the sorted top-N
    cohort scores), so normalised scores match its own, not only up to a constant factor.

    Args:
        sims: [R, C] similarities.
        top_n: N, clipped to C.
        in_place: the whole-row fallback may partition ``sims`` itself (its order is lost).
    Returns:
        (mean [R], std [R]) as float64.
    """
    rows, cols = sims.shape
    n = min(top_n, cols)
    if n == cols:
        top = sims.astype(np.float64)
        return top.mean(axis=1), top.std(axis=1)
    sample = min(cols, SELECTION_SAMPLE)
    k = min(sample, -(-13 * n * sample // (10 * cols)) + 6)
    if 4 * k >= sample:  # the bound would keep most of each row: partition whole rows
        return _partition_moments(sims if in_place else sims.copy(), n)
    head = sims[:, :sample].copy()
    head.partition(sample - k, axis=1)
    at = np.flatnonzero(sims >= head[:, sample - k, None])  # flat positions of a superset of each row's top n
    ends = np.searchsorted(at, np.arange(1, rows + 1) * cols)  # (count_nonzero per row costs as much again)
    counts = np.diff(ends, prepend=0)
    short = counts < n
    mean, std = np.empty(rows), np.empty(rows)
    if short.any():
        mean[short], std[short] = _partition_moments(sims[short], n)
        at = at[~np.repeat(short, counts)]
        counts = counts[~short]
    done = ~short
    if done.any():
        dense = np.full((len(counts), int(counts.max())), -np.inf, dtype=sims.dtype)
        dense[np.arange(dense.shape[1]) < counts[:, None]] = sims.ravel().take(at)  # row r: its first counts[r]
        mean[done], std[done] = _partition_moments(dense, n)
    return mean, std


def _partition_moments(sims: np.ndarray, n: int) -> Tuple[np.ndarray, np.ndarray]:
    """Mean and population std of each row's n largest values, by partitioning ``sims`` in place."""
    cols = sims.shape[1]
    sims.partition(cols - n, axis=1)
    top = sims[:, cols - n:].astype(np.float64)
    return top.mean(axis=1), top.std(axis=1)


def cohort_stats(x: np.ndarray, cohort: np.ndarray, top_n: int, chunk: int = COHORT_CHUNK,
                 rows: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """mu, sigma of the ``top_n`` highest cosines of each row of x (of ``x[rows]`` when given) with the cohort.

    The [R, C] cosine matrix is built ``chunk`` rows at a time in float32, never whole: blocks of ``chunk / 4``
    rows on a thread pool (:func:`in_threads`), each thread with a single-threaded BLAS, so the cores run whole
    blocks (gather and normalise the rows, product, then top-n selection, which is single-threaded in NumPy but
    releases the GIL) side by side instead of sharing every product and leaving the selections to one core. The
    selection goes through each block ``SELECT_ROWS`` rows at a time, a slice that stays in a core's L2 cache
    across its passes (about 1.6x faster than whole blocks). Peak memory below one block of ``chunk`` rows
    (``chunk`` * C * 4 bytes); no normalised copy of x is made.

    Args:
        x: [F, D] embeddings; cohort: [C, D] cohort embeddings (any scale).
        top_n: N (AS-norm); N >= C gives S-norm.
        rows: [R] rows of x to compute (default: all).
    Returns:
        (mean [R], std [R]) float64.
    """
    count = len(x) if rows is None else len(rows)
    mean, std = np.empty(count), np.empty(count)
    block = _StatsBlocks(x, cohort, top_n, rows, mean, std)
    with threadpool_limits(1, user_api="blas"):
        in_threads(block, count, max(1, chunk // 4))
    return mean, std


class _StatsBlocks:
    """``block(start, stop)`` writes the top-n moments of rows ``start:stop`` of ``x`` (of ``x[rows]``) into
    ``mean`` and ``std``: the one computation of :func:`cohort_stats` and :class:`StatsAhead`."""

    def __init__(self, x: np.ndarray, cohort: np.ndarray, top_n: int, rows: Optional[np.ndarray],
                 mean: np.ndarray, std: np.ndarray):
        if top_n < 2:
            raise ConfigError(f"top_n must be at least 2 (a standard deviation needs two cohort scores), got "
                              f"{top_n}.")
        unit_c = l2_normalise(cohort)
        self.n = min(top_n, len(unit_c))
        self.cohort_t = np.ascontiguousarray(unit_c.T)
        self.x, self.rows, self.mean, self.std = x, rows, mean, std

    def __call__(self, start: int, stop: int) -> None:
        x, rows = self.x, self.rows
        part = np.asarray(x[start:stop] if rows is None else np.take(x, rows[start:stop], axis=0), dtype=np.float32)
        sims = l2_normalise(part) @ self.cohort_t  # [rows, C]
        for first in range(0, stop - start, SELECT_ROWS):
            last = min(first + SELECT_ROWS, stop - start)
            self.mean[start + first:start + last], self.std[start + first:start + last] = top_n_moments(
                sims[first:last], self.n, in_place=True)


class StatsAhead:
    """:func:`cohort_stats` of every row of ``x``, begun before it is known which rows are needed: the evaluation
    starts it from saved embeddings, then reads the trial lists. The rows are done in order by a forked process
    on the other core, through shared memory: a thread would wait for the GIL, which reading the lists holds in
    long C calls (:mod:`core.forks`; where it cannot fork, nothing starts ahead and :meth:`stats` computes every
    row asked for).

    :meth:`stats` stops the process after its current block of ``chunk / 4`` rows and computes the rows asked
    for that it has not done, on all cores. A row's moments are the same bits either way (each row's cosines and
    selection do not depend on the other rows of its block), and a process that failed only leaves more rows to
    do (an error that is real recurs there). Use as a context manager, or call :meth:`close`: the process ends
    there on every path, an error included, and also ends by itself when its parent is gone.
    """

    def __init__(self, x: np.ndarray, cohort: np.ndarray, top_n: int, chunk: int = COHORT_CHUNK):
        self.x, self.cohort, self.top_n, self.chunk = x, cohort, top_n, chunk
        self.block_rows = max(1, chunk // 4)
        rows = len(x)
        self.shared = mmap.mmap(-1, 17 * rows + 1)  # anonymous and shared: what the process writes is seen here
        self.mean = np.frombuffer(self.shared, np.float64, rows, 0)
        self.std = np.frombuffer(self.shared, np.float64, rows, 8 * rows)
        self.done = np.frombuffer(self.shared, np.bool_, rows, 16 * rows)
        self.halt = np.frombuffer(self.shared, np.bool_, 1, 17 * rows)
        self.blocks = _StatsBlocks(x, cohort, top_n, None, self.mean, self.std)  # checks top_n here, in the caller
        self.process = Forked(self._rows) if CAN_FORK and rows > 0 else None

    def _rows(self) -> None:
        """In the forked process: blocks in row order until told to stop or orphaned."""
        parent = os.getppid()
        threadpool_limits(1, user_api="blas")  # one core: the parent reads the trial lists on the other
        for start in range(0, len(self.x), self.block_rows):
            if self.halt[0] or os.getppid() != parent:
                return
            stop = min(start + self.block_rows, len(self.x))
            self.blocks(start, stop)
            self.done[start:stop] = True

    def close(self) -> None:
        """Stop the process (after its current block) and wait for it; idempotent."""
        if self.process is not None:
            self.halt[0] = True
            self.process.join()  # a failure leaves its rows undone, for stats() (class docstring)

    def __enter__(self) -> StatsAhead:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self, rows: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(mu, sigma) [F] of every row in ``rows`` (indices into x), NaN elsewhere, as
        :func:`file_cohort_stats` gives them."""
        self.close()
        used = rows_in_use(len(self.x), rows)
        missing = np.flatnonzero(used & ~self.done)
        mu, sigma = np.where(used, self.mean, np.nan), np.where(used, self.std, np.nan)
        if missing.size:
            mu[missing], sigma[missing] = cohort_stats(self.x, self.cohort, self.top_n, self.chunk, rows=missing)
        return mu, sigma


def adaptive_snorm(scores: np.ndarray, mean_e: np.ndarray, std_e: np.ndarray, mean_t: np.ndarray,
                   std_t: np.ndarray) -> np.ndarray:
    """s' = ((s - mu_e) / sigma_e + (s - mu_t) / sigma_t) / 2, element-wise over trials."""
    return 0.5 * ((scores - mean_e) / std_e + (scores - mean_t) / std_t)


# ----------------------------------------------------------------------------- trial lists

class Scored(NamedTuple):
    scores: Dict[str, np.ndarray]  # list name -> [N] float64 scores in trial-list order
    rows: Dict[str, Tuple[np.ndarray, np.ndarray]]  # list name -> (enroll rows, test rows) of the embeddings
    stats: Optional[Tuple[np.ndarray, np.ndarray]]  # AS-/S-norm (mu, sigma) per embedding row, or None


def score_all(emb: Embeddings, trial_sets: Dict[str, Trials], method: str = "none",
              cohort: Optional[np.ndarray] = None, top_n: int = 0, mean: Optional[np.ndarray] = None,
              ahead: Optional[StatsAhead] = None) -> Scored:
    """Scores of one or several trial lists from one set of embeddings, with the trial rows
    and cohort statistics they were made from (QMF reuses both).

    The key -> row map is built once, and AS-norm/S-norm statistics are computed once for
    the union of the files of all lists (see :func:`file_cohort_stats`).

    Args:
        emb: embeddings (whole-file, and crops for the original protocol).
        trial_sets: list name -> trials.
        method: 'none', 'asnorm' (top-N cohort) or 'snorm' (whole cohort); needs ``cohort``.
        top_n: N of AS-norm (option ``top_n``).
        mean: subtracted from every embedding (and the cohort) before normalisation.
        ahead: the AS-norm/S-norm statistics of these embeddings (mean-subtracted, with this cohort and N), begun
            before the trial lists were read; they replace ``cohort`` and ``top_n``.
    """
    rows = trial_rows(emb, trial_sets)
    whole = subtract_mean(emb.embeddings, mean)
    crops = None if emb.crop_embeddings is None else subtract_mean(emb.crop_embeddings, mean)
    if method != "none" and ahead is None and cohort is None:
        raise ConfigError(f"score_norm {method!r} needs cohort embeddings (cohort_embeddings).")
    # the raw scores first: the statistics begun ahead go on meanwhile
    scores = {name: trial_scores(whole, e, t, crops) for name, (e, t) in rows.items()}
    stats = None
    if method != "none":
        used = np.concatenate([r for pair in rows.values() for r in pair])
        stats = (ahead.stats(used) if ahead is not None
                 else file_cohort_stats(whole, used, subtract_mean(cohort, mean), method, top_n))
        mu, sigma = stats
        for name, (e, t) in rows.items():
            scores[name] = adaptive_snorm(scores[name], mu[e], sigma[e], mu[t], sigma[t])
    return Scored(scores, rows, stats)


def score_lists(emb: Embeddings, trial_sets: Dict[str, Trials], method: str = "none",
                cohort: Optional[np.ndarray] = None, top_n: int = 0,
                mean: Optional[np.ndarray] = None) -> Dict[str, np.ndarray]:
    """list name -> scores (:func:`score_all` without its by-products)."""
    return score_all(emb, trial_sets, method, cohort, top_n, mean).scores


def score_trials(emb: Embeddings, trials: Trials, mean: Optional[np.ndarray] = None) -> np.ndarray:
    """Original-protocol scores for every trial (vectorised; ``mean`` is subtracted first)."""
    return score_lists(emb, {"trials": trials}, mean=mean)["trials"]


def file_cohort_stats(whole: np.ndarray, rows: np.ndarray, cohort: np.ndarray, method: str,
                      top_n: int) -> Tuple[np.ndarray, np.ndarray]:
    """mu, sigma (:func:`cohort_stats`) of the whole-file embeddings ``whole`` [F, D] in ``rows``
    against ``cohort`` (both already mean-subtracted, if at all).

    Returns [F] arrays, NaN outside ``rows``; computing only the files that occur in the
    trials (once for several lists) is what keeps AS-norm cheap.
    """
    used = np.flatnonzero(rows_in_use(len(whole), rows))
    n = cohort_size(method, top_n, len(cohort))
    mu, sigma = np.full(len(whole), np.nan), np.full(len(whole), np.nan)
    mu[used], sigma[used] = cohort_stats(whole, cohort, n, rows=None if len(used) == len(whole) else used)
    return mu, sigma


def rows_in_use(count: int, rows: np.ndarray) -> np.ndarray:
    """[count] bool: which of ``count`` rows occur in ``rows`` (repeats allowed; np.unique of a million trials'
    rows takes ~20x longer)."""
    used = np.zeros(count, dtype=bool)
    used[rows] = True
    return used


def cohort_size(method: str, top_n: int, cohort_rows: int) -> int:
    """N of the statistics of ``score_norm`` ``method``: ``top_n`` for AS-norm, the whole cohort for S-norm."""
    if method not in ("asnorm", "snorm"):
        raise ConfigError(f"score_norm must be none, asnorm or snorm, got {method!r}.")
    return cohort_rows if method == "snorm" else top_n


def normalise_scores(scores: np.ndarray, emb: Embeddings, trials: Trials, cohort: np.ndarray, method: str,
                     top_n: int, mean: Optional[np.ndarray] = None) -> np.ndarray:
    """AS-norm (top-N cohort) or S-norm (whole cohort) of given raw scores (module docstring)."""
    if method == "none":
        return scores
    e, t = trial_rows(emb, {"trials": trials})["trials"]
    mu, sigma = file_cohort_stats(subtract_mean(emb.embeddings, mean), np.concatenate([e, t]),
                                  subtract_mean(cohort, mean), method, top_n)
    return adaptive_snorm(scores, mu[e], sigma[e], mu[t], sigma[t])
