"""Scoring from embeddings: fast trial reading, AS-/S-norm and mean subtraction against plain
loops, several lists in one run, the eval CLI outputs (score files, DET PNG, threshold file)."""
import json

import numpy as np
import pytest

from tests.fakes import random_embeddings, random_trials, run_script, unit
from tools.evaluation import load_embeddings, load_mean, read_trials, save_embeddings, score_lists
from tools import scoring
from tools.scoring import cohort_stats, top_n_moments
from tuneThreshold import read_score_file



def make_embeddings(n=15, d=6, crops=3, seed=0):
    return random_embeddings(n, d, crops, seed)


def make_trials(keys, n=30, seed=1):
    return random_trials(keys, n, seed)


def loop_scores(emb, trials, cohort, top_n, mean):
    """Reference: per-trial loop, with explicit sorting for the cohort statistics."""
    keys = list(emb.keys)
    shift = (lambda x: np.asarray(x, np.float64) - mean) if mean is not None else (lambda x: np.asarray(x, np.float64))
    out = []
    for e, t in zip(trials.enroll, trials.test):
        i, j = keys.index(e), keys.index(t)
        s2 = unit(shift(emb.embeddings[i])) @ unit(shift(emb.embeddings[j]))
        s1 = np.mean([[unit(shift(a)) @ unit(shift(b)) for b in emb.crop_embeddings[j]]
                      for a in emb.crop_embeddings[i]])
        raw = (s1 + s2) / 2
        if cohort is None:
            out.append(raw)
            continue
        stats = []
        for k in (i, j):
            sims = sorted((unit(shift(emb.embeddings[k])) @ unit(shift(c)) for c in cohort), reverse=True)[:top_n]
            stats.append((np.mean(sims), np.sqrt(np.mean((np.array(sims) - np.mean(sims)) ** 2))))
        out.append(0.5 * ((raw - stats[0][0]) / stats[0][1] + (raw - stats[1][0]) / stats[1][1]))
    return np.array(out)


@pytest.mark.parametrize("method,top_n,use_mean", [("none", 0, False), ("none", 0, True), ("asnorm", 4, False),
                                                   ("asnorm", 4, True), ("snorm", 0, True)])
def test_score_lists_match_a_loop(method, top_n, use_mean):
    emb = make_embeddings()
    trials = make_trials(emb.keys)
    cohort = np.random.default_rng(7).normal(size=(11, 6))
    mean = emb.embeddings[:5].astype(np.float64).mean(axis=0) if use_mean else None
    got = score_lists(emb, {"x": trials}, method, cohort, top_n, mean)["x"]
    want = loop_scores(emb, trials, None if method == "none" else cohort, top_n if method == "asnorm" else 11, mean)
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_trial_scores_in_many_blocks_on_several_threads(monkeypatch):
    """Trial lists longer than one gather block and matrices longer than one norm block, on 3
    threads (blocks finish out of order): every score lands in its own row."""
    monkeypatch.setattr(scoring, "worker_count", lambda: 3)
    monkeypatch.setattr(scoring, "TRIAL_CHUNK", 7)
    monkeypatch.setattr(scoring, "COHORT_CHUNK", 5)
    rng = np.random.default_rng(3)
    whole, crops = rng.normal(size=(101, 4)).astype(np.float32), rng.normal(size=(101, 2, 4)).astype(np.float32)
    enroll, test = rng.integers(0, 101, 250), rng.integers(0, 101, 250)
    want = [(unit(whole[e]) @ unit(whole[t]) + np.mean([[unit(a) @ unit(b) for b in crops[t]] for a in crops[e]])) / 2
            for e, t in zip(enroll, test)]
    np.testing.assert_allclose(scoring.trial_scores(whole, enroll, test, crops), want, atol=1e-6)
    np.testing.assert_allclose(scoring.row_norms(whole), np.linalg.norm(whole.astype(np.float64), axis=1), rtol=1e-12)


def test_several_lists_equal_separate_runs():
    emb = make_embeddings()
    a, b = make_trials(emb.keys, seed=2), make_trials(emb.keys[:6], n=9, seed=3)
    cohort = np.random.default_rng(8).normal(size=(20, 6))
    both = score_lists(emb, {"a": a, "b": b}, "asnorm", cohort, 5)
    np.testing.assert_array_equal(both["a"], score_lists(emb, {"a": a}, "asnorm", cohort, 5)["a"])
    np.testing.assert_array_equal(both["b"], score_lists(emb, {"b": b}, "asnorm", cohort, 5)["b"])


def test_cohort_stats_chunked_with_ties_equals_sorting():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(37, 5))
    cohort = np.round(rng.normal(size=(50, 5)), 1)
    cohort[10:20] = cohort[0]  # tied cosines at the top-N boundary
    mean, std = cohort_stats(x, cohort, 12, chunk=8)
    sims = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (cohort / np.linalg.norm(cohort, axis=1, keepdims=True)).T
    top = np.sort(sims, axis=1)[:, -12:]
    np.testing.assert_allclose(mean, top.mean(axis=1), atol=1e-6)
    np.testing.assert_allclose(std, top.std(axis=1), atol=1e-6)
    m, s = top_n_moments(np.ones((3, 9), np.float32), 4)  # all equal: std 0, mean 1
    assert m.tolist() == [1, 1, 1] and s.tolist() == [0, 0, 0]


def test_read_trials_equals_line_by_line_parsing(tmp_path):
    rng = np.random.default_rng(5)
    lines = [f"{rng.integers(2)}{' ' * rng.integers(1, 3)}a/{i}.wav\tb/{rng.integers(99)}.wav" for i in range(200)]
    text = "\r\n".join(lines[:100]) + "\r\n\n   \n" + "\n".join(lines[100:])  # CRLF, blank lines, no final \n
    path = tmp_path / "t.txt"
    path.write_bytes(text.encode())
    trials = read_trials(str(path))
    fields = [line.split() for line in lines]
    assert trials.labels.tolist() == [int(f[0]) for f in fields]
    assert trials.enroll == [f[1] for f in fields] and trials.test == [f[2] for f in fields]
    path.write_text("x/ä.wav y/é.wav\nx/b.wav y/c.wav\n", encoding="utf-8")
    unlabelled = read_trials(str(path))
    assert unlabelled.labels is None and unlabelled.enroll == ["x/ä.wav", "x/b.wav"]


@pytest.mark.parametrize("text,fragment", [
    ("1 a b\n0 a b c\n1 a b\n", "line 2"),
    ("1 a b\n1 a b\n2 a c\n", "line 3"),
    ("1 a b\na b\n", "mixes"),
    ("a\n", "line 1"),
    ("\n\n", "no trials"),
])
def test_read_trials_errors_name_the_line(tmp_path, text, fragment):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=fragment):
        read_trials(str(path))


def test_mean_from_a_list(tmp_path):
    emb = make_embeddings(crops=0)
    save_embeddings(emb, str(tmp_path / "m.npz"))
    (tmp_path / "train.txt").write_text(f"spk {emb.keys[2]}\nspk {emb.keys[5]}\n")
    got = load_mean(str(tmp_path / "m.npz"), str(tmp_path / "train.txt"))
    np.testing.assert_allclose(got, (emb.embeddings[2] + emb.embeddings[5]) / 2, atol=1e-6)
    (tmp_path / "train.txt").write_text("spk nowhere.wav\n")
    with pytest.raises(ValueError, match="nowhere.wav"):
        load_mean(str(tmp_path / "m.npz"), str(tmp_path / "train.txt"))


def test_cli_several_lists_score_files_det_and_threshold(tmp_path):
    emb = make_embeddings(n=30, crops=3)
    save_embeddings(emb, str(tmp_path / "e.npz"))
    np.savez(tmp_path / "c.npz", keys=np.array([f"s{i}" for i in range(12)]),
             embeddings=np.random.default_rng(9).normal(size=(12, 6)).astype(np.float32))
    lists = {}
    for name, seed in (("O", 1), ("H", 2)):
        trials = make_trials(emb.keys, n=50, seed=seed)
        lists[name] = trials
        (tmp_path / f"{name}.txt").write_text("".join(f"{y} {e} {t}\n" for y, e, t in
                                                      zip(trials.labels, trials.enroll, trials.test)))
    norm = ["--score_norm", "asnorm", "--top_n", "5", "--cohort_embeddings", str(tmp_path / "c.npz")]
    single = run_script("trainSpeakerNet_Eval.py", "--eval", "--test_list", str(tmp_path / "O.txt"), "--embeddings",
                        str(tmp_path / "e.npz"), *norm, "--score_file", str(tmp_path / "s.txt"), "--threshold", "0.1")
    assert single.returncode == 0, single.stderr[-2000:]
    line = single.stdout.strip()
    assert line.split()[0::2] == ["EER", "MinDCF0.05", "MinDCF0.01", "ActDCF0.05", "ActDCF0.01"]
    several = run_script("trainSpeakerNet_Eval.py", "--eval", "--test_list", str(tmp_path / "O.txt"),
                         str(tmp_path / "H.txt"), "--embeddings", str(tmp_path / "e.npz"), *norm, "--score_file",
                         str(tmp_path / "s.txt"))
    assert several.returncode == 0, several.stderr[-2000:]
    out = several.stdout.strip().splitlines()
    assert [o.split()[0] for o in out] == ["O", "H"] and out[0].split()[1:7] == line.split()[:6]
    expected = score_lists(load_embeddings(str(tmp_path / "e.npz")), lists, "asnorm",
                           np.load(tmp_path / "c.npz")["embeddings"], 5)
    for name in ("O", "H"):
        labels, scores, pairs = read_score_file(str(tmp_path / f"s.{name}.txt"))
        assert pairs == list(zip(lists[name].enroll, lists[name].test))
        assert labels.tolist() == lists[name].labels.tolist()
        np.testing.assert_allclose(scores, expected[name], atol=1e-6)  # file = in-process scores (6 decimals)
        png = tmp_path / f"s.{name}.txt.det.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
        record = json.loads((tmp_path / f"s.{name}.txt.threshold.json").read_text())
        assert record["score_norm"] == "asnorm" and record["top_n"] == 5
        fields = out[["O", "H"].index(name)].split()
        assert f"{record['eer']:.4f}" == fields[2]
    missing = run_script("trainSpeakerNet_Eval.py", "--eval", "--test_list", str(tmp_path / "O.txt"),
                         str(tmp_path / "none.txt"), "--embeddings", str(tmp_path / "e.npz"))
    assert missing.returncode == 2 and "none.txt" in missing.stderr and "Traceback" not in missing.stderr


def test_metrics_cli_actual_dcf_and_det(tmp_path, capsys):
    import tuneThreshold
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 2, 500)
    scores = rng.normal(size=500) + 1.5 * labels
    (tmp_path / "s.txt").write_text("".join(f"{y} {s:.6f}\n" for y, s in zip(labels, scores)))
    tuneThreshold.main([str(tmp_path / "s.txt"), "--threshold", "0.7", "--det", str(tmp_path / "det.png")])
    fields = capsys.readouterr().out.split()
    assert fields[0::2] == ["EER", "MinDCF0.05", "MinDCF0.01", "ActDCF0.05", "ActDCF0.01"]
    rounded = np.round(scores, 6)
    for p, value in ((0.05, fields[7]), (0.01, fields[9])):  # independent count of misses / false alarms
        miss = np.mean(rounded[labels == 1] < 0.7)
        fa = np.mean(rounded[labels == 0] >= 0.7)
        assert float(value) == pytest.approx((miss * p + fa * (1 - p)) / p, abs=1e-5)
    assert (tmp_path / "det.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "det.png").stat().st_size > 5000
