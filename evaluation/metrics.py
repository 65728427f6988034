"""Speaker-verification metrics: tie-aware ROC, EER, minDCF and actual DCF, and the result line.

Pure functions: scores and labels in, numbers out.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from core.errors import ConfigError, DataError


def _check_inputs(scores, labels) -> Tuple[np.ndarray, np.ndarray]:
    """Return (scores, labels) as 1-D float / int arrays, raising DataError on bad input."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.ndim != 1 or labels.ndim != 1:
        raise DataError("scores and labels must be 1-D arrays")
    if scores.shape != labels.shape:
        raise DataError(f"scores and labels differ in length ({scores.size} vs {labels.size})")
    if not np.all((labels == 0) | (labels == 1)):
        raise DataError("labels must all be 0 (non-target) or 1 (target)")
    labels = labels.astype(np.int64)
    n_tgt = int(labels.sum())
    if n_tgt == 0 or n_tgt == labels.size:
        raise DataError("both target (1) and non-target (0) trials are needed; "
                         "with only one class present the EER/DCF is undefined")
    if not np.all(np.isfinite(scores)):
        raise DataError("scores must be finite (no NaN or inf)")
    return scores, labels


def _check_costs(p_target: float, c_miss: float, c_fa: float) -> None:
    """Raise ConfigError unless 0 < p_target < 1 and both costs are positive."""
    if not 0.0 < p_target < 1.0:
        raise ConfigError(f"p_target must be strictly between 0 and 1, got {p_target}")
    if c_miss <= 0 or c_fa <= 0:
        raise ConfigError(f"c_miss and c_fa must be positive, got {c_miss} and {c_fa}")


def compute_error_rates(scores, labels) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Miss and false-alarm rates at every distinct score threshold (tie-aware ROC).

    A trial is accepted when score >= threshold, so tied scores always move together.
    Thresholds are each distinct score in ascending order followed by +inf; the first
    point accepts everything (fnr 0, fpr 1) and the last rejects everything (fnr 1, fpr 0).
    These are the points of sklearn's ``roc_curve(drop_intermediate=False)`` (one point per distinct score,
    ties together; tested equal), reversed to ascending thresholds, computed here from the counts (NumPy only:
    the scoring commands do not pay scikit-learn's import).

    Args:
        scores: 1-D array of trial scores (higher means more likely target).
        labels: 1-D array of 0 (non-target) / 1 (target), same length.
    Returns:
        (fnrs, fprs, thresholds), three float arrays of length n_distinct + 1;
        fnr(t) = #targets with score < t / #targets,
        fpr(t) = #non-targets with score >= t / #non-targets.
    """
    scores, labels = _check_inputs(scores, labels)
    order = np.argsort(scores, kind="stable")[::-1]  # descending
    ranked = scores[order]
    last = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]  # the last trial of each distinct score
    accepted_targets = np.r_[0, np.cumsum(labels[order])[last]]  # at each threshold, from +inf down
    accepted_non = np.r_[0, last + 1 - accepted_targets[1:]]
    n_tgt, n_non = accepted_targets[-1], accepted_non[-1]
    fnrs = (n_tgt - accepted_targets) / n_tgt  # exactly (#targets below t) / n_tgt
    fprs = accepted_non / n_non
    thresholds = np.r_[np.inf, ranked[last]]
    return fnrs[::-1], fprs[::-1], thresholds[::-1]


def compute_eer(scores, labels) -> Tuple[float, float]:
    """Equal error rate, as voxceleb_trainer's tuneThresholdfromScore computes it.

    Source behaviour (voxceleb_trainer tuneThreshold.py): on the ROC points,
    idx = nanargmin(|fnr - fpr|) and eer = max(fpr[idx], fnr[idx]) * 100. Here the
    points are the full tie-aware ROC of compute_error_rates (sklearn's roc_curve with
    drop_intermediate=True would drop some), and no interpolation is done, so e.g.
    all-equal scores give 100 (only the points (fnr, fpr) = (0, 1) and (1, 0) exist).

    Args:
        scores: 1-D array of trial scores.
        labels: 1-D array of 0/1 labels.
    Returns:
        (eer_percent, threshold) where threshold is the ROC threshold at idx.
    """
    return _eer_from_rates(*compute_error_rates(scores, labels))


def _eer_from_rates(fnrs: np.ndarray, fprs: np.ndarray, thresholds: np.ndarray) -> Tuple[float, float]:
    """The compute_eer rule applied to precomputed ROC arrays."""
    idx = int(np.nanargmin(np.abs(fnrs - fprs)))
    return float(max(fprs[idx], fnrs[idx]) * 100.0), float(thresholds[idx])


def compute_min_dcf(fnrs, fprs, thresholds, p_target: float,
                    c_miss: float = 1, c_fa: float = 1) -> Tuple[float, float]:
    """Minimum normalised detection cost over the given operating points.

    Formula (NIST SRE 2018 evaluation plan; voxceleb_trainer ComputeMinDcf):
    DCF(t) = c_miss * fnr(t) * p_target + c_fa * fpr(t) * (1 - p_target), and
    minDCF = min_t DCF(t) / min(c_miss * p_target, c_fa * (1 - p_target)).

    Args:
        fnrs, fprs, thresholds: equal-length arrays, e.g. from compute_error_rates.
        p_target: prior probability of a target trial, in (0, 1).
        c_miss, c_fa: costs of a miss and of a false alarm (positive).
    Returns:
        (min_dcf, threshold at which the minimum is reached).
    """
    _check_costs(p_target, c_miss, c_fa)
    fnrs, fprs = np.asarray(fnrs, dtype=np.float64), np.asarray(fprs, dtype=np.float64)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if not (fnrs.shape == fprs.shape == thresholds.shape) or fnrs.ndim != 1 or fnrs.size == 0:
        raise DataError("fnrs, fprs and thresholds must be non-empty 1-D arrays of equal length")
    dcf = c_miss * fnrs * p_target + c_fa * fprs * (1.0 - p_target)
    idx = int(np.argmin(dcf))
    return float(dcf[idx] / min(c_miss * p_target, c_fa * (1.0 - p_target))), float(thresholds[idx])


def compute_actual_dcf(scores, labels, threshold: float, p_target: float,
                       c_miss: float = 1, c_fa: float = 1) -> float:
    """Normalised DCF when accepting trials with score >= threshold.

    Formula (NIST SRE 2018 evaluation plan): with fnr, fpr measured at threshold,
    (c_miss*fnr*p_target + c_fa*fpr*(1-p_target)) / min(c_miss*p_target, c_fa*(1-p_target)).

    Args:
        scores, labels: 1-D trial scores and 0/1 labels.
        threshold: decision threshold (accept if score >= threshold).
        p_target, c_miss, c_fa: as in compute_min_dcf.
    Returns:
        The normalised DCF at that threshold.
    """
    scores, labels = _check_inputs(scores, labels)
    _check_costs(p_target, c_miss, c_fa)
    fnr = float(np.mean(scores[labels == 1] < threshold))
    fpr = float(np.mean(scores[labels == 0] >= threshold))
    dcf = c_miss * fnr * p_target + c_fa * fpr * (1.0 - p_target)
    return dcf / min(c_miss * p_target, c_fa * (1.0 - p_target))


def evaluate_scores(scores, labels, p_targets: Sequence[float] = (0.05, 0.01),
                    c_miss: float = 1, c_fa: float = 1, threshold: Optional[float] = None,
                    rates: Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]] = None) -> Dict:
    """EER and minDCF at each p_target from one tie-aware ROC.

    Args:
        scores, labels: 1-D trial scores and 0/1 labels.
        p_targets: target priors for minDCF, reported in this order.
        c_miss, c_fa: detection costs.
        threshold: when given, also the actual DCF at this threshold for each p_target.
        rates: compute_error_rates(scores, labels) when the caller has it already (e.g. for a DET plot).
    Returns:
        dict with 'eer' (percent), 'eer_threshold', 'min_dcf' {p: value} and
        'min_dcf_threshold' {p: threshold}; with a threshold, 'actual_dcf' {p: value}.
    """
    fnrs, fprs, thresholds = rates if rates is not None else compute_error_rates(scores, labels)
    eer, eer_threshold = _eer_from_rates(fnrs, fprs, thresholds)
    result = {"eer": eer, "eer_threshold": eer_threshold, "min_dcf": {}, "min_dcf_threshold": {}}
    for p in p_targets:
        result["min_dcf"][p], result["min_dcf_threshold"][p] = compute_min_dcf(
            fnrs, fprs, thresholds, p, c_miss, c_fa)
    if threshold is not None:
        result["actual_dcf"] = {p: compute_actual_dcf(scores, labels, threshold, p, c_miss, c_fa) for p in p_targets}
    return result


def format_result(result: Dict, list_separator: str = "\n", parts: bool = False) -> str:
    """One line: 'EER <pct:.4f> MinDCF<p> <v:.5f> ...' with one MinDCF field per p_target, in order.

    A result of several trial lists ({'lists': {name: result}}) gives one such part per list,
    prefixed by the list name and joined by ``list_separator`` (a line each by default; the
    per-epoch record joins them on one line). An 'actual_dcf' entry adds 'ActDCF<p> <v>' fields;
    with ``parts``, a 'parts' entry adds the crop-only and whole-file-only EERs ('CropEER',
    'WholeEER').
    """
    if "lists" in result:
        return list_separator.join(f"{name} {format_result(r, parts=parts)}" for name, r in result["lists"].items())
    return " ".join(f"{key} {value}" for key, value in result_fields(result, parts).items())


def result_fields(result: Dict, parts: bool = True) -> Dict[str, str]:
    """The fields of one list's result as :func:`format_result` prints them, name -> formatted value: EER (4
    decimals), MinDCF<p> and ActDCF<p> (5), and with ``parts`` CropEER and WholeEER where computed."""
    fields = {"EER": f"{result['eer']:.4f}"}
    fields.update({f"MinDCF{p:g}": f"{v:.5f}" for p, v in result["min_dcf"].items()})
    fields.update({f"ActDCF{p:g}": f"{v:.5f}" for p, v in result.get("actual_dcf", {}).items()})
    if parts and "parts" in result:
        fields.update({"CropEER": f"{result['parts']['crops']:.4f}", "WholeEER": f"{result['parts']['whole']:.4f}"})
    return fields
