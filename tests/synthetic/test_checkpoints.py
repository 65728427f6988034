"""The checkpoint writers (synthetic/checkpoints.py) are the inverses of the readers in frontend/: a file written
from a random torchaudio model reads back, through the format detection, to the same configuration and tensors."""
import pytest
import torch
from torchaudio.models import wav2vec2_model, wavlm_model

from frontend.detect import read_ssl_checkpoint
from frontend.formats import parse_conv_layers
from synthetic.checkpoints import TINY_WAVLM, WAVLM_BASE, format_conv_layers, write_fairseq_checkpoint, write_tiny_wavlm

LAYER_NORM = dict(extractor_mode="layer_norm", extractor_conv_bias=True, encoder_layer_norm_first=True)
WAV2VEC2 = {k: v for k, v in TINY_WAVLM.items() if k not in ("encoder_num_buckets", "encoder_max_distance")}


def assert_same_state(read, model):
    expected = model.state_dict()
    assert sorted(read) == sorted(expected)
    for name, tensor in expected.items():
        assert torch.equal(read[name], tensor), name


@pytest.mark.parametrize("config", [TINY_WAVLM, dict(TINY_WAVLM, **LAYER_NORM)], ids=["group_norm", "layer_norm"])
def test_official_wavlm_file_reads_back(tmp_path, config):
    path = str(tmp_path / "wavlm.pt")
    write_tiny_wavlm(path, seed=4, config=config)
    torch.manual_seed(4)
    model = wavlm_model(**config, aux_num_out=None)
    ckpt = read_ssl_checkpoint(path)
    assert (ckpt.family, ckpt.source, ckpt.unused, ckpt.ignored) == ("wavlm", "official WavLM", [], [])
    assert ckpt.config == config
    assert_same_state(ckpt.state, model)


@pytest.mark.parametrize("family", ["hubert", "wav2vec2"])
@pytest.mark.parametrize("layout,finetuned,mode", [("modern", False, "group_norm"), ("legacy", False, "layer_norm"),
                                                   ("modern", True, "layer_norm"), ("legacy", True, "group_norm")])
def test_fairseq_file_reads_back(tmp_path, family, layout, finetuned, mode):
    config = dict(WAV2VEC2, **LAYER_NORM) if mode == "layer_norm" else WAV2VEC2
    model = wav2vec2_model(**config, aux_num_out=None)
    path = str(tmp_path / "fairseq.pt")
    write_fairseq_checkpoint(path, family, config, model.state_dict(), layout=layout, finetuned=finetuned)
    ckpt = read_ssl_checkpoint(path, trust_checkpoint=layout == "legacy")  # legacy files hold a Namespace
    assert ckpt.family == family and ckpt.unused == [], ckpt.unused
    assert ("fine-tuned" in ckpt.source) == finetuned and bool(ckpt.ignored) == finetuned, (ckpt.source, ckpt.ignored)
    assert ckpt.config == config
    assert_same_state(ckpt.state, model)


def test_fairseq_writer_refuses_unknown_family_or_layout(tmp_path):
    for family, layout in [("wavlm", "modern"), ("hubert", "new")]:
        with pytest.raises(ValueError, match="family must be one of"):
            write_fairseq_checkpoint(str(tmp_path / "x.pt"), family, WAV2VEC2, {}, layout=layout)


@pytest.mark.parametrize("layers", [TINY_WAVLM["extractor_conv_layer_config"],
                                    WAVLM_BASE["extractor_conv_layer_config"], [(8, 3, 1)]])
def test_conv_layers_format_and_parse_back(layers):
    assert parse_conv_layers(format_conv_layers(layers)) == layers
