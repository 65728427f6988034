import math

import pytest
import torch

from core.plugins import get_plugin
from models.MHFA import MHFA, MainModel
from tests.fakes import device_tolerance


def reference_mhfa(x, m):
    """Direct, loop-based re-computation of REFERENCE §1 on one batch."""
    B, L1, T, D = x.shape
    wk = [math.exp(w) for w in m.weights_k.tolist()]
    wv = [math.exp(w) for w in m.weights_v.tolist()]
    wk = [w / sum(wk) for w in wk]
    wv = [w / sum(wv) for w in wv]
    out = []
    for b in range(B):
        K = sum(wk[layer] * x[b, layer] for layer in range(L1))  # [T, D]
        V = sum(wv[layer] * x[b, layer] for layer in range(L1))
        Kc = K @ m.cmp_linear_k.weight.T + m.cmp_linear_k.bias
        Vc = V @ m.cmp_linear_v.weight.T + m.cmp_linear_v.bias
        logits = Kc @ m.att_head.weight.T + m.att_head.bias  # [T, H]
        heads = []
        for h in range(logits.shape[1]):
            e = [math.exp(logits[t, h].item()) for t in range(T)]
            a = [v / sum(e) for v in e]
            heads.append(sum(a[t] * Vc[t] for t in range(T)))
        flat = torch.cat(heads)
        out.append(flat @ m.pooling_fc.weight.T + m.pooling_fc.bias)
    return torch.stack(out)


def test_mhfa_matches_formulas():
    torch.manual_seed(0)
    m = MHFA(num_layers=4, inputs_dim=6, head_nb=3, compression_dim=5, outputs_dim=7).double()
    with torch.no_grad():  # non-uniform layer weights so the softmax matters
        m.weights_k.copy_(torch.randn(4))
        m.weights_v.copy_(torch.randn(4))
    x = torch.randn(2, 4, 9, 6, dtype=torch.float64)
    with torch.no_grad():
        got = m(x)
        want = reference_mhfa(x, m)
    assert got.shape == (2, 7)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_attention_is_over_time_not_heads():
    """Repeating every frame must not change the pooled embedding (softmax over time)."""
    torch.manual_seed(1)
    m = MHFA(3, 8, head_nb=4, compression_dim=5, outputs_dim=6)
    x = torch.randn(1, 3, 10, 8)
    with torch.no_grad():
        torch.testing.assert_close(m(x), m(x.repeat_interleave(2, dim=2)), rtol=1e-5, atol=1e-5)


def test_main_model_takes_layer_count_and_sizes_from_config(tiny_checkpoint, prenorm_checkpoint):
    model = MainModel(tiny_checkpoint, nOut=24, head_nb=5, compression_dim=12)
    assert model.backend.weights_k.shape == (3,)  # 2 blocks + input
    assert model.backend.att_head.out_features == 5
    assert model.backend.cmp_linear_v.out_features == 12
    assert model(torch.randn(2, 8000)).shape == (2, 24)
    large = MainModel(prenorm_checkpoint, nOut=16, head_nb=2, compression_dim=8)
    assert large.backend.weights_v.shape == (4,)


def test_parameter_groups_llrd_and_frozen_inputs(tiny_checkpoint):
    model = MainModel(tiny_checkpoint, nOut=8, head_nb=2, compression_dim=4)
    extra = [torch.nn.Parameter(torch.zeros(3))]
    groups = model.parameter_groups(5e-3, 2e-5, 0.5, extra_backend=extra)
    assert [g["lr"] for g in groups] == pytest.approx([5e-3, 2e-5, 1e-5])
    assert any(p is extra[0] for p in groups[0]["params"])
    grouped = {id(p) for g in groups for p in g["params"]}
    for module in model.frontend.input_modules():
        for p in module.parameters():
            assert not p.requires_grad and id(p) not in grouped
    # backward reaches the blocks and the back-end, never the frozen CNN
    model(torch.randn(2, 8000)).sum().backward()
    assert all(p.grad is None for p in model.frontend.model.feature_extractor.parameters())
    assert all(p.grad is not None for p in model.frontend.transformer_layers()[0].parameters() if p.requires_grad)


@pytest.mark.parametrize("model", ["MHFA", "CAMHFA"])
def test_inference_embeddings_equal_training_path_embeddings(tiny_checkpoint, model):
    """Without gradients the encoder sums the layers on the fly (no stored layers); with them it stacks the
    layers for autograd. Both give the same embeddings, whole and padded."""
    torch.manual_seed(0)
    encoder = get_plugin("models", model)(tiny_checkpoint, head_nb=4, compression_dim=8, nOut=16).eval()
    with torch.no_grad():  # non-uniform layer weights
        encoder.backend.weights_k.copy_(torch.randn(encoder.frontend.num_layers))
        encoder.backend.weights_v.copy_(torch.randn(encoder.frontend.num_layers))
    wav, lengths = torch.randn(3, 9000), torch.tensor([9000, 6000, 8000])
    for args in ((wav,), (wav, lengths)):
        training_path = encoder(*args)
        with torch.inference_mode():
            inference_path = encoder(*args)
        assert training_path.requires_grad
        torch.testing.assert_close(inference_path, training_path.detach(), atol=1e-5, rtol=1e-5)


def test_compile_frontend_option_compiles_every_block(tiny_checkpoint):
    encoder = MainModel(tiny_checkpoint, head_nb=4, compression_dim=8, nOut=16, compile_frontend=True)
    assert all(layer._compiled_call_impl is not None for layer in encoder.frontend.transformer_layers())
    plain = MainModel(tiny_checkpoint, head_nb=4, compression_dim=8, nOut=16)
    assert all(layer._compiled_call_impl is None for layer in plain.frontend.transformer_layers())


@pytest.mark.parametrize("model", ["MHFA", "CAMHFA"])
def test_frontend_kernels_option_reaches_the_front_end_with_the_same_embeddings(tiny_checkpoint, model, device):
    """``frontend_kernels`` is a model option of both plug-ins; the encoder's inference path (streaming layer
    sums, fast kernels) and the reference path (layers stacked, the back-end's own forward) embed a padded batch
    alike (MHFA and CA-MHFA; device tier)."""
    build = get_plugin("models", model)
    auto = build(tiny_checkpoint, nOut=16, head_nb=4, compression_dim=8).eval()
    reference = build(tiny_checkpoint, nOut=16, head_nb=4, compression_dim=8, frontend_kernels="reference").eval()
    assert (auto.frontend.kernels, reference.frontend.kernels) == ("auto", "reference")
    reference.load_state_dict(auto.state_dict())
    auto, reference = auto.to(device), reference.to(device)
    lengths = torch.tensor([12000, 7000, 5000], device=device)
    wav = 0.1 * torch.randn(3, 12000).to(device)
    with torch.no_grad():
        got, want = auto(wav, lengths), reference(wav, lengths)
    atol, rtol = device_tolerance(device, 1e-5, 1e-4)
    torch.testing.assert_close(got, want, atol=atol * float(want.abs().max()), rtol=rtol)
