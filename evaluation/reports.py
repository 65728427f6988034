"""Evaluation outputs and their files: score files (written and read), the EER-threshold file, the DET plot."""
from __future__ import annotations

import json
import os
import threading
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from core.errors import DataError
from core.files import atomic_path, write_text
from evaluation.trials import Trials

SCORE_FORMAT = "'label enroll test score' or 'label score' (label 0 or 1, score a finite float)"


def write_score_file(path: str, trials: Trials, scores: np.ndarray) -> None:
    """One line per trial, in trial-list order: ``label enroll test score`` (no label if unlabelled)."""
    text = [f"{s:.6f}\n" for s in scores.tolist()]
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        if trials.labels is None:
            handle.writelines(f"{e} {t} {s}" for e, t, s in zip(trials.enroll, trials.test, text, strict=True))
        else:
            handle.writelines(f"{y} {e} {t} {s}" for y, e, t, s in zip(trials.labels.tolist(), trials.enroll,
                                                                         trials.test, text, strict=True))


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
    import matplotlib.pyplot  # noqa: F401 (imported for det_curve_png)
    import scipy.special  # noqa: F401 (imported for det_curve_png)


def import_plotting_in_background() -> threading.Thread:
    """Start :func:`import_plotting` on a thread, to overlap it with work that releases the GIL (the cohort
    products); an import that :func:`det_curve_png` makes meanwhile waits for it (Python's import lock)."""
    thread = threading.Thread(target=import_plotting, name="import-plotting", daemon=True)
    thread.start()
    return thread


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
    import_plotting()  # imported here: only a DET plot pays their import
    import matplotlib.pyplot as plt
    from scipy.special import ndtri

    keep = np.unique(np.linspace(0, len(fnrs) - 1, min(len(fnrs), max_points)).astype(np.int64))
    probit = lambda r: ndtri(np.clip(np.asarray(r, dtype=np.float64), 1e-5, 1 - 1e-5))  # noqa: E731 (a one-line function, kept beside its use)
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
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
