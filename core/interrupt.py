"""Graceful stops: SIGINT / SIGTERM during training ask the run to stop at the next step boundary.

The first signal is recorded (the run writes a resumable checkpoint after the current optimizer
step, then exits with 128 + the signal); a second one stops at once, as without the handler.
"""
from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Any, Dict, Optional

logger = logging.getLogger(__name__)
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """``with StopRequest() as stop:`` ... ``stop.signum`` is the first signal received (None: none yet)."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self._previous: Dict[int, Any] = {}

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        if self.signum is not None:  # the second signal: stop now
            self.__exit__()
            signal.raise_signal(signum)
            return
        self.signum = signum
        logger.warning("%s received: the run stops after the current step and writes a checkpoint to resume from "
                       "(send it again to stop at once).", signal.Signals(signum).name)

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}


def ignore_in_worker() -> None:
    """Data loader workers leave the signals to the training process, which stops them in order."""
    for s in SIGNALS:
        signal.signal(s, signal.SIG_IGN)
