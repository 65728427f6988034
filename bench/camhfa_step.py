#!/usr/bin/env python
"""CA-MHFA beside MHFA: back-end forward + backward time and parameter count on WavLM-Base-size inputs.

Input: random stacked layer outputs [batch, 13, frames, 768] (WavLM Base+: 12 blocks + the input of the
first; 3 s = 149 frames), what the back-end sees after the front-end. Both back-ends with the recipe's
sizes (64 heads / groups, compression 128, embedding 256; CA-MHFA with ``--context`` frames). Prints the
median of ``--steps`` timed steps after a warm-up, alternating the two, and the parameter counts.

Usage: python bench/camhfa_step.py [--batch 16] [--frames 149] [--steps 10] [--context 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from models.CAMHFA import CAMHFA  # noqa: E402 (after the project root is put on sys.path)
from models.MHFA import MHFA  # noqa: E402 (after the project root is put on sys.path)


def step_time(backend: torch.nn.Module, x: torch.Tensor) -> float:
    start = time.perf_counter()
    backend(x).square().sum().backward()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--frames", type=int, default=149, help="frames per utterance (149 = 3 s)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--context", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    sizes = dict(head_nb=64, compression_dim=128, outputs_dim=256)
    backends = {"MHFA": MHFA(13, 768, **sizes), f"CA-MHFA (L={args.context})": CAMHFA(13, 768, **sizes,
                                                                                        context=args.context)}
    x = torch.randn(args.batch, 13, args.frames, 768)
    times = {name: [] for name in backends}
    for backend in backends.values():
        step_time(backend, x)  # warm-up
    for _ in range(args.steps):
        for name, backend in backends.items():
            times[name].append(step_time(backend, x))
    print(f"back-end forward + backward, input [{args.batch}, 13, {args.frames}, 768], {torch.get_num_threads()} "
          f"threads, median of {args.steps}:")
    for name, backend in backends.items():
        params = sum(p.numel() for p in backend.parameters())
        print(f"  {name:16s} {statistics.median(times[name]) * 1000:8.1f} ms   {params:,} parameters")


if __name__ == "__main__":
    main()
