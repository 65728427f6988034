#!/usr/bin/env python
"""One training step with the SSL front-end frozen vs. jointly fine-tuned (issue 3 figures).

The step is the toolkit's own (``ModelTrainer.train_epoch`` over one batch of a
``SpeakerNet``), with the configuration defaults (AdamW, the original's regulariser
toward the pre-trained weights, ``weight_finetuning_reg`` 0.01) and LR_MHFA 5e-3 /
LR_Transformer 2e-5. Model: a random-weight WavLM-Base-size checkpoint in the official
format (7-layer CNN with 512 channels, 12 post-norm blocks of 768, the Base+ dropouts)
+ MHFA (64 heads, compression 128, embedding 256) + AAM-softmax over 100 classes.
Input: batch 4 x 2 s of 16 kHz noise.

  frozen:    ``freeze_ssl`` (front-end in eval mode under no_grad; only MHFA + loss train;
             no regulariser, as nothing of the front-end can move)
  joint:     transformer blocks fine-tuned (CNN, projection and positional conv frozen:
             ``freeze_cnn``, our default), with the regulariser over the trained blocks
  joint_cnn: everything fine-tuned (``freeze_cnn: false``); also the cost of the original's
             joint step, which back-propagates into the CNN

Each mode runs in a fresh child process (peak memory is per process): one warm-up step,
then ``--steps`` timed steps (median reported). Peak memory: on CUDA
``torch.cuda.max_memory_allocated``; on CPU the growth of the process's peak resident
set size (``ru_maxrss``) over the built model, i.e. activations, gradients and
optimizer state of the training steps.

Usage: python bench/frontend_step.py [--device cpu] [--steps 2] [--batch 4] [--seconds 2] [--modes frozen joint]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from core.audio import SAMPLE_RATE  # noqa: E402 (after the project root is put on sys.path)
from core.options import defaults  # noqa: E402 (after the project root is put on sys.path)
from runs.trainer import ModelTrainer  # noqa: E402 (after the project root is put on sys.path)
from SpeakerNet import SpeakerNet  # noqa: E402 (after the project root is put on sys.path)
from synthetic.checkpoints import WAVLM_BASE, write_tiny_wavlm  # noqa: E402 (after the project root is put on sys.path)

MODES = ("frozen", "joint", "joint_cnn")


def rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_mode(mode: str, device: torch.device, steps: int, batch: int, seconds: float) -> Dict[str, float]:
    """Build the model, run 1 + ``steps`` training steps; returns median time and peak memory."""
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = os.path.join(folder, "WavLM-Base-random.pt")
        write_tiny_wavlm(checkpoint, seed=0, config=WAVLM_BASE)
        torch.manual_seed(0)
        config = {**defaults(), "pretrained_model_path": checkpoint, "nClasses": 100, "head_nb": 64,
                  "freeze_ssl": mode == "frozen", "freeze_cnn": mode != "joint_cnn",
                  "layer_drop": 0.0}  # every block every step: steady timings (the default is the checkpoint's 0.05)
        net = SpeakerNet(**config)
    trainer = ModelTrainer(net, **{**config, "device": device})
    wav = torch.randn(batch, 1, int(seconds * SAMPLE_RATE))
    labels = torch.randint(0, 100, (batch,))
    base_rss = rss_mib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for step in range(steps + 1):
        start = time.perf_counter()
        trainer.train_epoch([(wav, labels)], step + 1, verbose=False)  # one batch = one training step
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else rss_mib() - base_rss)
    groups = trainer.optimizer.param_groups
    trainable = sum(p.numel() for g in groups for p in g["params"] if p.requires_grad)
    return {"step_s": statistics.median(times[1:]), "peak_mib": peak, "trainable_m": trainable / 1e6,
            "groups": len(groups)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per mode (after one warm-up)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(run_mode(args.child, torch.device(args.device), args.steps, args.batch, args.seconds)))
        return
    results = {}
    passed = [f"--{k}={getattr(args, k)}" for k in ("device", "steps", "batch", "seconds", "threads")]
    for mode in dict.fromkeys(["frozen", "joint"] + args.modes):
        child = subprocess.run([sys.executable, __file__, "--child", mode] + passed, check=True,
                               capture_output=True, text=True)
        results[mode] = json.loads(child.stdout.strip().splitlines()[-1])
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {args.threads} threads"
    memory = "CUDA max allocated" if args.device.startswith("cuda") else "peak RSS growth"
    print(f"WavLM-Base-size front-end + MHFA, batch {args.batch} x {args.seconds:g} s, {device_name}")
    print(f"{'mode':<10}{'step time (s)':>15}{memory + ' (MiB)':>28}{'trainable (M)':>15}")
    for mode, r in results.items():
        print(f"{mode:<10}{r['step_s']:>15.3f}{r['peak_mib']:>28.0f}{r['trainable_m']:>15.2f}")
    speed = results["joint"]["step_s"] / results["frozen"]["step_s"]
    mem = results["joint"]["peak_mib"] / max(results["frozen"]["peak_mib"], 1e-9)
    print(f"joint / frozen: time {speed:.2f}x, memory {mem:.2f}x "
          f"(target: frozen at least 3x faster: {'met' if speed >= 3 else 'NOT met'})")
    if "joint_cnn" in results:
        print(f"joint_cnn / frozen: time {results['joint_cnn']['step_s'] / results['frozen']['step_s']:.2f}x")


if __name__ == "__main__":
    main()
