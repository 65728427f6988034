"""The files each data-parallel process embeds (evaluation/shares.py): whole chunks of the batch plan, the same
chunks whatever the number of processes, near-equal work, every file once; embedded apart with their chunks, the
shares give one extraction's embeddings bit for bit, at the default batching too."""
import numpy as np
import pytest
import torch

from core.audio import frames_to_samples
from core.options import defaults
from evaluation.embeddings import merge_embeddings
from evaluation.pipeline import extract_files
from evaluation.shares import extraction_samples, extraction_shares, file_shares, split_by_work, split_chunks
from tests.conftest import LENGTHS
from tests.evaluation.test_extraction import Probe, batch_trace, write_varied_corpus


@pytest.fixture(scope="module")
def varied(tmp_path_factory):
    """120 files of 6,000..64,000 samples: (root, keys, lengths); tests/evaluation/test_extraction.py."""
    root = tmp_path_factory.mktemp("varied")
    return (str(root), *write_varied_corpus(root))


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


def test_whole_chunks_go_longest_first_to_the_least_loaded():
    chunks, work = [0, 0, 1, 2, 2, 2, 3], [4, 5, 9, 1, 1, 1, 2]  # chunk work: 9, 9, 3, 2
    assert split_chunks(chunks, work, 2) == [[0, 1, 3, 4, 5], [2, 6]]  # 9 + 3 and 9 + 2
    assert split_chunks(chunks, work, 1) == [list(range(7))]
    assert split_chunks(chunks, work, 5)[4] == []  # more processes than chunks


def test_file_shares_read_the_headers_and_keep_the_order(corpus):
    """Whole files only: a chunk per whole-file batch (5,000 | 12,345 | 3 x 16,000 and 2 x 20,000 | 30,000), dealt
    out longest first; the shares keep the order of the keys."""
    root, keys = corpus
    config = {**defaults(), "eval_frames": 0}
    shares = file_shares(keys, root, config, 2)
    assert sorted(shares[0] + shares[1]) == sorted(keys)
    assert all(share == [k for k in keys if k in share] for share in shares)  # in the order given
    lengths = dict(zip(keys, LENGTHS[::-1], strict=True))
    assert sorted(lengths[k] for k in shares[0]) == [16000] * 3 + [20000] * 2
    assert sorted(lengths[k] for k in shares[1]) == [5000, 12345, 30000]
    assert [s.chunks for s in extraction_shares(keys, root, config, 2)] == [[2] * 5, [0, 3, 1]]
    assert file_shares(keys, "/no/such/folder", config, 1) == [keys]  # one process: no header is read


def test_the_chunks_do_not_depend_on_the_number_of_processes(varied):
    """The default batching on 120 files: every number of processes gets the same chunks, whole, every file once,
    in the order given, within one chunk's work of each other."""
    root, keys, lengths = varied
    config = defaults()
    work = dict(zip(keys, extraction_samples(lengths, config).tolist(), strict=True))
    plans = {}
    for world in (1, 2, 3, 4):
        shares = extraction_shares(keys, root, config, world)
        assert sorted(f for s in shares for f in s.files) == sorted(keys) and all(s.files for s in shares)
        assert all(s.files == [k for k in keys if k in set(s.files)] for s in shares)
        plans[world] = {f: c for s in shares for f, c in zip(s.files, s.chunks, strict=True)}
        owners = {c: {rank for rank, s in enumerate(shares) if c in s.chunks} for c in plans[world].values()}
        assert all(len(ranks) == 1 for ranks in owners.values())  # a chunk goes to one process
        loads = [sum(work[f] for f in s.files) for s in shares]
        biggest = max(sum(work[f] for f in keys if plans[world][f] == c) for c in owners)
        assert max(loads) - min(loads) <= biggest
    assert plans[1] == plans[2] == plans[3] == plans[4] and len(set(plans[1].values())) >= 4


def test_shares_embedded_with_their_chunks_run_one_extractions_batches(varied):
    """The default batching (60 s, 5 crops of 300 frames) on 120 files, through an encoder whose embeddings say
    which batch made them: the shares of 2 and 3 processes, each embedded with its files' chunks, give one
    extraction's embeddings exactly; files dealt out one by one (not whole chunks) do not."""
    root, keys, lengths = varied
    config = {**defaults(), "nDataLoaderThread": 0}
    cpu = torch.device("cpu")
    one = extract_files(config, keys, root, Probe(), cpu, verbose=False)
    for world in (2, 3):
        shares = extraction_shares(keys, root, config, world)
        merged = merge_embeddings([extract_files(config, s.files, root, Probe(), cpu, verbose=False,
                                                 chunks=s.chunks) for s in shares], keys)
        np.testing.assert_array_equal(merged.embeddings, one.embeddings)
        np.testing.assert_array_equal(merged.crop_embeddings, one.crop_embeddings)
    by_file = [[keys[i] for i in share] for share in split_by_work(extraction_samples(lengths, config), 2)]
    apart = merge_embeddings([extract_files(config, files, root, Probe(), cpu, verbose=False) for files in by_file],
                             keys)  # files dealt out one by one: other batches
    assert not np.array_equal(apart.embeddings, one.embeddings)
    assert not np.array_equal(apart.crop_embeddings, one.crop_embeddings)


@pytest.mark.parametrize("batch_seconds,world", [(2.5, 2), (0.01, 3)])
def test_shares_embedded_apart_give_one_extractions_embeddings(tiny_model, corpus, monkeypatch, batch_seconds, world):
    """The tiny model, bit for bit: batched (2.5 s: padded whole-file batches, crops of 3 files together, two chunks
    of the 8 files; the default 60 s makes them one chunk) and one input per forward pass (a chunk per file)."""
    encoder, _ = tiny_model
    root, keys = corpus
    config = {**defaults(), "eval_frames": 40, "num_eval": 2, "nDataLoaderThread": 0,
              "eval_batch_seconds": batch_seconds}
    cpu = torch.device("cpu")
    trace = batch_trace(monkeypatch)
    one = extract_files(config, keys, root, encoder, cpu, verbose=False)
    if batch_seconds > 1:
        lengths = dict(zip(keys, LENGTHS[::-1], strict=True))
        whole = [sorted(lengths[keys[i]] for i in files) for kind, files in trace if kind == "whole"]
        assert [16000, 20000] in whole and max(len(files) for kind, files in trace if kind == "crops") == 3
    shares = extraction_shares(keys, root, config, world)
    assert all(share.files for share in shares)  # every process has work
    merged = merge_embeddings([extract_files(config, share.files, root, encoder, cpu, verbose=False,
                                             chunks=share.chunks) for share in shares], keys)
    assert merged.keys == one.keys
    np.testing.assert_array_equal(merged.embeddings, one.embeddings)
    np.testing.assert_array_equal(merged.crop_embeddings, one.crop_embeddings)
    np.testing.assert_array_equal(merged.durations, one.durations)
