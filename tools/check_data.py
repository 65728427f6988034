"""Check the data a configuration names, as training and evaluation will, without a model: every file of
the training list (or Kaldi folder) and every file of the trial lists, resolved against train_path /
test_path, exists and is readable audio of at least min_audio_seconds. Unusable entries are listed as
'list:line: path: reason'; results are cached (data_check_cache), so the run that follows is instant.

Usage: python -m tools.check_data --config yaml/Baseline.yaml   (or --train_list ... --test_list ...)
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Optional, Sequence

from core.cli import build_parser, run_cli
from core.config import require_paths
from core.errors import ConfigError
from core.logs import setup_logging
from dataprep.check import check_training_list, enforce
from dataprep.lists import read_training_entries
from evaluation.pipeline import check_trial_files
from evaluation.trials import list_paths

logger = logging.getLogger(__name__)


def check_command(config: Dict[str, Any]) -> str:
    setup_logging()
    if not config["train_list"] and not config["test_list"]:
        raise ConfigError("Nothing to check: give train_list (with train_path) and/or test_list (with test_path).")
    done = []
    if config["train_list"]:
        require_paths(config, ["train_list"])
        entries = read_training_entries(config["train_list"], config["train_path"])
        keep = enforce(check_training_list(config, entries), f"Training list '{config['train_list']}'",
                       config["drop_bad_data"])
        done.append(f"training list: {sum(keep)} of {len(keep)} entries usable")
    if config["test_list"]:
        require_paths(config, ["test_list", "test_path"])
        check_trial_files(config, list_paths(config["test_list"]))
        done.append("trial lists: every file usable")
    return "; ".join(done)


def main(argv: Optional[Sequence[str]] = None) -> None:
    run_cli(build_parser(__doc__), check_command, argv, show=lambda line: line)


if __name__ == "__main__":
    main()
