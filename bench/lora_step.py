#!/usr/bin/env python
"""LoRA beside full fine-tuning: one joint training step (front-end + MHFA forward, backward, AdamW update) and its
peak memory, on random-weight WavLM-Base-size and w2v-BERT-2.0-size front-ends.

Each (backbone, mode) runs in its own process: the model is built (random weights, the architecture of WavLM Base+:
12 blocks of 768; of w2v-BERT 2.0: 24 conformer blocks of 1024, ~580 M parameters), MHFA (64 heads, compression 128,
embedding 256) and a linear classifier on top. ``full``: every block weight trains (the input modules frozen, our
default); ``lora``: rank ``--rank`` adapters (alpha 2 x rank) on the query and value projections of every block, the
front-end's own weights frozen. Step time: median of ``--steps`` timed steps after ``--warmup``; memory: on CUDA the
peak allocated by torch during the steps, on CPU the process's peak resident memory (weights included; the line also
gives the growth over the built model's). Dropout and LayerDrop are off (the same work every step).

Usage:
  python bench/lora_step.py [--backbones wavlm w2vbert] [--batch 2] [--seconds 2] [--steps 3] [--rank 64]
  GPU: python bench/lora_step.py --device cuda --batch 32 --seconds 3 --steps 10 [--mixedprec]
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
from typing import Any, Dict

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from frontend.lora import add_lora  # noqa: E402 (after the project root is put on sys.path)
from frontend.ssl_frontend import SSLFrontend  # noqa: E402
from frontend.w2vbert import W2VBertFrontend, build_w2vbert_model  # noqa: E402
from models.MHFA import MHFA  # noqa: E402


def build(backbone: str) -> Any:
    """A random-weight front-end of ``backbone``'s size, dropout and LayerDrop off."""
    if backbone == "wavlm":
        from torchaudio.models import wavlm_base

        model = wavlm_base(encoder_projection_dropout=0.0, encoder_attention_dropout=0.0, encoder_ff_interm_dropout=0.0,
                           encoder_dropout=0.0, encoder_layer_drop=0.0)
        return SSLFrontend(model, family="wavlm")
    from transformers import Wav2Vec2BertConfig

    config = Wav2Vec2BertConfig(layerdrop=0.0, hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                                feat_proj_dropout=0.0, conformer_conv_dropout=0.0).to_dict()
    return W2VBertFrontend(build_w2vbert_model(config, "bench"))


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def one(args: argparse.Namespace) -> Dict[str, Any]:
    """Build and time one (backbone, mode) in this process."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    frontend = build(args.backbone)
    if args.mode == "lora":
        add_lora(frontend, args.rank, 2.0 * args.rank, 0.0, ["query", "value"])
    backend = MHFA(frontend.num_layers, frontend.hidden_size, head_nb=64, compression_dim=128, outputs_dim=256)
    classifier = torch.nn.Linear(256, 1000)
    modules = torch.nn.ModuleList([frontend, backend, classifier]).to(device).train()
    params = [p for p in modules.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    built = rss_mib()
    wav = 0.1 * torch.randn(args.batch, int(args.seconds * 16000), device=device)
    labels = torch.randint(0, 1000, (args.batch,), device=device)
    dtype = torch.bfloat16 if device.type == "cpu" else torch.float16

    def step() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=args.mixedprec):
            logits = classifier(backend(frontend(wav)))
            loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = [step() for _ in range(args.steps)]
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else rss_mib()
    return {"backbone": args.backbone, "mode": args.mode, "step_s": statistics.median(times),
            "steps_s": [round(t, 3) for t in times], "peak_mib": peak, "growth_mib": peak - built,
            "params": sum(p.numel() for p in modules.parameters()), "trainable": sum(p.numel() for p in params)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", nargs="+", default=["wavlm", "w2vbert"], choices=["wavlm", "w2vbert"])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=2.0, help="crop length per utterance")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--mixedprec", action="store_true", help="bfloat16 (CPU) / float16 (CUDA) autocast")
    parser.add_argument("--backbone", help=argparse.SUPPRESS)  # one measurement in this process
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.backbone:
        print(json.dumps(one(args)))
        return
    print(f"joint step (forward, backward, AdamW), batch {args.batch} x {args.seconds:g} s, {args.device}, "
          f"{torch.get_num_threads()} threads{', mixed precision' if args.mixedprec else ''}; median of {args.steps}:")
    for backbone in args.backbones:
        for mode in ("full", "lora"):
            command = [sys.executable, os.path.abspath(__file__), "--backbone", backbone, "--mode", mode,
                       *[f"--{k}={v}" for k in ("batch", "seconds", "steps", "warmup", "rank", "device")
                         for v in [getattr(args, k)]], *(["--mixedprec"] if args.mixedprec else [])]
            run = subprocess.run(command, check=True, capture_output=True, text=True)
            out = json.loads(run.stdout.splitlines()[-1])
            label = "full fine-tuning" if mode == "full" else f"LoRA rank {args.rank}"
            memory = "peak allocated" if args.device.startswith("cuda") else "peak RSS"
            print(f"  {backbone:8s} {label:17s} {out['step_s']:7.2f} s/step  {memory} {out['peak_mib']:8.0f} MiB "
                  f"(+{out['growth_mib']:.0f} over the built model)  trainable {out['trainable']:,} of "
                  f"{out['params']:,}  steps {out['steps_s']}")


if __name__ == "__main__":
    main()
