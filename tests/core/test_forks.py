"""Work beside the caller in a forked process (core/forks.py), and the score file written that way."""
import mmap

import numpy as np
import pytest

from core.errors import OutputError
from core.forks import Forked
from core.options import defaults
from evaluation import pipeline
from evaluation.reports import read_score_file
from tests.fakes import random_trials


def test_forked_work_gives_back_through_shared_memory_and_reports_its_error():
    shared = mmap.mmap(-1, 8 * 4)
    out = np.frombuffer(shared, np.float64, 4)
    done = Forked(lambda: out.__setitem__(slice(None), [1.0, 2.0, 3.0, 4.0]))
    assert done.join() is None and done.join() is None  # idempotent
    assert out.tolist() == [1.0, 2.0, 3.0, 4.0]
    copied = np.zeros(2)
    assert Forked(lambda: copied.__setitem__(0, 5.0)).join() is None and copied[0] == 0.0  # its memory stays there

    def fails():
        raise OutputError("Cannot write '/no/such/folder/scores.txt': no such folder")

    assert Forked(fails).join() == "Cannot write '/no/such/folder/scores.txt': no such folder"


def test_a_score_file_written_aside_equals_one_written_in_line_and_its_error_is_raised(tmp_path):
    """report(aside=True): the same score file, metrics and threshold file as in line; a score file that cannot be
    written is the OutputError the writer raised, naming the file."""
    keys = [f"id{i // 3}/f{i}.wav" for i in range(12)]
    trials = random_trials(keys, n=40, seed=3)
    scores = np.random.default_rng(0).normal(size=40)
    outputs = {}
    for aside in (False, True):
        config = {**defaults(), "config": "", "score_file": str(tmp_path / f"{aside}.txt")}
        result, curve = pipeline.report(config, "O", trials, scores, False, aside=aside)
        outputs[aside] = (result["eer"], (tmp_path / f"{aside}.txt").read_text(), curve.name)
    assert outputs[True] == outputs[False]
    labels, read, pairs = read_score_file(str(tmp_path / "True.txt"))
    assert labels.tolist() == trials.labels.tolist() and np.allclose(read, scores, atol=5e-7)
    config = {**defaults(), "config": "", "score_file": str(tmp_path / "none" / "s.txt")}
    with pytest.raises(OutputError, match="none/s.txt"):
        pipeline.report(config, "O", trials, scores, False, aside=True)
