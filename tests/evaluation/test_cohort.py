"""Cohorts (evaluation/cohort.py): one mean whole-file embedding per training speaker, speakers sorted."""
import numpy as np
import pytest

from core.errors import DataError
from evaluation.cohort import make_cohort
from evaluation.embeddings import Embeddings


def test_speaker_means_from_the_list_files():
    rng = np.random.default_rng(0)
    emb = Embeddings([f"f{i}.wav" for i in range(6)], rng.normal(size=(6, 4)).astype(np.float32), None)
    speakers, files = ["b", "a", "b", "a"], ["f0.wav", "f1.wav", "f2.wav", "f5.wav"]
    cohort = make_cohort(emb, speakers, files, "train.txt")
    assert cohort.keys == ["a", "b"] and cohort.crop_embeddings is None
    np.testing.assert_allclose(cohort.embeddings[0], (emb.embeddings[1] + emb.embeddings[5]) / 2, rtol=1e-6)
    np.testing.assert_allclose(cohort.embeddings[1], (emb.embeddings[0] + emb.embeddings[2]) / 2, rtol=1e-6)
    with pytest.raises(DataError, match="no embedding"):
        make_cohort(emb, ["a"], ["other.wav"], "train.txt")
