"""Parts of the training run (runs/train.py) on their own: the epoch's line from its record, and what happens after
each optimizer step (step checkpoints: periodic, and on a stop signal). Whole runs: tests/test_trainSpeakerNet.py."""
import os
import signal
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from core.distributed import Context
from core.errors import Interrupted
from runs.train import StepCheckpoints, epoch_line
from runs.trainer import EpochStats, StepRecord


def stats(skipped=0):
    return EpochStats(loss=1.25, acc=37.5, steps=4, utterances=48, rate=12.34, margin=0.1, skipped=skipped)


def test_epoch_line():
    assert epoch_line(3, 5e-5, stats(), None) == \
        "Epoch 3, TAcc 37.50, TLOSS 1.250000, LR 5e-05, margin 0.100, 12.3 utt/s"
    result = {"eer": 2.5, "min_dcf": {0.05: 0.125, 0.01: 0.25}}
    assert epoch_line(3, 5e-5, stats(skipped=2), result) == \
        ("Epoch 3, TAcc 37.50, TLOSS 1.250000, LR 5e-05, margin 0.100, 12.3 utt/s, 2 steps skipped (non-finite), "
         "EER 2.5000 MinDCF0.05 0.12500 MinDCF0.01 0.25000")


class Saver:
    """The trainer's save, recorded: (file name, epochs done, step, random states)."""

    def __init__(self):
        self.saved = []
        self.last_step = StepRecord(1, 2.0, 1.0, False, 0.2, {"MHFA": 0.1}, 2.0, 50.0)  # what the step line shows

    def save(self, path, epoch, config, step=0, random_states=None):
        self.saved.append((os.path.basename(path), epoch, step, random_states))


class Loader(list):
    """A loader of ``n`` batches over a dataset with its own generator (what random_state reads)."""

    def __init__(self, n):
        super().__init__(range(n))
        self.dataset = SimpleNamespace(rng=np.random.default_rng(0))


def step_checkpoints(tmp_path, save_every_steps=2, grad_accum=1, batches=6):
    trainer, stop = Saver(), SimpleNamespace(signum=None)
    config = {"save_every_steps": save_every_steps, "grad_accum": grad_accum}
    after_step = StepCheckpoints(config, Context(0, 1, torch.device("cpu")), trainer, Loader(batches), stop,
                                 str(tmp_path))
    return after_step, trainer, stop


def test_a_step_checkpoint_every_save_every_steps_but_at_the_epochs_end(tmp_path):
    after_step, trainer, _ = step_checkpoints(tmp_path, save_every_steps=2, grad_accum=2, batches=12)  # 6 steps
    for epoch in (1, 2):
        after_step.begin_epoch(epoch, {"epoch": epoch})
        for step in range(1, 7):
            after_step(step)
    assert [(name, epoch, step) for name, epoch, step, _ in trainer.saved] == [
        ("model000000000.step000000002.model", 0, 2), ("model000000000.step000000004.model", 0, 4),
        ("model000000001.step000000002.model", 1, 2), ("model000000001.step000000004.model", 1, 4)]
    states = [s for *_, s in trainer.saved]
    assert [s[0]["start"] for s in states] == [{"epoch": 1}] * 2 + [{"epoch": 2}] * 2  # this epoch's start, one rank
    assert set(states[0][0]["now"]) == {"torch", "numpy", "python", "dataset"}
    none, trainer, _ = step_checkpoints(tmp_path, save_every_steps=0)
    none.begin_epoch(1, {})
    for step in range(1, 7):
        none(step)
    assert trainer.saved == []


def test_a_stop_signal_saves_the_step_and_interrupts(tmp_path):
    after_step, trainer, stop = step_checkpoints(tmp_path, save_every_steps=0)
    after_step.begin_epoch(2, {"epoch": 2})
    after_step(1)
    stop.signum = signal.SIGTERM
    with pytest.raises(Interrupted, match=r"Stopped by SIGTERM at epoch 2, step 3: the checkpoint .*"
                                          r"model000000001\.step000000003\.model holds this point") as err:
        after_step(3)
    assert err.value.exit_code == 128 + signal.SIGTERM
    assert [(name, epoch, step) for name, epoch, step, _ in trainer.saved] == [
        ("model000000001.step000000003.model", 1, 3)]
