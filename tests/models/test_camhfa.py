"""CA-MHFA: L = 1 is MHFA without the attention bias; a logit sees only its window; a padded batch gives the
embeddings of its rows one by one; a direct loop re-computation of the paper's formula (with 1/L) and of the
first author's code (without); the defaults are his configuration; model files written before
``context_average`` load with the 1/L they were trained with."""
import pytest
import torch
import torch.nn.functional as F

from core.errors import ConfigError
from core.options import defaults
from model_files import apply_model_file, build_speaker_encoder, model_file_fields, save_model_file
from models.CAMHFA import CAMHFA, MainModel
from models.MHFA import MHFA
from tests.fakes import make_net, save_self_contained_model


def twin_mhfa(ca: CAMHFA) -> MHFA:
    """An MHFA with CA-MHFA's weights (L = 1) and a zero attention bias."""
    m = MHFA(ca.weights_k.numel(), ca.cmp_linear_k.in_features, ca.att_conv.out_channels,
             ca.cmp_linear_k.out_features, ca.pooling_fc.out_features).double()
    state = {k: v for k, v in ca.state_dict().items() if not k.startswith("att_conv")}
    state["att_head.weight"] = ca.att_conv.weight[:, :, 0].clone()
    state["att_head.bias"] = torch.zeros(ca.att_conv.out_channels, dtype=torch.float64)
    m.load_state_dict(state)
    return m


def test_context_one_is_mhfa_without_bias():
    torch.manual_seed(0)
    ca = CAMHFA(4, 6, head_nb=3, compression_dim=5, outputs_dim=7, context=1).double()
    with torch.no_grad():
        ca.weights_k.copy_(torch.randn(4))
        ca.weights_v.copy_(torch.randn(4))
    x = torch.randn(2, 4, 11, 6, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(ca(x), twin_mhfa(ca)(x), rtol=1e-6, atol=1e-6)


def reference_logits(ca: CAMHFA, k: torch.Tensor, average: bool) -> torch.Tensor:
    """s * sum_j q_{g,j} . K'_{t+j}, K' = 0 beyond the utterance, by loops (s = 1/L when ``average``, the paper's
    equation; else 1, the first author's code). k [T, c] -> [T, G]."""
    T, R = k.shape[0], ca.context // 2
    q = ca.att_conv.weight  # [G, c, L]: q_{g, j} = q[g, :, j + R]
    out = torch.zeros(T, q.shape[0], dtype=k.dtype)
    for t in range(T):
        for j in range(-R, R + 1):
            if 0 <= t + j < T:
                out[t] += q[:, :, j + R] @ k[t + j]
    return out / ca.context if average else out


@pytest.mark.parametrize("average", [False, True])
@pytest.mark.parametrize("context", [3, 5])
def test_logits_follow_the_formula_and_see_only_their_window(context, average):
    torch.manual_seed(1)
    ca = CAMHFA(3, 8, head_nb=4, compression_dim=6, outputs_dim=5, context=context, context_average=average).double()
    k = torch.randn(1, 12, 6, dtype=torch.float64)
    with torch.no_grad():
        logits = ca.attention_logits(k, None)[0]
        torch.testing.assert_close(logits, reference_logits(ca, k[0], average), rtol=1e-12, atol=1e-12)
        t, R = 5, context // 2
        for frame in range(12):
            moved = k.clone()
            moved[0, frame] += 10.0
            changed = (ca.attention_logits(moved, None)[0, t] - logits[t]).abs().max() > 1e-6
            assert changed == (abs(frame - t) <= R), (frame, t)


def test_padded_batch_equals_one_by_one(tiny_checkpoint):
    torch.manual_seed(2)
    model = MainModel(tiny_checkpoint, nOut=16, head_nb=4, compression_dim=8, context=5).eval()
    lengths = torch.tensor([8000, 5123, 3000])
    batch = torch.zeros(3, 8000)
    for i, n in enumerate(lengths):
        batch[i, :n] = torch.randn(int(n))
    with torch.no_grad():
        padded = model(batch, lengths)
        alone = torch.cat([model(batch[i:i + 1, :n]) for i, n in enumerate(lengths)])
    torch.testing.assert_close(padded, alone, atol=1e-4, rtol=1e-4)


def test_main_model_and_bad_context(tiny_checkpoint):
    model = MainModel(tiny_checkpoint, nOut=24, head_nb=5, compression_dim=12, context=7)
    assert model.backend.att_conv.weight.shape == (5, 12, 7) and model.backend.att_conv.bias is None
    assert not hasattr(model.backend, "att_head")
    for bad in (0, 2, -1):
        with pytest.raises(ConfigError, match="odd"):
            CAMHFA(3, 8, context=bad)


def author_g_mhfa_conv2d(x, weights_k, weights_v, cmp_k, cmp_v, att_weight, pooling_fc, head_nb, group):
    """The first author's MHFA_Group_Conv2D.forward (Wespeaker_SSL, wespeaker/models/ssl_backend.py), re-computed
    step by step. x [B, D, T, layers] (his layout); att_weight [group, 1, head_nb // group + 1, c] (his Conv2d's
    weight, no bias); cmp_k, cmp_v, pooling_fc: (weight, bias). No 1/L anywhere."""
    k = torch.sum(x * torch.softmax(weights_k, dim=-1), dim=-1).transpose(1, 2)  # [B, T, D]
    v = torch.sum(x * torch.softmax(weights_v, dim=-1), dim=-1).transpose(1, 2)
    k = k @ cmp_k[0].T + cmp_k[1]  # [B, T, c]
    v = v @ cmp_v[0].T + cmp_v[1]
    group_len = head_nb // group
    k_att = F.conv2d(k.unsqueeze(1), att_weight, stride=1, padding=(group_len // 2, 0))  # [B, group, T, 1]
    k_att = k_att.permute(0, 2, 1, 3)  # [B, T, group, 1]
    pooled = torch.sum(v.unsqueeze(-2) * torch.softmax(k_att, dim=1), dim=1)  # [B, group, c]
    return pooled.reshape(pooled.shape[0], -1) @ pooling_fc[0].T + pooling_fc[1]


def test_the_defaults_are_the_first_authors_configuration_and_compute_his_forward():
    """His G_MHFA_Conv2D with head_nb 256, group 64 (Base+: 13 layers of 768; compression 128, embedding 256) is our
    default CAMHFA (64 groups, context 5 = 256 // 64 + 1, no 1/L): with his tensors copied in, the same embeddings
    to float32 precision. The paper's 1/L (context_average) gives other ones."""
    torch.manual_seed(3)
    ours = CAMHFA(13, 768)
    assert ours.att_conv.weight.shape == (64, 128, 5) and ours.pooling_fc.weight.shape == (256, 64 * 128)
    with torch.no_grad():
        for p in (ours.weights_k, ours.weights_v, ours.att_conv.weight):
            p.copy_(torch.randn_like(p) * (0.05 if p.dim() == 3 else 1.0))
    x = torch.randn(2, 13, 150, 768)  # ours [B, layers, T, D]; 150 frames = a 3 s crop
    his_weight = ours.att_conv.weight.detach().permute(0, 2, 1).unsqueeze(1)  # [64, 1, 5, 128]
    with torch.no_grad():
        expected = author_g_mhfa_conv2d(
            x.permute(0, 3, 2, 1), ours.weights_k, ours.weights_v, (ours.cmp_linear_k.weight, ours.cmp_linear_k.bias),
            (ours.cmp_linear_v.weight, ours.cmp_linear_v.bias), his_weight,
            (ours.pooling_fc.weight, ours.pooling_fc.bias), head_nb=256, group=64)
        torch.testing.assert_close(ours(x), expected, rtol=1e-5, atol=1e-5)
        averaged = CAMHFA(13, 768, context_average=True)
        averaged.load_state_dict(ours.state_dict())
        assert (averaged(x) - expected).abs().max() > 1e-3


def test_unset_head_nb_is_each_models_own_and_files_record_it(tiny_checkpoint, tmp_path):
    """head_nb not set: 64 groups for CAMHFA, 32 heads for MHFA; a model file records the number (not None)."""
    config = {**defaults(), "pretrained_model_path": tiny_checkpoint, "nOut": 16, "compression_dim": 8}
    assert config["head_nb"] is None and config["context"] == 5 and config["context_average"] is False
    for model, heads, weight in (("CAMHFA", 64, "att_conv"), ("MHFA", 32, "att_head")):
        net = make_net(tiny_checkpoint, **{**config, "model": model})
        assert getattr(net.encoder.backend, weight).weight.shape[0] == heads
        assert model_file_fields(net, {**config, "model": model})["config"]["head_nb"] == heads


def test_model_files_from_before_context_average_keep_their_one_over_l(tiny_checkpoint, tmp_path):
    """A CAMHFA model file whose recorded options lack context_average was trained with 1/L: it loads with it and
    gives its embeddings as before; a file recording the option loads with its value."""
    path = tmp_path / "old.model"
    encoder, _ = save_self_contained_model(tiny_checkpoint, path, model="CAMHFA", context=3, context_average=True)
    obj = torch.load(path, weights_only=True)
    del obj["config"]["context_average"]
    save_model_file(obj, str(path))
    resolved = apply_model_file({**defaults(), "initial_model": str(path)}, sources={})
    assert resolved["context_average"] is True and resolved["context"] == 3
    wav = 0.1 * torch.randn(2, 12000)
    with torch.no_grad():
        torch.testing.assert_close(build_speaker_encoder(resolved, torch.device("cpu")).eval()(wav), encoder(wav),
                                   rtol=0, atol=1e-6)
    new = tmp_path / "new.model"
    save_self_contained_model(tiny_checkpoint, new, model="CAMHFA")
    assert apply_model_file({**defaults(), "initial_model": str(new)}, sources={})["context_average"] is False
