"""The trainer (runs/trainer.py): margin ramp, learning-rate decay, mixed precision, the epoch statistics; data
parallel through the launcher (core/distributed.py), whose ranks all end when one raises."""
import math
import os
import warnings

import pytest
import torch
import torch.distributed as dist

from core.distributed import launch
from core.errors import ConfigError, TrainingError
from runs.trainer import EpochStats, ModelTrainer, margin_at
from tests.fakes import make_net


def make_trainer(net, **over):
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
    assert stats.steps == 1 and torch.isfinite(torch.tensor(stats.loss))
    assert not torch.equal(before, net.encoder.backend.pooling_fc.weight)


class Clock:
    """time.time() for the trainer: the epoch starts at 0 s and every later reading is 2 s."""

    def __init__(self):
        self.calls = 0

    def time(self):
        self.calls += 1
        return 0.0 if self.calls == 1 else 2.0


def test_rate_counts_utterances_not_speaker_groups(tiny_checkpoint, monkeypatch):
    net = make_net(tiny_checkpoint)
    trainer = make_trainer(net)
    monkeypatch.setattr("runs.trainer.time", Clock())
    loader = [(torch.randn(2, 3, 4000), torch.tensor([0, 2]))] * 2  # 2 steps x 2 speakers x nPerSpeaker 3
    stats = trainer.train_epoch(loader, epoch=1, verbose=False)
    assert stats.utterances == 12 and stats.rate == pytest.approx(12 / 2.0)


@pytest.mark.parametrize("trainfunc", ["aamsoftmax", "aamsoftmax_subcenter", "amsoftmax"])
def test_the_margin_schedule_reaches_the_loss_before_every_step(tiny_checkpoint, trainfunc, monkeypatch):
    """Epoch 2 of a 4-epoch linear ramp to 0.2, 4 steps of grad_accum 2: the loss plug-in gets the ramp's margin
    before each step's first batch (set_margin) and applies it in its forwards; the record reports the last one."""
    net = make_net(tiny_checkpoint, trainfunc=trainfunc)
    trainer = make_trainer(net, margin_warmup_epochs=4, grad_accum=2)
    seen = []
    forward = type(net.loss_fn).forward

    def recording(loss_fn, embeddings, labels):
        seen.append(loss_fn.margin)
        return forward(loss_fn, embeddings, labels)

    monkeypatch.setattr(type(net.loss_fn), "forward", recording)
    stats = trainer.train_epoch(batches("g" * 8), epoch=2, verbose=False)
    want = [0.2 * (1 + s / 4) / 4 for s in range(4)]  # progress 1 + step/4 epochs of a 4-epoch ramp
    assert seen == pytest.approx([m for m in want for _ in range(2)])  # both batches of a step
    assert stats.margin == pytest.approx(want[-1]) and stats.steps == 4


def test_a_loss_plugin_without_set_margin_is_refused_by_name(tiny_checkpoint):
    """The trainer sets the margin only through set_margin: a plug-in of the old contract (an attribute to assign)
    stops the run before training, naming the plug-in."""

    class Assigned(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.margin, self.fc = 0.2, torch.nn.Linear(8, 3)

    Assigned.__module__ = "loss.assigned"
    net = make_net(tiny_checkpoint)
    net.loss_fn = Assigned()
    with pytest.raises(ConfigError, match=r"loss plug-in 'assigned' \(loss\.assigned\.Assigned\) has no "
                                          r"set_margin\(margin\) method"):
        make_trainer(net)


def test_the_epoch_record(tiny_checkpoint):
    trainer = make_trainer(make_net(tiny_checkpoint), margin=0.3)
    stats = trainer.train_epoch(batches("gng"), epoch=1, verbose=False)
    assert isinstance(stats, EpochStats)
    assert stats._fields == ("loss", "acc", "steps", "utterances", "rate", "margin", "skipped")
    assert (stats.steps, stats.utterances, stats.skipped, stats.margin) == (3, 6, 1, 0.3)
    assert math.isfinite(stats.loss) and 0 <= stats.acc <= 100 and stats.rate > 0


def test_margin_schedules():
    assert margin_at(3.0, 0.2) == 0.2  # fixed, as the original
    linear = [margin_at(t, 0.2, 0.0, 1.0, 3.0) for t in (0.0, 1.0, 2.5, 4.0, 9.0)]
    assert linear == pytest.approx([0.0, 0.0, 0.1, 0.2, 0.2])
    # wespeaker MHFA frozen stage: increase_start_epoch 2, fix_start_epoch 5, exponential, 0 -> 0.2
    exp = [margin_at(t, 0.2, 0.0, 1.0, 3.0, "exp") for t in (0.5, 1.0, 2.5, 3.999, 4.0)]
    want_mid = 0.2 * (1 - math.exp(0.5 * math.log(1e-3 / (1 + 1e-6))))
    assert exp[:3] == pytest.approx([0.0, 0.0, want_mid]) and exp[3] == pytest.approx(0.2, abs=3e-4)
    assert exp[4] == 0.2 and exp[2] > linear[2]  # the exponential approach is fast at first


def test_gradient_clipping_bounds_the_step(tiny_checkpoint):
    changes = []
    for clip in (0.0, 1e-3):
        net = make_net(tiny_checkpoint)
        trainer = make_trainer(net, optimizer="sgd", LR_MHFA=1.0, LR_Transformer=1.0, grad_clip=clip)
        before = [p.detach().clone() for p in net.parameters()]
        torch.manual_seed(0)
        trainer.train_epoch([(torch.randn(2, 1, 4000), torch.tensor([0, 2]))], epoch=1, verbose=False)
        changes.append(torch.sqrt(sum(((p.detach() - b) ** 2).sum()
                                      for p, b in zip(net.parameters(), before, strict=True))))
    assert changes[0] > 1e-2 and changes[1] == pytest.approx(1e-3, rel=1e-3)  # lr 1 x the clipped norm


def test_gradient_accumulation_is_the_mean_of_the_batch_gradients(tiny_checkpoint):
    """grad_accum k: one update with the mean of k per-batch gradients (what k data-parallel processes average)."""
    torch.manual_seed(3)
    batches = [(torch.randn(2, 1, 4000), torch.tensor([0, 2])), (torch.randn(2, 1, 4000), torch.tensor([1, 0])),
               (torch.randn(2, 1, 4000), torch.tensor([2, 1]))]  # the third is left over with k = 2
    net = make_net(tiny_checkpoint)
    start = {k: v.detach().clone() for k, v in net.named_parameters()}
    grads = []
    for wav, labels in batches[:2]:  # reference: the gradient of each batch's loss alone, at the start weights
        net.zero_grad()
        net.train()
        net(wav, labels)[0].backward()
        grads.append({k: p.grad.clone() for k, p in net.named_parameters() if p.grad is not None})
    trainer = make_trainer(make_net(tiny_checkpoint), optimizer="sgd", LR_MHFA=0.5, LR_Transformer=0.1,
                           grad_accum=2)
    lrs = {id(p): g["lr"] for g in trainer.optimizer.param_groups for p in g["params"]}  # before steplr decays
    stats = trainer.train_epoch(batches, epoch=1, verbose=False)
    assert stats.steps == 1 and stats.utterances == 4  # the left-over batch is not used
    changed = 0
    for name, p in trainer.model.named_parameters():
        if name in grads[0]:
            want = start[name] - lrs[id(p)] * (grads[0][name] + grads[1][name]) / 2  # SGD's first step: lr x grad
            torch.testing.assert_close(p.detach(), want, rtol=1e-5, atol=1e-6, msg=name)
            changed += 1
        else:
            torch.testing.assert_close(p.detach(), start[name], rtol=0, atol=0)  # frozen: untouched
    assert changed > 10


def ddp_steps(config, context):
    """Two data-parallel steps: rank r trains on batches [r] and [2 + r]; returns its parameters (as a list)."""
    net = make_net(config["checkpoint"])
    trainer = make_trainer(net, optimizer="sgd", LR_MHFA=0.5, LR_Transformer=0.1, world=context.world)
    batches = ddp_batches()
    trainer.train_epoch([batches[context.rank], batches[2 + context.rank]], epoch=1, verbose=False)
    params = [p.detach().clone() for p in net.parameters()]
    torch.save(params, os.path.join(config["out"], f"rank{context.rank}.pt"))
    return "done"


def ddp_batches():
    gen = torch.Generator().manual_seed(5)
    return [(torch.randn(2, 1, 4000, generator=gen), torch.tensor(labels))
            for labels in ([0, 2], [1, 0], [2, 1], [0, 1])]


@pytest.mark.slow
def test_data_parallel_steps_equal_gradient_accumulation(tiny_checkpoint, tmp_path):
    """2 gloo processes: identical parameters on both ranks, equal to one process accumulating the same
    batches (grad_accum 2: batches 0, 1 for step 1 and 2, 3 for step 2)."""
    config = {"distributed": True, "nproc_per_node": 2, "device": "cpu", "port": "29517", "dist_timeout": 2.0,
              "checkpoint": tiny_checkpoint, "out": str(tmp_path)}
    assert launch(ddp_steps, config) == "done"
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for a, b in zip(rank0, rank1, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    net = make_net(tiny_checkpoint)
    trainer = make_trainer(net, optimizer="sgd", LR_MHFA=0.5, LR_Transformer=0.1, grad_accum=2)
    trainer.train_epoch(ddp_batches(), epoch=1, verbose=False)
    moved = 0
    for a, b, start in zip(rank0, net.parameters(), make_net(tiny_checkpoint).parameters(), strict=True):
        torch.testing.assert_close(a, b.detach(), rtol=1e-5, atol=1e-6)
        moved += not torch.equal(a, start.detach())
    assert moved > 10


# ----------------------------------------------------------------------------- numerical faults
def batches(pattern, seed=0):
    """One batch per letter: 'g' good audio, 'n' audio with a NaN sample (NaN loss and gradients)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for kind in pattern:
        wav = torch.randn(2, 1, 4000, generator=gen)
        if kind == "n":
            wav[0, 0, 100] = float("nan")
        out.append((wav, torch.tensor([0, 2])))
    return out


@pytest.mark.parametrize("mixedprec", [False, True])
def test_a_non_finite_step_is_skipped_and_counted(tiny_checkpoint, mixedprec):
    """The NaN batch changes nothing (its step is skipped); the others train; the statistics stay finite."""
    torch.manual_seed(0)
    net = make_net(tiny_checkpoint)
    trainer = make_trainer(net, mixedprec=mixedprec, grad_clip=5.0)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    stats = trainer.train_epoch(batches("n"), epoch=1, verbose=False)
    assert stats.skipped == 1 and trainer.bad_in_a_row == 1
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # nothing moved, nothing is NaN
    stats = trainer.train_epoch(batches("gng"), epoch=2, verbose=False)
    assert stats.skipped == 1 and trainer.bad_in_a_row == 0 and math.isfinite(stats.loss)
    assert all(torch.isfinite(v).all() for v in net.state_dict().values() if v.is_floating_point())
    assert not torch.equal(before["encoder.backend.pooling_fc.weight"], net.encoder.backend.pooling_fc.weight)


@pytest.mark.parametrize("scheduler,pattern", [("exponential", "ng"), ("steplr", "n")])
def test_a_skipped_first_step_still_advances_the_schedule_without_torch_warning(tiny_checkpoint, scheduler, pattern):
    """The very first optimizer step is skipped (NaN): the schedule advances as for any iteration (or epoch), and
    torch's 'lr_scheduler.step() before optimizer.step()' warning, about an order that is intended here, is not
    shown."""
    torch.manual_seed(0)
    trainer = make_trainer(make_net(tiny_checkpoint), scheduler=scheduler, max_epoch=2, steps_per_epoch=2,
                           final_lr_ratio=0.25)
    base = [g["initial_lr"] for g in trainer.optimizer.param_groups]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stats = trainer.train_epoch(batches(pattern), epoch=1, verbose=False)  # steplr: an epoch of one skipped step
    assert stats.skipped == 1
    assert not [w for w in caught if "lr_scheduler.step()" in str(w.message)], [str(w.message) for w in caught]
    factor = 0.25 ** (2 / 4) if scheduler == "exponential" else 0.5  # 2 of 4 iterations; 1 epoch (lr_decay 0.5)
    assert [g["lr"] for g in trainer.optimizer.param_groups] == pytest.approx([lr * factor for lr in base])
    assert trainer.scheduler.last_epoch == (2 if scheduler == "exponential" else 1)


def test_too_many_bad_steps_in_a_row_stop_the_run(tiny_checkpoint):
    trainer = make_trainer(make_net(tiny_checkpoint), max_bad_steps=3)
    trainer.train_epoch(batches("nng"), epoch=1, verbose=False)  # two in a row, then a good one: goes on
    with pytest.raises(TrainingError, match=r"3 optimizer steps in a row .* epoch 2, step 4"):
        trainer.train_epoch(batches("gnnng"), epoch=2, verbose=False)
    never = make_trainer(make_net(tiny_checkpoint), max_bad_steps=0)
    assert never.train_epoch(batches("nnnnn"), epoch=1, verbose=False).skipped == 5


def test_silent_audio_gives_finite_embeddings_and_scores(tiny_checkpoint):
    for normalize in (False, True):
        net = make_net(tiny_checkpoint, normalize_input=normalize).eval()
        with torch.no_grad():
            emb = net.encoder(torch.zeros(2, 16000))
        assert torch.isfinite(emb).all(), normalize
        assert torch.isfinite(torch.nn.functional.cosine_similarity(emb[:1], emb[1:])).all()


def one_rank_fails(config, context):
    """Rank 1 raises after a first collective; rank 0 then waits in another one that rank 1 never joins."""
    flag = torch.zeros(1)
    dist.all_reduce(flag)
    if context.rank == 1:
        raise RuntimeError("rank one broke on purpose")
    dist.all_reduce(flag)  # would wait for ever without the launcher ending every process
    return "unreachable"


@pytest.mark.slow
def test_a_rank_that_raises_ends_every_rank_with_its_error(tmp_path):
    config = {"distributed": True, "nproc_per_node": 2, "device": "cpu", "port": "29519", "dist_timeout": 0.5}
    with pytest.raises(RuntimeError, match="all 2 were stopped") as err:
        launch(one_rank_fails, config)
    assert "The first failure, rank 1:" in str(err.value) and "rank one broke on purpose" in str(err.value)
