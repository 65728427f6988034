"""The files each data-parallel process embeds (evaluation/shares.py): near-equal work, the same split every time,
every file once; embedded apart, the shares give one extraction's embeddings (to float rounding, exactly with one
input per forward pass)."""
import numpy as np
import pytest
import torch

from core.audio import frames_to_samples
from core.options import defaults
from evaluation.embeddings import merge_embeddings
from evaluation.pipeline import extract_files
from evaluation.shares import extraction_samples, file_shares, split_by_work
from tests.conftest import LENGTHS


def test_longest_first_to_the_least_loaded():
    work = [5, 9, 1, 7, 3, 3, 8]
    shares = split_by_work(work, 3)
    # by index (work): 1 (9) -> rank 0, 6 (8) -> 1, 3 (7) -> 2, 0 (5) -> 2 (load 7, the least), 4 (3) -> 1 (8),
    # 5 (3) -> 0 (9), 2 (1) -> 1 (loads 12, 11, 12): 12 each
    assert shares == [[1, 5], [2, 4, 6], [0, 3]]
    assert sorted(i for share in shares for i in share) == list(range(len(work)))
    loads = [sum(work[i] for i in share) for share in shares]
    assert max(loads) - min(loads) <= max(work)  # within one file of each other
    assert split_by_work(work, 3) == shares  # deterministic
    assert split_by_work(work, 1) == [list(range(len(work)))]


def test_equal_work_goes_round_the_ranks_and_extra_processes_get_nothing():
    assert split_by_work([4, 4, 4, 4], 2) == [[0, 2], [1, 3]]
    assert split_by_work([2, 1], 3) == [[0], [1], []]
    with pytest.raises(ValueError, match="world"):
        split_by_work([1], 0)


def test_the_work_of_a_file_is_what_the_model_sees():
    config = {**defaults(), "max_eval_seconds": 2.0, "eval_frames": 100, "num_eval": 3}
    crops = 3 * frames_to_samples(100)
    assert extraction_samples([16000, 64000], config).tolist() == [16000 + crops, 32000 + crops]  # cut at 2 s
    chunks = {**config, "eval_long_files": "chunks"}
    assert extraction_samples([64000], chunks).tolist() == [64000 + crops]  # every piece is embedded
    whole_only = {**config, "eval_frames": 0, "max_eval_seconds": 0}
    assert extraction_samples([64000], whole_only).tolist() == [64000]


def test_file_shares_read_the_headers_and_keep_the_order(corpus):
    root, keys = corpus
    config = {**defaults(), "eval_frames": 0}
    shares = file_shares(keys, root, config, 2)
    assert sorted(shares[0] + shares[1]) == sorted(keys)
    assert all(share == [k for k in keys if k in share] for share in shares)  # in the order given
    lengths = dict(zip(keys, LENGTHS[::-1], strict=True))
    loads = [sum(lengths[k] for k in share) for share in shares]
    assert abs(loads[0] - loads[1]) <= max(LENGTHS)
    assert file_shares(keys, "/no/such/folder", config, 1) == [keys]  # one process: no header is read


@pytest.mark.parametrize("batch_seconds", [60.0, 0.01])
def test_shares_embedded_apart_give_one_extractions_embeddings(tiny_model, corpus, batch_seconds):
    """Batches of other files than one process's change the last bits of an embedding (padding, batch size): to
    1e-6 by default; with one input per forward pass (eval_batch_seconds below a crop) exactly."""
    encoder, _ = tiny_model
    root, keys = corpus
    config = {**defaults(), "eval_frames": 40, "num_eval": 2, "nDataLoaderThread": 0,
              "eval_batch_seconds": batch_seconds}
    cpu = torch.device("cpu")
    one = extract_files(config, keys, root, encoder, cpu, verbose=False)
    parts = [extract_files(config, share, root, encoder, cpu, verbose=False)
             for share in file_shares(keys, root, config, 3)]
    merged = merge_embeddings(parts, keys)
    assert merged.keys == one.keys
    tolerance = 1e-6 if batch_seconds > 1 else 0.0
    np.testing.assert_allclose(merged.embeddings, one.embeddings, rtol=0, atol=tolerance)
    np.testing.assert_allclose(merged.crop_embeddings, one.crop_embeddings, rtol=0, atol=tolerance)
    np.testing.assert_array_equal(merged.durations, one.durations)
