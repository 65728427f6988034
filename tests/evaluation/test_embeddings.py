"""Embeddings files (evaluation/embeddings.py): the .npz round trip, the mean of a list's files, trial rows."""
import os

import numpy as np
import pytest

from core.errors import DataError
from evaluation.embeddings import load_embeddings, load_mean, save_embeddings, trial_rows
from evaluation.reports import write_score_file
from evaluation.scoring import score_trials
from evaluation.trials import Trials, file_codes
from tests.fakes import random_embeddings, random_trials


def test_embeddings_npz_round_trip_and_score_file(tmp_path):
    emb = random_embeddings(12, 8)
    save_embeddings(emb, str(tmp_path / "e.npz"))
    back = load_embeddings(str(tmp_path / "e.npz"))
    assert back.keys == emb.keys and back.embeddings.dtype == np.float32
    np.testing.assert_array_equal(back.crop_embeddings, emb.crop_embeddings)
    trials = random_trials(emb.keys, n=5)
    write_score_file(str(tmp_path / "s.txt"), trials, score_trials(back, trials))
    lines = (tmp_path / "s.txt").read_text().splitlines()
    assert [line.split()[1:3] for line in lines] == [[e, t] for e, t in zip(trials.enroll, trials.test, strict=True)]
    assert [int(line.split()[0]) for line in lines] == list(trials.labels)


@pytest.mark.parametrize("name", ["emb", "emb.data", "emb.npz"])
def test_embeddings_go_to_exactly_the_path_given(tmp_path, name):
    """numpy's savez appends .npz to a name; the file the user named is the one written, whole, and nothing else."""
    emb = random_embeddings(5, 4)
    save_embeddings(emb, str(tmp_path / name))
    assert os.listdir(tmp_path) == [name] and (tmp_path / name).stat().st_size > 0
    assert load_embeddings(str(tmp_path / name)).keys == emb.keys


def test_mean_from_a_list(tmp_path):
    emb = random_embeddings(15, 6, crops=0)
    save_embeddings(emb, str(tmp_path / "m.npz"))
    (tmp_path / "train.txt").write_text(f"spk {emb.keys[2]}\nspk {emb.keys[5]}\n")
    got = load_mean(str(tmp_path / "m.npz"), str(tmp_path / "train.txt"))
    np.testing.assert_allclose(got, (emb.embeddings[2] + emb.embeddings[5]) / 2, rtol=1e-6, atol=1e-6)
    (tmp_path / "train.txt").write_text("spk nowhere.wav\n")
    with pytest.raises(ValueError, match="nowhere.wav"):
        load_mean(str(tmp_path / "m.npz"), str(tmp_path / "train.txt"))


def test_trial_rows_from_file_codes_equal_name_by_name_and_name_a_missing_file():
    """Trials as read_trials gives them (each file once, with indices) map to the rows that looking up every
    trial's names gives; a file without an embedding is named either way."""
    emb = random_embeddings(12, 8)
    plain = random_trials(emb.keys, 50)
    coded = Trials(plain.labels, plain.enroll, plain.test, *file_codes(plain.enroll, plain.test))
    by_name, by_code = trial_rows(emb, {"a": plain})["a"], trial_rows(emb, {"a": coded})["a"]
    np.testing.assert_array_equal(by_name[0], by_code[0])
    np.testing.assert_array_equal(by_name[1], by_code[1])
    assert [emb.keys[i] for i in by_code[0]] == plain.enroll
    missing = Trials(None, ["nope.wav"], [emb.keys[0]], *file_codes(["nope.wav"], [emb.keys[0]]))
    with pytest.raises(DataError, match="nope.wav"):
        trial_rows(emb, {"a": missing})
