"""Evaluation, in separate steps: read trials -> embeddings -> score -> normalise -> write.

Scoring follows the original protocol (see :mod:`tools.scoring`): embeddings are
L2-normalised; with crops, s1 = mean of the crop x crop cosine matrix, s2 = cosine of
whole-file embeddings, score = (s1 + s2) / 2; without crops the score is s2. AS-norm and
S-norm always use the whole-file embeddings. Extraction lives in :mod:`tools.extraction`.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from tools.config import ConfigError
from tools.scoring import adaptive_snorm, cohort_stats, subtract_mean, trial_scores

logger = logging.getLogger(__name__)


class Trials(NamedTuple):
    labels: Optional[np.ndarray]  # [N] int (None when the list has no labels)
    enroll: List[str]
    test: List[str]


class Embeddings(NamedTuple):
    keys: List[str]
    embeddings: np.ndarray  # [N, D] whole-file, before normalisation
    crop_embeddings: Optional[np.ndarray]  # [N, num_eval, D] or None
    durations: Optional[np.ndarray] = None  # [N] seconds of audio per file (for QMF), when known


def _trial_line_error(path: str, lines: Sequence[List[str]]) -> ValueError:
    """The first bad line of a trial list, as an error naming file, line and fix."""
    widths = {len(f) for f in lines if f}
    for number, fields in enumerate(lines, 1):
        if not fields:
            continue
        if len(fields) not in (2, 3) or (len(fields) == 3 and fields[0] not in ("0", "1")):
            return ValueError(f"{path}, line {number}: expected 'label enroll.wav test.wav' with label 0 or 1 "
                              f"(or 'enroll.wav test.wav'), got {' '.join(fields)!r}")
    if widths == {2, 3}:
        return ValueError(f"Trial list '{path}' mixes labelled and unlabelled lines; label every line or none.")
    return ValueError(f"Trial list '{path}' has no trials.")


def _fields_per_line(raw: bytes) -> np.ndarray:
    """Number of whitespace-separated fields on each non-blank line of ``raw`` (ASCII whitespace)."""
    b = np.frombuffer(raw, dtype=np.uint8)
    space = (b == 32) | ((b >= 9) & (b <= 13))  # space, \t \n \v \f \r
    starts = np.flatnonzero(~space & np.concatenate([[True], space[:-1]]))  # first byte of each field
    line = np.searchsorted(np.flatnonzero(b == 10), starts)  # line of a field = number of \n before it
    counts = np.bincount(line)
    return counts[counts > 0]


def read_trials(path: str) -> Trials:
    """Read ``label enroll test`` lines (or ``enroll test`` for unlabelled lists, all lines alike).

    Vectorised: one ``str.split`` of the whole file, field counts per line from the bytes
    (0.2 s for 550 k lines instead of ~1 s line by line). A bad line raises ValueError
    naming the file and line number.
    """
    with open(path, "rb") as handle:
        raw = handle.read()
    tokens = raw.decode("utf-8").split()
    widths = _fields_per_line(raw)
    width = int(widths[0]) if widths.size else 0
    if not widths.size or width not in (2, 3) or widths.sum() != len(tokens) or np.any(widths != width):
        raise _trial_line_error(path, [line.split() for line in raw.decode("utf-8").splitlines()])
    labels = None
    if width == 3:
        if not set(tokens[0::3]) <= {"0", "1"}:
            raise _trial_line_error(path, [line.split() for line in raw.decode("utf-8").splitlines()])
        labels = (np.asarray(tokens[0::3]) == "1").astype(np.int64)
    return Trials(labels, tokens[width - 2::width], tokens[width - 1::width])


def list_paths(test_list: str) -> List[str]:
    """Several trial lists given as one comma-separated value (``--test_list O.txt,E.txt``)."""
    paths = [p.strip() for p in test_list.split(",") if p.strip()]
    names = [list_name(p) for p in paths]
    if len(set(names)) != len(names):
        raise ValueError(f"--test_list {test_list!r}: two lists have the same file name {names}; "
                         f"results and score files are named after it, so rename one.")
    return paths


def list_name(path: str) -> str:
    """Name of a trial list in result lines and score file names: file name without extension."""
    return os.path.splitext(os.path.basename(path))[0]


def key_index(keys: Sequence[str]) -> Dict[str, int]:
    """key -> row, built once per embeddings file."""
    return {k: i for i, k in enumerate(keys)}


def rows_of(index: Dict[str, int], names: Sequence[str], what: str) -> np.ndarray:
    """Row of each name; a missing one raises ValueError naming it and the likely cause."""
    try:
        return np.fromiter(map(index.__getitem__, names), dtype=np.int64, count=len(names))
    except KeyError:
        missing = [n for n in names if n not in index]
        raise ValueError(f"{len(missing)} {what} files have no embedding (first: {missing[0]!r}); the embeddings "
                         f"were made for another list or path: extract them again for this list.") from None


def trial_rows(emb: Embeddings, trial_sets: Dict[str, Trials]) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """list name -> (enroll rows, test rows) of ``emb`` (the key -> row map is built once)."""
    index = key_index(emb.keys)
    return {name: (rows_of(index, t.enroll, f"enrollment ({name})"), rows_of(index, t.test, f"test ({name})"))
            for name, t in trial_sets.items()}


class Scored(NamedTuple):
    scores: Dict[str, np.ndarray]  # list name -> [N] float64 scores in trial-list order
    rows: Dict[str, Tuple[np.ndarray, np.ndarray]]  # list name -> (enroll rows, test rows) of the embeddings
    stats: Optional[Tuple[np.ndarray, np.ndarray]]  # AS-/S-norm (mu, sigma) per embedding row, or None


def score_all(emb: Embeddings, trial_sets: Dict[str, Trials], method: str = "none",
              cohort: Optional[np.ndarray] = None, top_n: int = 300, mean: Optional[np.ndarray] = None) -> Scored:
    """Scores of one or several trial lists from one set of embeddings, with the trial rows
    and cohort statistics they were made from (QMF reuses both).

    The key -> row map is built once, and AS-norm/S-norm statistics are computed once for
    the union of the files of all lists (see :func:`file_cohort_stats`).

    Args:
        emb: embeddings (whole-file, and crops for the original protocol).
        trial_sets: list name -> trials.
        method: 'none', 'asnorm' (top-N cohort) or 'snorm' (whole cohort); needs ``cohort``.
        mean: subtracted from every embedding (and the cohort) before normalisation.
    """
    rows = trial_rows(emb, trial_sets)
    whole = subtract_mean(emb.embeddings, mean)
    crops = None if emb.crop_embeddings is None else subtract_mean(emb.crop_embeddings, mean)
    stats = None
    if method != "none":
        if cohort is None:
            raise ValueError(f"score_norm {method!r} needs cohort embeddings (--cohort_embeddings).")
        stats = file_cohort_stats(whole, np.concatenate([r for pair in rows.values() for r in pair]),
                                  subtract_mean(cohort, mean), method, top_n)
    scores = {}
    for name, (e, t) in rows.items():
        scores[name] = trial_scores(whole, e, t, crops)
        if stats is not None:
            mu, sigma = stats
            scores[name] = adaptive_snorm(scores[name], mu[e], sigma[e], mu[t], sigma[t])
    return Scored(scores, rows, stats)


def score_lists(emb: Embeddings, trial_sets: Dict[str, Trials], method: str = "none",
                cohort: Optional[np.ndarray] = None, top_n: int = 300,
                mean: Optional[np.ndarray] = None) -> Dict[str, np.ndarray]:
    """list name -> scores (:func:`score_all` without its by-products)."""
    return score_all(emb, trial_sets, method, cohort, top_n, mean).scores


def configured_scores(config: Dict[str, Any], emb: Embeddings, trial_sets: Dict[str, Trials]) -> Scored:
    """:func:`score_all` with the scoring options of a configuration (score_norm, top_n,
    cohort_embeddings, mean_embeddings, mean_list); the files they name are read here."""
    norm = config.get("score_norm", "none")
    if norm != "none" and not config.get("cohort_embeddings"):
        raise ConfigError("--score_norm needs --cohort_embeddings (an .npz with one row per cohort speaker; "
                          "python -m tools.make_cohort makes one).")
    cohort = load_embeddings(config["cohort_embeddings"]).embeddings if norm != "none" else None
    mean = load_mean(config["mean_embeddings"], config.get("mean_list", "")) if config.get("mean_embeddings") else None
    return score_all(emb, trial_sets, norm, cohort, config.get("top_n", 300), mean)


def score_trials(emb: Embeddings, trials: Trials, mean: Optional[np.ndarray] = None) -> np.ndarray:
    """Original-protocol scores for every trial (vectorised; ``mean`` is subtracted first)."""
    return score_lists(emb, {"trials": trials}, mean=mean)["trials"]


def file_cohort_stats(whole: np.ndarray, rows: np.ndarray, cohort: np.ndarray, method: str,
                      top_n: int = 300) -> Tuple[np.ndarray, np.ndarray]:
    """mu, sigma (tools.scoring.cohort_stats) of the whole-file embeddings ``whole`` [F, D] in ``rows``
    against ``cohort`` (both already mean-subtracted, if at all).

    Returns [F] arrays, NaN outside ``rows``; computing only the files that occur in the
    trials (once for several lists) is what keeps AS-norm cheap.
    """
    if method not in ("asnorm", "snorm"):
        raise ValueError(f"score_norm must be none, asnorm or snorm, got {method!r}.")
    used = np.unique(rows)
    n = cohort.shape[0] if method == "snorm" else top_n
    mu, sigma = np.full(len(whole), np.nan), np.full(len(whole), np.nan)
    mu[used], sigma[used] = cohort_stats(whole[used], cohort, n)
    return mu, sigma


def normalise_scores(scores: np.ndarray, emb: Embeddings, trials: Trials, cohort: np.ndarray, method: str,
                     top_n: int = 300, mean: Optional[np.ndarray] = None) -> np.ndarray:
    """AS-norm (top-N cohort) or S-norm (whole cohort) of given raw scores (see tools.scoring)."""
    if method == "none":
        return scores
    e, t = trial_rows(emb, {"trials": trials})["trials"]
    mu, sigma = file_cohort_stats(subtract_mean(emb.embeddings, mean), np.concatenate([e, t]),
                                  subtract_mean(cohort, mean), method, top_n)
    return adaptive_snorm(scores, mu[e], sigma[e], mu[t], sigma[t])


def load_mean(path: str, keys_list: str = "") -> np.ndarray:
    """Mean whole-file embedding of an .npz (of the files named in ``keys_list`` when given:
    one file per line, last field, e.g. a training list ``speaker path``)."""
    emb = load_embeddings(path)
    rows = slice(None)
    if keys_list:
        with open(keys_list, encoding="utf-8") as handle:
            names = [line.split()[-1] for line in handle if line.strip()]
        rows = rows_of(key_index(emb.keys), names, f"'{keys_list}'")
    return emb.embeddings[rows].astype(np.float64).mean(axis=0).astype(np.float32)


def save_embeddings(emb: Embeddings, path: str) -> None:
    arrays = {"keys": np.asarray(emb.keys), "embeddings": emb.embeddings.astype(np.float32)}
    if emb.crop_embeddings is not None:
        arrays["crop_embeddings"] = emb.crop_embeddings.astype(np.float32)
    if emb.durations is not None:
        arrays["durations"] = np.asarray(emb.durations, dtype=np.float32)
    np.savez(path, **arrays)


def load_embeddings(path: str) -> Embeddings:
    with np.load(path, allow_pickle=False) as data:
        if "keys" not in data or "embeddings" not in data:
            raise ValueError(f"Embeddings file '{path}' must hold 'keys' and 'embeddings' (found {list(data)}).")
        keys, embeddings = data["keys"].tolist(), data["embeddings"]
        crops = data["crop_embeddings"] if "crop_embeddings" in data else None
        durations = data["durations"] if "durations" in data else None
    if embeddings.ndim != 2 or len(keys) != len(embeddings):
        raise ValueError(f"Embeddings file '{path}': 'embeddings' must be [N, D] with N = len(keys) = {len(keys)}, "
                         f"got shape {embeddings.shape}.")
    return Embeddings(keys, embeddings, crops, durations)


def write_score_file(path: str, trials: Trials, scores: np.ndarray) -> None:
    """One line per trial, in trial-list order: ``label enroll test score`` (no label if unlabelled)."""
    text = [f"{s:.6f}\n" for s in scores.tolist()]
    with open(path, "w", encoding="utf-8") as handle:
        if trials.labels is None:
            handle.writelines(f"{e} {t} {s}" for e, t, s in zip(trials.enroll, trials.test, text))
        else:
            handle.writelines(f"{y} {e} {t} {s}"
                              for y, e, t, s in zip(trials.labels.tolist(), trials.enroll, trials.test, text))


def threshold_path(score_file: str) -> str:
    """Where the EER threshold of a score file is kept: ``<score_file>.threshold.json``."""
    return score_file + ".threshold.json"


def write_threshold_file(path: str, result: Dict[str, Any], settings: Dict[str, Any]) -> None:
    """Save the EER threshold (and the scoring settings it belongs to) for ``tools.verify``."""
    finite = lambda v: v if np.isfinite(v) else None  # noqa: E731  (JSON has no inf: "reject all" -> null)
    record = {"eer_threshold": finite(result["eer_threshold"]), "eer": result["eer"],
              "min_dcf_threshold": {f"{p:g}": finite(v) for p, v in result["min_dcf_threshold"].items()}, **settings}
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=1)


def read_threshold_file(path: str) -> Dict[str, Any]:
    """The record written by :func:`write_threshold_file`; errors name the file and the fix."""
    try:
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"Cannot read threshold file '{path}' ({err}); run the evaluation with --score_file "
                         f"to write it, or give --threshold.") from err
    if not isinstance(record, dict) or not isinstance(record.get("eer_threshold"), (int, float)):
        raise ValueError(f"Threshold file '{path}' has no numeric 'eer_threshold'; give --threshold instead.")
    return record
