"""QMF calibration: logistic regression on the score plus quality measures of each trial.

Quality measures (Thienpondt et al., "The IDLab VoxSRC-20 submission", 2020; wespeaker
``score_calibration``): for the two files of a trial, the min and max of
  log duration (seconds of audio), whole-file embedding norm, and cohort mean mu (AS-norm).
Features f = [s, q_1, ..., q_k], standardised with the calibration list's mean and std.
Training (prior-weighted logistic regression, Bruemmer's BOSARIS ``train_binary_classifier``):
  minimise  P/N_t * sum_tgt log(1 + exp(-(w.f + b))) + (1-P)/N_n * sum_non log(1 + exp(w.f + b))
(weak L2 on w). The output is a calibrated log-likelihood ratio llr = w.f + b - logit(P),
so the Bayes threshold for prior P is llr >= -logit(P).
"""
from __future__ import annotations

import logging
from typing import Dict, List, NamedTuple, Optional, Tuple

import numpy as np

from core.errors import TrialListError
from evaluation.embeddings import Embeddings, trial_rows
from evaluation.scoring import row_norms
from evaluation.trials import Trials

logger = logging.getLogger(__name__)


class QMF(NamedTuple):
    names: List[str]
    mean: np.ndarray  # [k+1] feature means on the calibration list
    std: np.ndarray  # [k+1]
    weights: np.ndarray  # [k+1]
    bias: float
    p_target: float


def quality_features(scores: np.ndarray, enroll: np.ndarray, test: np.ndarray, norms: np.ndarray,
                     durations: Optional[np.ndarray] = None,
                     cohort_mean: Optional[np.ndarray] = None) -> Tuple[np.ndarray, List[str]]:
    """[N, 1 + 2m] features: the score, then min and max over the two files of each measure.

    Args:
        scores: [N] trial scores; enroll, test: [N] file rows.
        norms: [F] whole-file embedding norms; durations: [F] seconds (None: left out);
        cohort_mean: [F] AS-norm mu per file (None: left out).
    """
    columns, names = [scores], ["score"]
    measures = [("norm", norms), ("log_duration", None if durations is None else np.log(np.maximum(durations, 1e-3))),
                ("cohort_mean", cohort_mean)]
    for name, values in measures:
        if values is None:
            continue
        a, b = values[enroll], values[test]
        columns += [np.minimum(a, b), np.maximum(a, b)]
        names += [f"min_{name}", f"max_{name}"]
    return np.stack(columns, axis=1).astype(np.float64), names


def fit_qmf(features: np.ndarray, labels: np.ndarray, names: List[str], p_target: float = 0.05) -> QMF:
    """Prior-weighted logistic regression (module docstring) on a labelled calibration list."""
    labels = np.asarray(labels)
    n_tgt, n_non = int(labels.sum()), int((labels == 0).sum())
    if n_tgt == 0 or n_non == 0:
        raise TrialListError("QMF calibration needs target and non-target trials in the calibration list.")
    mean, std = features.mean(axis=0), features.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    weight = np.where(labels == 1, p_target / n_tgt, (1 - p_target) / n_non) * len(labels)
    from sklearn.linear_model import LogisticRegression  # only here: scoring without QMF does not pay its import

    model = LogisticRegression(C=1e4, max_iter=1000, tol=1e-10)
    model.fit((features - mean) / std, labels, sample_weight=weight)
    return QMF(names, mean, std, model.coef_[0].copy(), float(model.intercept_[0]), p_target)


def apply_qmf(qmf: QMF, features: np.ndarray) -> np.ndarray:
    """llr = w . standardised(f) + b - logit(P)."""
    logit = np.log(qmf.p_target / (1 - qmf.p_target))
    return (features - qmf.mean) / qmf.std @ qmf.weights + qmf.bias - logit


def calibrate_lists(emb: Embeddings, trial_sets: Dict[str, Trials], scores: Dict[str, np.ndarray],
                    calibration: str, cohort_mean: Optional[np.ndarray] = None, p_target: float = 0.05,
                    rows: Optional[Dict[str, Tuple[np.ndarray, np.ndarray]]] = None) -> Dict[str, np.ndarray]:
    """Fit QMF on list ``calibration`` (labelled) and return calibrated llrs for the other lists.

    ``rows``: the lists' :func:`evaluation.embeddings.trial_rows` when the caller has them already.
    """
    if trial_sets[calibration].labels is None:
        raise TrialListError("The QMF calibration list (--qmf_list) must be labelled ('label enroll test' lines).")
    if emb.durations is None:
        logger.warning("The embeddings carry no durations (older file): QMF uses norms%s only.",
                       " and cohort means" if cohort_mean is not None else "")
    rows = rows if rows is not None else trial_rows(emb, trial_sets)
    norms = row_norms(np.asarray(emb.embeddings, dtype=np.float32))
    features = {}
    for name, (e, t) in rows.items():
        features[name], names = quality_features(scores[name], e, t, norms, emb.durations, cohort_mean)
    qmf = fit_qmf(features[calibration], trial_sets[calibration].labels, names, p_target)
    logger.info("QMF weights (standardised features): %s, bias %.3f",
                ", ".join(f"{n} {w:+.3f}" for n, w in zip(qmf.names, qmf.weights, strict=True)), qmf.bias)
    return {name: apply_qmf(qmf, f) for name, f in features.items() if name != calibration}
