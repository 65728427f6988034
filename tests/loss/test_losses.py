"""The other loss plug-ins: AM-softmax (loss/amsoftmax.py), plain softmax (loss/softmax.py), sub-center AAM with
inter-top-k, wespeaker's (loss/aamsoftmax_subcenter.py)."""
import math

import pytest
import torch
import torch.nn.functional as F

from core.plugins import available, get_plugin
from loss.aamsoftmax import aam_logits
from loss.aamsoftmax_subcenter import subcenter_intertopk_logits
from loss.amsoftmax import am_logits


@pytest.mark.parametrize("name", available("loss"))
def test_every_loss_trains_a_step(name):
    torch.manual_seed(0)
    loss_fn = get_plugin("loss", name)(nOut=8, nClasses=10, margin=0.2, scale=30.0)
    emb = torch.randn(6, 8, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 3, 4, 5])
    loss, acc = loss_fn(emb, labels)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss) and 0 <= acc.item() <= 100
    assert emb.grad.abs().sum() > 0 and all(p.grad is not None for p in loss_fn.parameters())


def test_am_softmax_subtracts_the_margin_from_the_target_cosine():
    emb, weight = torch.randn(3, 4), torch.randn(5, 4)
    labels = torch.tensor([1, 4, 0])
    cosine = F.normalize(emb) @ F.normalize(weight).T
    want = 30 * cosine
    want[torch.arange(3), labels] -= 30 * 0.35
    torch.testing.assert_close(am_logits(emb, weight, labels, 0.35, 30.0), want)


def test_subcenter_takes_the_closest_centre_and_penalises_the_topk():
    torch.manual_seed(1)
    n_classes, k = 6, 3
    emb, weight = torch.randn(4, 8), torch.randn(n_classes * k, 8)
    labels = torch.tensor([0, 5, 2, 2])
    margin, top = 0.2, 2
    got = subcenter_intertopk_logits(emb, weight, labels, margin, 32.0, k, top, 0.06) / 32.0
    cosine = (F.normalize(emb) @ F.normalize(weight).T).reshape(4, n_classes, k).amax(dim=2)
    for b in range(4):
        y = int(labels[b])
        theta = math.acos(float(cosine[b, y]))
        if theta + margin < math.pi:
            target = math.cos(theta + margin)
        else:
            target = float(cosine[b, y]) - (1 + math.cos(math.pi - margin))
        assert got[b, y].item() == pytest.approx(target, abs=1e-5)
        others = [j for j in range(n_classes) if j != y]
        hard = sorted(others, key=lambda j: float(cosine[b, j]), reverse=True)[:top]
        for j in others:
            theta_j = math.acos(float(cosine[b, j]))
            want = math.cos(theta_j - 0.06) if j in hard else float(cosine[b, j])  # m' = 0.06 at margin 0.2
            assert got[b, j].item() == pytest.approx(want, abs=1e-5)
    # no penalty while the margin is (near) zero, and none with inter_topk 0: plain (sub-center) AAM then
    zero = subcenter_intertopk_logits(emb, weight, labels, 0.0, 1.0, k, top, 0.06)
    torch.testing.assert_close(zero, cosine)
    one_centre = subcenter_intertopk_logits(emb, weight[::k].contiguous(), labels, margin, 32.0, 1, 0, 0.06)
    plain = aam_logits(emb, weight[::k], labels, margin, 32.0)
    assert (F.normalize(emb) @ F.normalize(weight[::k]).T).min() > math.cos(math.pi - margin)  # the two differ
    torch.testing.assert_close(one_centre, plain, rtol=1e-5, atol=1e-5)  # only where cos θ_y <= cos(π - m)
