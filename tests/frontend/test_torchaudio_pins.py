"""The torchaudio internals the front-end relies on (frontend/ssl_frontend.py, frontend/kernels.py,
frontend/frames.py, inference/export.py), each pinned: a torchaudio release that changes one fails here with
a message naming what changed and which code relies on it, instead of giving wrong embeddings somewhere else."""
import inspect

import pytest
import torch
import torchaudio
from torch import nn
from torchaudio.models import wav2vec2_model, wavlm_model
from torchaudio.models.wav2vec2.components import ConvLayerBlock, ConvolutionalPositionalEmbedding

from frontend.frames import valid_frames
from frontend.ssl_frontend import SSLFrontend, reference_cnn, run_block, transformer_input

TINY = dict(extractor_conv_layer_config=[(16, 10, 5), (16, 3, 2), (16, 2, 2)], extractor_conv_bias=False,
            encoder_embed_dim=16, encoder_projection_dropout=0.0, encoder_pos_conv_kernel=4,
            encoder_pos_conv_groups=2, encoder_num_layers=2, encoder_num_heads=2, encoder_attention_dropout=0.0,
            encoder_ff_interm_features=8, encoder_ff_interm_dropout=0.0, encoder_dropout=0.0,
            encoder_layer_drop=0.0, aux_num_out=None)
MODELS = {
    "wavlm": lambda: wavlm_model(extractor_mode="group_norm", encoder_layer_norm_first=False,
                                 encoder_num_buckets=8, encoder_max_distance=16, **TINY),
    "hubert (pre-norm, layer-norm CNN)": lambda: wav2vec2_model(extractor_mode="layer_norm",
                                                                encoder_layer_norm_first=True, **TINY),
}


def pinned(ok, what, user):
    """Assert ``ok`` with the message of a torchaudio change."""
    assert ok, (f"torchaudio {torchaudio.__version__} changed {what}; {user} relies on it: adapt that code (and "
                f"this pin) to the new torchaudio, or install the torchaudio version of requirements.txt.")


@pytest.fixture(params=sorted(MODELS))
def model(request):
    torch.manual_seed(0)
    return MODELS[request.param]().eval()


def test_module_layout_the_front_end_reads(model):
    """The attributes read by the front-end, the fast kernels and the export."""
    extractor, encoder = model.feature_extractor, model.encoder
    transformer = encoder.transformer
    pinned(all(isinstance(b, ConvLayerBlock) for b in extractor.conv_layers),
           "feature_extractor.conv_layers (ConvLayerBlock)", "frontend/kernels.py (frozen_cnn, masked_cnn)")
    for block in extractor.conv_layers:
        pinned(isinstance(block.conv, nn.Conv1d) and isinstance(block.kernel_size, int)
               and isinstance(block.stride, int) and block.conv.kernel_size == (block.kernel_size,)
               and block.conv.stride == (block.stride,),
               "ConvLayerBlock.conv / kernel_size / stride", "frontend/frames.py and frontend/kernels.py")
        pinned(block.layer_norm is None or isinstance(block.layer_norm, (nn.GroupNorm, nn.LayerNorm)),
               "ConvLayerBlock.layer_norm (GroupNorm, LayerNorm or None)", "frontend/kernels.py")
    pinned(isinstance(encoder.feature_projection.projection, nn.Linear), "Encoder.feature_projection.projection",
           "SSLFrontend.hidden_size")
    positional = transformer.pos_conv_embed
    pinned(isinstance(positional, ConvolutionalPositionalEmbedding) and isinstance(positional.num_remove, int)
           and isinstance(positional.conv, nn.Conv1d), "Transformer.pos_conv_embed (conv, num_remove)",
           "frontend/kernels.py positional_conv_fft and inference/export.py PlainPositional")
    pinned(isinstance(transformer.layer_norm, nn.LayerNorm) and isinstance(transformer.layer_norm_first, bool)
           and isinstance(transformer.dropout, nn.Dropout) and isinstance(transformer.layers, nn.ModuleList)
           and isinstance(transformer.layer_drop, float),
           "Transformer.layer_norm / layer_norm_first / dropout / layers / layer_drop",
           "frontend/ssl_frontend.py transformer_input and SSLFrontend")
    parameters = list(inspect.signature(type(transformer.layers[0]).forward).parameters)
    pinned(parameters[:3] == ["self", "x", "attention_mask"] and "position_bias" in parameters
           and "key_padding_mask" in parameters, "the transformer blocks' call (x, attention_mask, position_bias=, "
           "key_padding_mask=)", "frontend/ssl_frontend.py run_block")


def test_our_steps_give_torchaudios_own_layers(model):
    """Our composition of torchaudio's modules (the reference path: CNN, transformer_input, run_block) gives the
    layers of torchaudio's public ``extract_features``: the maths of its private ``Transformer._preprocess``
    and of the blocks' position bias sharing are as transformer_input / SSLFrontend._run assume."""
    wav = torch.randn(2, 3000)
    with torch.no_grad():
        want = model.extract_features(wav)[0]
        features, _ = reference_cnn(model.feature_extractor, wav, None)
        x, bias = transformer_input(model, features, None), None
        got = []
        for layer in model.encoder.transformer.layers:
            x, bias = run_block(layer, x, None, bias, None)
            got.append(x)
        layers = SSLFrontend(model, kernels="reference", family="wavlm" if bias is not None else "hubert")(wav)
    same = len(got) == len(want) and all(torch.allclose(g, w, atol=1e-5, rtol=1e-5)
                                         for g, w in zip(got, want, strict=False))
    pinned(same,
           "the layers of Wav2Vec2Model.extract_features (Transformer._preprocess: projection, + pos_conv_embed, "
           "layer_norm when layer_norm_first, dropout; blocks sharing position_bias)",
           "frontend/ssl_frontend.py transformer_input and run_block")
    pinned(all(torch.allclose(layers[:, i + 1], w, atol=1e-5, rtol=1e-5) for i, w in enumerate(want)),
           "the layers of Wav2Vec2Model.extract_features", "SSLFrontend (reference path)")


def test_frame_counts_and_positional_embedding(model):
    """torchaudio's frame count (FeatureExtractor lengths) and its positional embedding's forward (grouped conv,
    num_remove frames dropped, GELU), which frontend/frames.py and frontend/kernels.py recompute."""
    lengths = torch.tensor([3000, 401, 30, 0])
    _, frames = model.feature_extractor(torch.zeros(4, 3000), lengths)
    pinned(torch.equal(valid_frames(model.feature_extractor.conv_layers, lengths), frames),
           "the frame count of FeatureExtractor", "frontend/frames.py valid_frames")
    positional = model.encoder.transformer.pos_conv_embed
    x = torch.randn(2, 7, 16)
    with torch.no_grad():
        y = positional.conv(x.transpose(1, 2))
        want = nn.functional.gelu(y[..., :y.shape[-1] - positional.num_remove]).transpose(1, 2)
        pinned(torch.allclose(positional(x), want, atol=1e-6), "ConvolutionalPositionalEmbedding.forward",
               "frontend/kernels.py positional_conv_fft and inference/export.py PlainPositional")
