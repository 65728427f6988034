"""coslr and cyclr as the original's (scheduler/coslr.py, scheduler/cyclr.py); exponential (wespeaker's warm-up +
exponential decrease) per group (scheduler/exponential.py)."""
import math

import pytest
import torch

from core.plugins import get_plugin
from scheduler.exponential import exponential_factor


def optimizer(*lrs):
    params = [torch.nn.Parameter(torch.ones(1)) for _ in lrs]
    return torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, lrs, strict=True)], lr=1.0, momentum=0.9)


def run(scheduler, opt, steps):
    rates = []
    for _ in range(steps):
        opt.step()
        scheduler.step()
        rates.append([g["lr"] for g in opt.param_groups])
    return rates


def test_coslr_is_the_originals_cosine():
    opt = optimizer(1e-3)
    scheduler, unit = get_plugin("scheduler", "coslr")(opt, max_epoch=15)
    rates = [r[0] for r in run(scheduler, opt, 16)]
    want = [6e-6 + (1e-3 - 6e-6) * (1 + math.cos(math.pi * t / 8)) / 2 for t in range(1, 17)]
    assert unit == "epoch" and rates == pytest.approx(want, rel=1e-6)  # back up after epoch 8, as the original


def test_cyclr_cycles_per_iteration_between_the_originals_bounds():
    opt = optimizer(5e-3)
    scheduler, unit = get_plugin("scheduler", "cyclr")(opt)
    rates = [r[0] for r in run(scheduler, opt, 4000)]
    assert unit == "iteration" and max(rates) == pytest.approx(1e-3) and min(rates) < 1e-6
    assert rates.index(max(rates)) == 1999  # 2000 iterations up (torch's default step_size_up)


def test_exponential_warm_up_and_decrease_for_each_group():
    opt = optimizer(0.1, 0.01)
    scheduler, unit = get_plugin("scheduler", "exponential")(opt, max_epoch=10, steps_per_epoch=10,
                                                             final_lr_ratio=0.05, warmup_epochs=3)
    assert unit == "iteration" and [g["lr"] for g in opt.param_groups] == [0.0, 0.0]  # warm from zero
    rates = run(scheduler, opt, 100)
    for t, (a, b) in enumerate(rates, 1):
        decay = math.exp(t / 100 * math.log(0.05))
        assert a == pytest.approx(0.1 * min(1.0, t / 30) * decay) and b == pytest.approx(a / 10)
    assert rates[-1][0] == pytest.approx(0.1 * 0.05)  # wespeaker's 0.1 -> 5e-3
    assert exponential_factor(5, 100, 30, 0.05, warm_from_zero=False) == pytest.approx(math.exp(0.05 * math.log(0.05)))
