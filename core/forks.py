"""Work beside the caller in a forked process: NumPy or pure-Python steps that a thread could not overlap with
the caller's own Python work, because one of them would hold the GIL (re-scoring saved embeddings starts the
AS-norm statistics this way while it reads the trial lists, and writes a score file while it computes the
metrics and draws the DET plot).

Linux only, and only where no torch runs in the process (forking torch's thread pools or a GPU context is not
safe): :data:`CAN_FORK` says whether a caller may fork; where it may not, it does the work itself.
"""
from __future__ import annotations

import os
import signal
import sys
from typing import Callable, NoReturn, Optional

CAN_FORK = sys.platform.startswith("linux") and hasattr(os, "fork")


class Forked:
    """``work()`` running in a forked copy of this process (what it changes in memory stays there; files and
    shared memory, ``mmap.mmap(-1, n)``, are how it gives results back). :meth:`join` waits for it."""

    def __init__(self, work: Callable[[], None]):
        read, write = os.pipe()
        self.message: Optional[str] = None
        self.pid: Optional[int] = os.fork()
        if self.pid == 0:
            os.close(read)
            _child(work, write)
        os.close(write)
        self.pipe = read

    def join(self) -> Optional[str]:
        """Wait for the process; its error message (``str`` of what ``work`` raised, or its exit status), or None
        when ``work`` returned. Idempotent."""
        if self.pid is not None:
            with os.fdopen(self.pipe, "rb") as handle:
                text = handle.read().decode("utf-8", "replace")
            _, status = os.waitpid(self.pid, 0)
            self.pid = None
            code = os.waitstatus_to_exitcode(status)
            self.message = None if code == 0 else (text or f"the process ended with status {code}")
        return self.message


def _child(work: Callable[[], None], pipe: int) -> NoReturn:
    """The forked process: ``work()``, then exit 0, or 1 with the error's message on ``pipe``; never returns
    (no ``atexit`` handler or buffered output of the parent runs twice)."""
    code = 1
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # none of the parent's handlers run here
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        work()
        code = 0
    except BaseException as err:  # noqa: BLE001 (reported to the parent, which raises it)
        os.write(pipe, str(err).encode("utf-8", "replace")[:60000])  # within a pipe's buffer: never blocks
    finally:
        os._exit(code)
