"""TensorBoard event files of a training run (option ``tensorboard``; rank 0 only under data-parallel training).

Per optimizer step, at its number since the run began (epochs of the original sampler differ in length, so the
count is kept in the checkpoints): ``train/loss`` (the step's cross-entropy),
``train/grad_norm`` (before clipping), ``train/skipped`` (1 for a step skipped for non-finite gradients),
``train/margin`` and ``lr/<optimizer group>``. Per epoch, at the epoch's last step: ``epoch/accuracy``,
``epoch/loss`` and, where measured, ``eval/<list>/EER`` and ``eval/<list>/MinDCF<p>``.

A resumed run continues the same curves: the writer starts with ``purge_step`` at the first step it will write, so
TensorBoard drops what an interrupted run wrote after its last checkpoint, and no step appears twice.
``tensorboard`` is an optional dependency: without it the option is a one-line error saying what to install.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional

from core.errors import ConfigError
from runs.trainer import StepRecord

NO_LIST = "trials"  # the tag of a run's only trial list (its result carries no name)


def board_folder(config: Dict[str, Any]) -> str:
    return config["tensorboard_dir"] or os.path.join(config["save_path"], "tensorboard")


def summary_writer_class() -> Any:
    """torch's SummaryWriter; a ConfigError saying what to install when the tensorboard package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise ConfigError(f"tensorboard: true needs the tensorboard package ({err}): pip install tensorboard, or "
                          f"set tensorboard: false.") from None
    return SummaryWriter


class TrainingBoard:
    """The event files of one (possibly resumed) run: ``first_step`` is the first step this process will write
    (1 for a fresh run; a resumed run's steps done + 1)."""

    def __init__(self, folder: str, first_step: int):
        self.writer = summary_writer_class()(log_dir=folder, purge_step=first_step)

    def log_step(self, record: StepRecord) -> None:
        at = record.number
        self.writer.add_scalar("train/loss", record.loss, at)
        self.writer.add_scalar("train/grad_norm", record.grad_norm, at)
        self.writer.add_scalar("train/skipped", float(record.skipped), at)
        self.writer.add_scalar("train/margin", record.margin, at)
        for name, lr in record.lrs.items():
            self.writer.add_scalar(f"lr/{name}", lr, at)

    def log_epoch(self, at: int, acc: float, loss: float, result: Optional[Dict[str, Any]]) -> None:
        """An epoch's records at its last step ``at``."""
        self.writer.add_scalar("epoch/accuracy", acc, at)
        self.writer.add_scalar("epoch/loss", loss, at)
        lists = (result or {}).get("lists", {NO_LIST: result} if result else {})
        for name, metrics in lists.items():
            self.writer.add_scalar(f"eval/{name}/EER", metrics["eer"], at)
            for p, value in metrics["min_dcf"].items():
                self.writer.add_scalar(f"eval/{name}/MinDCF{p:g}", value, at)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
