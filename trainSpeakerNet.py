#!/usr/bin/env python
"""Train an SSL + MHFA speaker model and evaluate it every test_interval epochs (``--eval``: evaluate only).

Writes <save_path>/model/model%09d.model checkpoints, <save_path>/result/scores.txt
(one line per epoch) and <save_path>/result/config.yaml (the resolved configuration).
Re-running the same command resumes from the newest checkpoint in save_path.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from core.cli import build_parser, run_cli
from core.config import resolve_grad_accum
from core.distributed import launch, world_size
from runs.evaluate import ModelResult, evaluate_model, format_evaluation
from runs.train import train


def train_command(config: Dict[str, Any]) -> Optional[List[ModelResult]]:
    """The results to print: --eval's, or the trained model's last evaluation (None: nothing to print)."""
    if config["eval"]:
        return evaluate_model(config) or None
    resolve_grad_accum(config, world_size(config))  # a global_batch that does not fit stops before any process starts
    result = launch(train, config)  # one process, or data-parallel with --distributed
    return None if result is None else [ModelResult(None, result)]


def main(argv: Optional[Sequence[str]] = None) -> None:
    run_cli(build_parser(__doc__), train_command, argv, show=format_evaluation, data_parallel=True)


if __name__ == "__main__":
    main()
