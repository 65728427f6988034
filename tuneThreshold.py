#!/usr/bin/env python
"""Speaker-verification metrics: tie-aware ROC, EER, minDCF and actual DCF, plus a CLI.

Usage: python tuneThreshold.py SCOREFILE [--p_target 0.05 0.01] [--c_miss 1] [--c_fa 1] [--threshold T] [--det PNG]
"""
import argparse
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

SCORE_FORMAT = "'label enroll test score' or 'label score' (label 0 or 1, score a finite float)"


def _check_inputs(scores, labels) -> Tuple[np.ndarray, np.ndarray]:
    """Return (scores, labels) as 1-D float / int arrays, raising ValueError on bad input."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.ndim != 1 or labels.ndim != 1:
        raise ValueError("scores and labels must be 1-D arrays")
    if scores.shape != labels.shape:
        raise ValueError(f"scores and labels differ in length ({scores.size} vs {labels.size})")
    if not np.all((labels == 0) | (labels == 1)):
        raise ValueError("labels must all be 0 (non-target) or 1 (target)")
    labels = labels.astype(np.int64)
    n_tgt = int(labels.sum())
    if n_tgt == 0 or n_tgt == labels.size:
        raise ValueError("both target (1) and non-target (0) trials are needed; "
                         "with only one class present the EER/DCF is undefined")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores must be finite (no NaN or inf)")
    return scores, labels


def _check_costs(p_target: float, c_miss: float, c_fa: float) -> None:
    """Raise ValueError unless 0 < p_target < 1 and both costs are positive."""
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target must be strictly between 0 and 1, got {p_target}")
    if c_miss <= 0 or c_fa <= 0:
        raise ValueError(f"c_miss and c_fa must be positive, got {c_miss} and {c_fa}")


def compute_error_rates(scores, labels) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Miss and false-alarm rates at every distinct score threshold (tie-aware ROC).

    A trial is accepted when score >= threshold, so tied scores always move together.
    Thresholds are each distinct score in ascending order followed by +inf; the first
    point accepts everything (fnr 0, fpr 1) and the last rejects everything (fnr 1, fpr 0).

    Args:
        scores: 1-D array of trial scores (higher means more likely target).
        labels: 1-D array of 0 (non-target) / 1 (target), same length.
    Returns:
        (fnrs, fprs, thresholds), three float arrays of length n_distinct + 1;
        fnr(t) = #targets with score < t / #targets,
        fpr(t) = #non-targets with score >= t / #non-targets.
    """
    scores, labels = _check_inputs(scores, labels)
    order = np.argsort(scores, kind="stable")
    s, lab = scores[order], labels[order]
    first = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])   # start index of each tie group
    tgt_below = np.r_[0, np.cumsum(lab)]                    # targets among the first i trials
    n_tgt = tgt_below[-1]
    n_non = s.size - n_tgt
    fn = np.r_[tgt_below[first], n_tgt]                     # targets rejected (score < t)
    fp = np.r_[n_non - (first - tgt_below[first]), 0]       # non-targets accepted (score >= t)
    thresholds = np.r_[s[first], np.inf]
    return fn / n_tgt, fp / n_non, thresholds


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
        raise ValueError("fnrs, fprs and thresholds must be non-empty 1-D arrays of equal length")
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


def format_result(result: Dict) -> str:
    """One line: 'EER <pct:.4f> MinDCF<p> <v:.5f> ...' with one MinDCF field per p_target, in order.

    A result of several trial lists ({'lists': {name: result}}) gives one such line per
    list, prefixed by the list name; an 'actual_dcf' entry adds 'ActDCF<p> <v>' fields.
    """
    if "lists" in result:
        return "\n".join(f"{name} {format_result(r)}" for name, r in result["lists"].items())
    fields = [f"EER {result['eer']:.4f}"]
    fields += [f"MinDCF{p:g} {v:.5f}" for p, v in result["min_dcf"].items()]
    fields += [f"ActDCF{p:g} {v:.5f}" for p, v in result.get("actual_dcf", {}).items()]
    return " ".join(fields)


def det_curve_png(fnrs: np.ndarray, fprs: np.ndarray, path: str, eer: Optional[float] = None,
                  title: str = "", max_points: int = 4000) -> None:
    """Write a DET curve (miss vs false-alarm rate on normal-deviate axes) as a PNG.

    Axes are probit(rate) = Phi^-1(rate) (Martin et al., Eurospeech 1997, "The DET curve
    in assessment of detection task performance"); rates are clipped to [1e-5, 1 - 1e-5]
    and the curve is thinned to at most ``max_points`` ROC points for drawing.

    Args:
        fnrs, fprs: ROC arrays, e.g. from compute_error_rates.
        path: output PNG file.
        eer: EER in percent, marked on the diagonal when given.
        title: plot title.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.special import ndtri

    keep = np.unique(np.linspace(0, len(fnrs) - 1, min(len(fnrs), max_points)).astype(np.int64))
    probit = lambda r: ndtri(np.clip(np.asarray(r, dtype=np.float64), 1e-5, 1 - 1e-5))  # noqa: E731
    ticks = np.array([0.01, 0.1, 0.5, 1, 2, 5, 10, 20, 40, 60, 80, 95]) / 100
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(probit(fprs[keep]), probit(fnrs[keep]), lw=1.5, label="DET")
    if eer is not None:
        ax.plot(probit(eer / 100), probit(eer / 100), "o", label=f"EER {eer:.3f} %")
    ax.set_xticks(probit(ticks), [f"{100 * t:g}" for t in ticks])
    ax.set_yticks(probit(ticks), [f"{100 * t:g}" for t in ticks])
    lo, hi = probit(5e-5), probit(0.5 if eer is None or eer < 25 else 0.99)  # a poor system still shows
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("False-alarm rate (%)")
    ax.set_ylabel("Miss rate (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def read_score_file(path: str) -> Tuple[np.ndarray, np.ndarray, Optional[List[Tuple[str, str]]]]:
    """Read a score file with lines 'label enroll test score' or 'label score'.

    Blank lines are skipped; all lines must use the same format.

    Args:
        path: score file path.
    Returns:
        (labels int array, scores float array, [(enroll, test), ...] or None for 2-field files).
    Raises:
        ValueError naming the file, 1-based line number, bad line and expected format.
    """
    labels, scores, pairs, n_fields = [], [], [], None
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            where = f"{path}, line {lineno}: {line.rstrip()!r}:"
            if len(parts) not in (2, 4):
                problem = f"expected 2 or 4 fields, got {len(parts)}"
            elif n_fields is not None and len(parts) != n_fields:
                problem = f"mixed formats ({len(parts)} fields here, {n_fields} on earlier lines)"
            elif parts[0] not in ("0", "1"):
                problem = f"label {parts[0]!r} is not 0 or 1"
            else:
                try:
                    score = float(parts[-1])
                except ValueError:
                    score = float("nan")
                problem = None if np.isfinite(score) else f"score {parts[-1]!r} is not a finite float"
            if problem:
                raise ValueError(f"{where} {problem}; every line must be {SCORE_FORMAT}")
            n_fields = len(parts)
            labels.append(int(parts[0]))
            scores.append(score)
            if n_fields == 4:
                pairs.append((parts[1], parts[2]))
    if not labels:
        raise ValueError(f"{path}: no score lines found (empty file); expected lines {SCORE_FORMAT}")
    if len(set(labels)) < 2:
        raise ValueError(f"{path}: only label {labels[0]} present in {len(labels)} lines; both "
                         "target (1) and non-target (0) trials are needed, EER is undefined otherwise")
    return np.array(labels, dtype=np.int64), np.array(scores), (pairs if n_fields == 4 else None)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Command-line entry point: print the EER / MinDCF line for a score file."""
    parser = argparse.ArgumentParser(
        description="Compute EER and MinDCF from a speaker-verification score file. Each line is "
                    "'label enroll test score' or 'label score' (label 1 = target, 0 = non-target; "
                    "a trial is accepted when score >= threshold).")
    parser.add_argument("score_file", metavar="SCOREFILE", help="path of the score file")
    parser.add_argument("--p_target", type=float, nargs="+", default=[0.05, 0.01], metavar="P",
                        help="target prior(s) for MinDCF (default: 0.05 0.01)")
    parser.add_argument("--c_miss", type=float, default=1.0, help="cost of a miss (default: 1)")
    parser.add_argument("--c_fa", type=float, default=1.0, help="cost of a false alarm (default: 1)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="also print the actual DCF (ActDCF<p>) when accepting scores >= this threshold")
    parser.add_argument("--det", default="", metavar="PNG", help="write the DET curve to this PNG file")
    args = parser.parse_args(argv)
    try:
        labels, scores, _ = read_score_file(args.score_file)
        rates = compute_error_rates(scores, labels)
        result = evaluate_scores(scores, labels, args.p_target, args.c_miss, args.c_fa, args.threshold, rates)
        if args.det:
            det_curve_png(rates[0], rates[1], args.det, result["eer"], os.path.basename(args.score_file))
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(format_result(result))


if __name__ == "__main__":
    main()
