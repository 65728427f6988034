"""Make everything the demo and the tests need, offline and deterministic from a seed.

Writes under ``--out`` (default ``demo``):
  data/...                      the synthetic VoxCeleb-shaped corpus (see tools.demo_corpus)
  pretrained/WavLM-Tiny.pt      a tiny random-weight WavLM in the official
                                {'cfg': ..., 'model': ...} format, read by the normal loader

Usage: python -m tools.make_demo_data [--out demo] [--seed 0] [--small]
"""
from __future__ import annotations

import argparse
import logging
import os
from typing import Any, Dict

import torch
from torchaudio.models import wavlm_model

from models.checkpoints import write_wavlm_checkpoint
from tools.demo_corpus import make_corpus

logger = logging.getLogger(__name__)

# A tiny WavLM: 7-layer CNN (64 channels, group norm, the Base layout of strides, 20 ms hop)
# and 2 post-norm transformer blocks of 128 dims. Small enough to fine-tune on 2 CPU cores.
TINY_WAVLM: Dict[str, Any] = dict(
    extractor_mode="group_norm",
    extractor_conv_layer_config=[(64, 10, 5)] + [(64, 3, 2)] * 4 + [(64, 2, 2)] * 2,
    extractor_conv_bias=False,
    encoder_embed_dim=128, encoder_projection_dropout=0.0,
    encoder_pos_conv_kernel=16, encoder_pos_conv_groups=4,
    encoder_num_layers=2, encoder_num_heads=4, encoder_num_buckets=32, encoder_max_distance=128,
    encoder_attention_dropout=0.0, encoder_ff_interm_features=512, encoder_ff_interm_dropout=0.0,
    encoder_dropout=0.0, encoder_layer_norm_first=False, encoder_layer_drop=0.0,
)
# WavLM Base / Base+ size (12 blocks of 768, 512-channel CNN) with the official Base+
# dropouts, for benchmarks with random weights.
WAVLM_BASE: Dict[str, Any] = dict(
    TINY_WAVLM, extractor_conv_layer_config=[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2,
    encoder_embed_dim=768, encoder_projection_dropout=0.1, encoder_pos_conv_kernel=128, encoder_pos_conv_groups=16,
    encoder_num_layers=12, encoder_num_heads=12, encoder_num_buckets=320, encoder_max_distance=800,
    encoder_attention_dropout=0.1, encoder_ff_interm_features=3072, encoder_dropout=0.1, encoder_layer_drop=0.05,
)
SMALL_CORPUS = dict(n_train_speakers=6, n_test_speakers=4, utts_per_speaker=6, sessions_per_speaker=2,
                    min_seconds=1.0, max_seconds=2.5, n_trials=60)


def write_tiny_wavlm(path: str, seed: int, config: Dict[str, Any] = TINY_WAVLM) -> None:
    """A random-weight WavLM written in the official format (official parameter names)."""
    torch.manual_seed(seed)
    model = wavlm_model(**config, aux_num_out=None)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_wavlm_checkpoint(path, config, model.state_dict())


def make_demo_data(out: str, seed: int = 0, small: bool = False) -> Dict[str, Any]:
    """Corpus + checkpoint under ``out``; returns the corpus summary plus 'checkpoint'."""
    summary = make_corpus(os.path.join(out, "data"), seed=seed, **(SMALL_CORPUS if small else {}))
    summary["checkpoint"] = os.path.join(out, "pretrained", "WavLM-Tiny.pt")
    write_tiny_wavlm(summary["checkpoint"], seed)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="demo", help="output folder (its data/ must be empty or absent)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    parser.add_argument("--small", action="store_true", help="a very small corpus (for tests)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    summary = make_demo_data(args.out, args.seed, args.small)
    for key, value in summary.items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
