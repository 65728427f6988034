import os

import pytest
import torch

from models.checkpoint_names import torchaudio_state_to_wavlm
from models.checkpoints import CheckpointError
from SpeakerNet import (SpeakerNet, find_checkpoints, load_model_state, save_atomic, total_loss,
                        weight_distance)


def make_net(checkpoint, **over):
    torch.manual_seed(0)
    cfg = dict(model="MHFA", trainfunc="aamsoftmax", pretrained_model_path=checkpoint, nOut=8, head_nb=2,
               compression_dim=4, nClasses=3, weight_finetuning_reg=0.01)
    cfg.update(over)
    return SpeakerNet(**cfg)


def test_weight_distance_is_sum_of_norms():
    params = {"a": torch.tensor([3.0, 4.0]), "b": torch.tensor([1.0]), "c": torch.tensor([9.0])}
    anchor = {"a": torch.zeros(2), "b": torch.tensor([0.0])}  # 'c' is not in the checkpoint
    assert weight_distance(params, anchor).item() == pytest.approx(5.0 + 1.0)


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


def test_regulariser_runs_on_one_device_and_grows_when_weights_move(tiny_checkpoint):
    net = make_net(tiny_checkpoint)
    assert net.regulariser().item() == 0.0
    with torch.no_grad():
        net.encoder.frontend.transformer_layers()[0].feed_forward.output_dense.bias.add_(0.5)
    assert net.regulariser().item() > 0
    loss, ce, acc = net(torch.randn(2, 1, 8000), torch.tensor([0, 1]))
    assert loss.item() > 1.0  # CE/sg(CE) = 1 plus a positive regulariser term


def test_original_repo_model_file_loads_to_the_same_embeddings(tiny_checkpoint, tmp_path):
    trained = make_net(tiny_checkpoint)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    state = trained.state_dict()
    frontend = {k[len("encoder.frontend.model."):]: v for k, v in state.items() if k.startswith("encoder.frontend.")}
    original = {f"__S__.model.{k}": v for k, v in torchaudio_state_to_wavlm(frontend, "group_norm").items()}
    original.update({k.replace("encoder.backend.", "__S__.backend."): v for k, v in state.items()
                     if k.startswith("encoder.backend.")})
    original["__L__.weight"] = state["loss_fn.weight"]
    torch.save(original, tmp_path / "original.model")
    fresh = make_net(tiny_checkpoint)
    torch.manual_seed(1)
    load_model_state(fresh, str(tmp_path / "original.model"))
    wav = torch.randn(2, 8000)
    trained.eval(), fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh.encoder(wav), trained.encoder(wav))


def test_mismatched_model_file_is_reported(tiny_checkpoint, tmp_path):
    torch.save({"model": make_net(tiny_checkpoint, nOut=6).state_dict()}, tmp_path / "m.model")
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_model_state(make_net(tiny_checkpoint), str(tmp_path / "m.model"))


def test_atomic_save_and_checkpoint_discovery(tmp_path):
    save_atomic({"x": torch.ones(1)}, str(tmp_path / "model000000002.model"))
    save_atomic({"x": torch.ones(1)}, str(tmp_path / "model000000010.model"))
    (tmp_path / "notes.txt").write_text("x")
    assert [e for e, _ in find_checkpoints(str(tmp_path))] == [2, 10]
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]


def make_trainer(net, **over):
    from SpeakerNet import ModelTrainer
    cfg = dict(device=torch.device("cpu"), optimizer="adamw", scheduler="steplr", lr=1e-3, LR_MHFA=1e-3,
               LR_Transformer=1e-4, LLRD_factor=1.0, test_interval=1, lr_decay=0.5, margin=0.2)
    cfg.update(over)
    return ModelTrainer(net, **cfg)


def test_margin_ramp_and_lr_decay(tiny_checkpoint):
    trainer = make_trainer(make_net(tiny_checkpoint), margin_warmup_epochs=4)
    assert [trainer.margin_at(e) for e in (0, 1, 2, 4, 9)] == pytest.approx([0, 0.05, 0.1, 0.2, 0.2])
    assert make_trainer(make_net(tiny_checkpoint)).margin_at(0) == 0.2  # no warm-up: fixed margin
    lrs = [g["lr"] for g in trainer.optimizer.param_groups]
    trainer.optimizer.step()  # (no gradients yet: parameters unchanged)
    trainer.scheduler.step()
    assert [g["lr"] for g in trainer.optimizer.param_groups] == pytest.approx([lr * 0.5 for lr in lrs])


def test_mixed_precision_step_on_cpu(tiny_checkpoint):
    net = make_net(tiny_checkpoint)
    trainer = make_trainer(net, mixedprec=True)
    assert trainer.amp_dtype == torch.bfloat16
    before = net.encoder.backend.pooling_fc.weight.detach().clone()
    loader = [(torch.randn(2, 1, 8000), torch.tensor([0, 2]))]
    stats = trainer.train_epoch(loader, epoch=1, verbose=False)
    assert stats["steps"] == 1 and torch.isfinite(torch.tensor(stats["loss"]))
    assert not torch.equal(before, net.encoder.backend.pooling_fc.weight)
