"""Optimizer plug-ins: each keeps the per-group learning rates of the parameter groups it is given."""
import pytest
import torch

from core.plugins import available, get_plugin


@pytest.mark.parametrize("name", available("optimizer"))
def test_optimizer_keeps_group_learning_rates_and_steps(name):
    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))
    optimizer = get_plugin("optimizer", name)([{"params": [a], "lr": 0.5}, {"params": [b], "lr": 0.25}], lr=1e-3)
    assert [g["lr"] for g in optimizer.param_groups] == [0.5, 0.25]  # the default lr does not override groups
    (a.sum() + b.sum()).backward()
    optimizer.step()
    assert torch.all(a < 1) and torch.all(b < 1) and not torch.equal(a.detach()[:2], b.detach())
