#!/usr/bin/env python
"""Evaluate a speaker model (or saved embeddings) on one or several trial lists.

Prints one result line per list: ``EER <pct> MinDCF0.05 <v> MinDCF0.01 <v>``; with several
lists (``--test_list O.txt E.txt H.txt`` or ``--test_list O.txt,E.txt,H.txt``) each line
starts with the list's file name. Every file is extracted once for all lists.
With ``--score_file F`` it also writes ``F.det.png`` (DET curve) and ``F.threshold.json``
(EER threshold and scoring settings, read by ``python -m tools.verify``); with several
lists F becomes ``<F stem>.<list name><F extension>``.
With ``--distributed`` (one process per GPU, ``nproc_per_node`` CPU processes, or the processes of torchrun /
SLURM) each process extracts a share of the files and rank 0 scores and writes everything: the same results.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from core.cli import build_parser, run_cli
from runs.evaluate import ModelResult, evaluate_model, format_evaluation


def evaluate_command(config: Dict[str, Any]) -> Optional[List[ModelResult]]:
    return evaluate_model(config) or None  # no labelled trial list: nothing to print


def main(argv: Optional[Sequence[str]] = None) -> None:
    run_cli(build_parser(__doc__), evaluate_command, argv, show=format_evaluation, data_parallel=True)


if __name__ == "__main__":
    main()
