"""Scoring from embeddings (evaluation/scoring.py): the original protocol, AS-/S-norm and mean subtraction
against plain loops, several lists in one pass, blocks on several threads."""
import os

import numpy as np
import pytest

from evaluation import scoring
from evaluation.scoring import cohort_stats, normalise_scores, score_lists, score_trials, top_n_moments
from evaluation.trials import Trials
from tests.fakes import random_embeddings, random_trials, unit


def test_scores_follow_the_original_protocol_per_trial():
    emb = random_embeddings(12, 8)
    trials = random_trials(emb.keys, 40)
    scores = score_trials(emb, trials)
    index = {k: i for i, k in enumerate(emb.keys)}
    for n, (e, t) in enumerate(zip(trials.enroll, trials.test, strict=True)):
        ce, ct = unit(emb.crop_embeddings[index[e]]), unit(emb.crop_embeddings[index[t]])
        s1 = np.mean(ce @ ct.T)  # mean of the crop x crop cosine matrix
        s2 = unit(emb.embeddings[index[e]]) @ unit(emb.embeddings[index[t]])
        assert scores[n] == pytest.approx((s1 + s2) / 2, rel=1e-5, abs=1e-6)  # float32 maths


def test_without_crops_the_score_is_the_whole_file_cosine():
    emb = random_embeddings(12, 8, crops=0)
    trials = random_trials(emb.keys, 40)
    scores = score_trials(emb, trials)
    i, j = emb.keys.index(trials.enroll[0]), emb.keys.index(trials.test[0])
    assert scores[0] == pytest.approx(unit(emb.embeddings[i]) @ unit(emb.embeddings[j]), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("method,top_n", [("asnorm", 5), ("snorm", 5)])
def test_score_normalisation_matches_a_loop(method, top_n):
    emb = random_embeddings(12, 8, crops=0)
    trials = random_trials(emb.keys, 40)
    cohort = np.random.default_rng(5).normal(size=(20, 8))
    raw = score_trials(emb, trials)
    got = normalise_scores(raw, emb, trials, cohort, method, top_n)
    n = len(cohort) if method == "snorm" else top_n
    for k, (e, t) in enumerate(zip(trials.enroll, trials.test, strict=True)):
        stats = []
        for key in (e, t):
            sims = sorted((unit(emb.embeddings[emb.keys.index(key)]) @ unit(c) for c in cohort), reverse=True)[:n]
            stats.append((np.mean(sims), np.std(sims)))
        want = 0.5 * ((raw[k] - stats[0][0]) / stats[0][1] + (raw[k] - stats[1][0]) / stats[1][1])
        assert got[k] == pytest.approx(want, rel=1e-5, abs=1e-6)  # float32 vs float64 loop; |s| up to ~10


def test_missing_embedding_is_reported():
    emb = random_embeddings(12, 8)
    with pytest.raises(ValueError, match="no embedding"):
        score_trials(emb, Trials(np.array([1]), ["other.wav"], [emb.keys[0]]))


def make_embeddings(n=15, d=6, crops=3, seed=0):
    return random_embeddings(n, d, crops, seed)


def make_trials(keys, n=30, seed=1):
    return random_trials(keys, n, seed)


def loop_scores(emb, trials, cohort, top_n, mean):
    """Reference: per-trial loop, with explicit sorting for the cohort statistics."""
    keys = list(emb.keys)
    shift = (lambda x: np.asarray(x, np.float64) - mean) if mean is not None else (lambda x: np.asarray(x, np.float64))
    out = []
    for e, t in zip(trials.enroll, trials.test, strict=True):
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
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-5)


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
            for e, t in zip(enroll, test, strict=True)]
    np.testing.assert_allclose(scoring.trial_scores(whole, enroll, test, crops), want, rtol=1e-5, atol=1e-6)
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
    np.testing.assert_allclose(mean, top.mean(axis=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(std, top.std(axis=1), rtol=1e-5, atol=1e-6)
    m, s = top_n_moments(np.ones((3, 9), np.float32), 4)  # all equal: std 0, mean 1
    assert m.tolist() == [1, 1, 1] and s.tolist() == [0, 0, 0]




@pytest.mark.parametrize("cols", [700, 2000, 5994])
def test_top_n_moments_from_a_sampled_bound_equal_sorting(cols):
    """The bound from the first SELECTION_SAMPLE columns keeps a superset of each row's top n: the moments are
    those of the sorted rows' top n; rows whose first columns hold their largest values (the bound lies above
    their n-th largest) and rows of ties take the whole-row path and agree too."""
    rng = np.random.default_rng(cols)
    sims = rng.standard_normal((300, cols)).astype(np.float32)
    sims[:40, :512] += 5.0  # the sample holds these rows' top values: fewer than n at or above the bound
    sims[40:50] = np.round(sims[40:50], 1)  # many ties at the boundary
    sims[50] = 0.25
    top = np.sort(sims.astype(np.float64), axis=1)[:, -300:]
    for in_place in (False, True):
        work = sims.copy()
        mean, std = top_n_moments(work, 300, in_place=in_place)
        np.testing.assert_allclose(mean, top.mean(axis=1), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(std, top.std(axis=1), rtol=1e-9, atol=1e-12)
        assert in_place or np.array_equal(work, sims)  # not in place: the input keeps its order


def test_cohort_stats_of_chosen_rows_in_selection_slices_equal_sorting(monkeypatch):
    """Blocks of several SELECT_ROWS slices (the last one short), rows gathered by index, on threads: the moments
    are those of each chosen row's sorted top n, and equal cohort_stats of the rows copied out."""
    monkeypatch.setattr(scoring, "SELECT_ROWS", 16)
    rng = np.random.default_rng(11)
    x = rng.normal(size=(300, 24)).astype(np.float32)
    cohort = rng.normal(size=(700, 24)).astype(np.float32)
    rows = np.sort(rng.choice(300, size=170, replace=False))
    mean, std = cohort_stats(x, cohort, 40, chunk=4 * 50, rows=rows)  # blocks of 50 rows: slices 16, 16, 16, 2
    sims = unit(x[rows].astype(np.float64)) @ unit(cohort.astype(np.float64)).T
    top = np.sort(sims, axis=1)[:, -40:]
    np.testing.assert_allclose(mean, top.mean(axis=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(std, top.std(axis=1), rtol=1e-4, atol=1e-6)
    copied = cohort_stats(x[rows], cohort, 40, chunk=4 * 50)
    np.testing.assert_array_equal(mean, copied[0])
    np.testing.assert_array_equal(std, copied[1])


def test_statistics_begun_ahead_equal_cohort_stats_whatever_the_process_finished(monkeypatch):
    """StatsAhead: rows its process did (all of them, once it ran to the end), rows it never reached (it failed
    after its first block) and rows outside the request (NaN) give cohort_stats' bits for the rows asked."""
    rng = np.random.default_rng(12)
    x = rng.normal(size=(230, 16)).astype(np.float32)
    cohort = rng.normal(size=(700, 16)).astype(np.float32)
    asked = np.sort(rng.choice(230, size=90, replace=False))
    expected = cohort_stats(x, cohort, 40, rows=asked)

    def check(ahead):
        with ahead:
            mu, sigma = ahead.stats(np.concatenate([asked, asked[::3]]))  # rows may repeat, as trials' do
        np.testing.assert_array_equal(mu[asked], expected[0])
        np.testing.assert_array_equal(sigma[asked], expected[1])
        outside = np.setdiff1d(np.arange(230), asked)
        assert np.isnan(mu[outside]).all() and np.isnan(sigma[outside]).all()
        return ahead

    finished = scoring.StatsAhead(x, cohort, 40, chunk=4 * 50)  # blocks of 50 rows
    assert finished.process.join() is None  # ran to the end
    assert check(finished).done.all()

    parent, block = os.getpid(), scoring._StatsBlocks.__call__

    def fails_in_the_child_after_one_block(self, start, stop):
        if os.getpid() != parent and start > 0:
            raise MemoryError("the child is out of memory")
        block(self, start, stop)

    monkeypatch.setattr(scoring._StatsBlocks, "__call__", fails_in_the_child_after_one_block)
    failed = scoring.StatsAhead(x, cohort, 40, chunk=4 * 50)
    assert failed.process.join() == "the child is out of memory"
    assert check(failed).done.sum() == 50


def test_statistics_ahead_raise_real_errors_in_the_caller_and_end_their_process(monkeypatch):
    """top_n below 2 is refused at once; an error that recurs in the caller is raised by stats(); the context's
    exit (on an error too) reaps the process."""
    x, cohort = np.ones((10, 4), np.float32), np.ones((20, 4), np.float32)
    with pytest.raises(scoring.ConfigError, match="top_n must be at least 2"):
        scoring.StatsAhead(x, cohort, 1)

    def broken(self, start, stop):
        raise MemoryError("no room for the block")

    monkeypatch.setattr(scoring._StatsBlocks, "__call__", broken)
    ahead = scoring.StatsAhead(x, cohort, 5)
    pid = ahead.process.pid
    with pytest.raises(MemoryError, match="no room"):
        with ahead:
            ahead.stats(np.arange(10))
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaped
