"""Tests for the metrics in evaluation/metrics.py (EER, minDCF, actual DCF, score files, CLI). Their speed on a
million scores is measured by bench/eval_scoring.py (c), not here: a test never depends on timing."""
import math

import numpy as np
import pytest

from evaluation import metrics as tt

# Hand-computed example (accept if score >= t):
#   targets     0.9 0.8 0.6 0.4        non-targets 0.8 0.4 0.2
#   t      0.2   0.4   0.6   0.8   0.9   inf
#   fnr    0     0     1/4   2/4   3/4   1
#   fpr    1     2/3   1/3   1/3   0     0
#   |fnr-fpr| is smallest (1/12) at t=0.6 -> EER = max(1/3, 1/4) = 33.3333 %
#   p=0.05: DCF = .05 fnr + .95 fpr = .95 .6333 .3292 .3417 .0375 .05 -> min .0375/.05 = 0.75 (t=0.9)
#   p=0.01: DCF = .01 fnr + .99 fpr -> min .0075/.01 = 0.75 (t=0.9)
#   p=0.5 : DCF = .5 fnr + .5 fpr = .5 .3333 .2917 .4167 .375 .5 -> min .29167/.5 = 7/12 (t=0.6)
HAND_SCORES = np.array([0.9, 0.8, 0.8, 0.6, 0.4, 0.4, 0.2])
HAND_LABELS = np.array([1, 1, 0, 1, 0, 1, 0])
HAND_LINE = "EER 33.3333 MinDCF0.05 0.75000 MinDCF0.01 0.75000"


def brute_force_rates(scores, labels):
    """Direct loop over candidate thresholds: each distinct score plus +inf."""
    tgt = [s for s, label in zip(scores, labels, strict=True) if label == 1]
    non = [s for s, label in zip(scores, labels, strict=True) if label == 0]
    thresholds = sorted(set(float(s) for s in scores)) + [math.inf]
    fnrs = [sum(1 for s in tgt if s < t) / len(tgt) for t in thresholds]
    fprs = [sum(1 for s in non if s >= t) / len(non) for t in thresholds]
    return fnrs, fprs, thresholds


def brute_force_eer(scores, labels):
    fnrs, fprs, _ = brute_force_rates(scores, labels)
    diffs = [abs(a - b) for a, b in zip(fnrs, fprs, strict=True)]
    i = diffs.index(min(diffs))
    return max(fnrs[i], fprs[i]) * 100


def brute_force_min_dcf(scores, labels, p, c_miss, c_fa):
    fnrs, fprs, _ = brute_force_rates(scores, labels)
    best = min(c_miss * fn * p + c_fa * fp * (1 - p) for fn, fp in zip(fnrs, fprs, strict=True))
    return best / min(c_miss * p, c_fa * (1 - p))


def min_dcf(scores, labels, p, c_miss=1, c_fa=1):
    return tt.compute_min_dcf(*tt.compute_error_rates(scores, labels), p, c_miss, c_fa)[0]


# ---------------------------------------------------------------- known answers

def test_perfectly_separated():
    scores, labels = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9]), np.array([0, 0, 0, 1, 1, 1])
    assert tt.compute_eer(scores, labels)[0] == 0.0
    for p in (0.05, 0.01):
        assert min_dcf(scores, labels, p) == 0.0


def test_inverted_scores_give_eer_100():
    scores, labels = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9]), np.array([1, 1, 1, 0, 0, 0])
    assert tt.compute_eer(scores, labels)[0] == pytest.approx(100.0)


def test_all_equal_scores():
    scores, labels = np.full(10, 0.5), np.array([0, 1] * 5)
    fnrs, fprs, thr = tt.compute_error_rates(scores, labels)
    # Only accept-all and reject-all exist: no threshold can split tied scores.
    np.testing.assert_array_equal(fnrs, [0, 1])
    np.testing.assert_array_equal(fprs, [1, 0])
    np.testing.assert_array_equal(thr, [0.5, np.inf])
    # voxceleb_trainer rule max(fpr, fnr) at argmin|fnr - fpr| gives 100 here, not an
    # interpolated 50: both points have |fnr - fpr| = 1 and max(fnr, fpr) = 1.
    assert tt.compute_eer(scores, labels)[0] == pytest.approx(100.0)
    for p in (0.05, 0.01, 0.5):
        assert min_dcf(scores, labels, p) == pytest.approx(1.0)
        assert min_dcf(scores, labels, p, c_miss=3, c_fa=0.5) == pytest.approx(1.0)


def test_hand_computed_example():
    fnrs, fprs, thr = tt.compute_error_rates(HAND_SCORES, HAND_LABELS)
    np.testing.assert_allclose(thr, [0.2, 0.4, 0.6, 0.8, 0.9, np.inf])
    np.testing.assert_allclose(fnrs, [0, 0, 1 / 4, 2 / 4, 3 / 4, 1])
    np.testing.assert_allclose(fprs, [1, 2 / 3, 1 / 3, 1 / 3, 0, 0])
    eer, eer_thr = tt.compute_eer(HAND_SCORES, HAND_LABELS)
    assert eer == pytest.approx(100 / 3)
    assert eer_thr == 0.6
    assert tt.compute_min_dcf(fnrs, fprs, thr, 0.05) == pytest.approx((0.75, 0.9))
    assert tt.compute_min_dcf(fnrs, fprs, thr, 0.01) == pytest.approx((0.75, 0.9))
    assert tt.compute_min_dcf(fnrs, fprs, thr, 0.5) == pytest.approx((7 / 12, 0.6))


def test_actual_dcf_hand_computed():
    # t=0.5: missed targets {0.4} -> fnr 1/4; accepted non-targets {0.8} -> fpr 1/3.
    # DCF = 2*0.25*0.1 + 3*(1/3)*0.9 = 0.95; norm = min(2*0.1, 3*0.9) = 0.2 -> 4.75
    assert tt.compute_actual_dcf(HAND_SCORES, HAND_LABELS, 0.5, 0.1, c_miss=2, c_fa=3) == pytest.approx(4.75)
    # t=0.8 (ties at 0.8 accepted): fnr 2/4, fpr 1/3 -> (.025 + .95/3) / .05
    assert tt.compute_actual_dcf(HAND_SCORES, HAND_LABELS, 0.8, 0.05) == pytest.approx((0.025 + 0.95 / 3) / 0.05)
    # Reject everything: fnr 1, fpr 0 -> p / min(p, 1-p) = 1 for p < 0.5.
    assert tt.compute_actual_dcf(HAND_SCORES, HAND_LABELS, 10.0, 0.05) == pytest.approx(1.0)


def test_actual_dcf_at_min_dcf_threshold_equals_min_dcf():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 500)
    scores = np.round(rng.normal(labels * 1.5, 1.0), 1)
    rates = tt.compute_error_rates(scores, labels)
    for p, cm, cf in [(0.05, 1, 1), (0.01, 10, 1), (0.3, 1, 2)]:
        value, thr = tt.compute_min_dcf(*rates, p, cm, cf)
        assert tt.compute_actual_dcf(scores, labels, thr, p, cm, cf) == pytest.approx(value)


# ------------------------------------------------ against independent brute force

@pytest.mark.parametrize("seed", range(8))
def test_matches_brute_force_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 300))
    labels = rng.integers(0, 2, n)
    labels[:2] = [0, 1]
    scores = np.round(rng.normal(labels * rng.uniform(0, 2), 1.0), 1)  # many ties
    assert len(np.unique(scores)) < n
    fnrs, fprs, thr = tt.compute_error_rates(scores, labels)
    bf_fnrs, bf_fprs, bf_thr = brute_force_rates(scores, labels)
    np.testing.assert_allclose(fnrs, bf_fnrs)
    np.testing.assert_allclose(fprs, bf_fprs)
    np.testing.assert_array_equal(thr, bf_thr)
    assert tt.compute_eer(scores, labels)[0] == pytest.approx(brute_force_eer(scores, labels))
    for p, cm, cf in [(0.05, 1, 1), (0.01, 1, 1), (0.05, 10, 1), (0.01, 2.5, 0.7)]:
        assert min_dcf(scores, labels, p, cm, cf) == pytest.approx(brute_force_min_dcf(scores, labels, p, cm, cf))


def test_order_of_trials_does_not_matter():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 400)
    scores = np.round(rng.normal(labels, 1.0), 1)
    perm = rng.permutation(400)
    assert tt.evaluate_scores(scores, labels) == tt.evaluate_scores(scores[perm], labels[perm])


# ----------------------------------------------------------------- validation

@pytest.mark.parametrize("scores,labels,msg", [
    ([0.1, 0.2, 0.3], [0, 1, 2], "0 \\(non-target\\) or 1"),
    ([0.1, 0.2, 0.3], [1, 1, 1], "only one class"),
    ([0.1, 0.2, 0.3], [0, 0, 0], "only one class"),
    ([0.1, 0.2], [0, 1, 1], "differ in length"),
    ([0.1, np.nan, 0.3], [0, 1, 1], "finite"),
])
def test_bad_inputs_raise(scores, labels, msg):
    for call in (lambda: tt.compute_error_rates(scores, labels),
                 lambda: tt.compute_eer(scores, labels),
                 lambda: tt.compute_actual_dcf(scores, labels, 0.2, 0.05),
                 lambda: tt.evaluate_scores(scores, labels)):
        with pytest.raises(ValueError, match=msg):
            call()


def test_bad_costs_raise():
    rates = tt.compute_error_rates(HAND_SCORES, HAND_LABELS)
    for p, cm, cf in [(0.0, 1, 1), (1.0, 1, 1), (0.05, 0, 1), (0.05, 1, -1)]:
        with pytest.raises(ValueError):
            tt.compute_min_dcf(*rates, p, cm, cf)


# ------------------------------------------------------------ formatting, files

def test_format_result_exact():
    assert tt.format_result(tt.evaluate_scores(HAND_SCORES, HAND_LABELS)) == HAND_LINE
    result = {"eer": 1.23456789, "eer_threshold": 0.0, "min_dcf": {0.05: 0.123456, 0.01: 0.2}}
    assert tt.format_result(result) == "EER 1.2346 MinDCF0.05 0.12346 MinDCF0.01 0.20000"
    other = tt.evaluate_scores(HAND_SCORES, HAND_LABELS, p_targets=(0.5, 0.001))
    assert tt.format_result(other) == f"EER 33.3333 MinDCF0.5 {7 / 12:.5f} MinDCF0.001 0.75000"


def test_evaluate_scores_keys():
    result = tt.evaluate_scores(HAND_SCORES, HAND_LABELS)
    assert result["eer"] == pytest.approx(100 / 3) and result["eer_threshold"] == 0.6
    assert list(result["min_dcf"]) == [0.05, 0.01]
    assert result["min_dcf"][0.05] == pytest.approx(0.75)


# ---------------------------------------------------------------------- CLI




@pytest.mark.parametrize("seed", [0, 1, 2])
def test_error_rates_are_sklearns_roc_points(seed):
    """compute_error_rates counts in NumPy what sklearn's roc_curve(drop_intermediate=False) gives (ties grouped,
    +inf first), reversed: the same thresholds and rates, bit for bit."""
    from sklearn.metrics import roc_curve

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 5000)
    scores = np.round(rng.standard_normal(5000) + labels, 2)  # many ties
    fnrs, fprs, thresholds = tt.compute_error_rates(scores, labels)
    fpr, tpr, thr = roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_array_equal(thresholds, thr[::-1])
    np.testing.assert_array_equal(fprs, fpr[::-1])
    n_tgt = labels.sum()
    np.testing.assert_array_equal(fnrs, (n_tgt - np.rint(tpr * n_tgt))[::-1] / n_tgt)
