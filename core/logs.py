"""Logging set-up for the entry scripts (library modules only call logging.getLogger) and progress-bar settings."""
from __future__ import annotations

import logging
import os
import sys
from typing import Optional

EPOCH_LOGGER = "epochs"  # records of this logger also go to result/scores.txt
# ``logger.warning(..., extra=EVERY_RANK)``: a warning that this process alone may meet, shown by every rank
EVERY_RANK = {"every_rank": True}


class OtherRankFilter(logging.Filter):
    """On a data-parallel process other than rank 0: errors pass, and warnings marked :data:`EVERY_RANK`;
    other warnings (and info) are dropped, as rank 0 logs them already."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or bool(getattr(record, "every_rank", False))


def setup_logging(scores_file: Optional[str] = None, main: bool = True, rank: Optional[int] = None) -> None:
    """Console handler on stderr at INFO; epoch lines are appended to ``scores_file`` as well.

    A data-parallel process other than rank 0 (``main`` false; ``rank``, when given, prefixes its lines)
    writes no file and logs errors only, so that a warning every rank meets (data conversions, options,
    loader settings) appears once, from rank 0. Errors of any rank always show. A warning that one rank
    alone can meet must be logged with ``extra=EVERY_RANK`` to show there too (e.g. an unreadable data-check
    cache). Decided and accepted: the per-process notes of audio conversions (:func:`core.audio.note_conversion`)
    come from rank 0 only, so with ``check_data: false`` a conversion that only another rank's share of the
    files needs is not noted (the data check, on by default, reports every conversion of every list from
    rank 0); non-finite steps are seen by every rank alike (gradients are all-reduced) and a stop signal
    one rank alone receives stops every rank with a message."""
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(logging.INFO if main else logging.WARNING)
    scores_file = scores_file if main else None
    console = logging.StreamHandler(sys.stderr)
    where = "" if main or rank is None else f"rank {rank} "
    console.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {where}%(name)s: %(message)s",
                                           "%Y-%m-%d %H:%M:%S"))
    if not main:
        console.addFilter(OtherRankFilter())
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
