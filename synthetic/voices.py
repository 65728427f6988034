"""Source-filter synthesiser for the synthetic demo corpus (see ``synthetic.corpus``).

A voice is a glottal pulse train (F0 contour with declination and accents, jitter,
shimmer, one-pole spectral tilt, breath noise) filtered by cascaded two-pole formant
resonators; vowels are cross-faded, fricatives are band-passed noise bursts.  A
recording channel (session) adds a random EQ, band limits, a level and coloured
background noise.  All randomness comes from the ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal
from scipy.fft import next_fast_len
from scipy.ndimage import uniform_filter1d

SAMPLE_RATE = 16000  # Hz, for every file of the demo corpus

# Reference vowel formants F1-F4 (Hz) for a vocal-tract factor of 1 and their bandwidths (Hz).
VOWEL_FORMANTS = np.array([
    [270, 2290, 3010, 3500], [390, 1990, 2550, 3400], [530, 1840, 2480, 3450],
    [660, 1720, 2410, 3400], [730, 1090, 2440, 3350], [570, 840, 2410, 3300],
    [440, 1020, 2240, 3300], [300, 870, 2240, 3350],
], dtype=float)
N_VOWELS = len(VOWEL_FORMANTS)
FORMANT_BANDWIDTHS = np.array([70.0, 100.0, 140.0, 200.0])
# Fricative noise bands (low, high) in Hz for a vocal-tract factor of 1 (s, sh, f, x-like).
FRICATIVE_BANDS = np.array([[3800, 7400], [2200, 4800], [1200, 7000], [1000, 3000]], dtype=float)

CROSSFADE_S = 0.015  # half-length of the raised-cosine fade between segments (s)
PREROLL_S = 0.010  # resonator settling time filtered before each segment and discarded (s)
F0_SMOOTH_S = 0.06  # moving-average length smoothing the syllable pitch targets (s)
F0_LIMITS = (55.0, 420.0)  # Hz


@dataclass(frozen=True)
class Voice:
    """Speaker parameters; frequencies in Hz, durations in s, ``tilt`` is a pole radius."""

    f0_mean: float
    f0_range: float  # accent depth in semitones
    declination: float  # F0 fall in semitones per second within a phrase
    jitter: float  # relative std of each glottal period
    shimmer: float  # relative std of each pulse amplitude
    tilt: float  # pole of the two one-pole low-passes shaping the pulse train
    breath: float  # breath-noise rms relative to the voiced source rms
    syllable_s: float  # mean vowel duration
    fricative_prob: float  # probability that a syllable starts with a fricative
    pause_prob: float  # probability of a pause after a syllable
    fricative_level: float  # fricative rms relative to the voiced rms
    formants: np.ndarray  # (N_VOWELS, 4) F1-F4 per vowel, scaled by the vocal-tract factor
    vowel_probs: np.ndarray  # (N_VOWELS,) speaker's vowel usage
    fricative_bands: np.ndarray  # (4, 2) band edges


@dataclass(frozen=True)
class Channel:
    """Recording-session parameters: EQ as second-order sections, levels in dB."""

    eq_sos: np.ndarray
    snr_db: float
    noise_slope: float  # background-noise power slope: PSD proportional to f ** -noise_slope
    peak: float  # typical peak level of the session's files (full scale = 1)
    f0_shift: float  # multiplicative F0 factor of the session
    tilt_shift: float  # added to the speaker's tilt pole (vocal effort)


def sample_voice(rng: np.random.Generator) -> Voice:
    """Draw a speaker from overlapping "low" (85-155 Hz) / "high" (160-260 Hz) F0 groups."""
    high = rng.random() < 0.5
    f0_mean = rng.uniform(160, 260) if high else rng.uniform(85, 155)
    vtl = rng.uniform(0.95, 1.2) if high else rng.uniform(0.85, 1.08)  # formant scale factor
    offsets = np.exp(rng.normal(0.0, 0.05, size=VOWEL_FORMANTS.shape))
    return Voice(
        f0_mean=f0_mean, f0_range=rng.uniform(1.0, 5.0), declination=rng.uniform(0.3, 1.5),
        jitter=rng.uniform(0.003, 0.02), shimmer=rng.uniform(0.02, 0.12),
        tilt=rng.uniform(0.75, 0.95), breath=rng.uniform(0.02, 0.4),
        syllable_s=rng.uniform(0.10, 0.22), fricative_prob=rng.uniform(0.2, 0.6),
        pause_prob=rng.uniform(0.05, 0.2), fricative_level=rng.uniform(0.1, 0.4),
        formants=VOWEL_FORMANTS * vtl * offsets, vowel_probs=rng.dirichlet(np.full(N_VOWELS, 2.0)),
        fricative_bands=FRICATIVE_BANDS * np.sqrt(vtl) * rng.uniform(0.9, 1.1),
    )


def peaking_sos(freq: float, gain_db: float, q: float) -> np.ndarray:
    """Peaking-EQ biquad (audio-EQ-cookbook form) as one normalised second-order section."""
    amp, w0 = 10 ** (gain_db / 40), 2 * np.pi * freq / SAMPLE_RATE
    alpha = np.sin(w0) / (2 * q)
    b = [1 + alpha * amp, -2 * np.cos(w0), 1 - alpha * amp]
    a = [1 + alpha / amp, -2 * np.cos(w0), 1 - alpha / amp]
    return np.concatenate([b, a])[None, :] / a[0]


def sample_channel(rng: np.random.Generator) -> Channel:
    """Draw a session: 2-3 peaking bands (+-6 dB), a 40-200 Hz high-pass, 3.4-7.8 kHz low-pass."""
    bands = [peaking_sos(np.exp(rng.uniform(np.log(150), np.log(6000))),
                         rng.uniform(-6, 6), rng.uniform(0.5, 2.0))
             for _ in range(rng.integers(2, 4))]
    highpass = signal.butter(2, rng.uniform(40, 200), "highpass", fs=SAMPLE_RATE, output="sos")
    lowpass = signal.butter(4, rng.uniform(3400, 7800), "lowpass", fs=SAMPLE_RATE, output="sos")
    return Channel(
        eq_sos=np.concatenate(bands + [highpass, lowpass]), snr_db=rng.uniform(15, 40),
        noise_slope=rng.uniform(0.0, 2.0), peak=rng.uniform(0.2, 0.8),
        f0_shift=2 ** (rng.normal(0.0, 0.5) / 12), tilt_shift=rng.uniform(-0.03, 0.03),
    )


def coloured_noise(n: int, slope: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-rms noise with power spectral density proportional to f ** -slope (f >= 20 Hz)."""
    n_fft = next_fast_len(n, real=True)
    spec = np.fft.rfft(rng.standard_normal(n_fft))
    freqs = np.maximum(np.fft.rfftfreq(n_fft, 1 / SAMPLE_RATE), 20.0)
    out = np.fft.irfft(spec * freqs ** (-slope / 2), n_fft)[:n]
    return out / (np.sqrt(np.mean(out ** 2)) + 1e-12)


def _raised_cosine(n: int, fade: int) -> np.ndarray:
    """Window of length n with sin^2 fades of ``fade`` samples, so adjacent fades sum to 1."""
    win = np.ones(n)
    ramp = np.sin(0.5 * np.pi * (np.arange(fade) + 0.5) / fade) ** 2
    edge = min(fade, n // 2)
    win[:edge], win[n - edge:] = ramp[:edge], ramp[:edge][::-1]
    return win


def formant_sos(formants: np.ndarray) -> np.ndarray:
    """Second-order sections of cascaded two-pole resonators with unit DC gain:
    1 / (1 - 2 r cos(theta) z^-1 + r^2 z^-2), r = exp(-pi B / fs), theta = 2 pi F / fs."""
    r = np.exp(-np.pi * FORMANT_BANDWIDTHS / SAMPLE_RATE)
    cos_theta = np.cos(2 * np.pi * formants / SAMPLE_RATE)
    a1, a2 = -2 * r * cos_theta, r ** 2
    zeros, ones = np.zeros_like(a1), np.ones_like(a1)
    return np.stack([1 + a1 + a2, zeros, zeros, ones, a1, a2], axis=1)


def _plan_segments(voice: Voice, n: int, rng: np.random.Generator) -> np.ndarray:
    """Syllable plan, rows (kind, start, stop, symbol, accent) in samples; kind 0 = vowel,
    1 = fricative, 2 = pause; symbol indexes VOWEL_FORMANTS or FRICATIVE_BANDS."""
    rows, pos = [], min(int(rng.uniform(0.05, 0.25) * SAMPLE_RATE), n // 4)
    while pos < n:
        accent = float(rng.random() < 0.3)
        if rng.random() < voice.fricative_prob:
            length = int(rng.uniform(0.04, 0.12) * SAMPLE_RATE)
            rows.append((1, pos, pos + length, rng.integers(len(FRICATIVE_BANDS)), 0.0))
            pos += length
        length = int(voice.syllable_s * rng.lognormal(0.0, 0.3) * (1 + 0.4 * accent) * SAMPLE_RATE)
        rows.append((0, pos, pos + length, rng.choice(N_VOWELS, p=voice.vowel_probs), accent))
        pos += length
        if rng.random() < voice.pause_prob:
            length = int(rng.uniform(0.08, 0.35) * SAMPLE_RATE)
            rows.append((2, pos, pos + length, 0, 0.0))
            pos += length
    return np.array(rows, dtype=float)


def _f0_contour(voice: Voice, plan: np.ndarray, n: int, f0_shift: float,
                rng: np.random.Generator) -> np.ndarray:
    """F0 in Hz per sample: 2 ** (semitones / 12) around the mean, semitones = smoothed
    per-syllable accents + random wobble - declination that restarts after each pause."""
    starts = np.minimum(plan[:, 1].astype(int), n)
    targets = voice.f0_range * (plan[:, 4] * rng.uniform(0.5, 1.0, len(plan))
                                + 0.2 * rng.standard_normal(len(plan)))
    semis = np.repeat(targets, np.diff(np.append(starts, n)))
    semis = np.concatenate([np.full(starts[0], targets[0]), semis])
    semis = uniform_filter1d(semis, int(F0_SMOOTH_S * SAMPLE_RATE), mode="nearest")
    restart = np.zeros(n, dtype=bool)
    restart[np.minimum(plan[plan[:, 0] == 2, 2].astype(int), n - 1)] = True  # pause ends
    phrase_start = np.maximum.accumulate(np.where(restart, np.arange(n), 0))
    semis += 1.0 - voice.declination * (np.arange(n) - phrase_start) / SAMPLE_RATE
    f0 = voice.f0_mean * f0_shift * 2 ** (semis / 12)
    return np.clip(f0, *F0_LIMITS)


def _glottal_source(voice: Voice, f0: np.ndarray, tilt: float,
                    rng: np.random.Generator) -> np.ndarray:
    """Pulse train (one pulse per cycle of the jittered phase, linear fractional placement,
    shimmered amplitude) through (1 - a)^2 / (1 - a z^-1)^2 tilt and 1 - z^-1 lip radiation,
    plus white breath noise at ``voice.breath`` times the voiced rms."""
    n = len(f0)
    cycles = (np.cumsum(f0) / SAMPLE_RATE).astype(int)
    jitter = 1 + voice.jitter * rng.standard_normal(cycles[-1] + 1)
    phase = np.cumsum(f0 * jitter[cycles]) / SAMPLE_RATE
    idx = np.nonzero(np.diff(np.floor(phase)))[0]
    frac = (np.floor(phase[idx + 1]) - phase[idx]) / (phase[idx + 1] - phase[idx])
    amp = 1 + voice.shimmer * rng.standard_normal(len(idx))
    pulses = np.zeros(n)
    pulses[idx] += amp * (1 - frac)
    pulses[idx + 1] += amp * frac
    a = float(np.clip(tilt, 0.5, 0.98))
    voiced = signal.lfilter((1 - a) ** 2 * np.array([1.0, -1.0]), [1.0, -2 * a, a * a], pulses)
    rms = np.sqrt(np.mean(voiced ** 2)) + 1e-12
    return voiced + voice.breath * rms * rng.standard_normal(n)


def _vowels(voice: Voice, source: np.ndarray, plan: np.ndarray) -> np.ndarray:
    """Overlap-add of vowel segments, each filtered by its formant cascade; adjacent vowels
    cross-fade over 2 * CROSSFADE_S, accented vowels are 1.5 times louder."""
    n, out = len(source), np.zeros(len(source))
    fade, pre = int(CROSSFADE_S * SAMPLE_RATE), int(PREROLL_S * SAMPLE_RATE)
    sos = [formant_sos(f) for f in voice.formants]
    for _, start, stop, vowel, accent in plan[plan[:, 0] == 0]:
        lo, hi = max(int(start) - fade, 0), min(int(stop) + fade, n)
        if hi - lo < 2:
            continue
        seg = signal.sosfilt(sos[int(vowel)], source[max(lo - pre, 0):hi])[-(hi - lo):]
        out[lo:hi] += seg * _raised_cosine(hi - lo, 2 * fade) * (1 + 0.5 * accent)
    return out


def _fricatives(voice: Voice, plan: np.ndarray, n: int, level: float,
                rng: np.random.Generator) -> np.ndarray:
    """Band-passed (4th-order Butterworth) noise bursts at ``level`` rms times the voice's
    fricative level, with raised-cosine edges."""
    out, fade = np.zeros(n), int(CROSSFADE_S * SAMPLE_RATE)
    nyquist_guard = 0.475 * SAMPLE_RATE
    sos = [signal.butter(2, [lo, min(hi, nyquist_guard)], "bandpass", fs=SAMPLE_RATE, output="sos")
           for lo, hi in voice.fricative_bands]
    for _, start, stop, kind, _ in plan[plan[:, 0] == 1]:
        lo, hi = int(start), min(int(stop), n)
        if hi - lo < 2:
            continue
        burst = signal.sosfilt(sos[int(kind)], rng.standard_normal(hi - lo + fade))[fade:]
        burst *= level * voice.fricative_level * rng.uniform(0.6, 1.4) / (np.std(burst) + 1e-12)
        out[lo:hi] += burst * _raised_cosine(hi - lo, fade)
    return out


def apply_channel(x: np.ndarray, channel: Channel, rng: np.random.Generator) -> np.ndarray:
    """Add background noise at the session SNR (dB, w.r.t. the rms of x), filter by the session
    EQ and scale to a peak of ``channel.peak`` times a random +-3 dB (capped at 0.99)."""
    rms = np.sqrt(np.mean(x ** 2)) + 1e-12
    noise = coloured_noise(len(x), channel.noise_slope, rng) * rms * 10 ** (-channel.snr_db / 20)
    y = signal.sosfilt(channel.eq_sos, x + noise)
    peak = min(channel.peak * 10 ** (rng.uniform(-3, 3) / 20), 0.99)
    return y * (peak / (np.max(np.abs(y)) + 1e-12))


def synth_utterance(voice: Voice, channel: Channel, seconds: float,
                    rng: np.random.Generator) -> np.ndarray:
    """One utterance of ``seconds`` s at SAMPLE_RATE through ``channel``; float64 in [-1, 1]."""
    n = max(int(round(seconds * SAMPLE_RATE)), 1)
    plan = _plan_segments(voice, n, rng)
    f0 = _f0_contour(voice, plan, n, channel.f0_shift, rng)
    source = _glottal_source(voice, f0, voice.tilt + channel.tilt_shift, rng)
    dry = _vowels(voice, source, plan)
    voiced_rms = np.sqrt(np.mean(dry[dry != 0] ** 2)) if np.any(dry) else 1.0
    dry += _fricatives(voice, plan, n, voiced_rms, rng)
    return apply_channel(dry, channel, rng)
