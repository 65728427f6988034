"""Padded batches give the same layers and embeddings as each input alone."""
import pytest
import torch
from torchaudio.models import wav2vec2_model

from frontend.ssl_frontend import load_ssl_frontend
from models.MHFA import MainModel
from synthetic.checkpoints import write_fairseq_checkpoint


@pytest.fixture(scope="module")
def hubert_prenorm(tmp_path_factory):
    """A Large-style (layer-norm CNN, pre-norm) fairseq HuBERT: the non-WavLM attention path."""
    config = dict(extractor_mode="layer_norm", extractor_conv_layer_config=[(16, 10, 5), (16, 3, 2), (16, 2, 2)],
                  extractor_conv_bias=True, encoder_embed_dim=32, encoder_projection_dropout=0.0,
                  encoder_pos_conv_kernel=8, encoder_pos_conv_groups=4, encoder_num_layers=2, encoder_num_heads=4,
                  encoder_attention_dropout=0.0, encoder_ff_interm_features=64, encoder_ff_interm_dropout=0.0,
                  encoder_dropout=0.0, encoder_layer_norm_first=True, encoder_layer_drop=0.0)
    torch.manual_seed(4)
    path = str(tmp_path_factory.mktemp("hubert") / "hubert.pt")
    write_fairseq_checkpoint(path, "hubert", config, wav2vec2_model(**config, aux_num_out=None).state_dict())
    return path


@pytest.mark.parametrize("fixture", ["tiny_checkpoint", "prenorm_checkpoint", "hubert_prenorm"])
@pytest.mark.parametrize("normalize", [False, True])
def test_padded_batch_equals_one_by_one(fixture, normalize, request):
    path = request.getfixturevalue(fixture)
    frontend = load_ssl_frontend(path, normalize_input=normalize).eval()
    torch.manual_seed(0)
    lengths = torch.tensor([9000, 5123, 7777])
    rows = [torch.randn(int(n)) for n in lengths]
    batch = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
    batch[1, 5123:] = 3.0  # padding content must not matter
    with torch.no_grad():
        padded, frames = frontend(batch, lengths)  # valid frames per row, as torchaudio's CNN counts them
        assert padded.shape[2] == frames.max()
        for i, row in enumerate(rows):
            alone = frontend(row[None])
            assert alone.shape[2] == frames[i]
            torch.testing.assert_close(padded[i:i + 1, :, :frames[i]], alone, atol=1e-4, rtol=1e-4)


def test_padded_embeddings_equal_one_by_one(tiny_checkpoint):
    model = MainModel(tiny_checkpoint, nOut=8, head_nb=2, compression_dim=4).eval()
    lengths = torch.tensor([8000, 4100])
    rows = [torch.randn(int(n)) for n in lengths]
    batch = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
    with torch.no_grad():
        padded = model(batch, lengths)
        alone = torch.cat([model(r[None]) for r in rows])
        unmasked = model(batch)
    torch.testing.assert_close(padded, alone, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(unmasked[1], alone[1], atol=1e-3)  # without lengths the padding would leak in
