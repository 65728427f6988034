"""Audio files (core/audio.py): lengths from headers, and errors that name the file and say what is wrong."""
import logging

import numpy as np
import pytest
import soundfile

import core.audio
from core.audio import audio_lengths, converted_length, frames_to_samples, load_audio
from core.errors import DataError


def test_crop_arithmetic():
    assert frames_to_samples(200) == 32240 and frames_to_samples(300) == 48240 and frames_to_samples(100) == 16240


def test_lengths_from_headers(tmp_path):
    for name, n in (("a.wav", 16000), ("b.flac", 12345)):
        soundfile.write(str(tmp_path / name), np.zeros(n, dtype=np.float32), 16000)
    assert list(audio_lengths(["a.wav", "b.flac"], str(tmp_path))) == [16000, 12345]
    with pytest.raises(DataError, match="missing.wav"):
        audio_lengths(["missing.wav"], str(tmp_path))


@pytest.mark.parametrize("data,fragment", [(np.zeros(0), "empty"), (None, "Cannot read")])
def test_unusable_audio_is_named(tmp_path, data, fragment):
    path = tmp_path / "x.wav"
    if data is None:
        path.write_bytes(b"RIFF....not a wav")
    else:
        soundfile.write(str(path), data, 16000)
    with pytest.raises(DataError, match=fragment) as err:
        load_audio(str(path))
    assert "x.wav" in str(err.value)


def tone(seconds, rate, freq=440.0):
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_other_rates_are_resampled_to_16k_with_one_warning(tmp_path, rate, caplog):
    """Any sample rate reads as 16 kHz: the length follows the rate ratio (and the header-only length agrees),
    the tone keeps its frequency, and the conversion is logged once per process, not per file."""
    core.audio._NOTED.clear()
    for name in ("a.wav", "b.wav"):
        soundfile.write(str(tmp_path / name), tone(1.5, rate), rate, subtype="PCM_16")
    with caplog.at_level(logging.WARNING, logger="core.audio"):
        audio = load_audio(str(tmp_path / "a.wav"))
        load_audio(str(tmp_path / "b.wav"))
    assert audio.dtype == np.float32 and audio.shape[0] == converted_length(int(1.5 * rate), rate)
    assert list(audio_lengths(["a.wav"], str(tmp_path))) == [audio.shape[0]]
    np.testing.assert_allclose(audio[4000:20000], tone(1.5, 16000)[4000:20000], atol=2e-3)
    assert sum("resampled" in r.message for r in caplog.records) == 1


def test_multichannel_is_averaged_and_int16_equals_float(tmp_path):
    core.audio._NOTED.clear()
    left, right = tone(1.0, 16000, 300), tone(1.0, 16000, 500)
    soundfile.write(str(tmp_path / "st.wav"), np.stack([left, right], 1), 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(str(tmp_path / "st.wav")), (left + right) / 2, rtol=0, atol=1e-7)
    soundfile.write(str(tmp_path / "i16.wav"), left, 16000, subtype="PCM_16")
    soundfile.write(str(tmp_path / "f32.flac"), left, 16000, subtype="PCM_24")
    np.testing.assert_allclose(load_audio(str(tmp_path / "i16.wav")), left, atol=1 / 32767)
    np.testing.assert_allclose(load_audio(str(tmp_path / "f32.flac")), left, atol=1e-6)
