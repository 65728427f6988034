import numpy as np
import pytest

from tests.fakes import random_embeddings, random_trials, unit
from tools.evaluation import (Trials, load_embeddings, normalise_scores, read_trials, save_embeddings,
                              score_trials, write_score_file)


def test_scores_follow_the_original_protocol_per_trial():
    emb = random_embeddings(12, 8)
    trials = random_trials(emb.keys, 40)
    scores = score_trials(emb, trials)
    index = {k: i for i, k in enumerate(emb.keys)}
    for n, (e, t) in enumerate(zip(trials.enroll, trials.test)):
        ce, ct = unit(emb.crop_embeddings[index[e]]), unit(emb.crop_embeddings[index[t]])
        s1 = np.mean(ce @ ct.T)  # mean of the crop x crop cosine matrix
        s2 = unit(emb.embeddings[index[e]]) @ unit(emb.embeddings[index[t]])
        assert scores[n] == pytest.approx((s1 + s2) / 2, abs=1e-6)


def test_without_crops_the_score_is_the_whole_file_cosine():
    emb = random_embeddings(12, 8, crops=0)
    trials = random_trials(emb.keys, 40)
    scores = score_trials(emb, trials)
    i, j = emb.keys.index(trials.enroll[0]), emb.keys.index(trials.test[0])
    assert scores[0] == pytest.approx(unit(emb.embeddings[i]) @ unit(emb.embeddings[j]), abs=1e-6)


@pytest.mark.parametrize("method,top_n", [("asnorm", 5), ("snorm", 5)])
def test_score_normalisation_matches_a_loop(method, top_n):
    emb = random_embeddings(12, 8, crops=0)
    trials = random_trials(emb.keys, 40)
    cohort = np.random.default_rng(5).normal(size=(20, 8))
    raw = score_trials(emb, trials)
    got = normalise_scores(raw, emb, trials, cohort, method, top_n)
    n = len(cohort) if method == "snorm" else top_n
    for k, (e, t) in enumerate(zip(trials.enroll, trials.test)):
        stats = []
        for key in (e, t):
            sims = sorted((unit(emb.embeddings[emb.keys.index(key)]) @ unit(c) for c in cohort), reverse=True)[:n]
            stats.append((np.mean(sims), np.std(sims)))
        want = 0.5 * ((raw[k] - stats[0][0]) / stats[0][1] + (raw[k] - stats[1][0]) / stats[1][1])
        assert got[k] == pytest.approx(want, abs=1e-6)


def test_missing_embedding_is_reported():
    emb = random_embeddings(12, 8)
    with pytest.raises(ValueError, match="no embedding"):
        score_trials(emb, Trials(np.array([1]), ["other.wav"], [emb.keys[0]]))


def test_read_trials_formats_and_errors(tmp_path):
    path = tmp_path / "trials.txt"
    path.write_text("1 a.wav b.wav\n0 a.wav c.wav\n")
    trials = read_trials(str(path))
    assert list(trials.labels) == [1, 0] and trials.enroll == ["a.wav", "a.wav"] and trials.test[1] == "c.wav"
    path.write_text("a.wav b.wav\n")
    assert read_trials(str(path)).labels is None  # unlabelled: no random label invented
    path.write_text("1 a.wav b.wav\n2 a.wav c.wav\n")
    with pytest.raises(ValueError, match="line 2"):
        read_trials(str(path))
    path.write_text("1 a.wav b.wav\na.wav c.wav\n")
    with pytest.raises(ValueError, match="mixes"):
        read_trials(str(path))


def test_embeddings_npz_round_trip_and_score_file(tmp_path):
    emb = random_embeddings(12, 8)
    save_embeddings(emb, str(tmp_path / "e.npz"))
    back = load_embeddings(str(tmp_path / "e.npz"))
    assert back.keys == emb.keys and back.embeddings.dtype == np.float32
    np.testing.assert_array_equal(back.crop_embeddings, emb.crop_embeddings)
    trials = random_trials(emb.keys, n=5)
    write_score_file(str(tmp_path / "s.txt"), trials, score_trials(back, trials))
    lines = (tmp_path / "s.txt").read_text().splitlines()
    assert [line.split()[1:3] for line in lines] == [[e, t] for e, t in zip(trials.enroll, trials.test)]
    assert [int(line.split()[0]) for line in lines] == list(trials.labels)
