"""Embeddings and their files: the ``.npz`` layout of REFERENCE §4, rows of trial files, mean embeddings."""
from __future__ import annotations

import zipfile
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from core.errors import DataError
from core.files import atomic_path
from evaluation.trials import Trials


class Embeddings(NamedTuple):
    keys: List[str]
    embeddings: np.ndarray  # [N, D] whole-file, before normalisation
    crop_embeddings: Optional[np.ndarray]  # [N, num_eval, D] or None
    durations: Optional[np.ndarray] = None  # [N] seconds of audio per file (for QMF), when known


def key_index(keys: Sequence[str]) -> Dict[str, int]:
    """key -> row, built once per embeddings file."""
    return {k: i for i, k in enumerate(keys)}


def rows_of(index: Dict[str, int], names: Sequence[str], what: str) -> np.ndarray:
    """Row of each name; a missing one raises DataError naming it and the likely cause."""
    try:
        return np.fromiter(map(index.__getitem__, names), dtype=np.int64, count=len(names))
    except KeyError:
        missing = [n for n in names if n not in index]
        raise DataError(f"{len(missing)} {what} files have no embedding (first: {missing[0]!r}); the embeddings "
                        f"were made for another list or path: extract them again for this list.") from None


def trial_rows(emb: Embeddings, trial_sets: Dict[str, Trials]) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """list name -> (enroll rows, test rows) of ``emb`` (the key -> row map is built once)."""
    index = key_index(emb.keys)
    rows = {}
    for name, t in trial_sets.items():
        if t.codes is None:
            rows[name] = (rows_of(index, t.enroll, f"enrollment ({name})"), rows_of(index, t.test, f"test ({name})"))
        else:  # each distinct name looked up once (read_trials' codes)
            of_name = rows_of(index, t.names, f"trial list ({name})")
            rows[name] = (of_name[t.codes[0]], of_name[t.codes[1]])
    return rows


def merge_embeddings(parts: List[Embeddings], keys: Sequence[str]) -> Embeddings:
    """One Embeddings in the order of ``keys`` from parts that hold them between them (the shards that
    data-parallel processes extracted)."""
    every = [k for part in parts for k in part.keys]
    rows = rows_of(key_index(every), keys, "extracted")
    def stack(field: str) -> Optional[np.ndarray]:
        arrays = [getattr(part, field) for part in parts]
        return None if arrays[0] is None else np.concatenate(arrays)[rows]
    return Embeddings(list(keys), stack("embeddings"), stack("crop_embeddings"), stack("durations"))


def load_mean(path: str, keys_list: str = "") -> np.ndarray:
    """Mean whole-file embedding of an .npz (of the files named in ``keys_list`` when given:
    one file per line, last field, e.g. a training list ``speaker path``)."""
    emb = load_embeddings(path)
    rows = slice(None)
    if keys_list:
        with open(keys_list, encoding="utf-8") as handle:
            names = [line.split()[-1] for line in handle if line.strip()]
        rows = rows_of(key_index(emb.keys), names, f"'{keys_list}'")
    return emb.embeddings[rows].astype(np.float64).mean(axis=0).astype(np.float32)


def save_embeddings(emb: Embeddings, path: str, **extra: np.ndarray) -> None:
    """Write the embeddings file of REFERENCE §4 (``keys``, ``embeddings``, optional ``crop_embeddings``,
    ``durations``; plus any ``extra`` arrays), atomically, at exactly ``path`` (no ``.npz`` appended)."""
    arrays = {**extra, "keys": np.asarray(emb.keys), "embeddings": emb.embeddings.astype(np.float32)}
    if emb.crop_embeddings is not None:
        arrays["crop_embeddings"] = emb.crop_embeddings.astype(np.float32)
    if emb.durations is not None:
        arrays["durations"] = np.asarray(emb.durations, dtype=np.float32)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)  # a file object: numpy appends ".npz" only to a name


def load_embeddings(path: str) -> Embeddings:
    """Read an embeddings file (REFERENCE §4); a missing, unreadable or malformed file is a DataError naming it."""
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise DataError(f"Cannot read embeddings file '{path}': {err}") from err
    with data:
        if "keys" not in data or "embeddings" not in data:
            raise DataError(f"Embeddings file '{path}' must hold 'keys' and 'embeddings' (found {list(data)}).")
        keys, embeddings = data["keys"].tolist(), data["embeddings"]
        crops = data["crop_embeddings"] if "crop_embeddings" in data else None
        durations = data["durations"] if "durations" in data else None
    if embeddings.ndim != 2 or len(keys) != len(embeddings):
        raise DataError(f"Embeddings file '{path}': 'embeddings' must be [N, D] with N = len(keys) = {len(keys)}, "
                        f"got shape {embeddings.shape}.")
    return Embeddings(keys, embeddings, crops, durations)
