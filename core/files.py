"""Atomic file writes: a file is either its old version or the complete new one, never half-written."""
from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Iterator

from core.errors import OutputError


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary path in the folder of ``path``; on success it replaces ``path``.

    On any error the temporary file is removed and ``path`` keeps its previous content;
    an OSError (no such folder, disk full, permission) becomes an OutputError naming ``path``.
    Writers that add an extension to a name (``np.savez``) must write through a file object opened on it.

    Example:
        >>> with atomic_path("scores.txt") as tmp:  # doctest: +SKIP
        ...     open(tmp, "w").write("1 a.wav b.wav 0.5\\n")
    """
    folder = os.path.dirname(os.path.abspath(path))
    suffix = os.path.splitext(path)[1]  # kept, so that writers that choose a format by extension still can
    try:
        handle, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.tmp-", suffix=suffix)
        os.close(handle)
    except OSError as err:
        raise OutputError(f"Cannot write '{path}': {err}") from err
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # as open() would have made it (mkstemp makes 0600)
        os.replace(tmp, path)
    except OSError as err:
        raise OutputError(f"Cannot write '{path}': {err}") from err
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _umask() -> int:
    """The process's file-creation mask (read by setting it and restoring it at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text(path: str, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
