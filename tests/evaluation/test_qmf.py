"""QMF calibration: the fit equals a direct minimisation of the prior-weighted logistic loss,
a score-only QMF keeps the EER, quality measures fix a duration-dependent shift, and the
eval CLI writes the calibrated scores."""

import numpy as np
import pytest
from scipy.optimize import minimize

import trainSpeakerNet_Eval
from evaluation.embeddings import Embeddings, save_embeddings
from evaluation.metrics import compute_eer
from evaluation.qmf import apply_qmf, calibrate_lists, fit_qmf, quality_features
from evaluation.reports import read_score_file
from evaluation.scoring import score_lists
from evaluation.trials import Trials
from tests.fakes import run_main


def shifted_trials(n=4000, seed=0):
    """Scores whose non-target mean rises for short files: one threshold cannot suit all durations."""
    rng = np.random.default_rng(seed)
    durations = rng.uniform(1, 10, size=200)
    e, t = rng.integers(0, 200, n), rng.integers(0, 200, n)
    labels = rng.integers(0, 2, n)
    shortest = np.minimum(durations[e], durations[t])
    scores = 2.0 * labels + 3.0 / shortest + rng.normal(size=n)
    return scores, labels, e, t, durations


def test_fit_equals_direct_minimisation():
    scores, labels, e, t, durations = shifted_trials(n=1500)
    feats, names = quality_features(scores, e, t, np.ones(200), durations)
    qmf = fit_qmf(feats, labels, names, p_target=0.05)
    std = feats.std(0)
    z = (feats - feats.mean(0)) / np.where(std > 0, std, 1)  # constant norm columns stay 0
    weight = np.where(labels == 1, 0.05 / labels.sum(), 0.95 / (labels == 0).sum()) * len(labels)
    sign = np.where(labels == 1, 1.0, -1.0)

    def loss(p):  # sklearn's objective: 0.5 |w|^2 / C + sum_i weight_i log(1 + exp(-y_i (w.z_i + b)))
        return 0.5 * p[:-1] @ p[:-1] / 1e4 + weight @ np.logaddexp(0, -sign * (z @ p[:-1] + p[-1]))
    best = minimize(loss, np.zeros(z.shape[1] + 1), method="BFGS", options={"gtol": 1e-9}).x
    want = z @ best[:-1] + best[-1] - np.log(0.05 / 0.95)
    np.testing.assert_allclose(apply_qmf(qmf, feats), want, atol=2e-3)
    assert names == ["score", "min_norm", "max_norm", "min_log_duration", "max_log_duration"]


def test_score_only_is_monotonic_and_quality_helps():
    scores, labels, e, t, durations = shifted_trials()
    only, names = quality_features(scores, e, t, np.ones(200))
    llr = apply_qmf(fit_qmf(only[:, :1], labels, names[:1]), only[:, :1])
    assert compute_eer(llr, labels)[0] == pytest.approx(compute_eer(scores, labels)[0])
    assert np.all(np.diff(llr[np.argsort(scores)]) > 0)  # increasing in the score
    feats, names = quality_features(scores, e, t, np.ones(200), durations)
    cal, test = slice(0, 2000), slice(2000, None)
    llr = apply_qmf(fit_qmf(feats[cal], labels[cal], names), feats[test])
    assert compute_eer(llr, labels[test])[0] < compute_eer(scores[test], labels[test])[0] - 2.0


def test_calibration_list_must_be_labelled():
    emb = Embeddings(["a", "b"], np.eye(2, dtype=np.float32), None)
    trials = {"x": Trials(None, ["a"], ["b"])}
    with pytest.raises(ValueError, match="labelled"):
        calibrate_lists(emb, trials, {"x": np.zeros(1)}, "x")


def test_cli_writes_calibrated_scores(tmp_path):
    rng = np.random.default_rng(1)
    keys = [f"f{i}.wav" for i in range(40)]
    emb = Embeddings(keys, rng.normal(size=(40, 8)).astype(np.float32), None,
                     rng.uniform(1, 9, 40).astype(np.float32))
    save_embeddings(emb, str(tmp_path / "e.npz"))
    sets = {}
    for name, seed in (("cal", 2), ("test", 3)):
        r = np.random.default_rng(seed)
        pairs, labels = r.integers(0, 40, size=(300, 2)), r.integers(0, 2, 300)
        sets[name] = Trials(labels, [keys[a] for a, _ in pairs], [keys[b] for _, b in pairs])
        (tmp_path / f"{name}.txt").write_text("".join(f"{y} {keys[a]} {keys[b]}\n"
                                                      for y, (a, b) in zip(labels, pairs, strict=True)))
    proc = run_main(trainSpeakerNet_Eval, "--eval", "--test_list", str(tmp_path / "test.txt"), "--embeddings",
                      str(tmp_path / "e.npz"), "--qmf_list", str(tmp_path / "cal.txt"), "--score_file",
                      str(tmp_path / "s.txt"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("EER ")
    want = calibrate_lists(emb, sets, score_lists(emb, sets), "cal")["test"]
    np.testing.assert_allclose(read_score_file(str(tmp_path / "s.txt"))[1], want, atol=1e-6)
