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


@pytest.mark.parametrize("name,default", [("adamw", 0.01), ("adam", 0.0), ("sgd", 0.0)])
def test_weight_decay_keeps_the_optimizers_default_unless_given(name, default):
    factory = get_plugin("optimizer", name)
    params = [torch.nn.Parameter(torch.ones(1))]
    assert factory(params, lr=1e-3).defaults["weight_decay"] == default
    assert factory(params, lr=1e-3, weight_decay=1e-7).defaults["weight_decay"] == 1e-7
    if name == "sgd":
        assert factory(params, lr=1e-3, nesterov=True).defaults["nesterov"] is True
