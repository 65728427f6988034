#!/usr/bin/env python
"""Speaker-verification metrics from a score file: EER, MinDCF (and actual DCF, DET plot).

Usage: python tuneThreshold.py SCOREFILE [--p_target 0.05 0.01] [--c_miss 1] [--c_fa 1] [--threshold T] [--det PNG]
The maths is in evaluation/metrics.py, the score-file format in evaluation/reports.py.
"""
import argparse
import os
from typing import Optional, Sequence

from core.errors import ToolkitError
from evaluation.metrics import compute_error_rates, evaluate_scores, format_result
from evaluation.reports import det_curve, det_curve_png, read_score_file


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
            name = os.path.basename(args.score_file)
            det_curve_png([det_curve(name, rates, result)], args.det, name)
    except ToolkitError as err:
        parser.exit(2, f"error: {err}\n")
    print(format_result(result))


if __name__ == "__main__":
    main()
