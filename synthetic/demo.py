"""Everything the demo and the tests need, offline and deterministic from a seed.

Writes under ``out``:
  data/...                      the synthetic VoxCeleb-shaped corpus (see synthetic.corpus)
  pretrained/WavLM-Tiny.pt      a tiny random-weight WavLM in the official
                                {'cfg': ..., 'model': ...} format, read by the normal loader
"""
from __future__ import annotations

import os
from typing import Any, Dict

from synthetic.checkpoints import write_tiny_wavlm
from synthetic.corpus import make_corpus

SMALL_CORPUS = dict(n_train_speakers=6, n_test_speakers=4, utts_per_speaker=6, sessions_per_speaker=2,
                    min_seconds=1.0, max_seconds=2.5, n_trials=60, musan_files_per_category=8, rir_rooms_per_type=2,
                    rirs_per_room=1)


def make_demo_data(out: str, seed: int = 0, small: bool = False) -> Dict[str, Any]:
    """Corpus + checkpoint under ``out``; returns the corpus summary plus 'checkpoint'."""
    summary = make_corpus(os.path.join(out, "data"), seed=seed, **(SMALL_CORPUS if small else {}))
    summary["checkpoint"] = os.path.join(out, "pretrained", "WavLM-Tiny.pt")
    write_tiny_wavlm(summary["checkpoint"], seed)
    return summary
