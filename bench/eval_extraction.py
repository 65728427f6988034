#!/usr/bin/env python
"""Extraction speed: batched (evaluation/extraction.py) vs one file at a time, same embeddings.

A WavLM-Base-size model with random weights (12 blocks, 768 dims, 512-channel CNN) plus
MHFA (32 heads, compression 128, 256-d), on random 6 s files, original protocol (5 crops
of 300 frames + the whole file). The one-file-at-a-time reference does what the original
does per file: one forward pass for the file's crops and one for the whole file.
Prints files/s for both, the speed-up (target >= 1.5x) and the largest score difference.

Usage: python bench/eval_extraction.py [--files 6] [--seconds 6] [--batch_seconds 60] [--autocast]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import soundfile
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from core.audio import load_audio  # noqa: E402 (after the project root is put on sys.path)
from evaluation.dataset import eval_crops  # noqa: E402 (after the project root is put on sys.path)
from evaluation.extraction import extract_embeddings  # noqa: E402 (after the project root is put on sys.path)
from evaluation.scoring import trial_scores  # noqa: E402 (after the project root is put on sys.path)
from models.MHFA import MainModel  # noqa: E402 (after the project root is put on sys.path)
from synthetic.checkpoints import WAVLM_BASE, write_tiny_wavlm  # noqa: E402 (after the project root is put on sys.path)

EVAL_FRAMES, NUM_EVAL = 300, 5


@torch.no_grad()
def one_at_a_time(encoder: torch.nn.Module, keys, root: str) -> tuple:
    """Per file: crops [5, S] in one pass, then the whole file [1, N] (as the original)."""
    whole, crops = [], []
    for key in keys:
        audio = load_audio(os.path.join(root, key))
        crops.append(encoder(torch.from_numpy(eval_crops(audio, EVAL_FRAMES, NUM_EVAL))).numpy())
        whole.append(encoder(torch.from_numpy(audio)[None])[0].numpy())
    return np.stack(whole), np.stack(crops)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=6, help="number of files (at least 2: scores need pairs)")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--batch_seconds", type=float, default=60.0)
    parser.add_argument("--autocast", action="store_true", help="also time batched extraction under bf16 autocast")
    args = parser.parse_args()
    if args.files < 2:
        parser.error("--files must be at least 2 (scores are compared over pairs of files)")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as root:
        checkpoint = os.path.join(root, "WavLM-Base-random.pt")
        write_tiny_wavlm(checkpoint, seed=0, config=WAVLM_BASE)
        torch.manual_seed(0)
        encoder = MainModel(checkpoint, nOut=256, head_nb=32, compression_dim=128).eval()
        keys = [f"id{i:05d}/v/{i:05d}.wav" for i in range(args.files)]
        for key in keys:
            os.makedirs(os.path.join(root, os.path.dirname(key)), exist_ok=True)
            audio = (0.1 * rng.standard_normal(int(args.seconds * 16000))).astype(np.float32)
            soundfile.write(os.path.join(root, key), audio, 16000)
        one_at_a_time(encoder, keys[:1], root)  # warm-up (allocator, kernels)
        start = time.perf_counter()
        whole, crops = one_at_a_time(encoder, keys, root)
        single = time.perf_counter() - start
        start = time.perf_counter()
        emb = extract_embeddings(encoder, keys, root, EVAL_FRAMES, NUM_EVAL, 0, torch.device("cpu"), workers=0,
                                 verbose=False, batch_seconds=args.batch_seconds)
        batched = time.perf_counter() - start
        if args.autocast:
            start = time.perf_counter()
            low = extract_embeddings(encoder, keys, root, EVAL_FRAMES, NUM_EVAL, 0, torch.device("cpu"), workers=0,
                                     verbose=False, batch_seconds=args.batch_seconds, autocast=True)
            autocast = time.perf_counter() - start
    e, t = np.triu_indices(len(keys), k=1)
    diff = np.abs(trial_scores(whole, e, t, crops) - trial_scores(emb.embeddings, e, t, emb.crop_embeddings)).max()
    print(f"WavLM-Base-size random model, {args.files} files of {args.seconds:g} s, original protocol "
          f"({NUM_EVAL} x {EVAL_FRAMES} frames + whole file), {torch.get_num_threads()} threads")
    print(f"one file at a time: {args.files / single:.3f} files/s ({single / args.files:.2f} s/file)")
    print(f"batched (<= {args.batch_seconds:g} s audio per pass): {args.files / batched:.3f} files/s "
          f"({batched / args.files:.2f} s/file) -> {single / batched:.2f}x (target >= 1.5x)")
    print(f"largest embedding difference {np.abs(whole - emb.embeddings).max():.2e} (whole), "
          f"{np.abs(crops - emb.crop_embeddings).max():.2e} (crops); largest score difference {diff:.2e} "
          f"over {len(e)} trials")
    if args.autocast:
        low_diff = np.abs(trial_scores(whole, e, t, crops) - trial_scores(low.embeddings, e, t, low.crop_embeddings))
        print(f"batched + bf16 autocast: {args.files / autocast:.3f} files/s -> {single / autocast:.2f}x; "
              f"largest score difference {low_diff.max():.2e} (not the same scores)")


if __name__ == "__main__":
    main()
