"""Kaldi filter-bank input features of a padded batch, as w2v-BERT 2.0's feature extractor makes them.

transformers' ``SeamlessM4TFeatureExtractor`` (the ``preprocessor_config.json`` of a ``wav2vec2-bert`` folder)
turns each waveform, on its own, into the conformer's input:

1. samples on the 16-bit scale (x 32768), cut into 25 ms frames every 10 ms (400 / 160 samples, no padding at the
   edges: Kaldi's ``snip_edges``), per frame: DC offset removed, pre-emphasis 0.97 (the first sample against
   itself), Povey window (Hann^0.85), zero-padded to 512, power spectrum, Kaldi's triangular mel filters
   (``num_mel_bins``, 20 Hz to 8 kHz, triangles in mel space, mel = 1127 ln(1 + f / 700)), natural log floored
   at float32's epsilon; no dither (:func:`kaldi_fbank`; what ``torchaudio.compliance.kaldi.fbank`` computes);
2. per mel bin, zero mean and unit variance over the utterance's frames (unbiased variance, + 1e-7)
   (:func:`normalise_frames`);
3. ``stride`` consecutive frames concatenated into one (80 x 2 = 160 dims, 20 ms); an odd last frame is padding
   (the extractor pads to an even count and masks it) (:func:`stack_frames`).

Here a whole padded batch goes through at once, on its device, each row from its own ``lengths[b]`` samples
(frames are local; the statistics of step 2 are taken over each row's valid frames only), so a padded row gets the
features of its samples alone. The spectra are computed in float64, as the extractor does (NumPy), so the features
match it to float32 rounding; no gradient flows into them (the waveform is the input).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from frontend.frames import pad_mask

FRAME_LENGTH, FRAME_SHIFT, FFT_SIZE = 400, 160, 512  # samples at 16 kHz: 25 ms, 10 ms, the FFT of a frame
PREEMPHASIS = 0.97
LOW_FREQ, HIGH_FREQ = 20.0, 8000.0  # Hz: the mel filters' range (Kaldi's low-freq 20, high-freq 0 = Nyquist)
INT16_SCALE = 2 ** 15  # Kaldi reads 16-bit integer samples
LOG_FLOOR = torch.finfo(torch.float32).eps  # the extractor's mel_floor and torchaudio's epsilon
CMVN_EPS = 1e-7  # added to the variance of each mel bin (the extractor's)


def fbank_frames(lengths: torch.Tensor) -> torch.Tensor:
    """Fbank frames of rows of ``lengths`` samples (snip_edges): floor((n - 400) / 160) + 1, at least 0."""
    return torch.clamp(torch.div(lengths - FRAME_LENGTH, FRAME_SHIFT, rounding_mode="floor") + 1, min=0)


def min_samples(stride: int) -> int:
    """The fewest samples that give one stacked frame: ``stride`` fbank frames (560 for stride 2: 35 ms)."""
    return FRAME_LENGTH + FRAME_SHIFT * (stride - 1)


def kaldi_mel_banks(num_bins: int, device: Optional[torch.device] = None) -> torch.Tensor:
    """Kaldi's mel filters [num_bins, FFT_SIZE / 2 + 1] (float64; the Nyquist bin has weight 0): triangles equally
    spaced in mel between LOW_FREQ and HIGH_FREQ, weight(f) = max(0, min((m - left) / (centre - left),
    (right - m) / (right - centre))) at m = mel(f)."""
    def mel(hz: torch.Tensor) -> torch.Tensor:
        return 1127.0 * torch.log1p(hz / 700.0)

    f64 = dict(dtype=torch.float64, device=device)
    low, high = mel(torch.tensor(LOW_FREQ, **f64)), mel(torch.tensor(HIGH_FREQ, **f64))
    step = (high - low) / (num_bins + 1)
    left = low + step * torch.arange(num_bins, **f64)[:, None]  # [M, 1]
    centre, right = left + step, left + 2 * step
    m = mel(torch.arange(FFT_SIZE // 2 + 1, **f64) * (2 * HIGH_FREQ / FFT_SIZE))[None]  # [1, F]
    banks = torch.clamp(torch.minimum((m - left) / (centre - left), (right - m) / (right - centre)), min=0.0)
    banks[:, -1] = 0.0  # Kaldi's filters span the FFT bins below Nyquist only
    return banks


def kaldi_fbank(wav: torch.Tensor, num_mel_bins: int) -> torch.Tensor:
    """Log mel filter-bank energies of every frame (step 1 of the module docstring) of the samples as given.

    Args:
        wav: [B, N] samples (on the scale Kaldi reads: 16-bit integers), N >= 400.
        num_mel_bins: M.
    Returns:
        [B, T, M] float64, T = floor((N - 400) / 160) + 1; frame t depends on samples 160 t .. 160 t + 399 only.
    """
    frames = wav.double().unfold(1, FRAME_LENGTH, FRAME_SHIFT)  # [B, T, 400]
    frames = frames - frames.mean(dim=-1, keepdim=True)
    frames = torch.cat([frames[..., :1] * (1 - PREEMPHASIS),
                        frames[..., 1:] - PREEMPHASIS * frames[..., :-1]], dim=-1)
    window = torch.hann_window(FRAME_LENGTH, periodic=False, dtype=torch.float64, device=wav.device) ** 0.85
    power = torch.fft.rfft(frames * window, n=FFT_SIZE).abs() ** 2  # [B, T, 257]
    mel = power @ kaldi_mel_banks(num_mel_bins, wav.device).T  # [B, T, M]
    return mel.clamp(min=LOG_FLOOR).log()


def normalise_frames(features: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """Per row and feature, (x - mean) / sqrt(var + 1e-7) over the row's first ``frames[b]`` (>= 2) frames, the
    variance unbiased (divided by n - 1, as torch's default: the extractor's ``var(ddof=1)``); frames past them
    become 0.

    Args:
        features: [B, T, M]; frames: [B] valid frames per row.
    """
    valid = (~pad_mask(frames, features.shape[1]))[..., None].to(features.dtype)  # [B, T, 1]
    count = frames.to(features.dtype)[:, None, None]
    mean = (features * valid).sum(dim=1, keepdim=True) / count
    var = (((features - mean) * valid) ** 2).sum(dim=1, keepdim=True) / (count - 1)
    return (features - mean) / torch.sqrt(var + CMVN_EPS) * valid


def stack_frames(features: torch.Tensor, frames: torch.Tensor, stride: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """``stride`` consecutive frames concatenated: [B, T, M] -> [B, T // stride, M * stride], and the valid
    stacked frames per row, frames // stride; stacked frames past them are 0 (a last, incomplete group is padding,
    as the extractor masks it)."""
    b, t, m = features.shape
    kept = t // stride
    valid = torch.div(frames, stride, rounding_mode="floor")
    stacked = features[:, :kept * stride].reshape(b, kept, m * stride)
    return stacked * (~pad_mask(valid, kept))[..., None].to(stacked.dtype), valid


def w2vbert_features(wav: torch.Tensor, lengths: Optional[torch.Tensor], num_mel_bins: int = 80, stride: int = 2
                     ) -> Tuple[torch.Tensor, torch.Tensor]:
    """The conformer's input features of a waveform batch (the module docstring's steps 1-3), without gradient.

    Args:
        wav: [B, N] float waveforms in [-1, 1], 16 kHz; N >= :func:`min_samples`.
        lengths: [B] valid samples per row (None: every row is whole); each at least :func:`min_samples`.
        num_mel_bins, stride: the extractor's (``preprocessor_config.json``).
    Returns:
        (features [B, T', num_mel_bins * stride] float32, valid frames per row [B]); T' is the longest row's count.
    """
    with torch.no_grad(), torch.autocast(wav.device.type, enabled=False):
        if lengths is None:
            lengths = torch.full((wav.shape[0],), wav.shape[1], dtype=torch.long, device=wav.device)
        frames = fbank_frames(lengths)
        features = kaldi_fbank(wav * INT16_SCALE, num_mel_bins)  # [B, T, M]
        features = normalise_frames(features[:, :int(frames.max())], frames)
        stacked, valid = stack_frames(features, frames, stride)
    return stacked.float(), valid

