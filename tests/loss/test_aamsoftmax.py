import math

import pytest
import torch

from loss.aamsoftmax import LossFunction, aam_logits


def hand_logit(cos_t, m, s):
    """Target logit by hand: cos(θ+m) if θ+m < π (cos θ > cos(π−m)), else cos θ − m·sin(π−m)."""
    theta = math.acos(cos_t)
    if cos_t > math.cos(math.pi - m):
        return s * math.cos(theta + m)
    return s * (cos_t - math.sin(math.pi - m) * m)


@pytest.mark.parametrize("degrees", [0.0, 60.0, 150.0, 170.0, 179.0])
def test_target_logit_matches_hand_computation(degrees):
    m, s = 0.5, 30.0  # cos(π−m) ≈ −0.878: 170° and 179° fall in the fallback branch
    a = math.radians(degrees)
    weight = torch.tensor([[2.0, 0.0], [0.0, 0.5]])  # weight norms must not matter
    emb = torch.tensor([[math.cos(a), math.sin(a)]], dtype=torch.float64) * 3.0
    logits = aam_logits(emb, weight.double(), torch.tensor([0]), m, s)
    assert logits[0, 0].item() == pytest.approx(hand_logit(math.cos(a), m, s), rel=1e-6, abs=1e-6)
    assert logits[0, 1].item() == pytest.approx(s * math.sin(a), abs=1e-6)  # non-target: s·cos θ_j


def test_fallback_branch_differs_from_plain_cos_theta_plus_m():
    m, s, a = 0.5, 1.0, math.radians(170)
    logit = aam_logits(torch.tensor([[math.cos(a), math.sin(a)]]), torch.eye(2), torch.tensor([0]), m, s)[0, 0]
    assert logit.item() == pytest.approx(math.cos(a) - math.sin(math.pi - m) * m, rel=1e-5)
    assert abs(logit.item() - math.cos(a + m)) > 0.05


def test_loss_is_cross_entropy_of_aam_logits_and_accuracy():
    torch.manual_seed(0)
    loss_fn = LossFunction(nOut=4, nClasses=3, margin=0.2, scale=30)
    emb, labels = torch.randn(5, 4), torch.tensor([0, 1, 2, 1, 0])
    loss, acc = loss_fn(emb, labels)
    logits = aam_logits(emb, loss_fn.weight, labels, 0.2, 30)
    manual = -(logits.log_softmax(1)[torch.arange(5), labels]).mean()
    assert torch.isclose(loss, manual)
    assert acc.item() == pytest.approx((logits.argmax(1) == labels).float().mean().item() * 100)
    loss_fn.set_margin(0.0)
    loss0, _ = loss_fn(emb, labels)
    assert loss0 < loss  # a margin makes the target harder
