"""Score files (evaluation/reports.py): both line formats, errors naming the file and line; the DET plot."""

import numpy as np
import pytest

from evaluation.reports import (
    DET_RANGE,
    DetCurve,
    det_curve,
    det_curve_png,
    det_limits,
    import_plotting_in_background,
    read_score_file,
)
from tests.fakes import write_file


def test_read_score_file_four_fields(tmp_path):
    path = write_file(tmp_path, "1 a/1.wav b/1.wav 0.9\n\n0 a/1.wav c/2.wav -0.25\n  \n1 d.wav e.wav 3e-1\n")
    labels, scores, pairs = read_score_file(path)
    np.testing.assert_array_equal(labels, [1, 0, 1])
    np.testing.assert_allclose(scores, [0.9, -0.25, 0.3])
    assert pairs == [("a/1.wav", "b/1.wav"), ("a/1.wav", "c/2.wav"), ("d.wav", "e.wav")]


def test_read_score_file_two_fields(tmp_path):
    labels, scores, pairs = read_score_file(write_file(tmp_path, "1 0.5\n0\t0.1\n"))
    np.testing.assert_array_equal(labels, [1, 0])
    np.testing.assert_allclose(scores, [0.5, 0.1])
    assert pairs is None


@pytest.mark.parametrize("text,line,fragment", [
    ("1 0.5\n2 0.4\n", 2, "label '2' is not 0 or 1"),
    ("1 0.5\n0 abc\n", 2, "score 'abc' is not a finite float"),
    ("1 0.5\n0 nan\n", 2, "not a finite float"),
    ("1 a b 0.5\n\n0 a b\n", 3, "expected 2 or 4 fields, got 3"),
    ("1 0.5\n0 a b 0.4\n", 2, "mixed formats"),
    ("1 a b 0.5\n0 0.4\n", 2, "mixed formats"),
])
def test_read_score_file_line_errors(tmp_path, text, line, fragment):
    path = write_file(tmp_path, text, "bad_scores.txt")
    with pytest.raises(ValueError) as err:
        read_score_file(path)
    msg = str(err.value)
    bad_line = text.split("\n")[line - 1]
    assert path in msg and f"line {line}" in msg and fragment in msg and bad_line in msg
    assert "label enroll test score" in msg  # says what is expected


@pytest.mark.parametrize("text,fragment", [("", "empty"), ("\n  \n", "empty"),
                                           ("1 0.5\n1 0.4\n", "only label 1"),
                                           ("0 a b 0.5\n", "EER is undefined")])
def test_read_score_file_file_errors(tmp_path, text, fragment):
    path = write_file(tmp_path, text, "bad_scores.txt")
    with pytest.raises(ValueError) as err:
        read_score_file(path)
    assert path in str(err.value) and fragment in str(err.value)


def test_det_plot_drawn_while_its_imports_run_in_the_background(tmp_path):
    """The DET plot's imports started on a thread (as the evaluation does beside the scoring) and a DET plot
    drawn at the same time: the thread ends, and the plot is a PNG."""
    thread = import_plotting_in_background()
    rates = np.linspace(0, 1, 50)
    det_curve_png([DetCurve("", rates, rates[::-1].copy(), 50.0, {})], str(tmp_path / "det.png"))
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert (tmp_path / "det.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_det_plot_shows_the_whole_curve_and_its_operating_points(tmp_path):
    """Two lists in one figure: the axes reach from the smallest to the largest error rate present (a curve that
    reaches 90 % miss included), every drawn point lies inside them, each list's EER and MinDCF points are named;
    the PNG reads back. One list alone gets its own range."""
    import matplotlib.image

    from evaluation.metrics import compute_error_rates, evaluate_scores

    rng = np.random.default_rng(3)
    curves = []
    for name, separation, n in (("good", 3.0, 2000), ("poor", 0.3, 600)):
        labels = rng.integers(0, 2, n)
        scores = rng.standard_normal(n) + separation * labels
        rates = compute_error_rates(scores, labels)
        curves.append(det_curve(name, rates, evaluate_scores(scores, labels, (0.05, 0.01), rates=rates)))
    assert set(curves[0].points) == {"MinDCF0.05", "MinDCF0.01"}
    lo, hi = det_curve_png(curves, str(tmp_path / "det.png"), "two lists")
    present = np.concatenate([np.r_[c.fnrs, c.fprs] for c in curves])
    present = np.clip(present[(present > 0) & (present < 1)], *DET_RANGE)  # a probit axis shows 0.01 to 99 %
    assert lo <= present.min() and present.max() <= hi  # the whole curve: nothing clipped at the axes
    assert lo > present.min() / 3 and hi < 0.999  # and not a fixed range far beyond it
    marked = np.clip([v for c in curves for pair in c.points.values() for v in pair], *DET_RANGE)
    assert ((marked == DET_RANGE[0]) | (marked == DET_RANGE[1]) | ((lo <= marked) & (marked <= hi))).all()
    assert 0 < curves[0].points["MinDCF0.05"][0] < 1  # a point on the curve, not at its ends
    image = matplotlib.image.imread(str(tmp_path / "det.png"))
    assert image.shape[0] > 500 and image.shape[1] > 500 and image[..., :3].std() > 0.05
    alone = det_limits(curves[:1])
    assert alone[0] >= det_limits(curves)[0] and alone[1] <= det_limits(curves)[1]
