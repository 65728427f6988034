"""Shared fixtures: tiny official-format WavLM checkpoints, the small synthetic demo corpus, a corpus of noise files."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import soundfile  # noqa: E402

from synthetic.checkpoints import TINY_WAVLM, write_tiny_wavlm  # noqa: E402
from synthetic.demo import make_demo_data  # noqa: E402
from tests.fakes import save_tiny_model  # noqa: E402

# lengths in samples: several exactly equal (batched together), others unique, one short
# file (wrap-padded crops) and one beyond the 1.5 s cap used below
LENGTHS = [16000, 20000, 16000, 12345, 20000, 16000, 30000, 5000]


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("ckpt") / "WavLM-Tiny.pt")
    write_tiny_wavlm(path, seed=1)
    return path


@pytest.fixture(scope="session")
def prenorm_checkpoint(tmp_path_factory):
    """A Large-style (pre-norm, layer-norm CNN, conv bias) tiny WavLM."""
    path = str(tmp_path_factory.mktemp("ckpt") / "WavLM-Tiny-Large.pt")
    config = dict(TINY_WAVLM, extractor_mode="layer_norm", extractor_conv_bias=True, encoder_layer_norm_first=True,
                  encoder_num_layers=3)
    write_tiny_wavlm(path, seed=2, config=config)
    return path


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory):
    """The --small demo corpus plus checkpoint (summary dict from make_demo_data)."""
    return make_demo_data(str(tmp_path_factory.mktemp("demo")), seed=3, small=True)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """Eight random-noise files of LENGTHS samples: (root, keys in an order unlike their lengths)."""
    root = tmp_path_factory.mktemp("wavs")
    rng = np.random.default_rng(0)
    keys = []
    for i, n in enumerate(LENGTHS):
        key = f"id{i % 3}/v/{i}.wav"
        os.makedirs(root / os.path.dirname(key), exist_ok=True)
        soundfile.write(str(root / key), (0.1 * rng.standard_normal(n)).astype(np.float32), 16000)
        keys.append(key)
    return str(root), keys[::-1]  # not in length order


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint, tmp_path_factory):
    """A random tiny SpeakerNet saved as a model file: (its encoder in eval mode, the CLI options that load it)."""
    return save_tiny_model(tiny_checkpoint, tmp_path_factory.mktemp("model") / "m.model")


@pytest.fixture(scope="session")
def tiny_encoder(tiny_model):
    return tiny_model[0]
