"""Evaluation input (evaluation/dataset.py): crop starts of the original protocol, whole-file pieces."""
import numpy as np
import pytest

from evaluation.dataset import eval_crop_starts, eval_crops, whole_file_pieces


def test_eval_crops_evenly_spaced():
    audio = np.arange(100000, dtype=np.float32)
    starts = eval_crop_starts(100000, 32240, 5)
    assert starts[0] == 0 and starts[-1] == 100000 - 32240
    assert np.allclose(np.diff(starts), (100000 - 32240) / 4, atol=1)
    crops = eval_crops(audio, 200, 5)
    assert crops.shape == (5, 32240) and np.array_equal(crops[:, 0], starts.astype(np.float32))
    assert eval_crops(audio, 0, 5).shape == (1, 100000)  # whole file
    assert eval_crops(audio[:1000], 200, 3).shape == (3, 32240)  # short file: wrap-padded


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


@pytest.mark.parametrize("length", [16000, 16240, 16241, 30000])
def test_eval_crops_of_short_files_as_the_original(length):
    """Files of length <= crop are wrap-padded to crop + 1, so the last crop of a short file starts at sample 1."""
    audio = np.arange(length, dtype=np.float32)
    crops = eval_crops(audio, 100, 5)  # crop = 16240 samples
    padded = max(length, 16241)
    starts = np.linspace(0, padded - 16240, 5).astype(np.int64)
    assert crops.shape == (5, 16240)
    np.testing.assert_array_equal(crops[:, 0], starts)
    np.testing.assert_array_equal(crops[:, -1], (starts + 16239) % length)  # wrapped around past the end
    if length <= 16240:
        assert list(starts) == [0, 0, 0, 0, 1]
