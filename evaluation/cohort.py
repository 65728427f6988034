"""AS-norm / S-norm cohorts: the mean whole-file embedding of each training speaker.

cohort[s] = (1 / |U_s|) * sum_{u in U_s} w_u, with U_s the files of speaker s in the training
list and w_u the whole-file embedding before normalisation (wespeaker: mean embedding per
training speaker). Rows are in sorted speaker order; ``keys`` holds the speaker ids.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np

from evaluation.embeddings import Embeddings, key_index, rows_of


def speaker_means(embeddings: np.ndarray, speakers: Sequence[str]) -> Tuple[List[str], np.ndarray]:
    """Mean row per speaker (float64 sums): (sorted speaker ids, [S, D] float32)."""
    names, label = np.unique(np.asarray(speakers), return_inverse=True)
    sums = np.zeros((len(names), embeddings.shape[1]))
    np.add.at(sums, label, embeddings.astype(np.float64))
    counts = np.bincount(label, minlength=len(names))[:, None]
    return names.tolist(), (sums / counts).astype(np.float32)


def make_cohort(emb: Embeddings, speakers: Sequence[str], files: Sequence[str], list_path: str) -> Embeddings:
    """Cohort embeddings (keys = speaker ids) from per-file embeddings of the list's files."""
    rows = rows_of(key_index(emb.keys), files, f"'{list_path}'")
    names, means = speaker_means(emb.embeddings[rows], speakers)
    return Embeddings(names, means, None)
