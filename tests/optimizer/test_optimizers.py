"""Optimizer plug-ins (optimizer/adam.py, optimizer/adamw.py, optimizer/sgd.py): each keeps the per-group learning
rates of the parameter groups it is given; torch's update implementations (optimizer/__init__.py) agree."""
import pytest
import torch

from core.errors import ConfigError
from core.plugins import available, get_plugin
from optimizer import implementation


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


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_every_update_implementation_gives_the_same_update(name):
    """optimizer_impl only picks torch's kernel: fused (auto on CPU), foreach and the per-tensor loop (the
    original's) agree to float rounding over a few steps."""
    factory = get_plugin("optimizer", name)
    results = {}
    for impl in ("auto", "fused", "foreach", "loop"):
        torch.manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(7, 5)), torch.nn.Parameter(torch.randn(5))]
        optimizer = factory([{"params": params[:1], "lr": 0.1}, {"params": params[1:], "lr": 0.01}], lr=1e-3,
                            optimizer_impl=impl)
        assert bool(optimizer.defaults.get("fused")) == (impl in ("auto", "fused"))
        for step in range(4):
            optimizer.zero_grad()
            (params[0].sin().sum() * (step + 1) + (params[1] ** 2).sum()).backward()
            optimizer.step()
        results[impl] = [p.detach().clone() for p in params]
    for impl in ("fused", "foreach", "loop"):
        for a, b in zip(results[impl], results["auto"], strict=True):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    torch.manual_seed(0)
    assert not torch.allclose(results["loop"][0], torch.randn(7, 5))  # the parameters did move


def test_fused_update_needs_floating_point_parameters():
    assert implementation([torch.zeros(2)], "auto") == {"fused": True}
    assert implementation([{"params": [torch.zeros(2, dtype=torch.float64)]}], "loop") == {"foreach": False}
    assert implementation([torch.zeros(2, dtype=torch.int64)], "auto") == {}
    with pytest.raises(ConfigError, match="optimizer_impl: fused"):
        implementation([torch.zeros(2, dtype=torch.int64)], "fused")
