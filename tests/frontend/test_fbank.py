"""w2v-BERT 2.0's input features made from the waveform (frontend/fbank.py) against the two references: the folder's
``SeamlessM4TFeatureExtractor`` (transformers, NumPy, float64 spectra rounded to float32) and torchaudio's
Kaldi-compatible ``fbank`` (float32). Measured here: the log-mel energies equal the extractor's to ~2e-6 (ours are
float64 too) and torchaudio's to ~4e-4 (its float32 rounding on the 16-bit scale); after the per-bin
normalisation the features equal the extractor's to ~1e-5 on noise, ~4e-4 on a pure tone (bins of tiny variance
magnify the extractor's own float32 statistics)."""
import numpy as np
import pytest
import torch
import torchaudio.compliance.kaldi as kaldi
from transformers import SeamlessM4TFeatureExtractor

from frontend.fbank import INT16_SCALE, fbank_frames, kaldi_fbank, kaldi_mel_banks, min_samples, w2vbert_features


def waves(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in lengths]


def tone(n=16000, seed=0):
    noise = 0.01 * np.random.default_rng(seed).standard_normal(n)
    return (0.5 * np.sin(2 * np.pi * 440 * np.arange(n) / 16000) + noise).astype(np.float32)


def padded(rows):
    lengths = torch.tensor([len(w) for w in rows])
    batch = torch.zeros(len(rows), int(lengths.max()))
    for i, w in enumerate(rows):
        batch[i, :len(w)] = torch.from_numpy(w)
    return batch, lengths


def test_mel_filters_are_the_extractors_and_kaldis():
    ours = kaldi_mel_banks(80)
    assert ours.shape == (80, 257) and (ours[:, -1] == 0).all()
    np.testing.assert_allclose(ours.numpy().T, SeamlessM4TFeatureExtractor().mel_filters, atol=1e-12)
    theirs, _ = kaldi.get_mel_banks(80, 512, 16000.0, 20.0, 0.0, 100.0, -500.0, 1.0)  # torchaudio's, float32
    torch.testing.assert_close(ours[:, :256].float(), theirs, atol=1e-4, rtol=0)


@pytest.mark.parametrize("kind", ["noise", "tone"])
def test_log_mel_energies_match_both_references(kind):
    wav = waves([12345])[0] if kind == "noise" else tone()
    ours = kaldi_fbank(torch.from_numpy(wav)[None] * INT16_SCALE, 80)[0]
    extractor = SeamlessM4TFeatureExtractor()._extract_fbank_features(wav)
    reference = kaldi.fbank(torch.from_numpy(wav)[None] * INT16_SCALE, num_mel_bins=80, dither=0.0)
    assert ours.shape == reference.shape == extractor.shape == (1 + (len(wav) - 400) // 160, 80)
    assert np.abs(ours.numpy() - extractor).max() <= 1e-5
    assert (ours.float() - reference).abs().max() <= 1e-3


@pytest.mark.parametrize("kind", ["noise", "tone"])
def test_features_match_the_feature_extractor(kind):
    """Normalised and stacked (160 values per 20 ms frame): the extractor's input_features on the valid frames."""
    extractor = SeamlessM4TFeatureExtractor()
    for wav in (waves([16000, 12345, 7001]) if kind == "noise" else [tone()]):
        want = extractor(wav, sampling_rate=16000, return_tensors="pt")
        ours, frames = w2vbert_features(torch.from_numpy(wav)[None], None)
        n = int(want["attention_mask"].sum())  # an odd fbank count: the extractor adds a masked half frame
        assert frames.tolist() == [n] and ours.shape == (1, n, 160) and ours.dtype == torch.float32
        tolerance = 1e-4 if kind == "noise" else 1e-3
        assert (ours[0] - want["input_features"][0, :n]).abs().max() <= tolerance


def test_padded_rows_get_their_own_features():
    rows = waves([16000, 12345, 7001, 560], seed=1)
    batch, lengths = padded(rows)
    batch[1, 12345:] = 5.0  # what pads a row must not matter
    features, frames = w2vbert_features(batch, lengths)
    want = SeamlessM4TFeatureExtractor()(rows, sampling_rate=16000, return_tensors="pt", padding=True)
    assert frames.tolist() == want["attention_mask"].sum(1).tolist() == [49, 37, 21, 1]
    for i, wav in enumerate(rows):
        alone, n = w2vbert_features(torch.from_numpy(wav)[None], None)
        torch.testing.assert_close(features[i, :int(n)], alone[0], atol=1e-6, rtol=0)
        assert (features[i, int(n):] == 0).all()
        assert (features[i, :int(n)] - want["input_features"][i, :int(n)]).abs().max() <= 1e-3


def test_frame_counts_and_the_shortest_input():
    assert fbank_frames(torch.tensor([0, 399, 400, 559, 560, 16000])).tolist() == [0, 0, 1, 1, 2, 98]
    assert min_samples(2) == 560 and min_samples(1) == 400
    features, frames = w2vbert_features(torch.randn(1, 560) * 0.1, None)
    assert features.shape == (1, 1, 160) and frames.tolist() == [1]


def test_features_carry_no_gradient_and_ignore_autocast():
    wav = (0.1 * torch.randn(2, 8000)).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features, _ = w2vbert_features(wav, torch.tensor([8000, 6000]))
    plain, _ = w2vbert_features(wav.detach(), torch.tensor([8000, 6000]))
    assert features.dtype == torch.float32 and not features.requires_grad
    assert torch.equal(features, plain)
