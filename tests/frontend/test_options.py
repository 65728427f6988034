"""Front-end options: freeze_ssl, freeze_cnn + feature_grad_mult, layer_grad_mult, layer_drop, grad_checkpointing."""
import pytest
import torch

from core.config import read_yaml
from core.options import OPTION_BY_NAME, defaults
from frontend.ssl_frontend import load_ssl_frontend
from models.MHFA import MainModel
from synthetic.checkpoints import TINY_WAVLM, write_tiny_wavlm

SMALL = dict(nOut=8, head_nb=2, compression_dim=4)


def count_block_calls(frontend):
    """Forward-call counters on every transformer block (wrapping ``forward``: checkpoint
    recomputation bypasses module hooks)."""
    calls = [0] * len(frontend.transformer_layers())
    for i, layer in enumerate(frontend.transformer_layers()):
        def counted(*args, _i=i, _forward=layer.forward, **kwargs):
            calls[_i] += 1
            return _forward(*args, **kwargs)
        layer.forward = counted
    return calls


def test_freeze_ssl_no_grad_no_groups_eval_mode(tiny_checkpoint):
    model = MainModel(tiny_checkpoint, freeze_ssl=True, layer_drop=0.5, **SMALL).train()
    assert not any(p.requires_grad for p in model.frontend.parameters())
    assert not model.frontend.model.training  # stays in eval mode: no dropout, no layer drop
    groups = model.parameter_groups(5e-3, 2e-5, 1.0)
    assert [g["name"] for g in groups] == ["MHFA"]
    wav = torch.randn(2, 8000, requires_grad=True)
    layers = model.frontend(wav)
    assert layers.grad_fn is None  # ran under no_grad: nothing kept for backward, even toward the input
    model(wav).sum().backward()
    assert all(p.grad is None for p in model.frontend.parameters())
    assert all(p.grad is not None for p in model.backend.parameters())
    with torch.no_grad():
        torch.testing.assert_close(model.frontend(wav), layers)  # no layer drop although training


def test_default_trains_blocks_but_not_input_modules(tiny_checkpoint):
    model = MainModel(tiny_checkpoint, **SMALL)
    assert [g["name"] for g in model.parameter_groups(5e-3, 2e-5, 1.0)] == ["MHFA", "transformer.0", "transformer.1"]
    assert model.frontend(torch.randn(1, 8000)).grad_fn is not None


def cnn_grads(path, wav, **options):
    model = MainModel(path, freeze_cnn=False, **options, **SMALL)
    model(wav).sum().backward()
    return model, [p.grad.clone() for p in model.frontend.model.feature_extractor.parameters()]


def test_trainable_cnn_and_feature_grad_mult(tiny_checkpoint):
    wav = torch.randn(1, 4000)
    torch.manual_seed(1)
    model, full = cnn_grads(tiny_checkpoint, wav)
    groups = model.parameter_groups(5e-3, 2e-5, 1.0)
    assert groups[1]["name"] == "frontend.input" and groups[1]["lr"] == 2e-5
    cnn = {id(p) for p in model.frontend.model.feature_extractor.parameters()}
    assert cnn <= {id(p) for p in groups[1]["params"]}
    torch.manual_seed(1)  # same back-end initialisation
    _, scaled = cnn_grads(tiny_checkpoint, wav, feature_grad_mult=0.1)
    assert any(g.abs().max() > 0 for g in full)
    for g_full, g_scaled in zip(full, scaled, strict=True):
        torch.testing.assert_close(g_scaled, 0.1 * g_full, rtol=1e-4, atol=1e-7)


def test_feature_grad_mult_zero_fixes_the_cnn_alone_as_fairseq(tiny_checkpoint):
    """fairseq's feature_grad_mult 0 (the CA-MHFA author's cnn_scale 0): the CNN runs under no_grad and gets no
    gradient at all (so SGD's weight decay leaves it alone) and no optimizer slot; the feature projection,
    positional conv and encoder layer norm train; the layers are those of the default front-end."""
    wav = torch.randn(2, 4000)
    torch.manual_seed(1)
    model = MainModel(tiny_checkpoint, freeze_cnn=False, feature_grad_mult=0.0, **SMALL)
    model(wav).sum().backward()
    cnn = list(model.frontend.model.feature_extractor.parameters())
    assert all(p.grad is None and not p.requires_grad for p in cnn)
    others = [p for m in list(model.frontend.input_modules())[1:] for p in m.parameters()]
    assert others and all(p.grad is not None and p.grad.abs().max() > 0 for p in others)
    group = model.parameter_groups(5e-3, 2e-5, 1.0)[1]
    assert group["name"] == "frontend.input" and {id(p) for p in group["params"]} == {id(p) for p in others}
    reference = MainModel(tiny_checkpoint, **SMALL)
    reference.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(model.frontend(wav), reference.frontend(wav))


def test_feature_grad_mult_needs_a_trainable_cnn(tiny_checkpoint):
    with pytest.raises(ValueError, match="freeze_cnn"):
        load_ssl_frontend(tiny_checkpoint, feature_grad_mult=0.1)
    with pytest.raises(ValueError, match="freeze_ssl"):
        load_ssl_frontend(tiny_checkpoint, freeze_cnn=False, freeze_ssl=True, feature_grad_mult=0.1)


def test_layer_drop_skips_blocks_in_training_only(prenorm_checkpoint):
    frontend = load_ssl_frontend(prenorm_checkpoint, layer_drop=0.5)
    reference = load_ssl_frontend(prenorm_checkpoint).eval()
    calls = count_block_calls(frontend)
    wav = torch.randn(1, 8000)
    torch.manual_seed(0)
    with torch.no_grad():
        frontend.train()
        outs = [frontend(wav) for _ in range(10)]
        assert 0 < sum(calls) < 30  # 10 passes x 3 blocks, about half of them skipped
        skipped = [torch.equal(out[:, i + 1], out[:, i]) for out in outs for i in range(3)]
        assert sum(skipped) == 30 - sum(calls)  # a dropped block passes its input through
        frontend.eval()
        before = sum(calls)
        torch.testing.assert_close(frontend(wav), reference(wav))
        assert sum(calls) == before + 3
    with pytest.raises(ValueError, match="layer_drop"):
        load_ssl_frontend(prenorm_checkpoint, layer_drop=1.0)


@pytest.mark.parametrize("fixture", ["tiny_checkpoint", "prenorm_checkpoint"])
def test_grad_checkpointing_recomputes_blocks_with_equal_gradients(fixture, request):
    path = request.getfixturevalue(fixture)
    wav = torch.randn(1, 4000)
    results = []
    for flag in (False, True):
        frontend = load_ssl_frontend(path, grad_checkpointing=flag).train()
        calls = count_block_calls(frontend)
        out = frontend(wav)
        out.square().mean().backward()
        grads = [p.grad.clone() for layer in frontend.transformer_layers() for p in layer.parameters()]
        results.append((out.detach(), grads, list(calls)))
    (out0, grads0, calls0), (out1, grads1, calls1) = results
    assert calls0 == [1] * len(calls0) and calls1 == [2] * len(calls1)  # recomputed once in backward
    torch.testing.assert_close(out1, out0)
    for a, b in zip(grads1, grads0, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_options_are_yaml_keys_and_reach_the_model(tmp_path, tiny_checkpoint):
    keys = ["freeze_ssl", "freeze_cnn", "feature_grad_mult", "layer_drop", "grad_checkpointing",
            "allow_partial_checkpoint"]
    assert all(OPTION_BY_NAME[k].help for k in keys)
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("freeze_ssl: yes\nlayer_drop: 0.05\ngrad_checkpointing: true\n")
    config = dict(defaults(), **read_yaml(str(yaml_file)), pretrained_model_path=tiny_checkpoint, **SMALL)
    model = MainModel(**config)
    assert model.frontend.freeze_ssl and model.frontend.grad_checkpointing and model.frontend.layer_drop == 0.05


def test_layer_drop_defaults_to_the_checkpoints_own(tmp_path):
    """The original builds WavLM from the checkpoint's config, so its encoder_layerdrop (0.05 in WavLM Base+)
    is active in training; layer_drop overrides it only when given."""
    path = str(tmp_path / "with_layerdrop.pt")
    write_tiny_wavlm(path, seed=4, config=dict(TINY_WAVLM, encoder_layer_drop=0.05))
    assert load_ssl_frontend(path).layer_drop == 0.05
    assert load_ssl_frontend(path, layer_drop=0.0).layer_drop == 0.0
    assert defaults()["layer_drop"] is None
    assert MainModel(path, **{k: v for k, v in defaults().items() if k != "pretrained_model_path"}
                     ).frontend.layer_drop == 0.05


def test_layer_grad_mult_scales_the_gradient_into_every_layer(tiny_checkpoint):
    """wespeaker's feature_grad_mult: the back-end's gradient into all SSL layer outputs is scaled."""
    wav = torch.randn(2, 6000, dtype=torch.float64)
    grads = []
    for mult in (1.0, 0.1):
        frontend = load_ssl_frontend(tiny_checkpoint, layer_grad_mult=mult).double()  # float64: exact enough
        frontend(wav).pow(2).sum().backward()
        grads.append(frontend.transformer_layers()[0].feed_forward.output_dense.weight.grad)
    assert grads[0].abs().max() > 0
    torch.testing.assert_close(grads[1], 0.1 * grads[0], rtol=1e-9, atol=1e-12)
