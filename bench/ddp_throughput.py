#!/usr/bin/env python
"""Data-parallel training throughput: 1 process vs N processes at the same global batch.

The steps are the toolkit's own (``ModelTrainer.train_epoch`` of a ``SpeakerNet``, defaults otherwise):
one process trains on batches of ``--batch`` utterances; N data-parallel processes (``core.distributed``:
gloo on CPU, NCCL on GPUs) on ``--batch / N`` each, so every optimizer step sees the same number of
utterances. Model: the tiny random-weight WavLM of the demo (``--model tiny``) or a WavLM-Base-size one
(``--model base``) + MHFA + AAM-softmax over 100 classes; input: ``--seconds`` of noise per utterance.
Prints utterances per second (median over ``--steps`` timed steps after one warm-up step) and the ratio.
On CPU the processes share the machine's cores (torch threads per process = cores / N), so the ratio
shows the overhead of gradient all-reduce rather than a speed-up; the speed-up comes with one GPU each.

Usage: python bench/ddp_throughput.py [--processes 2] [--batch 8] [--steps 3] [--seconds 2] [--model tiny]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Dict

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from core.audio import SAMPLE_RATE  # noqa: E402 (after the project root is put on sys.path)
from core.distributed import Context, launch  # noqa: E402 (after the project root is put on sys.path)
from core.options import defaults  # noqa: E402 (after the project root is put on sys.path)
from runs.trainer import ModelTrainer  # noqa: E402 (after the project root is put on sys.path)
from SpeakerNet import SpeakerNet  # noqa: E402 (after the project root is put on sys.path)
from synthetic.checkpoints import TINY_WAVLM, WAVLM_BASE, write_tiny_wavlm  # noqa: E402 (after the project root is put on sys.path)


def steps(config: Dict[str, Any], context: Context) -> float:
    """Median seconds per optimizer step of this process (all processes step together)."""
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // context.world))
    torch.manual_seed(0)
    net = SpeakerNet(**{**defaults(), "pretrained_model_path": config["checkpoint"], "nClasses": 100,
                        "layer_drop": 0.0})
    trainer = ModelTrainer(net, **{**defaults(), "device": context.device, "world": context.world})
    per_process = config["batch"] // context.world
    wav = torch.randn(per_process, 1, int(config["seconds"] * SAMPLE_RATE))
    labels = torch.randint(0, 100, (per_process,))
    times = []
    for _ in range(config["steps"] + 1):
        start = time.perf_counter()
        trainer.train_epoch([(wav, labels)], 1, verbose=False)
        if context.device.type == "cuda":
            torch.cuda.synchronize(context.device)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8, help="global batch (utterances per optimizer step)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--model", choices=("tiny", "base"), default="tiny")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = os.path.join(folder, "wavlm.pt")
        write_tiny_wavlm(checkpoint, seed=0, config=TINY_WAVLM if args.model == "tiny" else WAVLM_BASE)
        config = {"checkpoint": checkpoint, "batch": args.batch, "steps": args.steps, "seconds": args.seconds,
                  "device": args.device, "port": "29561", "dist_timeout": 10.0}
        one = launch(steps, {**config, "distributed": False})
        many = launch(steps, {**config, "distributed": True, "nproc_per_node": args.processes})
    print(f"{args.model} WavLM + MHFA, global batch {args.batch} x {args.seconds:g} s, device {args.device}:")
    print(f"  1 process:   {one:.3f} s/step, {args.batch / one:.1f} utt/s")
    print(f"  {args.processes} processes: {many:.3f} s/step, {args.batch / many:.1f} utt/s "
          f"(x{one / many:.2f} the single process)")


if __name__ == "__main__":
    main()
