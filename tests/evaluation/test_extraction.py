"""Batched extraction equals one-file-at-a-time extraction; caps are logged; the cohort tool."""
import logging
import os

import numpy as np
import pytest
import torch

from core.audio import load_audio
from core.errors import DataError
from evaluation.dataset import eval_crops
from evaluation.extraction import extract_embeddings


def one_by_one(tiny_encoder, root, keys, eval_frames, num_eval, cap):
    """Reference: each file alone, crops and whole file as separate forward passes."""
    whole, crops = [], []
    with torch.no_grad():
        for key in keys:
            audio = load_audio(os.path.join(root, key))
            whole.append(tiny_encoder(torch.from_numpy(audio[:cap])[None])[0].numpy())
            if eval_frames:
                crops.append(np.stack([tiny_encoder(torch.from_numpy(c)[None])[0].numpy()
                                       for c in eval_crops(audio, eval_frames, num_eval)]))
    return np.stack(whole), (np.stack(crops) if crops else None)


@pytest.mark.parametrize("eval_frames,batch_seconds", [(40, 60.0), (40, 1.3), (0, 60.0)])
def test_batched_equals_one_by_one(tiny_encoder, corpus, eval_frames, batch_seconds, caplog):
    root, keys = corpus
    with caplog.at_level(logging.INFO):
        got = extract_embeddings(tiny_encoder, keys, root, eval_frames, 3, 1.5, torch.device("cpu"), verbose=False,
                                 batch_seconds=batch_seconds)
    whole, crops = one_by_one(tiny_encoder, root, keys, eval_frames, 3, 24000)
    assert got.keys == keys
    np.testing.assert_allclose(got.embeddings, whole, atol=1e-4, rtol=0)
    if eval_frames:
        assert got.crop_embeddings.shape == (len(keys), 3, 16)
        np.testing.assert_allclose(got.crop_embeddings, crops, atol=1e-4, rtol=0)
    else:
        assert got.crop_embeddings is None
    capped = [r.getMessage() for r in caplog.records if "max_eval_seconds" in r.getMessage()]
    assert len(capped) == 1 and "id0/v/6.wav" in capped[0]  # the 30000-sample file, logged once


def test_long_files_in_chunks(tiny_encoder, corpus, caplog):
    """chunks: a file over the cap is the length-weighted mean of its pieces' embeddings; others unchanged."""
    root, keys = corpus
    with caplog.at_level(logging.INFO):
        got = extract_embeddings(tiny_encoder, keys, root, 40, 3, 1.5, torch.device("cpu"), verbose=False,
                                 long_files="chunks")
    cut = extract_embeddings(tiny_encoder, keys, root, 40, 3, 1.5, torch.device("cpu"), verbose=False)
    long_row = keys.index("id0/v/6.wav")  # 30000 samples > 24000: two pieces of 15000
    audio = load_audio(os.path.join(root, keys[long_row]))
    with torch.no_grad():
        pieces = [tiny_encoder(torch.from_numpy(audio[a:b])[None])[0].numpy() for a, b in ((0, 15000), (15000, 30000))]
    np.testing.assert_allclose(got.embeddings[long_row], np.mean(pieces, axis=0), atol=1e-4, rtol=0)
    assert np.abs(got.embeddings[long_row] - cut.embeddings[long_row]).max() > 1e-3  # all of the file is used
    others = [i for i in range(len(keys)) if i != long_row]
    np.testing.assert_allclose(got.embeddings[others], cut.embeddings[others], atol=1e-5, rtol=0)
    np.testing.assert_allclose(got.crop_embeddings, cut.crop_embeddings, atol=1e-5, rtol=0)
    logged = [r.getMessage() for r in caplog.records if "pieces" in r.getMessage()]
    assert len(logged) == 1 and "id0/v/6.wav" in logged[0] and "2 pieces" in logged[0]


def test_encoder_mode_restored_and_missing_file(tiny_encoder, corpus):
    root, keys = corpus
    tiny_encoder.train()
    extract_embeddings(tiny_encoder, keys[:2], root, 0, 1, 0, torch.device("cpu"), verbose=False)
    assert tiny_encoder.training
    tiny_encoder.eval()
    with pytest.raises(DataError, match="missing.wav"):
        extract_embeddings(tiny_encoder, ["missing.wav"], root, 0, 1, 0, torch.device("cpu"), verbose=False)


def test_whole_files_of_near_lengths_share_a_padded_batch(tiny_encoder, corpus):
    root, keys = corpus
    calls = []

    class Spy(torch.nn.Module):
        def forward(self, wav, lengths=None):
            calls.append(None if lengths is None else lengths.tolist())
            return tiny_encoder(wav, lengths)

    got = extract_embeddings(Spy(), keys, root, 0, 1, 1.5, torch.device("cpu"), verbose=False)
    padded = [c for c in calls if c is not None]
    assert [16000, 16000, 16000, 20000, 20000] in padded  # within pad_ratio 1.25
    assert all(max(c) <= 1.25 * min(c) for c in padded)
    whole, _ = one_by_one(tiny_encoder, root, keys, 0, 1, 24000)
    np.testing.assert_allclose(got.embeddings, whole, atol=1e-4, rtol=0)
