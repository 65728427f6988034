"""Evaluation, in separate steps: read trials -> extract embeddings -> score -> normalise.

Scoring follows the original protocol: embeddings are L2-normalised; with crops,
s1 = mean of the crop x crop cosine matrix, s2 = cosine of whole-file embeddings,
score = (s1 + s2) / 2; without crops the score is s2.
"""
from __future__ import annotations

import logging
from typing import List, NamedTuple, Optional

import numpy as np
import torch
from tqdm import tqdm

from DatasetLoader import SAMPLE_RATE, EvalDataset
from tools.logs import progress_options

logger = logging.getLogger(__name__)


class Trials(NamedTuple):
    labels: Optional[np.ndarray]  # [N] int (None when the list has no labels)
    enroll: List[str]
    test: List[str]


class Embeddings(NamedTuple):
    keys: List[str]
    embeddings: np.ndarray  # [N, D] whole-file, before normalisation
    crop_embeddings: Optional[np.ndarray]  # [N, num_eval, D] or None


def read_trials(path: str) -> Trials:
    """Read ``label enroll test`` lines (or ``enroll test`` for unlabelled lists, all lines alike)."""
    labels, enroll, test = [], [], []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) == 3 and fields[0] in ("0", "1"):
                labels.append(int(fields[0]))
            elif len(fields) != 2:
                raise ValueError(f"{path}, line {number}: expected 'label enroll.wav test.wav' with label 0 or 1 "
                                 f"(or 'enroll.wav test.wav'), got {line.strip()!r}")
            enroll.append(fields[-2])
            test.append(fields[-1])
    if not enroll:
        raise ValueError(f"Trial list '{path}' has no trials.")
    if labels and len(labels) != len(enroll):
        raise ValueError(f"Trial list '{path}' mixes labelled and unlabelled lines; label every line or none.")
    return Trials(np.asarray(labels) if labels else None, enroll, test)


def unique_files(trials: Trials) -> List[str]:
    return sorted(set(trials.enroll) | set(trials.test))


@torch.no_grad()
def extract_embeddings(encoder: torch.nn.Module, keys: List[str], test_path: str, eval_frames: int,
                       num_eval: int, max_eval_seconds: float, device: torch.device, workers: int = 0,
                       verbose: bool = True) -> Embeddings:
    """Embeddings of every file: whole file (capped at ``max_eval_seconds``) and, when
    ``eval_frames`` > 0, ``num_eval`` evenly spaced crops of ``eval_frames`` frames."""
    encoder.eval()
    max_samples = int(max_eval_seconds * SAMPLE_RATE) if max_eval_seconds > 0 else None
    dataset = EvalDataset(keys, test_path, eval_frames, num_eval, max_samples)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers)
    whole, crops = [], []
    for crop_wav, whole_wav, _ in tqdm(loader, desc="extracting", disable=not verbose, **progress_options()):
        whole.append(encoder(whole_wav[None].to(device)).float().cpu())  # [1, D]
        if eval_frames > 0:
            crops.append(encoder(crop_wav.to(device)).float().cpu())  # [num_eval, D]
    return Embeddings(list(keys), torch.cat(whole).numpy(),
                      torch.stack(crops).numpy() if crops else None)


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _rows(emb: Embeddings, names: List[str], what: str) -> np.ndarray:
    index = {k: i for i, k in enumerate(emb.keys)}
    missing = [n for n in names if n not in index]
    if missing:
        raise ValueError(f"{len(missing)} {what} files of the trial list have no embedding "
                         f"(first: {missing[0]!r}); the embeddings were made for another list or path.")
    return np.fromiter((index[n] for n in names), dtype=np.int64, count=len(names))


def score_trials(emb: Embeddings, trials: Trials) -> np.ndarray:
    """Original-protocol scores for every trial, vectorised.

    The mean of the crop x crop cosine matrix equals the dot product of the mean
    normalised crop embeddings, so s1 needs no per-trial matrix.
    """
    e, t = _rows(emb, trials.enroll, "enrollment"), _rows(emb, trials.test, "test")
    whole = _normalise(emb.embeddings.astype(np.float64))
    s2 = np.einsum("nd,nd->n", whole[e], whole[t])
    if emb.crop_embeddings is None:
        return s2
    mean_crop = _normalise(emb.crop_embeddings.astype(np.float64)).mean(axis=1)  # [N, D]
    s1 = np.einsum("nd,nd->n", mean_crop[e], mean_crop[t])
    return (s1 + s2) / 2.0


def cohort_stats(x: np.ndarray, cohort: np.ndarray, top_n: int) -> tuple:
    """Mean and std of the ``top_n`` highest cosines of each row of x with the cohort."""
    sims = _normalise(x) @ _normalise(cohort).T  # [N, C]
    top_n = min(top_n, cohort.shape[0])
    top = np.partition(sims, sims.shape[1] - top_n, axis=1)[:, -top_n:] if top_n < sims.shape[1] else sims
    return top.mean(axis=1), top.std(axis=1)


def normalise_scores(scores: np.ndarray, emb: Embeddings, trials: Trials, cohort: np.ndarray, method: str,
                     top_n: int = 300) -> np.ndarray:
    """AS-norm (top-N cohort) or S-norm (whole cohort), on whole-file embeddings:
    s' = ½((s − μ_e)/σ_e + (s − μ_t)/σ_t)."""
    if method == "none":
        return scores
    n = cohort.shape[0] if method == "snorm" else top_n
    mean, std = cohort_stats(emb.embeddings.astype(np.float64), cohort.astype(np.float64), n)
    e, t = _rows(emb, trials.enroll, "enrollment"), _rows(emb, trials.test, "test")
    return 0.5 * ((scores - mean[e]) / std[e] + (scores - mean[t]) / std[t])


def save_embeddings(emb: Embeddings, path: str) -> None:
    arrays = {"keys": np.asarray(emb.keys), "embeddings": emb.embeddings.astype(np.float32)}
    if emb.crop_embeddings is not None:
        arrays["crop_embeddings"] = emb.crop_embeddings.astype(np.float32)
    np.savez(path, **arrays)


def load_embeddings(path: str) -> Embeddings:
    with np.load(path, allow_pickle=False) as data:
        if "keys" not in data or "embeddings" not in data:
            raise ValueError(f"Embeddings file '{path}' must hold 'keys' and 'embeddings' (found {list(data)}).")
        crops = data["crop_embeddings"] if "crop_embeddings" in data else None
        return Embeddings([str(k) for k in data["keys"]], data["embeddings"], crops)


def write_score_file(path: str, trials: Trials, scores: np.ndarray) -> None:
    """One line per trial, in trial-list order: ``label enroll test score`` (no label if unlabelled)."""
    with open(path, "w", encoding="utf-8") as handle:
        for i, (e, t) in enumerate(zip(trials.enroll, trials.test)):
            prefix = f"{trials.labels[i]} " if trials.labels is not None else ""
            handle.write(f"{prefix}{e} {t} {scores[i]:.6f}\n")
