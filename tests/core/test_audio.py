"""Audio files (core/audio.py): lengths from headers, and errors that name the file and say what is wrong."""
import numpy as np
import pytest
import soundfile

from core.audio import audio_lengths, frames_to_samples, load_audio
from core.errors import DataError


def test_crop_arithmetic():
    assert frames_to_samples(200) == 32240 and frames_to_samples(300) == 48240 and frames_to_samples(100) == 16240


def test_lengths_from_headers(tmp_path):
    for name, n in (("a.wav", 16000), ("b.flac", 12345)):
        soundfile.write(str(tmp_path / name), np.zeros(n, dtype=np.float32), 16000)
    assert list(audio_lengths(["a.wav", "b.flac"], str(tmp_path))) == [16000, 12345]
    with pytest.raises(DataError, match="missing.wav"):
        audio_lengths(["missing.wav"], str(tmp_path))


@pytest.mark.parametrize("data,rate,fragment", [(np.zeros((800, 2)), 16000, "2 channels"),
                                                (np.zeros(800), 8000, "8000 Hz"),
                                                (np.zeros(0), 16000, "empty")])
def test_unusable_audio_is_named(tmp_path, data, rate, fragment):
    path = str(tmp_path / "x.wav")
    soundfile.write(path, data, rate)
    with pytest.raises(DataError, match=fragment):
        load_audio(path)
