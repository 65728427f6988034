"""Logging set-up for the entry scripts (library modules only call logging.getLogger) and progress-bar settings."""
from __future__ import annotations

import logging
import os
import sys
from typing import Optional

EPOCH_LOGGER = "epochs"  # records of this logger also go to result/scores.txt


def setup_logging(scores_file: Optional[str] = None, main: bool = True) -> None:
    """Console handler on stderr at INFO; epoch lines are appended to ``scores_file`` as well.
    A process other than rank 0 (``main`` false) logs warnings and errors only, and writes no file."""
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(logging.INFO if main else logging.WARNING)
    scores_file = scores_file if main else None
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"))
    root.addHandler(console)
    epochs = logging.getLogger(EPOCH_LOGGER)
    epochs.handlers.clear()
    if scores_file:
        os.makedirs(os.path.dirname(os.path.abspath(scores_file)), exist_ok=True)
        handler = logging.FileHandler(scores_file, mode="a", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        epochs.addHandler(handler)


def progress_options() -> dict:
    """tqdm settings: live on a terminal; in a log file (stderr redirected) one update per 30 s."""
    interactive = sys.stderr.isatty()
    return {"dynamic_ncols": interactive, "mininterval": 0.1 if interactive else 30.0, "file": sys.stderr}
