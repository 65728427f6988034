#!/usr/bin/env python
"""One training step with the SSL front-end frozen vs. jointly fine-tuned (issue 3 figures).

Model: a random-weight WavLM-Base-size front-end (torchaudio ``wavlm_base``: 7-layer CNN
with 512 channels, 12 post-norm blocks of 768) + MHFA (64 heads, compression 128,
embedding 256) + AAM-softmax over 100 classes, AdamW on ``SpeakerEncoder.parameter_groups``.
Input: batch 4 x 2 s of 16 kHz noise.

  frozen:    ``freeze_ssl`` (front-end under no_grad, only MHFA + loss in the optimizer)
  joint:     transformer blocks fine-tuned (input modules frozen, our default)
  joint_cnn: everything fine-tuned (``freeze_cnn: false``); also the cost of the original's
             joint step, which back-propagates into the CNN although it never updates it

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
import time
from typing import Dict

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from torchaudio.models import wavlm_base  # noqa: E402

from loss.aamsoftmax import LossFunction  # noqa: E402
from models.MHFA import MHFA, SpeakerEncoder  # noqa: E402
from models.ssl_frontend import SSLFrontend  # noqa: E402

SAMPLE_RATE = 16000
MODES = ("frozen", "joint", "joint_cnn")


def rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_mode(mode: str, device: torch.device, steps: int, batch: int, seconds: float) -> Dict[str, float]:
    """Build the model, run 1 + ``steps`` training steps; returns median time and peak memory."""
    torch.manual_seed(0)
    frontend = SSLFrontend(wavlm_base(), freeze_ssl=mode == "frozen", freeze_cnn=mode != "joint_cnn")
    encoder = SpeakerEncoder(frontend, MHFA(frontend.num_layers, frontend.hidden_size, head_nb=64)).to(device)
    loss_fn = LossFunction(nOut=256, nClasses=100).to(device)
    groups = encoder.parameter_groups(5e-3, 2e-5, 1.0, extra_backend=list(loss_fn.parameters()))
    optimizer = torch.optim.AdamW(groups)
    wav = torch.randn(batch, int(seconds * SAMPLE_RATE), device=device)
    labels = torch.randint(0, 100, (batch,), device=device)
    encoder.train()
    base_rss = rss_mib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss, _ = loss_fn(encoder(wav), labels)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else rss_mib() - base_rss)
    trainable = sum(p.numel() for g in groups for p in g["params"])
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
