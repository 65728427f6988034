"""The frozen input modules (frontend/cnn.py) against torchaudio's: the CNN and the positional convolution."""
import pytest
import torch
from torchaudio.models import wav2vec2_model
from torchaudio.models.wav2vec2.components import ConvolutionalPositionalEmbedding

from frontend.cnn import conv_group_norm_gelu, foldable, frozen_cnn, positional_conv_fft, valid_frames

LAYERS = [(32, 10, 5)] + [(32, 3, 2)] * 2 + [(32, 2, 2)]


def extractor(mode: str, bias: bool = False, layers=LAYERS) -> torch.nn.Module:
    torch.manual_seed(0)
    model = wav2vec2_model(extractor_mode=mode, extractor_conv_layer_config=layers, extractor_conv_bias=bias,
                           encoder_embed_dim=16, encoder_projection_dropout=0.0, encoder_pos_conv_kernel=4,
                           encoder_pos_conv_groups=2, encoder_num_layers=1, encoder_num_heads=2,
                           encoder_attention_dropout=0.0, encoder_ff_interm_features=8, encoder_ff_interm_dropout=0.0,
                           encoder_dropout=0.0, encoder_layer_norm_first=mode == "layer_norm",
                           encoder_layer_drop=0.0, aux_num_out=None)
    ext = model.feature_extractor.eval()
    for p in ext.parameters():  # non-trivial affine norms and biases
        p.data.add_(0.1 * torch.randn_like(p))
    return ext


@pytest.mark.parametrize("gemm", [True, False])
@pytest.mark.parametrize("mode,bias", [("group_norm", False), ("group_norm", True), ("layer_norm", True)])
def test_equals_torchaudio(mode, bias, gemm):
    """Both ways (GEMMs on time-major rows, the CPU default; the modules' convolutions, used on CUDA)."""
    ext = extractor(mode, bias)
    wav = torch.randn(3, 4000) * torch.tensor([[1.0], [0.01], [3.0]])  # different levels per row
    with torch.inference_mode():
        ref, ref_frames = ext(wav, torch.tensor([4000, 4000, 4000]))
        out, frames = frozen_cnn(ext, wav, torch.tensor([4000, 4000, 4000]), chunk_samples=10 ** 9, gemm=gemm)
    assert foldable(ext.conv_layers[0]) == (mode == "group_norm")
    assert torch.equal(frames, ref_frames)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)


def test_first_block_as_one_gemm_equals_conv_norm_gelu():
    ext = extractor("group_norm", bias=True)
    block, wav = ext.conv_layers[0], torch.randn(2, 3000)
    with torch.inference_mode():
        ref, _ = block(wav[:, None], None)
        out = conv_group_norm_gelu(block, wav, None)
        time_major = conv_group_norm_gelu(block, wav, None, time_major=True)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(time_major, ref.transpose(1, 2), atol=1e-5, rtol=1e-4)


ODD_LAYERS = [(16, 7, 3), (16, 5, 2), (16, 2, 3), (16, 3, 3), (16, 4, 2)]  # kernel < = > stride, 3 taps a group


@pytest.mark.parametrize("gemm", [True, False])
@pytest.mark.parametrize("mode,layers", [("group_norm", LAYERS), ("layer_norm", LAYERS),
                                         ("group_norm", ODD_LAYERS), ("layer_norm", ODD_LAYERS)])
def test_padded_rows_equal_rows_alone(mode, layers, gemm):
    """Group norm statistics come from each row's valid windows only, so no row-by-row CNN is needed;
    the GEMM path's padding of each row (to a multiple of the later strides) and its skipped last
    taps never reach a valid frame, whatever the kernels and strides."""
    ext = extractor(mode, bias=True, layers=layers)
    lengths = torch.tensor([4000, 2500, 3333, 4000])
    wav = torch.zeros(4, 4000)
    rows = [torch.randn(int(n)) for n in lengths]
    for i, row in enumerate(rows):
        wav[i, :len(row)] = row
    with torch.inference_mode():
        out, frames = frozen_cnn(ext, wav, lengths, chunk_samples=10 ** 9, gemm=gemm)
        assert out.shape[1] == ext(wav, None)[0].shape[1]
        for i, row in enumerate(rows):
            alone, _ = ext(row[None], None)
            assert int(frames[i]) == alone.shape[1]
            torch.testing.assert_close(out[i, :int(frames[i])], alone[0], atol=1e-5, rtol=1e-4)


def test_chunks_of_rows_give_the_same_features():
    ext = extractor("group_norm")
    wav = torch.randn(5, 2000)
    with torch.inference_mode():
        whole, _ = frozen_cnn(ext, wav, None, chunk_samples=10 ** 9)
        chunked, _ = frozen_cnn(ext, wav, None, chunk_samples=4000)  # two rows per call
    torch.testing.assert_close(chunked, whole, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("mode", ["group_norm", "layer_norm"])
def test_bfloat16_path_is_close_to_float32(mode):
    ext = extractor(mode)
    wav = torch.randn(2, 4000)
    with torch.inference_mode():
        ref, _ = ext(wav, None)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low, _ = frozen_cnn(ext, wav, None, chunk_samples=10 ** 9)
    assert low.dtype == torch.bfloat16 and low.shape == ref.shape
    assert (low.float() - ref).abs().max() <= 0.05 * ref.abs().max()


def test_new_convolution_weights_are_used():
    """The GEMM path keeps each convolution's weight rearranged; a changed weight (a model file loaded)
    must be rearranged again."""
    ext = extractor("layer_norm")
    wav = torch.randn(2, 4000)
    with torch.inference_mode():
        frozen_cnn(ext, wav, None, chunk_samples=10 ** 9)
    with torch.no_grad():
        for block in ext.conv_layers:
            block.conv.weight.mul_(-0.7)
    with torch.inference_mode():
        out, _ = frozen_cnn(ext, wav, None, chunk_samples=10 ** 9)
        ref, _ = ext(wav, None)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)


def test_valid_frames_follow_torchaudio():
    ext = extractor("group_norm")
    lengths = torch.tensor([4000, 401, 400, 10, 0])
    _, ref = ext(torch.zeros(5, 4000), lengths)
    assert torch.equal(valid_frames(ext.conv_layers, lengths), ref)


@pytest.mark.parametrize("kernel,groups", [(16, 4), (7, 2), (128, 16)])
def test_positional_convolution_by_fft_equals_torchaudios(kernel, groups):
    """The frozen positional convolution through the FFT equals torchaudio's grouped convolution (even
    kernels drop their last frame, odd ones do not), for several lengths, and follows new weights."""
    torch.manual_seed(0)
    module = ConvolutionalPositionalEmbedding(embed_dim=32 if kernel < 128 else 96, kernel_size=kernel,
                                              groups=groups).eval()
    dim = module.embed_dim
    for frames in (5, 37, 150):
        x = torch.randn(3, frames, dim)
        with torch.inference_mode():
            torch.testing.assert_close(positional_conv_fft(module, x), module(x), atol=2e-5, rtol=1e-4)
    with torch.no_grad():
        for p in module.parameters():
            p.mul_(1.5)  # a model file loaded: the cached kernel transform must not be reused
    with torch.inference_mode():
        torch.testing.assert_close(positional_conv_fft(module, x), module(x), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("gemm", [True, False])
def test_too_short_input_is_refused_with_the_length_needed(gemm):
    """Shorter than one CNN frame (LAYERS, kernel-stride 10-5, 3-2, 3-2, 2-2, from the last block back:
    1 -> 2 -> 5 -> 11 -> 60 samples) is a clear error, not empty features or a deep convolution error;
    one frame's worth works."""
    ext = extractor("group_norm")
    with torch.inference_mode():
        out, frames = frozen_cnn(ext, torch.randn(2, 60), torch.tensor([60, 60]), chunk_samples=10 ** 9, gemm=gemm)
        assert out.shape[1] == 1 and frames.tolist() == [1, 1]
        with pytest.raises(ValueError, match="59 samples.*60 samples"):
            frozen_cnn(ext, torch.randn(2, 59), None, chunk_samples=10 ** 9, gemm=gemm)
        with pytest.raises(ValueError, match="30 samples.*60 samples"):  # a short row in a padded batch
            frozen_cnn(ext, torch.randn(2, 400), torch.tensor([400, 30]), chunk_samples=10 ** 9, gemm=gemm)
