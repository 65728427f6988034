"""Room impulse responses: ``rir_path`` is a folder ``<room type>/<room>/<file>.wav`` (RIRS_NOISES'
``simulated_rirs``, as the original globs it) or an index file made by ``tools.index_rirs`` (one path per
line, relative to the index's folder), which saves globbing 60 k files at every start."""
from __future__ import annotations

import glob
import os
from typing import Dict, List

from core.errors import DataError


def find_rirs(rir_path: str) -> List[str]:
    """The RIR files of a folder (by the original's pattern) or of an index file."""
    if os.path.isfile(rir_path):
        folder = os.path.dirname(os.path.abspath(rir_path))
        with open(rir_path, encoding="utf-8") as handle:
            files = [os.path.normpath(os.path.join(folder, line.strip())) for line in handle if line.strip()]
        if not files:
            raise DataError(f"RIR index '{rir_path}' lists no files; make it again with tools.index_rirs.")
        return files
    files = sorted(glob.glob(os.path.join(rir_path, "*", "*", "*.wav")))
    if not files:
        raise DataError(f"No RIR files found as {rir_path}/<room type>/<room>/<file>.wav (e.g. RIRS_NOISES/"
                        f"simulated_rirs) nor is it an index file; fix rir_path or set augment: false.")
    return files


def room_types(files: List[str]) -> Dict[str, int]:
    """Number of files per room type (the folder two levels above each file)."""
    counts: Dict[str, int] = {}
    for f in files:
        kind = os.path.basename(os.path.dirname(os.path.dirname(f)))
        counts[kind] = counts.get(kind, 0) + 1
    return counts
