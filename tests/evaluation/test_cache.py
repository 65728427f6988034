"""The embedding cache (evaluation/cache.py): a second evaluation reads it; its key follows the model file and
every option that changes embeddings; it lives in the run's folder, never next to the model file; data-parallel
processes cache their shares, and rank 0 the entry a single process reads."""
import os

import numpy as np
import pytest
import torch

from core import distributed
from core.distributed import Context
from core.options import CACHE, OPTIONS, defaults, with_role
from evaluation.cache import cache_key, cache_path, cached_embeddings
from evaluation.embeddings import Embeddings, load_embeddings
from evaluation.pipeline import shared_embeddings
from evaluation.shares import file_shares


@pytest.fixture
def config(tmp_path):
    return {**defaults(), "save_path": str(tmp_path / "run")}


def counting_extractor(calls):
    def extract():
        calls.append(1)
        rng = np.random.default_rng(len(calls))
        return Embeddings(["a.wav", "b.wav"], rng.normal(size=(2, 4)).astype(np.float32),
                          rng.normal(size=(2, 5, 4)).astype(np.float32))
    return extract


def test_second_evaluation_reads_the_cache(tmp_path, config):
    model = tmp_path / "model000000001.model"
    model.write_bytes(b"weights")
    calls = []
    first = cached_embeddings(str(model), "wavs", ["a.wav", "b.wav"], config, counting_extractor(calls))
    second = cached_embeddings(str(model), "wavs", ["a.wav", "b.wav"], config, counting_extractor(calls))
    assert len(calls) == 1
    np.testing.assert_array_equal(first.embeddings, second.embeddings)
    np.testing.assert_array_equal(first.crop_embeddings, second.crop_embeddings)
    assert second.keys == ["a.wav", "b.wav"]
    assert os.path.isfile(cache_path(str(model), "wavs", ["a.wav", "b.wav"], config))
    assert not [f for f in os.listdir(tmp_path / "run" / "embedding_cache") if ".tmp-" in f]


def test_cache_is_written_in_the_run_folder_not_beside_the_model(tmp_path, config):
    colleague = tmp_path / "colleague"
    colleague.mkdir()
    model = colleague / "m.model"
    model.write_bytes(b"weights")
    cached_embeddings(str(model), "wavs", ["a.wav", "b.wav"], config, counting_extractor([]))
    assert os.listdir(colleague) == ["m.model"]  # nothing written next to someone else's file
    assert len(os.listdir(tmp_path / "run" / "embedding_cache")) == 1
    elsewhere = {**config, "embedding_cache_dir": str(tmp_path / "cache")}
    cached_embeddings(str(model), "wavs", ["a.wav", "b.wav"], elsewhere, counting_extractor([]))
    assert os.path.dirname(cache_path(str(model), "wavs", ["a.wav"], elsewhere)) == str(tmp_path / "cache")
    assert len(os.listdir(tmp_path / "cache")) == 1


def test_cache_key_follows_model_files_and_protocol(tmp_path, config):
    model = tmp_path / "m.model"
    model.write_bytes(b"weights")
    base = cache_path(str(model), "wavs", ["a.wav"], config)
    assert cache_path(str(model), "wavs", ["a.wav", "b.wav"], config) != base
    assert cache_path(str(model), "other", ["a.wav"], config) != base
    assert cache_path(str(model), "wavs", ["a.wav"], {**config, "num_eval": 10}) != base
    assert cache_path(str(model), "wavs", ["a.wav"], {**config, "eval_long_files": "chunks"}) != base
    # the defect of the hand-kept key list: flipping normalize_input returned the old embeddings
    assert cache_path(str(model), "wavs", ["a.wav"], {**config, "normalize_input": True}) != base
    assert cache_path(str(model), "wavs", ["a.wav"], {**config, "margin": 0.5}) == base  # training-only option
    model.write_bytes(b"retrained weights")  # a new checkpoint under the same name
    assert cache_path(str(model), "wavs", ["a.wav"], config) != base


def test_the_key_holds_exactly_the_options_declared_for_it(tmp_path, config):
    """The options of the key are those of role ``cache`` (core.options.ROLES), apart from the model file's
    fields: the option ``model`` does not replace the model file's path."""
    model = tmp_path / "m.model"
    model.write_bytes(b"weights")
    key = cache_key(str(model), "wavs", ["a.wav"], config)
    assert set(key["options"]) == set(with_role(CACHE)) and "frontend_kernels" in key["options"]
    assert key["model"] == str(model) and key["options"]["model"] == "MHFA"
    other = tmp_path / "other"
    other.mkdir()
    (other / "m.model").write_bytes(b"weights")
    os.utime(other / "m.model", ns=(model.stat().st_atime_ns, model.stat().st_mtime_ns))  # a copy keeping its time
    assert cache_path(str(other / "m.model"), "wavs", ["a.wav"], config) != cache_path(str(model), "wavs", ["a.wav"],
                                                                                       config)


@pytest.mark.parametrize("option", [o for o in OPTIONS if CACHE in o.roles], ids=lambda o: o.name)
def test_every_option_that_changes_embeddings_changes_the_key(tmp_path, config, option):
    model = tmp_path / "m.model"
    model.write_bytes(b"weights")
    changed = {bool: lambda v: not v, int: lambda v: v + 1, float: lambda v: v + 0.5,
               str: lambda v: v + "x" if v not in ("cut", "chunks") else {"cut": "chunks", "chunks": "cut"}[v],
               type(None): lambda v: 16,  # an option unset by default (head_nb: the model's own default)
               list: lambda v: [*v, "x"], tuple: lambda v: (*v, "x")}  # lora_targets
    value = changed[type(option.default)](option.default)
    assert (cache_path(str(model), "wavs", ["a.wav"], {**config, option.name: value})
            != cache_path(str(model), "wavs", ["a.wav"], config))


def test_cache_that_cannot_be_written_does_not_stop_evaluation(tmp_path, config, caplog):
    model = tmp_path / "m.model"
    model.write_bytes(b"weights")
    os.makedirs(cache_path(str(model), "wavs", ["a.wav", "b.wav"], config) + "/blocker")  # a folder in the way
    calls = []
    emb = cached_embeddings(str(model), "wavs", ["a.wav", "b.wav"], config, counting_extractor(calls))
    assert len(calls) == 1 and emb.embeddings.shape == (2, 4)
    assert "Could not write the embedding cache" in caplog.text
    assert not [f for f in os.listdir(os.path.dirname(cache_path(str(model), "wavs", ["a.wav"], config)))
                if ".tmp-" in f]


def test_data_parallel_processes_cache_their_shares_and_rank_0_all_the_files(tmp_path, config, corpus, monkeypatch):
    """evaluation/pipeline.py's shared_embeddings, one process at a time (the collectives faked): an interrupted run
    leaves rank 1's share cached; in the next run rank 1 extracts nothing, rank 0 only its share, rank 0 writes the
    entry of all the files (the one a single process reads) and each process removes its share's; after that no
    process extracts at all."""
    root, keys = corpus
    model = tmp_path / "m.model"
    model.write_bytes(b"weights")
    config = {**config, "initial_model": str(model), "test_path": root, "eval_frames": 0}  # 4 chunks of the batch plan
    shares = file_shares(keys, root, config, 2)
    rng = np.random.default_rng(0)
    rows = {key: rng.normal(size=4).astype(np.float32) for key in keys}
    extracted = []

    def extract(files, chunks=None):
        extracted.append(list(files))
        return Embeddings(list(files), np.stack([rows[k] for k in files]), None)

    gathered = []  # what rank 0 receives from rank 1
    monkeypatch.setattr(distributed, "barrier", lambda context: None)
    monkeypatch.setattr(distributed, "all_gather",
                        lambda obj, context: [obj, *gathered] if context.main else None)
    monkeypatch.setattr(distributed, "everywhere", lambda obj, context: [obj] * context.world)
    cpu = torch.device("cpu")
    share_path = [cache_path(str(model), root, share, config) for share in shares]
    whole = cache_path(str(model), root, keys, config)

    assert shared_embeddings(config, keys, extract, Context(1, 2, cpu), True) is None  # rank 0 never finished
    assert extracted == [shares[1]] and os.path.isfile(share_path[1]) and not os.path.exists(whole)
    extracted.clear()
    gathered.append(load_embeddings(share_path[1]))  # the next run: rank 1 sends its cached share
    emb = shared_embeddings(config, keys, extract, Context(0, 2, cpu), True)
    assert extracted == [shares[0]] and emb.keys == keys
    np.testing.assert_array_equal(emb.embeddings, np.stack([rows[k] for k in keys]))
    assert os.path.isfile(whole) and not os.path.exists(share_path[0])
    monkeypatch.setattr(distributed, "everywhere", lambda obj, context: [False] * context.world)  # (at its start)
    assert shared_embeddings(config, keys, extract, Context(1, 2, cpu), True) is None
    assert extracted == [shares[0]]  # rank 1 read its share's entry
    assert sorted(os.listdir(os.path.dirname(whole))) == [os.path.basename(whole)]  # the shares' entries are gone

    def no_extraction(files, chunks=None):
        raise AssertionError(f"extracted {files} although the cache holds them")

    again = cached_embeddings(str(model), root, keys, config, lambda: no_extraction(keys))  # one process
    np.testing.assert_array_equal(again.embeddings, emb.embeddings)
    monkeypatch.setattr(distributed, "everywhere", lambda obj, context: [obj] * context.world)
    np.testing.assert_array_equal(shared_embeddings(config, keys, no_extraction, Context(0, 2, cpu), True).embeddings,
                                  emb.embeddings)
    assert shared_embeddings(config, keys, no_extraction, Context(1, 2, cpu), True) is None
