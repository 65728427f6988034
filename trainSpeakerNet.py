#!/usr/bin/env python
"""Train an SSL + MHFA speaker model and evaluate it every test_interval epochs (``--eval``: evaluate only).

Writes <save_path>/model/model%09d.model checkpoints, <save_path>/result/scores.txt
(one line per epoch) and <save_path>/result/config.yaml (the resolved configuration).
Re-running the same command resumes from the newest checkpoint in save_path.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

from core.cli import build_parser, run_cli
from core.config import resolve_grad_accum
from core.distributed import launch, world_size
from evaluation.metrics import format_result
from runs.evaluate import evaluate_model
from runs.train import train


def train_command(config: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    if config["eval"]:
        return evaluate_model(config)
    resolve_grad_accum(config, world_size(config))  # a global_batch that does not fit stops before any process starts
    return launch(train, config)  # one process, or data-parallel with --distributed


def main(argv: Optional[Sequence[str]] = None) -> None:
    run_cli(build_parser(__doc__), train_command, argv, show=format_result)


if __name__ == "__main__":
    main()
