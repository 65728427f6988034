"""The other loss plug-ins: AM-softmax (loss/amsoftmax.py), plain softmax (loss/softmax.py), sub-center AAM with
inter-top-k, wespeaker's (loss/aamsoftmax_subcenter.py); the contract of every loss plug-in, its margin set through
``set_margin`` (loss/__init__.py)."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ConfigError
from core.plugins import available, get_plugin
from loss import LossPlugin, check_loss_plugin
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


WITH_MARGIN = ["aamsoftmax", "aamsoftmax_subcenter", "amsoftmax"]


def test_the_plugins_with_a_margin_are_the_ones_named_here():
    assert sorted(WITH_MARGIN + ["softmax"]) == available("loss")  # a new plug-in gets its place in these tests


@pytest.mark.parametrize("name", WITH_MARGIN)
def test_set_margin_is_the_margin_the_next_forward_applies(name):
    """After set_margin(m) the loss is that of the same plug-in built with margin m (same weights), and differs from
    the loss at the margin it was built with; ``margin`` reads m back."""
    torch.manual_seed(0)
    factory = get_plugin("loss", name)
    loss_fn = factory(nOut=8, nClasses=10, margin=0.2, scale=30.0)
    built = factory(nOut=8, nClasses=10, margin=0.45, scale=30.0)
    built.load_state_dict(loss_fn.state_dict())
    emb, labels = torch.randn(6, 8), torch.tensor([0, 1, 2, 3, 4, 5])
    at_built = loss_fn(emb, labels)[0]
    assert loss_fn.margin == 0.2
    loss_fn.set_margin(0.45)
    assert loss_fn.margin == 0.45 and built.margin == 0.45
    torch.testing.assert_close(loss_fn(emb, labels)[0], built(emb, labels)[0])
    assert not torch.isclose(loss_fn(emb, labels)[0], at_built)


def test_softmax_has_no_margin_and_ignores_the_schedule():
    torch.manual_seed(0)
    loss_fn = get_plugin("loss", "softmax")(nOut=8, nClasses=10, margin=0.2, scale=30.0)
    emb, labels = torch.randn(6, 8), torch.tensor([0, 1, 2, 3, 4, 5])
    before = loss_fn(emb, labels)[0]
    assert loss_fn.margin == 0.0
    loss_fn.set_margin(0.5)
    assert loss_fn.margin == 0.0 and torch.equal(loss_fn(emb, labels)[0], before)


@pytest.mark.parametrize("name", available("loss"))
def test_every_plugin_keeps_the_contract(name):
    loss_fn = get_plugin("loss", name)(nOut=8, nClasses=10, margin=0.2, scale=30.0)
    assert isinstance(loss_fn, LossPlugin)
    check_loss_plugin(loss_fn)  # no error
    with pytest.raises(AttributeError):  # the old way, an assignment, fails instead of being silently lost
        loss_fn.margin = 0.3


class OldStyle(nn.Module):
    """A plug-in of the old contract: a margin attribute the trainer assigned to, no set_margin."""

    def __init__(self):
        super().__init__()
        self.margin = 0.2


OldStyle.__module__ = "loss.old_style"  # as if loss/old_style.py defined it


def test_a_plugin_without_set_margin_is_refused_by_name():
    with pytest.raises(ConfigError, match=r"loss plug-in 'old_style' \(loss\.old_style\.OldStyle\) has no "
                                          r"set_margin\(margin\) method, which"):
        check_loss_plugin(OldStyle())
    with pytest.raises(ConfigError, match=r"has no set_margin\(margin\) method and no margin attribute"):
        check_loss_plugin(nn.Linear(2, 2))
