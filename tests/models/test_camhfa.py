"""CA-MHFA: L = 1 is MHFA without the attention bias; a logit sees only its window; a padded batch gives the
embeddings of its rows one by one; a direct loop re-computation of the paper's formula."""
import pytest
import torch

from core.errors import ConfigError
from models.CAMHFA import CAMHFA, MainModel
from models.MHFA import MHFA


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


def reference_logits(ca: CAMHFA, k: torch.Tensor) -> torch.Tensor:
    """(1/L) sum_j q_{g,j} . K'_{t+j}, K' = 0 beyond the utterance, by loops. k [T, c] -> [T, G]."""
    T, R = k.shape[0], ca.context // 2
    q = ca.att_conv.weight  # [G, c, L]: q_{g, j} = q[g, :, j + R]
    out = torch.zeros(T, q.shape[0], dtype=k.dtype)
    for t in range(T):
        for j in range(-R, R + 1):
            if 0 <= t + j < T:
                out[t] += q[:, :, j + R] @ k[t + j]
    return out / ca.context


@pytest.mark.parametrize("context", [3, 5])
def test_logits_follow_the_formula_and_see_only_their_window(context):
    torch.manual_seed(1)
    ca = CAMHFA(3, 8, head_nb=4, compression_dim=6, outputs_dim=5, context=context).double()
    k = torch.randn(1, 12, 6, dtype=torch.float64)
    with torch.no_grad():
        logits = ca.attention_logits(k, None)[0]
        torch.testing.assert_close(logits, reference_logits(ca, k[0]), rtol=1e-12, atol=1e-12)
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
