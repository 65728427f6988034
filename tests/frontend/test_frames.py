"""Frames and padding (frontend/frames.py): frame counts as torchaudio's, the pad mask, the masked row
normalisation as each row's own layer norm, the attention masks."""
import torch
import torch.nn.functional as F
from torchaudio.models import wav2vec2_model

from frontend.frames import attention_masks, masked_norm, min_samples, normalise_rows, pad_mask, valid_frames


def extractor():
    torch.manual_seed(0)
    model = wav2vec2_model(extractor_mode="group_norm", extractor_conv_layer_config=[(8, 10, 5), (8, 3, 2), (8, 2, 2)],
                           extractor_conv_bias=False, encoder_embed_dim=8, encoder_projection_dropout=0.0,
                           encoder_pos_conv_kernel=4, encoder_pos_conv_groups=2, encoder_num_layers=1,
                           encoder_num_heads=2, encoder_attention_dropout=0.0, encoder_ff_interm_features=8,
                           encoder_ff_interm_dropout=0.0, encoder_dropout=0.0, encoder_layer_norm_first=False,
                           encoder_layer_drop=0.0, aux_num_out=None)
    return model.feature_extractor


def test_valid_frames_and_min_samples_follow_torchaudio():
    ext = extractor()
    lengths = torch.tensor([4000, 401, 400, 10, 0])
    _, ref = ext(torch.zeros(5, 4000), lengths)
    assert torch.equal(valid_frames(ext.conv_layers, lengths), ref)
    need = min_samples(ext.conv_layers)  # 1 frame: 2 -> 5 -> 30 samples
    assert need == 30
    assert ext(torch.zeros(1, need), torch.tensor([need]))[1].tolist() == [1]
    assert ext(torch.zeros(1, need), torch.tensor([need - 1]))[1].tolist() == [0]


def test_pad_mask_marks_the_entries_past_each_length():
    mask = pad_mask(torch.tensor([3, 0, 5]), 5)
    assert mask.tolist() == [[False] * 3 + [True] * 2, [True] * 5, [False] * 5]


def test_normalise_rows_is_each_rows_layer_norm_over_its_valid_samples():
    lengths = torch.tensor([1000, 600, 1])
    wav = torch.randn(3, 1000) * 3 + 1
    out = normalise_rows(wav, lengths)
    for i, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(out[i, :n], F.layer_norm(wav[i, :n], (n,)), atol=1e-5, rtol=1e-5)
        assert not out[i, n:].any()  # padding zeroed
    torch.testing.assert_close(normalise_rows(wav, None), F.layer_norm(wav, (1000,)))


def test_masked_norm_takes_the_statistics_of_the_valid_entries_only():
    x, valid = torch.randn(2, 4, 7), torch.ones(2, 1, 7)
    valid[1, :, 4:] = 0
    out = masked_norm(x, valid, valid.sum(2, keepdim=True), 2, 1e-5)
    torch.testing.assert_close(out[1, :, :4], F.group_norm(x[1:, :, :4], 4, eps=1e-5)[0])
    torch.testing.assert_close(out[0], F.group_norm(x[:1], 4, eps=1e-5)[0])


def test_attention_masks_per_family():
    pad = pad_mask(torch.tensor([2, 3]), 3)
    none, key = attention_masks(pad, torch.float32, wavlm=True)
    assert none is None and key.tolist() == [[0.0, 0.0, float("-inf")], [0.0, 0.0, 0.0]]
    additive, none = attention_masks(pad, torch.float32, wavlm=False)
    assert none is None and additive.shape == (2, 1, 3, 3)
    assert additive[0, 0, :, 2].eq(-10000.0).all() and not additive[0, 0, :, :2].any() and not additive[1].any()
