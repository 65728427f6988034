"""Evaluation outputs and their files: score files (written and read), the EER-threshold file, the DET plot."""
from __future__ import annotations

import json
import os
import threading
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from core.errors import DataError
from core.files import atomic_path, write_text
from evaluation.trials import Trials

SCORE_FORMAT = "'label enroll test score' or 'label score' (label 0 or 1, score a finite float)"


def write_score_file(path: str, trials: Trials, scores: np.ndarray) -> None:
    """One line per trial, in trial-list order: ``label enroll test score`` (no label if unlabelled)."""
    columns = ([] if trials.labels is None else [trials.labels.tolist()]) + [trials.enroll, trials.test,
                                                                              scores.tolist()]
    line = ("" if trials.labels is None else "%d ") + "%s %s %.6f\n"
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        handle.writelines(map(line.__mod__, zip(*columns, strict=True)))  # in C, line by line (no copy of the file)


def threshold_path(score_file: str) -> str:
    """Where the EER threshold of a score file is kept: ``<score_file>.threshold.json``."""
    return score_file + ".threshold.json"


def write_threshold_file(path: str, result: Dict[str, Any], settings: Dict[str, Any]) -> None:
    """Save the EER threshold (and the scoring settings it belongs to) for ``tools.verify``."""
    finite = lambda v: v if np.isfinite(v) else None  # noqa: E731  (JSON has no inf: "reject all" -> null)
    record = {"eer_threshold": finite(result["eer_threshold"]), "eer": result["eer"],
              "min_dcf_threshold": {f"{p:g}": finite(v) for p, v in result["min_dcf_threshold"].items()}, **settings}
    write_text(path, json.dumps(record, indent=1))


def read_threshold_file(path: str) -> Dict[str, Any]:
    """The record written by :func:`write_threshold_file`; errors name the file and the fix."""
    try:
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"Cannot read threshold file '{path}' ({err}); run the evaluation with --score_file "
                         f"to write it, or give --threshold.") from err
    if not isinstance(record, dict) or not isinstance(record.get("eer_threshold"), (int, float)):
        raise DataError(f"Threshold file '{path}' has no numeric 'eer_threshold'; give --threshold instead.")
    return record


def read_score_file(path: str) -> Tuple[np.ndarray, np.ndarray, Optional[List[Tuple[str, str]]]]:
    """Read a score file with lines 'label enroll test score' or 'label score'.

    Blank lines are skipped; all lines must use the same format.

    Args:
        path: score file path.
    Returns:
        (labels int array, scores float array, [(enroll, test), ...] or None for 2-field files).
    Raises:
        DataError naming the file, 1-based line number, bad line and expected format.
    """
    labels, scores, pairs, n_fields = [], [], [], None
    if not os.path.isfile(path):
        raise DataError(f"Score file '{path}' does not exist.")
    with open(path, encoding="utf-8") as f:
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
                raise DataError(f"{where} {problem}; every line must be {SCORE_FORMAT}")
            n_fields = len(parts)
            labels.append(int(parts[0]))
            scores.append(score)
            if n_fields == 4:
                pairs.append((parts[1], parts[2]))
    if not labels:
        raise DataError(f"{path}: no score lines found (empty file); expected lines {SCORE_FORMAT}")
    if len(set(labels)) < 2:
        raise DataError(f"{path}: only label {labels[0]} present in {len(labels)} lines; both "
                         "target (1) and non-target (0) trials are needed, EER is undefined otherwise")
    return np.array(labels, dtype=np.int64), np.array(scores), (pairs if n_fields == 4 else None)


def import_plotting() -> None:
    """Import what :func:`det_curve_png` uses (matplotlib's Agg back-end, SciPy's ``ndtri``; about 0.6 s)."""
    import matplotlib  # imported here, as SciPy: only a DET plot pays their import
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.figure  # noqa: F401 (imported for det_curve_png)
    import scipy.special  # noqa: F401 (imported for det_curve_png)


def import_plotting_in_background() -> threading.Thread:
    """Start :func:`import_plotting` on a thread, to overlap it with work that releases the GIL (the cohort
    products); an import that :func:`det_curve_png` makes meanwhile waits for it (Python's import lock)."""
    thread = threading.Thread(target=import_plotting, name="import-plotting", daemon=True)
    thread.start()
    return thread


DET_RANGE = (1e-4, 0.99)  # the rates a DET plot can show: 0.01 % to 99 %


class DetCurve(NamedTuple):
    """One DET curve and its named operating points."""
    name: str  # the trial list (legend)
    fnrs: np.ndarray  # miss rates, ascending thresholds (compute_error_rates)
    fprs: np.ndarray  # false-alarm rates, the same points
    eer: Optional[float]  # percent, marked on the diagonal
    points: Dict[str, Tuple[float, float]]  # e.g. 'MinDCF0.01' -> (false-alarm rate, miss rate) at its threshold


def det_curve(name: str, rates: Tuple[np.ndarray, np.ndarray, np.ndarray], result: Dict[str, Any]) -> DetCurve:
    """The DET curve of ``rates`` (compute_error_rates) with the EER and each MinDCF operating point of ``result``
    (evaluate_scores: the rates at each MinDCF threshold)."""
    fnrs, fprs, thresholds = rates
    points = {}
    for p, threshold in result.get("min_dcf_threshold", {}).items():
        at = min(int(np.searchsorted(thresholds, threshold)), len(thresholds) - 1)
        points[f"MinDCF{p:g}"] = (float(fprs[at]), float(fnrs[at]))
    return DetCurve(name, fnrs, fprs, result.get("eer"), points)


def _thinned(x: np.ndarray, y: np.ndarray, steps: int = 2000) -> np.ndarray:
    """Indices of the points of the polyline (x, y) that keep its shape at ``steps`` steps along its length: the
    first point of every step and the last point (hundreds of thousands of ROC points draw as a few thousand)."""
    if len(x) <= 2:
        return np.arange(len(x))
    length = np.r_[0.0, np.cumsum(np.hypot(np.diff(x), np.diff(y)))]
    bucket = np.floor(length / max(length[-1] / steps, 1e-12)).astype(np.int64)
    keep = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    return np.unique(np.r_[keep, len(x) - 1])


def det_limits(curves: Sequence[DetCurve]) -> Tuple[float, float]:
    """The rate range of a DET plot's two axes: from the smallest to the largest error rate present (rates strictly
    between 0 and 1, the ones a probit axis can place), within DET_RANGE."""
    rates = np.concatenate([np.r_[c.fnrs, c.fprs] for c in curves] +
                           [np.asarray([v for pair in c.points.values() for v in pair]) for c in curves] +
                           [np.asarray([c.eer / 100]) for c in curves if c.eer is not None])
    inside = rates[(rates > 0) & (rates < 1)]
    if not inside.size:
        return DET_RANGE
    return max(DET_RANGE[0], float(inside.min())), min(DET_RANGE[1], float(inside.max()))


def det_curve_png(curves: Sequence[DetCurve], path: str, title: str = "") -> Tuple[float, float]:
    """Write the DET curves (miss vs false-alarm rate on normal-deviate axes) of one or several trial lists as a PNG;
    returns the rates at the ends of both axes, as drawn.

    Axes are probit(rate) = Phi^-1(rate) (Martin et al., Eurospeech 1997, "The DET curve in assessment of detection
    task performance") and cover the whole curve (:func:`det_limits`); every point drawn lies inside them (rates 0
    and 1 have no place on a probit axis). Each curve's EER and MinDCF operating points are marked and named in the
    legend, which sits below the axes, off the curves.
    """
    import_plotting()  # imported here: only a DET plot pays their import
    from matplotlib.figure import Figure
    from scipy.special import ndtr, ndtri

    lo, hi = det_limits(curves)
    probit = lambda r: ndtri(np.clip(np.asarray(r, dtype=np.float64), lo, hi))  # noqa: E731 (a one-line function, kept beside its use)
    fig = Figure(figsize=(6, 6.4 + 0.25 * len(curves)))
    ax = fig.subplots()
    markers = {"EER": "o", "MinDCF0.05": "s", "MinDCF0.01": "^"}
    for number, curve in enumerate(curves):
        colour = f"C{number % 10}"
        drawn = (curve.fnrs > 0) & (curve.fnrs < 1) & (curve.fprs > 0) & (curve.fprs < 1)
        x, y = probit(curve.fprs[drawn]), probit(curve.fnrs[drawn])
        keep = _thinned(x, y)
        label = curve.name if len(curves) > 1 or curve.name else "DET"
        ax.plot(x[keep], y[keep], lw=1.5, color=colour, label=label)
        prefix = f"{curve.name} " if len(curves) > 1 else ""
        if curve.eer is not None:
            ax.plot(probit(curve.eer / 100), probit(curve.eer / 100), markers["EER"], color=colour,
                    label=f"{prefix}EER {curve.eer:.3f} %")
        for name, (fpr, fnr) in curve.points.items():
            ax.plot(probit(fpr), probit(fnr), markers.get(name, "D"), color=colour, markerfacecolor="none", ms=8,
                    label=f"{prefix}{name} (miss {100 * fnr:.2f} %, fa {100 * fpr:.3g} %)")
    ticks: List[float] = []
    for tick in np.array([0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 40, 60, 80, 90, 95, 98, 99]) / 100:
        if lo <= tick <= hi and (not ticks or ndtri(tick) - ndtri(ticks[-1]) >= 0.3 * (ndtri(hi) - ndtri(lo)) / 4):
            ticks.append(float(tick))  # evenly readable: a label per quarter of a unit of the widest range or more
    labels = [f"{100 * t:g}" for t in ticks]
    span = ndtri(hi) - ndtri(lo)
    limits = (ndtri(lo) - 0.03 * span, ndtri(hi) + 0.03 * span)  # a margin: points on the range's ends stay whole
    ax.set_xticks(ndtri(ticks), labels)
    ax.set_yticks(ndtri(ticks), labels)
    ax.set_xlim(*limits)
    ax.set_ylim(*limits)
    ax.set_aspect("equal")
    ax.set_xlabel("False-alarm rate (%)")
    ax.set_ylabel("Miss rate (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize="small", ncol=1, frameon=False)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png", bbox_inches="tight")  # the legend below the axes included
    ends = ax.get_xlim()
    assert ends == ax.get_ylim()  # one square range for both axes
    return float(ndtr(ends[0])), float(ndtr(ends[1]))
