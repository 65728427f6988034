"""Overlay the training curves of several runs in one picture, to compare recipes at a glance.

Each run is given by its save_path (or its result/scores.txt) and labelled by it; the curves come from the
epoch lines of result/scores.txt (runs.curves): training loss and accuracy, learning rate(s), margin, and the
EER and MinDCF0.01 of each trial list where measured.

Usage:
  python -m tools.plot_runs exps/wespeaker_base_plus/1_frozen exps/camhfa_base_plus/1_frozen --out compare.png
"""
from __future__ import annotations

import argparse
import logging
from typing import Dict, List, Optional, Sequence

from core.cli import run_tool
from core.errors import ConfigError
from runs.curves import EpochRecord, plot_histories, run_history, run_label

logger = logging.getLogger(__name__)


def plot_command(args: argparse.Namespace) -> str:
    histories: Dict[str, List[EpochRecord]] = {}
    for run in args.runs:
        label = run_label(run)
        if label in histories:  # two runs with the same folder name: tell them apart by the path given
            label = run
        if label in histories:
            raise ConfigError(f"'{run}' is given twice; name each run once.")
        histories[label] = run_history(run)
    plot_histories(histories, args.out, title=args.title)
    logger.info("Curves of %d run(s) written to %s", len(histories), args.out)
    return args.out


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="RUN", help="a run's save_path, or its result/scores.txt")
    parser.add_argument("--out", required=True, help="the PNG to write")
    parser.add_argument("--title", default="", help="a title over the panels")
    run_tool(parser, plot_command, argv)


if __name__ == "__main__":
    main()
