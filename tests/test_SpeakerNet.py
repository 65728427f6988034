"""The network (SpeakerNet.py): the pre-trained-weight regulariser, the loss that combines it with CE."""
import pytest
import torch

from SpeakerNet import total_loss, weight_distance
from tests.fakes import make_net


def test_weight_distance_is_sum_of_norms():
    params = {"a": torch.tensor([3.0, 4.0]), "b": torch.tensor([1.0]), "c": torch.tensor([9.0])}
    anchor = {"a": torch.zeros(2), "b": torch.tensor([0.0])}  # 'c' is not in the checkpoint
    assert weight_distance(params, anchor).item() == pytest.approx(5.0 + 1.0)


def test_weight_distance_gradient_equals_autograd_of_the_norms():
    torch.manual_seed(0)
    params = {f"p{i}": torch.randn(5, 3, requires_grad=True) for i in range(3)}
    anchor = {"p0": params["p0"].detach() + 0.1 * torch.randn(5, 3), "p1": params["p1"].detach().clone(),
              "p2": params["p2"].detach() - 0.2}  # p1 has not moved: its norm is 0
    r = weight_distance(params, anchor)
    (2.0 * r).backward()
    fused = {n: p.grad.clone() for n, p in params.items()}
    for p in params.values():
        p.grad = None
    ref = sum(torch.linalg.vector_norm(p - anchor[n]) for n, p in params.items())
    (2.0 * ref).backward()
    assert r.item() == pytest.approx(ref.item(), rel=1e-6)
    for n, p in params.items():
        torch.testing.assert_close(fused[n], p.grad, atol=1e-6, rtol=1e-6)
    assert torch.equal(fused["p1"], torch.zeros(5, 3))  # zero distance: zero gradient, not NaN


def test_total_loss_original_and_plain():
    ce = torch.tensor(2.0, requires_grad=True)
    reg = torch.tensor(4.0, requires_grad=True)
    original = total_loss(ce, reg, 0.01, "original")
    assert original.item() == pytest.approx(1.0 + 0.01 * 4.0 / (4.0 + 1e-5))
    original.backward()
    assert ce.grad.item() == pytest.approx(1 / 2.0)  # CE gradient scaled by 1/CE
    assert reg.grad.item() == pytest.approx(0.01 / (4.0 + 1e-5))
    assert total_loss(torch.tensor(2.0), torch.tensor(4.0), 0.01, "plain").item() == pytest.approx(2.04)
    assert total_loss(torch.tensor(2.0), None, 0.01, "plain").item() == 2.0


@pytest.mark.parametrize("reg,weight", [(None, 0.01), (torch.tensor(4.0), 0.0), (None, 0.0)])
def test_original_loss_normalises_ce_also_without_regulariser(reg, weight):
    """The paper's loss is CE/sg(CE) also when weight_finetuning_reg is 0 or the front-end is frozen (no r)."""
    ce = torch.tensor(2.0, requires_grad=True)
    loss = total_loss(ce, reg, weight, "original")
    loss.backward()
    assert loss.item() == pytest.approx(1.0) and ce.grad.item() == pytest.approx(0.5)
    plain = torch.tensor(2.0, requires_grad=True)
    total_loss(plain, reg, weight, "plain").backward()
    assert plain.grad.item() == pytest.approx(1.0)


def test_regulariser_runs_on_one_device_and_grows_when_weights_move(tiny_checkpoint):
    net = make_net(tiny_checkpoint)
    assert net.regulariser().item() == 0.0
    with torch.no_grad():
        net.encoder.frontend.transformer_layers()[0].feed_forward.output_dense.bias.add_(0.5)
    assert net.regulariser().item() > 0
    loss, ce, acc = net(torch.randn(2, 1, 8000), torch.tensor([0, 1]))
    assert loss.item() > 1.0  # CE/sg(CE) = 1 plus a positive regulariser term
