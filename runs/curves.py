"""Training curves: the epoch records of ``result/scores.txt`` read back, and drawn as ``result/training.png``.

A run's epoch lines (:func:`runs.train.epoch_line`) are the one record of its training that survives a
resume, so the curves are read from them: one picture per run, redrawn after the epochs (runs.train.CurveDrawer),
and the same picture for several runs overlaid (``python -m tools.plot_runs``). Panels, against epochs: training loss,
training accuracy, learning rate(s) (log scale; ``LR`` the largest rate, ``LR_Transformer`` the front-end's
when it trains), margin, and the EER and MinDCF0.01 of each trial list where measured (points). With
``save_every_steps``, the line of each step checkpoint (the epoch's loss and accuracy so far) adds a point inside
its epoch, at epoch - 1 + step / steps.
"""
from __future__ import annotations

import math
import os
import re
from typing import Dict, List, NamedTuple, Optional, Sequence

from core.errors import DataError
from core.files import atomic_path

EPOCH_LINE = re.compile(
    r"Epoch (?P<epoch>\d+)(?: step (?P<step>\d+)/(?P<steps>\d+))?, TAcc (?P<acc>\S+), TLOSS (?P<loss>\S+), "
    r"LR (?P<lr>[^,\s]+)(?:, LR_Transformer (?P<lr_frontend>[^,\s]+))?, margin (?P<margin>[^,\s]+)"
    r"(?:, (?P<rate>\S+) utt/s)?(?:, (?P<skipped>\d+) steps skipped \(non-finite\))?(?:, (?P<result>.*))?$")
NO_LIST = ""  # the name of the only trial list of a run evaluated on one (its results carry no name)


class EpochRecord(NamedTuple):
    """One epoch line of ``result/scores.txt``, or the line of a step checkpoint inside an epoch (``at`` < epoch:
    the epoch's loss and accuracy so far, no results)."""
    epoch: int
    at: float  # where on the epoch axis: the epoch, or epoch - 1 + step / steps for a step checkpoint
    acc: float
    loss: float
    lr: float
    lr_frontend: Optional[float]  # None: the front-end did not train (or the line predates the field)
    margin: float
    results: Dict[str, Dict[str, float]]  # trial list (NO_LIST for a single one) -> {'EER': %, 'MinDCF0.01': ..}


def parse_result(text: str) -> Dict[str, Dict[str, float]]:
    """The results part of an epoch line: ``EER x MinDCF0.05 y ...`` or ``name EER x ... | name2 EER ...``."""
    results = {}
    for part in text.split(" | "):
        fields = part.split()
        name = NO_LIST
        if len(fields) % 2:  # a leading list name
            name, fields = fields[0], fields[1:]
        values = {}
        for key, value in zip(fields[0::2], fields[1::2], strict=True):
            try:
                values[key] = float(value)
            except ValueError:
                return results  # not a result (a newer field, say): the values read so far
        if "EER" in values:
            results[name] = values
    return results


def parse_epoch_line(line: str) -> Optional[EpochRecord]:
    """The record of one line of scores.txt (timestamp first or not); None for any other line."""
    match = EPOCH_LINE.search(line.rstrip("\n"))
    if match is None:
        return None
    number = match.groupdict()
    try:
        epoch = int(number["epoch"])
        at = epoch - 1 + int(number["step"]) / max(1, int(number["steps"])) if number["step"] else float(epoch)
        return EpochRecord(epoch, at, float(number["acc"]), float(number["loss"]), float(number["lr"]),
                           None if number["lr_frontend"] is None else float(number["lr_frontend"]),
                           float(number["margin"]), parse_result(number["result"] or ""))
    except ValueError:
        return None


def read_history(path: str) -> List[EpochRecord]:
    """The epochs (and step checkpoints) of a ``scores.txt`` in order, the last line of each kept (a run resumed
    after an epoch's line was written logs that epoch again)."""
    try:
        with open(path, encoding="utf-8") as handle:
            records = [r for r in map(parse_epoch_line, handle) if r is not None]
    except OSError as err:
        raise DataError(f"Cannot read the training record '{path}': {err}") from err
    return sorted({r.at: r for r in records}.values(), key=lambda r: r.at)


def run_history(run: str) -> List[EpochRecord]:
    """The history of a run given as its save_path (``<run>/result/scores.txt``) or as a scores.txt; a run with no
    epoch line yet is a DataError naming the file."""
    path = run if os.path.isfile(run) else os.path.join(run, "result", "scores.txt")
    if not os.path.isfile(path):
        raise DataError(f"'{run}' is neither a run's save_path (no result/scores.txt in it) nor a scores.txt file.")
    history = read_history(path)
    if not history:
        raise DataError(f"'{path}' holds no epoch line yet ('Epoch N, TAcc ...'): train at least one epoch.")
    return history


def run_label(run: str) -> str:
    """A run's name in a legend: its save_path as given (the folder of a scores.txt given directly)."""
    path = os.path.abspath(run)
    if os.path.isfile(path):  # <save_path>/result/scores.txt, or a scores.txt elsewhere: its folder
        path = os.path.dirname(path)
        if os.path.basename(path) == "result":
            path = os.path.dirname(path)
    return os.path.basename(path) or path


def plot_histories(histories: Dict[str, Sequence[EpochRecord]], path: str, title: str = "") -> None:
    """Draw the curves of one or several runs (label -> history) into the PNG ``path``, written atomically."""
    import matplotlib  # imported here: only a picture pays matplotlib's import

    matplotlib.use("Agg")  # files only, no display
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(13, 7.5))
    axes = fig.subplots(2, 3)
    panels = {"loss": axes[0, 0], "acc": axes[0, 1], "eer": axes[0, 2], "lr": axes[1, 0], "margin": axes[1, 1],
              "dcf": axes[1, 2]}
    several = len(histories) > 1
    colours = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for number, (label, history) in enumerate(histories.items()):
        colour = colours[number % len(colours)]
        epochs = [r.at for r in history]  # step checkpoints between the epochs
        name = f"{label} " if several else ""
        panels["loss"].plot(epochs, [r.loss for r in history], color=colour, marker=".", label=label)
        panels["acc"].plot(epochs, [r.acc for r in history], color=colour, marker=".", label=label)
        panels["lr"].plot(epochs, [r.lr for r in history], color=colour, marker=".", label=f"{name}LR")
        frontend = [(r.at, r.lr_frontend) for r in history if r.lr_frontend]
        if frontend:
            panels["lr"].plot(*zip(*frontend, strict=True), color=colour, linestyle="--", marker=".",
                              label=f"{name}LR_Transformer")
        panels["margin"].plot(epochs, [r.margin for r in history], color=colour, marker=".", label=label)
        lists = sorted({name for r in history for name in r.results})
        for style, trial_list in zip(("o-", "s--", "^:", "v-.", "d-"), lists, strict=False):
            for key, panel in (("EER", "eer"), ("MinDCF0.01", "dcf")):
                points = [(r.at, r.results[trial_list][key]) for r in history
                          if trial_list in r.results and key in r.results[trial_list]]
                if points:
                    text = " ".join(part for part in (label if several else "", trial_list) if part) or key
                    panels[panel].plot(*zip(*points, strict=True), style, color=colour, label=text)
    titles = {"loss": "training loss", "acc": "training accuracy (%)", "eer": "EER (%)", "lr": "learning rate",
              "margin": "margin", "dcf": "MinDCF0.01"}
    for key, ax in panels.items():
        ax.set_title(titles[key])
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        if ax.lines and (several or key in ("lr", "eer", "dcf")):
            ax.legend(fontsize="small", loc="best")
        if not ax.lines:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes, color="grey")
    if any(value > 0 and math.isfinite(value) for line in panels["lr"].lines for value in line.get_ydata()):
        panels["lr"].set_yscale("log")
    if title:
        fig.suptitle(title)
    fig.subplots_adjust(left=0.06, right=0.985, bottom=0.07, top=0.91 if title else 0.95, wspace=0.22, hspace=0.32)
    with atomic_path(path) as tmp:  # (fixed margins: tight_layout would double the time of a redraw every epoch)
        fig.savefig(tmp, dpi=90, format="png")


def plot_run(save_path: str) -> str:
    """Redraw ``<save_path>/result/training.png`` from the run's scores.txt; returns its path."""
    out = os.path.join(save_path, "result", "training.png")
    plot_histories({run_label(save_path): run_history(save_path)}, out, title=run_label(save_path))
    return out
