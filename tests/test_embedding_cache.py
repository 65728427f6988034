import os

import numpy as np

from tools.embedding_cache import cache_path, cached_embeddings
from tools.evaluation import Embeddings

CONFIG = {"eval_frames": 200, "num_eval": 5, "max_eval_seconds": 43.75, "eval_long_files": "cut",
          "eval_autocast": False}


def counting_extractor(calls):
    def extract():
        calls.append(1)
        rng = np.random.default_rng(len(calls))
        return Embeddings(["a.wav", "b.wav"], rng.normal(size=(2, 4)).astype(np.float32),
                          rng.normal(size=(2, 5, 4)).astype(np.float32))
    return extract


def test_second_evaluation_reads_the_cache(tmp_path):
    model = tmp_path / "model000000001.model"
    model.write_bytes(b"weights")
    calls = []
    first = cached_embeddings(str(model), "wavs", ["a.wav", "b.wav"], CONFIG, counting_extractor(calls))
    second = cached_embeddings(str(model), "wavs", ["a.wav", "b.wav"], CONFIG, counting_extractor(calls))
    assert len(calls) == 1
    np.testing.assert_array_equal(first.embeddings, second.embeddings)
    np.testing.assert_array_equal(first.crop_embeddings, second.crop_embeddings)
    assert second.keys == ["a.wav", "b.wav"]
    assert os.path.isfile(cache_path(str(model), "wavs", ["a.wav", "b.wav"], CONFIG))
    assert not [f for f in os.listdir(tmp_path) if ".tmp-" in f]


def test_cache_key_follows_model_files_and_protocol(tmp_path):
    model = tmp_path / "m.model"
    model.write_bytes(b"weights")
    base = cache_path(str(model), "wavs", ["a.wav"], CONFIG)
    assert cache_path(str(model), "wavs", ["a.wav", "b.wav"], CONFIG) != base
    assert cache_path(str(model), "other", ["a.wav"], CONFIG) != base
    assert cache_path(str(model), "wavs", ["a.wav"], {**CONFIG, "num_eval": 10}) != base
    assert cache_path(str(model), "wavs", ["a.wav"], {**CONFIG, "eval_long_files": "chunks"}) != base
    model.write_bytes(b"retrained weights")  # a new checkpoint under the same name
    assert cache_path(str(model), "wavs", ["a.wav"], CONFIG) != base


def test_cache_that_cannot_be_written_does_not_stop_evaluation(tmp_path, caplog):
    model = tmp_path / "m.model"
    model.write_bytes(b"weights")
    os.makedirs(cache_path(str(model), "wavs", ["a.wav", "b.wav"], CONFIG) + "/blocker")  # a folder in the way
    calls = []
    emb = cached_embeddings(str(model), "wavs", ["a.wav", "b.wav"], CONFIG, counting_extractor(calls))
    assert len(calls) == 1 and emb.embeddings.shape == (2, 4)
    assert "Could not write the embedding cache" in caplog.text
    assert not [f for f in os.listdir(tmp_path) if ".tmp-" in f]
