"""steplr: every learning rate times lr_decay every test_interval epochs, stepped once per epoch."""
import pytest
import torch

from core.plugins import get_plugin


def test_decay_every_test_interval_epochs():
    p = torch.nn.Parameter(torch.ones(1))
    optimizer = torch.optim.SGD([{"params": [p], "lr": 1.0}], lr=1.0)
    scheduler, unit = get_plugin("scheduler", "steplr")(optimizer, test_interval=2, lr_decay=0.5)
    assert unit == "epoch"
    lrs = []
    for _ in range(5):
        optimizer.step()
        scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs == pytest.approx([1.0, 0.5, 0.5, 0.25, 0.25])
