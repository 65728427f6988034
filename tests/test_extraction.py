"""Batched extraction equals one-file-at-a-time extraction; caps are logged; the cohort tool."""
import logging
import os

import numpy as np
import pytest
import soundfile
import torch

from DatasetLoader import DataError, eval_crops, load_audio, whole_file_pieces
from SpeakerNet import SpeakerNet
from tools.config import defaults
from tools.evaluation import load_embeddings
from tools.extraction import extract_embeddings
from tools.make_cohort import main as make_cohort_main

# lengths in samples: several exactly equal (batched together), others unique, one short
# file (wrap-padded crops) and one beyond the 1.5 s cap used below
LENGTHS = [16000, 20000, 16000, 12345, 20000, 16000, 30000, 5000]


MODEL_OPTIONS = {"nOut": 16, "head_nb": 2, "compression_dim": 8, "nClasses": 3}


def save_tiny_model(checkpoint, path):
    """A random SpeakerNet (tiny WavLM + MHFA) saved as a model file; returns its encoder and the CLI options."""
    torch.manual_seed(0)
    net = SpeakerNet(**{**defaults(), **MODEL_OPTIONS, "pretrained_model_path": checkpoint})
    torch.save({"model": net.state_dict()}, path)
    options = [f"--{k}={v}" for k, v in MODEL_OPTIONS.items()]
    return net.encoder.eval(), options + ["--pretrained_model_path", checkpoint, "--initial_model", str(path)]


@pytest.fixture(scope="module")
def model(tiny_checkpoint, tmp_path_factory):
    return save_tiny_model(tiny_checkpoint, tmp_path_factory.mktemp("model") / "m.model")


@pytest.fixture(scope="module")
def encoder(model):
    return model[0]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("wavs")
    rng = np.random.default_rng(0)
    keys = []
    for i, n in enumerate(LENGTHS):
        key = f"id{i % 3}/v/{i}.wav"
        os.makedirs(root / os.path.dirname(key), exist_ok=True)
        soundfile.write(str(root / key), (0.1 * rng.standard_normal(n)).astype(np.float32), 16000)
        keys.append(key)
    return str(root), keys[::-1]  # not in length order


def one_by_one(encoder, root, keys, eval_frames, num_eval, cap):
    """Reference: each file alone, crops and whole file as separate forward passes."""
    whole, crops = [], []
    with torch.no_grad():
        for key in keys:
            audio = load_audio(os.path.join(root, key))
            whole.append(encoder(torch.from_numpy(audio[:cap])[None])[0].numpy())
            if eval_frames:
                crops.append(np.stack([encoder(torch.from_numpy(c)[None])[0].numpy()
                                       for c in eval_crops(audio, eval_frames, num_eval)]))
    return np.stack(whole), (np.stack(crops) if crops else None)


@pytest.mark.parametrize("eval_frames,batch_seconds", [(40, 60.0), (40, 1.3), (0, 60.0)])
def test_batched_equals_one_by_one(encoder, corpus, eval_frames, batch_seconds, caplog):
    root, keys = corpus
    with caplog.at_level(logging.INFO):
        got = extract_embeddings(encoder, keys, root, eval_frames, 3, 1.5, torch.device("cpu"), verbose=False,
                                 batch_seconds=batch_seconds)
    whole, crops = one_by_one(encoder, root, keys, eval_frames, 3, 24000)
    assert got.keys == keys
    np.testing.assert_allclose(got.embeddings, whole, atol=1e-4, rtol=0)
    if eval_frames:
        assert got.crop_embeddings.shape == (len(keys), 3, 16)
        np.testing.assert_allclose(got.crop_embeddings, crops, atol=1e-4, rtol=0)
    else:
        assert got.crop_embeddings is None
    capped = [r.getMessage() for r in caplog.records if "max_eval_seconds" in r.getMessage()]
    assert len(capped) == 1 and "id0/v/6.wav" in capped[0]  # the 30000-sample file, logged once


@pytest.mark.parametrize("length,cap", [(30000, 24000), (48001, 16000), (48000, 16000), (7, 3), (100, 100)])
def test_whole_file_pieces(length, cap):
    assert whole_file_pieces(length, cap, "cut") == [(0, min(length, cap))]
    pieces = whole_file_pieces(length, cap, "chunks")
    sizes = [b - a for a, b in pieces]
    assert pieces[0][0] == 0 and pieces[-1][1] == length  # the whole file, in order, no gap or overlap
    assert all(pieces[k][1] == pieces[k + 1][0] for k in range(len(pieces) - 1))
    assert max(sizes) <= cap and max(sizes) - min(sizes) <= 1 and len(pieces) == -(-length // cap)
    assert whole_file_pieces(length, None, "chunks") == [(0, length)]
    with pytest.raises(ValueError, match="eval_long_files"):
        whole_file_pieces(length, cap, "split")


def test_long_files_in_chunks(encoder, corpus, caplog):
    """chunks: a file over the cap is the length-weighted mean of its pieces' embeddings; others unchanged."""
    root, keys = corpus
    with caplog.at_level(logging.INFO):
        got = extract_embeddings(encoder, keys, root, 40, 3, 1.5, torch.device("cpu"), verbose=False,
                                 long_files="chunks")
    cut = extract_embeddings(encoder, keys, root, 40, 3, 1.5, torch.device("cpu"), verbose=False)
    long_row = keys.index("id0/v/6.wav")  # 30000 samples > 24000: two pieces of 15000
    audio = load_audio(os.path.join(root, keys[long_row]))
    with torch.no_grad():
        pieces = [encoder(torch.from_numpy(audio[a:b])[None])[0].numpy() for a, b in ((0, 15000), (15000, 30000))]
    np.testing.assert_allclose(got.embeddings[long_row], np.mean(pieces, axis=0), atol=1e-4, rtol=0)
    assert np.abs(got.embeddings[long_row] - cut.embeddings[long_row]).max() > 1e-3  # all of the file is used
    others = [i for i in range(len(keys)) if i != long_row]
    np.testing.assert_allclose(got.embeddings[others], cut.embeddings[others], atol=1e-5, rtol=0)
    np.testing.assert_allclose(got.crop_embeddings, cut.crop_embeddings, atol=1e-5, rtol=0)
    logged = [r.getMessage() for r in caplog.records if "pieces" in r.getMessage()]
    assert len(logged) == 1 and "id0/v/6.wav" in logged[0] and "2 pieces" in logged[0]


def test_encoder_mode_restored_and_missing_file(encoder, corpus):
    root, keys = corpus
    encoder.train()
    extract_embeddings(encoder, keys[:2], root, 0, 1, 0, torch.device("cpu"), verbose=False)
    assert encoder.training
    encoder.eval()
    with pytest.raises(DataError, match="missing.wav"):
        extract_embeddings(encoder, ["missing.wav"], root, 0, 1, 0, torch.device("cpu"), verbose=False)


def test_make_cohort_from_embeddings_and_from_model(model, encoder, corpus, tmp_path):
    root, keys = corpus
    train_list = tmp_path / "train.txt"
    train_list.write_text("".join(f"{k.split('/')[0]} {k}\n" for k in keys))
    whole = extract_embeddings(encoder, keys, root, 0, 1, 0, torch.device("cpu"), verbose=False)
    np.savez(tmp_path / "e.npz", keys=np.array(keys), embeddings=whole.embeddings)
    make_cohort_main(["--embeddings", str(tmp_path / "e.npz"), "--train_list", str(train_list),
                      "--out", str(tmp_path / "c.npz")])
    cohort = load_embeddings(str(tmp_path / "c.npz"))
    assert cohort.keys == ["id0", "id1", "id2"]
    for s, speaker in enumerate(cohort.keys):
        rows = [i for i, k in enumerate(keys) if k.startswith(speaker + "/")]
        np.testing.assert_allclose(cohort.embeddings[s], whole.embeddings[rows].mean(axis=0), atol=1e-6)
    make_cohort_main([*model[1], "--train_list", str(train_list), "--train_path", root, "--max_eval_seconds", "0",
                      "--nDataLoaderThread", "0", "--out", str(tmp_path / "c2.npz")])
    from_model = load_embeddings(str(tmp_path / "c2.npz"))
    assert from_model.keys == cohort.keys
    np.testing.assert_allclose(from_model.embeddings, cohort.embeddings, atol=1e-4)
    with pytest.raises(SystemExit):
        make_cohort_main(["--embeddings", str(tmp_path / "e.npz"), "--train_list", str(tmp_path / "none.txt"),
                          "--out", str(tmp_path / "c3.npz")])


def test_whole_files_of_near_lengths_share_a_padded_batch(encoder, corpus):
    root, keys = corpus
    calls = []

    class Spy(torch.nn.Module):
        def forward(self, wav, lengths=None):
            calls.append(None if lengths is None else lengths.tolist())
            return encoder(wav, lengths)

    got = extract_embeddings(Spy(), keys, root, 0, 1, 1.5, torch.device("cpu"), verbose=False)
    padded = [c for c in calls if c is not None]
    assert [16000, 16000, 16000, 20000, 20000] in padded  # within pad_ratio 1.25
    assert all(max(c) <= 1.25 * min(c) for c in padded)
    whole, _ = one_by_one(encoder, root, keys, 0, 1, 24000)
    np.testing.assert_allclose(got.embeddings, whole, atol=1e-4, rtol=0)
