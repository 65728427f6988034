"""Shared fixtures: a tiny official-format WavLM checkpoint and a small synthetic corpus."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tools.make_demo_data import TINY_WAVLM, make_demo_data, write_tiny_wavlm  # noqa: E402


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
