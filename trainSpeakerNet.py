#!/usr/bin/env python
"""Train an SSL + MHFA speaker model and evaluate it every test_interval epochs (``--eval``: evaluate only).

Writes <save_path>/model/model%09d.model checkpoints, <save_path>/result/scores.txt
(one line per epoch) and <save_path>/result/config.yaml (the resolved configuration).
Re-running the same command resumes from the newest checkpoint in save_path.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

from core.cli import build_parser, run_cli
from core.distributed import launch
from evaluation.metrics import format_result
from runs.evaluate import evaluate_model
from runs.train import train


def train_command(config: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    if config["eval"]:
        return evaluate_model(config)
    return launch(train, config)  # one process, or data-parallel with --distributed


def main(argv: Optional[Sequence[str]] = None) -> None:
    run_cli(build_parser(__doc__), train_command, argv, show=format_result)


if __name__ == "__main__":
    main()
