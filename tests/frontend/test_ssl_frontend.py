"""The SSL front-end (frontend/ssl_frontend.py) on official WavLM files, their tensors renamed to torchaudio's
(frontend/names.py): its layers equal torchaudio's blocks; bad or untrusted checkpoints give clear errors; frozen,
compiled and autocast blocks give the same layers."""
import pytest
import torch
import torch.nn.functional as F
from torchaudio.models import wavlm_model

from core.errors import CheckpointError
from frontend.formats import parse_conv_layers, read_wavlm_checkpoint, wavlm_cfg_to_torchaudio
from frontend.names import wavlm_state_to_torchaudio
from frontend.ssl_frontend import load_ssl_frontend


def reference_model(path):
    """torchaudio model built independently from the file (the loader is not used)."""
    cfg, state = read_wavlm_checkpoint(path)
    model = wavlm_model(**wavlm_cfg_to_torchaudio(cfg), aux_num_out=None)
    converted, unknown = wavlm_state_to_torchaudio(state)
    assert not unknown
    model.load_state_dict(converted)
    return model.eval(), cfg, state


@pytest.fixture(params=["tiny_checkpoint", "prenorm_checkpoint"])
def loaded(request):
    """(front-end loaded by the project, independent reference model, official cfg, official state)
    for a post-norm and a pre-norm checkpoint."""
    path = request.getfixturevalue(request.param)
    return (load_ssl_frontend(path).eval(), *reference_model(path))


def test_layers_match_torchaudio_blocks(loaded):
    frontend, ref, cfg, _ = loaded
    wav = torch.randn(2, 12000)
    with torch.no_grad():
        out = frontend(wav)
        blocks, _ = ref.extract_features(wav)
    assert out.shape == (2, cfg["encoder_layers"] + 1, blocks[0].shape[1], cfg["encoder_embed_dim"])
    for i, block in enumerate(blocks):
        torch.testing.assert_close(out[:, i + 1], block, atol=1e-5, rtol=1e-5)


def test_layer0_is_transformer_input_computed_from_official_weights(loaded):
    """Layer 0 recomputed by hand from the official tensors: CNN -> LN -> proj -> + pos conv (-> LN if post-norm)."""
    frontend, ref, cfg, state = loaded
    wav = torch.randn(1, 8000)
    with torch.no_grad():
        feats, _ = ref.feature_extractor(wav, None)  # CNN output [1, T, C]
        x = F.layer_norm(feats, feats.shape[-1:], state["layer_norm.weight"], state["layer_norm.bias"])
        x = F.linear(x, state["post_extract_proj.weight"], state["post_extract_proj.bias"])
        g, v = state["encoder.pos_conv.0.weight_g"], state["encoder.pos_conv.0.weight_v"]
        weight = g * v / v.norm(dim=(0, 1), keepdim=True)  # weight norm over dim 2
        k = cfg["conv_pos"]
        pos = F.conv1d(x.transpose(1, 2), weight, state["encoder.pos_conv.0.bias"], padding=k // 2,
                       groups=cfg["conv_pos_groups"])
        pos = F.gelu(pos[:, :, :-1] if k % 2 == 0 else pos).transpose(1, 2)
        x = x + pos
        if not cfg["layer_norm_first"]:
            x = F.layer_norm(x, x.shape[-1:], state["encoder.layer_norm.weight"], state["encoder.layer_norm.bias"])
        torch.testing.assert_close(frontend(wav)[:, 0], x, atol=1e-5, rtol=1e-5)


def test_prenorm_last_layer_has_no_final_layer_norm(prenorm_checkpoint):
    frontend = load_ssl_frontend(prenorm_checkpoint).eval()
    ref, _, _ = reference_model(prenorm_checkpoint)
    wav = torch.randn(1, 8000)
    with torch.no_grad():
        last = frontend(wav)[:, -1]
        final, _ = ref(wav)  # torchaudio forward applies the encoder's final layer norm
    assert not torch.allclose(last, final, atol=1e-3)
    torch.testing.assert_close(ref.encoder.transformer.layer_norm(last), final, atol=1e-5, rtol=1e-5)


def test_parse_conv_layers_without_eval():
    assert parse_conv_layers("[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2") == \
        [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2
    for bad in ["__import__('os').system('true')", "[(1, 2)]", "[]", "open('x')"]:
        with pytest.raises(CheckpointError):
            parse_conv_layers(bad)


def test_bad_checkpoints_give_clear_errors(tmp_path, tiny_checkpoint):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_ssl_frontend(str(tmp_path / "missing.pt"))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"hello, not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pt"):
        load_ssl_frontend(str(garbage))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(open(tiny_checkpoint, "rb").read()[:5000])
    with pytest.raises(CheckpointError, match="truncated.pt"):
        load_ssl_frontend(str(truncated))
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match="not a supported SSL checkpoint"):
        load_ssl_frontend(str(other))


def test_weights_that_do_not_fit_the_cfg_are_reported(tmp_path, tiny_checkpoint):
    obj = torch.load(tiny_checkpoint)
    obj["cfg"]["encoder_layers"] = 3  # the file only has 2 blocks
    path = tmp_path / "wrong_arch.pt"
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match="missing tensors"):
        load_ssl_frontend(str(path))
    obj = torch.load(tiny_checkpoint)
    obj["model"]["encoder.layers.0.extra.weight"] = torch.zeros(1)
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match="encoder.layers.0.extra.weight"):
        load_ssl_frontend(str(path))


def test_pickled_objects_need_trust(tmp_path, tiny_checkpoint):
    import argparse
    obj = torch.load(tiny_checkpoint)
    obj["args"] = argparse.Namespace(x=1)  # as fairseq files carry
    path = tmp_path / "needs_trust.pt"
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match="trust_checkpoint"):
        load_ssl_frontend(str(path))
    assert load_ssl_frontend(str(path), trust_checkpoint=True).num_layers == 3


@pytest.mark.parametrize("checkpoint", ["tiny_checkpoint", "prenorm_checkpoint"])
def test_weighted_layers_without_gradients_equal_the_sum_of_stored_layers(checkpoint, request):
    """Extraction sums the layers as they come (nothing stored); the sums equal those of the stacked layers,
    for a padded batch too."""
    frontend = load_ssl_frontend(request.getfixturevalue(checkpoint)).eval()
    weights = torch.rand(2, frontend.num_layers)
    wav, lengths = torch.randn(3, 9000), torch.tensor([9000, 7000, 5000])
    layers, frames = frontend(wav, lengths)  # autograd on: stored and stacked
    with torch.no_grad():
        sums, sum_frames = frontend.weighted_layers(wav, weights, lengths)
    assert torch.equal(frames, sum_frames) and not sums.is_inference()
    torch.testing.assert_close(sums, torch.einsum("bltd,sl->sbtd", layers.detach(), weights), atol=1e-5, rtol=1e-5)
    grad_sums, _ = frontend.weighted_layers(wav, weights.requires_grad_(), lengths)  # training: through autograd
    torch.testing.assert_close(grad_sums.detach(), sums, atol=1e-5, rtol=1e-5)
    assert grad_sums.requires_grad


def test_frozen_layers_are_made_under_inference_mode_and_train_the_back_end(tiny_checkpoint):
    """A frozen front-end's layers come from inference mode into one normal tensor: it has no autograd
    history, equals the layers computed with autograd, and a back-end's weights still get gradients
    from it; under bfloat16 autocast it is stored in bfloat16."""
    frozen = load_ssl_frontend(tiny_checkpoint, freeze_ssl=True)
    reference = load_ssl_frontend(tiny_checkpoint).eval()
    wav = torch.randn(2, 8000)
    layers = frozen(wav)
    assert not layers.requires_grad and not layers.is_inference() and layers.grad_fn is None
    torch.testing.assert_close(layers, reference(wav).detach(), atol=1e-5, rtol=1e-5)
    weights = torch.ones(frozen.num_layers, requires_grad=True)
    torch.einsum("bltd,l->btd", layers, weights).pow(2).sum().backward()
    assert weights.grad is not None and torch.isfinite(weights.grad).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert frozen(wav).dtype == torch.bfloat16


@pytest.mark.slow
def test_compiled_blocks_give_the_same_layers_and_gradients(tiny_checkpoint):
    """compile_frontend: torch.compile of the blocks (here the aot_eager backend: the same graph capture
    and autograd as inductor without its C++ build, which takes minutes) leaves outputs, gradients and
    parameter names as they were, for inputs of two lengths (dynamic shapes)."""
    eager = load_ssl_frontend(tiny_checkpoint, layer_drop=0.0).eval()
    compiled = load_ssl_frontend(tiny_checkpoint, layer_drop=0.0).eval().compile_blocks(backend="aot_eager")
    assert list(compiled.state_dict()) == list(eager.state_dict())
    for samples in (8000, 11000):
        wav = torch.randn(2, samples)
        want, got = eager(wav), compiled(wav)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        want.pow(2).sum().backward()
        got.pow(2).sum().backward()
        for (name, a), (_, b) in zip(eager.named_parameters(), compiled.named_parameters(), strict=True):
            if a.grad is not None:
                torch.testing.assert_close(b.grad, a.grad, atol=1e-4, rtol=1e-4, msg=name)
        eager.zero_grad()
        compiled.zero_grad()


def test_frozen_blocks_under_autocast_cast_their_weights_once_with_the_same_results(tiny_checkpoint):
    """A frozen front-end under autocast runs its blocks on bfloat16 copies of the matmul weights made once
    (autocast would cast them every step): the layers equal autocast's own, and a model file loaded into
    the front-end afterwards (new weights) is used, not stale copies."""
    frozen = load_ssl_frontend(tiny_checkpoint, freeze_ssl=True)
    reference = load_ssl_frontend(tiny_checkpoint).eval()
    wav = torch.randn(2, 8000)

    def both():  # one autocast region each (autocast keeps its own casts until the region ends)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            return frozen(wav), reference(wav)

    torch.testing.assert_close(*both(), atol=0, rtol=0)
    first = frozen.derived.peek("blocks.reduced")
    assert first is not None and first[0]["feed_forward.intermediate_dense.weight"].dtype == torch.bfloat16
    both()
    assert frozen.derived.peek("blocks.reduced") is first  # made once
    state = {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v
             for k, v in reference.state_dict().items()}
    reference.load_state_dict(state)
    frozen.load_state_dict(state)
    torch.testing.assert_close(*both(), atol=0, rtol=0)
    assert frozen.derived.peek("blocks.reduced") is not first
