"""The fast kernels (frontend/kernels.py) against the reference path, torchaudio's modules as they are: the frozen
CNN (GEMMs, folded first block), the FFT positional convolution, the masked CNN (with gradients), the derived
weights, and in the front-end every kernel (``frontend_kernels: auto``) against ``reference``, padded batches too."""
import os

import numpy as np
import pytest
import torch
from torchaudio.models import wav2vec2_model
from torchaudio.models.wav2vec2.components import ConvolutionalPositionalEmbedding

import frontend.ssl_frontend
import trainSpeakerNet_Eval
from core.device import autocast_dtype
from evaluation.embeddings import load_embeddings
from frontend.frames import pad_mask
from frontend.kernels import (
    DerivedWeights,
    conv_group_norm_gelu,
    foldable,
    frozen_cnn,
    masked_cnn,
    positional_conv_fft,
)
from frontend.ssl_frontend import SSLFrontend, load_ssl_frontend, reference_cnn
from models.MHFA import MainModel
from tests.fakes import device_tolerance, run_main

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
    wav, derived = torch.randn(2, 4000), DerivedWeights()
    with torch.inference_mode():
        frozen_cnn(ext, wav, None, chunk_samples=10 ** 9, gemm=True, derived=derived)
    assert len(derived) == len(ext.conv_layers)  # every convolution's weight rearranged, kept
    with torch.no_grad():
        for block in ext.conv_layers:
            block.conv.weight.mul_(-0.7)
    with torch.inference_mode():
        out, _ = frozen_cnn(ext, wav, None, chunk_samples=10 ** 9, gemm=True, derived=derived)
        ref, _ = ext(wav, None)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kernel,groups", [(16, 4), (7, 2), (128, 16)])
def test_positional_convolution_by_fft_equals_torchaudios(kernel, groups):
    """The frozen positional convolution through the FFT equals torchaudio's grouped convolution (even
    kernels drop their last frame, odd ones do not), for several lengths, and follows new weights."""
    torch.manual_seed(0)
    module = ConvolutionalPositionalEmbedding(embed_dim=32 if kernel < 128 else 96, kernel_size=kernel,
                                              groups=groups).eval()
    dim, derived = module.embed_dim, DerivedWeights()
    for frames in (5, 37, 150):
        x = torch.randn(3, frames, dim)
        with torch.inference_mode():
            torch.testing.assert_close(positional_conv_fft(module, x, derived), module(x), atol=2e-5, rtol=1e-4)
    with torch.no_grad():
        for p in module.parameters():
            p.mul_(1.5)  # a model file loaded: the kept kernel transform must not be reused
    with torch.inference_mode():
        torch.testing.assert_close(positional_conv_fft(module, x, derived), module(x), atol=2e-5, rtol=1e-4)


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


@pytest.mark.parametrize("mode", ["group_norm", "layer_norm"])
def test_masked_cnn_equals_the_reference_with_gradients(mode):
    """The masked CNN (one pass over a padded batch, what the export traces) gives the reference's features
    (torchaudio's CNN, row by row for group norm) on every valid frame, and the same gradients into the CNN's
    parameters and the samples."""
    ext = extractor(mode, bias=True).train()
    lengths = torch.tensor([4000, 2500, 3333])
    wav = torch.randn(3, 4000)
    wav[1, 2500:] = 7.0  # padding that is not silence must not matter
    grads = []
    for run in (masked_cnn, reference_cnn):
        ext.zero_grad()
        x = wav.clone().requires_grad_()
        features, frames = run(ext if run is reference_cnn else ext.conv_layers, x, lengths)
        valid = torch.cat([features[i, :int(n)] for i, n in enumerate(frames)])
        (valid * torch.linspace(-1, 1, valid.shape[-1])).pow(2).sum().backward()
        grads.append((valid.detach(), frames, x.grad, [p.grad.clone() for p in ext.parameters()]))
    (out, frames, wav_grad, params), (ref, ref_frames, ref_wav_grad, ref_params) = grads
    assert torch.equal(frames, ref_frames)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(wav_grad, ref_wav_grad, atol=1e-5, rtol=1e-3)
    scale = max(float(g.abs().max()) for g in ref_params)  # (a bias before group norm has ~0 gradient: noise)
    for got, want in zip(params, ref_params, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5 * scale, rtol=1e-3)


def test_derived_weights_are_remade_when_stale():
    """An entry is reused while its parameters are unchanged, remade after an in-place change (an optimizer
    step, ``load_state_dict``), a replaced parameter or another extra key; ``clear`` drops every entry."""
    conv = torch.nn.Conv1d(2, 3, 4)
    derived, made = DerivedWeights(), []

    def get(extra=torch.float32):
        return derived.get("w", [conv.weight], extra, lambda: made.append(1) or conv.weight.detach().to(extra))

    first = get()
    assert get() is first and len(made) == 1
    with torch.no_grad():
        conv.weight.mul_(2)
    torch.testing.assert_close(get(), conv.weight.detach())
    assert len(made) == 2
    conv.load_state_dict({"weight": torch.ones(3, 2, 4), "bias": torch.zeros(3)})
    assert get().eq(1).all() and len(made) == 3
    conv.weight = torch.nn.Parameter(torch.zeros(3, 2, 4))
    assert get().eq(0).all() and len(made) == 4
    assert get(torch.bfloat16).dtype == torch.bfloat16 and len(made) == 5
    derived.clear()
    assert derived.peek("w") is None and len(derived) == 0


# ----------------------------------------------------------------------------- in the front-end: auto vs reference

CHECKPOINTS = ["tiny_checkpoint", "prenorm_checkpoint"]  # group-norm CNN post-norm; layer-norm CNN pre-norm


def padded_batch(seed=0):
    """Three rows of noise of different lengths, the padding of one row not silence."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([9000, 6001, 4000])
    wav = torch.zeros(3, 9000)
    for i, n in enumerate(lengths.tolist()):
        wav[i, :n] = 0.3 * torch.randn(n, generator=generator)
    wav[1, 6001:] = 2.0
    return wav, lengths


def auto_and_reference(frontend, fn):
    """fn() with the fast kernels (``auto``), then with ``reference``."""
    out = []
    for kernels in ("auto", "reference"):
        frontend.kernels = kernels
        out.append(fn())
    frontend.kernels = "auto"
    return out


@pytest.mark.parametrize("checkpoint", CHECKPOINTS)
@pytest.mark.parametrize("padded", [True, False])
def test_frozen_input_kernels_equal_the_reference(checkpoint, padded, request, device):
    """Without gradients (extraction, a frozen CNN), ``auto`` runs the CNN as GEMMs with its folded first block
    and the positional convolution by FFT; its layers equal the reference path's (torchaudio's modules), for a
    padded batch on every valid frame (device tier)."""
    frontend = load_ssl_frontend(request.getfixturevalue(checkpoint)).eval().to(device)
    wav, lengths = padded_batch()
    if not padded:
        wav, lengths = wav[:1], lengths[:1]
    wav, lengths = wav.to(device), lengths.to(device)
    with torch.inference_mode():
        (auto, frames), (ref, ref_frames) = auto_and_reference(frontend, lambda: frontend(wav, lengths))
    if device.type == "cpu":
        assert frontend.derived.peek("positional_fft") is not None  # the kernels ran
    assert torch.equal(frames, ref_frames) and auto.shape == ref.shape
    atol, rtol = device_tolerance(device, 2e-5, 1e-4)
    for i, n in enumerate(frames.tolist()):
        torch.testing.assert_close(auto[i, :, :n], ref[i, :, :n], atol=atol, rtol=rtol)


@pytest.mark.parametrize("checkpoint", CHECKPOINTS)
def test_streaming_layer_sums_equal_the_reference(checkpoint, request, device):
    """In inference ``auto`` sums the layers as they come; ``reference`` stacks them and sums (padded batch;
    device tier)."""
    frontend = load_ssl_frontend(request.getfixturevalue(checkpoint)).eval().to(device)
    weights = torch.rand(2, frontend.num_layers).to(device)
    wav, lengths = (t.to(device) for t in padded_batch(1))
    with torch.no_grad():
        (auto, frames), (ref, _) = auto_and_reference(frontend, lambda: frontend.weighted_layers(wav, weights, lengths))
    atol, rtol = device_tolerance(device, 2e-5, 1e-4)
    for i, n in enumerate(frames.tolist()):
        torch.testing.assert_close(auto[:, i, :n], ref[:, i, :n], atol=atol, rtol=rtol)


@pytest.mark.parametrize("checkpoint", CHECKPOINTS)
def test_frozen_front_end_equals_the_reference_with_back_end_gradients(checkpoint, request):
    """A frozen front-end (``freeze_ssl``) in training: ``auto`` (inference mode into one tensor, fast kernels)
    and ``reference`` give the same layers and the same gradients to a back-end's weights, padded batch."""
    frontend = load_ssl_frontend(request.getfixturevalue(checkpoint), freeze_ssl=True).train()
    wav, lengths = padded_batch(2)

    def step():
        weights = torch.linspace(0.5, 1.5, frontend.num_layers).requires_grad_()
        layers, frames = frontend(wav, lengths)
        valid = (~pad_mask(frames, layers.shape[2]))[:, None, :, None]
        (torch.einsum("bltd,l->bltd", layers, weights) * valid).pow(2).sum().backward()
        return layers, frames, weights.grad

    (auto, frames, grad), (ref, _, ref_grad) = auto_and_reference(frontend, step)
    for i, n in enumerate(frames.tolist()):
        torch.testing.assert_close(auto[i, :, :n], ref[i, :, :n], atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(grad, ref_grad, atol=0, rtol=1e-4)


@pytest.mark.parametrize("checkpoint", CHECKPOINTS)
def test_reduced_precision_copies_are_close_to_the_reference(checkpoint, request, device):
    """Under mixed precision (bfloat16 autocast on the CPU, float16 on a GPU) a frozen front-end's blocks use
    reduced-precision copies of their matmul weights made once (``auto``); the layers stay within that rounding
    of the reference (autocast casting every call). Device tier."""
    frontend = load_ssl_frontend(request.getfixturevalue(checkpoint), freeze_ssl=True).to(device)
    wav = padded_batch(3)[0][:1].to(device)

    def run():
        with torch.no_grad(), torch.autocast(device.type, dtype=autocast_dtype(device)):
            return frontend(wav).float()

    auto, ref = auto_and_reference(frontend, run)
    assert frontend.derived.peek("blocks.reduced") is not None
    scale = ref.abs().amax(dim=(2, 3), keepdim=True)  # per layer
    assert ((auto - ref).abs() <= 0.06 * scale).all()


def test_reference_runs_no_fast_kernel(tiny_checkpoint, monkeypatch):
    """``frontend_kernels: reference`` runs torchaudio's modules everywhere: with every fast kernel made to fail,
    a frozen front-end's encoder still embeds (no gradients, inference mode, autocast, padded batch)."""
    def broken(*args, **kwargs):
        raise AssertionError("a fast kernel ran under frontend_kernels: reference")

    model = MainModel(tiny_checkpoint, nOut=8, head_nb=2, compression_dim=4, freeze_ssl=True,
                      frontend_kernels="reference").eval()
    assert model.frontend.kernels == "reference"
    for name in ("frozen_cnn", "positional_conv_fft"):
        monkeypatch.setattr(frontend.ssl_frontend, name, broken)
    for name in ("_inference_run", "_reduced_weights", "weighted_layers"):
        monkeypatch.setattr(SSLFrontend, name, broken)
    wav, lengths = padded_batch(4)
    with torch.inference_mode():
        plain = model(wav, lengths)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(wav, lengths)
    assert torch.isfinite(plain).all() and torch.isfinite(low).all() and len(model.frontend.derived) == 0
    model.frontend.kernels = "auto"
    with pytest.raises(AssertionError, match="fast kernel"):
        with torch.inference_mode():
            model(wav, lengths)


def test_an_unknown_kernel_choice_is_refused(tiny_checkpoint):
    with pytest.raises(Exception, match="frontend_kernels must be one of auto, reference"):
        load_ssl_frontend(tiny_checkpoint, kernels="fast")


def test_eval_command_with_reference_kernels_gives_the_same_embeddings(trained_run, small_demo, tmp_path):
    """Acceptance: a trained model file evaluated by the eval command with ``--frontend_kernels reference`` gives
    the embeddings of the default (fast kernels) within 1e-5 relative, float32 (whole files and crops). The
    option is part of the embedding cache key: the second command extracts again (a second cache entry), it does
    not reuse the first one's embeddings."""
    model = os.path.join(trained_run["save"], "model", "model000000002.model")
    common = ["--eval", "--initial_model", model, "--test_list", small_demo["trials"], "--test_path",
              small_demo["test_dir"], "--nDataLoaderThread", "0", "--save_path", str(tmp_path / "eval")]
    found = {}
    for kernels in ("auto", "reference"):
        out = tmp_path / f"{kernels}.npz"
        result = run_main(trainSpeakerNet_Eval, *common, "--frontend_kernels", kernels, "--save_embeddings", str(out))
        assert result.returncode == 0, result.stderr[-3000:]
        found[kernels] = load_embeddings(str(out))
    assert len(os.listdir(tmp_path / "eval" / "embedding_cache")) == 2
    auto, ref = found["auto"], found["reference"]
    assert auto.keys == ref.keys and len(auto.keys) > 2
    for got, want in ((auto.embeddings, ref.embeddings), (auto.crop_embeddings, ref.crop_embeddings)):
        assert got.dtype == np.float32 and got.shape == want.shape
        assert not np.array_equal(got, want)  # two computations, not one read twice
        relative = np.linalg.norm(got - want, axis=-1) / np.linalg.norm(want, axis=-1)
        assert relative.max() <= 1e-5, relative.max()
