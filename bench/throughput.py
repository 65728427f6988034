#!/usr/bin/env python
"""Training and extraction throughput, side by side with the original formulation.

Three workloads, each run in this one process by both implementations, alternating (A B, then B A,
...), on the same inputs and settings:

  joint       one training step, transformer blocks fine-tuned: WavLM-Base-size (--size) front-end (random
              weights, official format) + MHFA (32 heads, compression 128, 256-d) + AAM-softmax over
              100 classes, AdamW with the original's groups (MHFA + loss at LR_MHFA, block i at
              LR_Transformer * LLRD_factor**i), the original regulariser (weight_finetuning_reg 0.01,
              CE/sg(CE) + w r/(sg(r) + 1e-5)); batch --batch x --seconds s; LayerDrop off in both.
  frozen      one training step with the front-end frozen (eval mode, no gradients) + MHFA + AAM.
  extraction  embeddings of --files files of --eval_seconds s, the original protocol: num_eval 5
              crops of eval_frames 400 plus the whole file; scores of all file pairs.

"original" is the original repository's computation: its front-end is the toolkit's reference path
(``frontend_kernels: reference``: torchaudio's modules as they are, official-WavLM maths), set as the original
runs it: the CNN under no_grad but the feature layer norm, projection and positional convolution in autograd
(``freeze_cnn`` false with ``feature_grad_mult`` 0: their gradients are computed, never used), a frozen
front-end in eval mode under no_grad; the layers stacked, viewed as [B, D, T, L+1], and MHFA as mul + sum;
the regulariser as a Python loop of norms over every front-end tensor of the official WavLM module (q, k, v
apart); torch.optim.AdamW with torch's defaults; extraction one file at a time, one pass for its crops and one
for the whole file, under no_grad. "ours" is the toolkit's own code: ``ModelTrainer.train_epoch`` on a ``SpeakerNet``
built from the configuration, and ``evaluation.extraction.extract_embeddings``.

Printed per workload: the median time over --rounds alternating rounds (after a warm-up of each),
the ratio original / ours (the median of the rounds' ratios); peak memory, measured the same way for
each variant in a fresh process that builds only that variant: the peak resident set size of the
process (total: model, optimizer state and the work) during one run after a warm-up run, and its
growth over the start of that run (the peak is reset through /proc/self/clear_refs after freed memory
is returned with malloc_trim); on CUDA ``max_memory_allocated``. Then the FLOPs of our work (torch's
FLOP counter: matmuls, convolutions, attention) and the float32 GEMM-bound time, FLOPs / the float32
matmul rate measured in this run (the best of the rates measured at the start and before each round).
bfloat16 ("ours bf16": ``mixedprec`` in training, ``eval_autocast`` in extraction) is compared
with the original's float32, with what changes: the loss after --loss_steps steps from the same
start, the cosine of embeddings to float32 and the largest score change.

Usage: python bench/throughput.py [--workloads joint frozen extraction] [--rounds 5] [--threads 2]
On a GPU, at the recipes' batch sizes (bfloat16 is "ours bf16"), for example:
  python bench/throughput.py --device cuda --workloads frozen --batch 128 --seconds 3 [--size large]
  python bench/throughput.py --device cuda --workloads joint --batch 120 --seconds 3 [--size large]
  python bench/throughput.py --device cuda --workloads joint --batch 40 --seconds 6 --size large  (LMFT)
"""
from __future__ import annotations

import argparse
import copy
import ctypes
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Tuple

import numpy as np
import soundfile
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from core.audio import SAMPLE_RATE, load_audio  # noqa: E402 (after the project root is put on sys.path)
from core.options import defaults  # noqa: E402 (after the project root is put on sys.path)
from evaluation.dataset import eval_crops  # noqa: E402 (after the project root is put on sys.path)
from evaluation.extraction import extract_embeddings  # noqa: E402 (after the project root is put on sys.path)
from evaluation.scoring import trial_scores  # noqa: E402 (after the project root is put on sys.path)
from frontend.detect import build_torchaudio_model, read_ssl_checkpoint  # noqa: E402 (after the project root is put on sys.path)
from frontend.ssl_frontend import SSLFrontend  # noqa: E402 (after the project root is put on sys.path)
from runs.trainer import ModelTrainer  # noqa: E402 (after the project root is put on sys.path)
from SpeakerNet import SpeakerNet  # noqa: E402 (after the project root is put on sys.path)
from synthetic.checkpoints import WAVLM_BASE, WAVLM_LARGE, write_tiny_wavlm  # noqa: E402 (after the project root is put on sys.path)

N_CLASSES, HEADS, EVAL_FRAMES, NUM_EVAL, MAX_EVAL_SAMPLES = 100, 32, 400, 5, 700000
SIZES = {"base": WAVLM_BASE, "large": WAVLM_LARGE}  # --size: random-weight WavLM in the official format


# ----------------------------------------------------------------------------- memory and FLOPs

_LIBC = ctypes.CDLL("libc.so.6") if sys.platform.startswith("linux") else None


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class PeakMemory:
    """Peak memory of the work inside the block, MiB: on CUDA the allocator's peak; on CPU the peak
    resident set size of the process (total) and its growth over the start of the block."""

    def __init__(self, device: torch.device):
        self.device = device
        self.total = self.growth = float("nan")

    def __enter__(self) -> "PeakMemory":
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
            return self
        if _LIBC is not None:
            _LIBC.malloc_trim(0)  # freed memory goes back, so the peak below is this work's
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset the peak RSS (VmHWM) to the current RSS
        except OSError:
            pass
        self.start = _status_kib("VmRSS") * 1024
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = _status_kib("VmHWM") * 1024
        self.total, self.growth = peak / 2 ** 20, (peak - self.start) / 2 ** 20


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of ``fn()`` (matmuls, convolutions, attention; forward and backward) by torch's counter, with
    the in-place ``addmm_`` (the CNN's later taps) counted as ``addmm``."""
    from torch.utils.flop_counter import FlopCounterMode

    def addmm_(self_shape, a_shape, b_shape, out_shape=None, **kwargs) -> int:
        return 2 * a_shape[0] * a_shape[1] * b_shape[1]

    with FlopCounterMode(display=False, custom_mapping={torch.ops.aten.addmm_: addmm_}) as counter:
        fn()
    return counter.get_total_flops()


def gemm_rate(device: torch.device, dtype: torch.dtype, n: int = 2048, reps: int = 10) -> float:
    """Measured matmul rate, FLOP/s: the best of ``reps`` n x n x n products (what the machine can do; a
    median would take in its slow spells)."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return 2 * n ** 3 / min(times)


# ----------------------------------------------------------------------------- the original, plainly

class OriginalMHFA(torch.nn.Module):
    """MHFA as the original computes it, on layers [B, D, T, L+1] (mul + sum), weights from ``ours``."""

    def __init__(self, ours: torch.nn.Module):
        super().__init__()
        for name, module in ours.named_children():
            setattr(self, name, copy.deepcopy(module))
        self.weights_k = torch.nn.Parameter(ours.weights_k.detach().clone())
        self.weights_v = torch.nn.Parameter(ours.weights_v.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = torch.sum(x.mul(torch.softmax(self.weights_k, dim=-1)), dim=-1).transpose(1, 2)
        v = torch.sum(x.mul(torch.softmax(self.weights_v, dim=-1)), dim=-1).transpose(1, 2)
        k, v = self.cmp_linear_k(k), self.cmp_linear_v(v)
        att = torch.softmax(self.att_head(k), dim=1)
        pooled = torch.sum(v.unsqueeze(-2).mul(att.unsqueeze(-1)), dim=1)
        return self.pooling_fc(pooled.reshape(pooled.shape[0], -1))


class Original(torch.nn.Module):
    """The original's speaker model: the torchaudio WavLM (every parameter trainable, as built from the
    checkpoint) run by the front-end's reference path + :class:`OriginalMHFA`, the loss and the regulariser over
    every front-end parameter."""

    def __init__(self, checkpoint: str, net: SpeakerNet, frozen: bool):
        super().__init__()
        model = build_torchaudio_model(read_ssl_checkpoint(checkpoint), checkpoint)
        model.encoder.transformer.layer_drop = 0.0
        model.load_state_dict(net.encoder.frontend.model.state_dict())
        # the CNN under no_grad, the other input modules in autograd (feature_grad_mult 0) or all frozen
        self.frontend = SSLFrontend(model, freeze_cnn=False, feature_grad_mult=1.0 if frozen else 0.0,
                                    kernels="reference", freeze_ssl=frozen, family=net.encoder.frontend.family)
        if not frozen:
            model.requires_grad_(True)  # as the original builds it (the CNN's gradients are never computed)
        self.backend = OriginalMHFA(net.encoder.backend)
        self.loss = copy.deepcopy(net.loss_fn)
        self.frozen = frozen
        # θ₀ of the regulariser (the original reloads it from the checkpoint each epoch); training only
        self.anchor = {n: p.detach().clone() for n, p in self.model.named_parameters()} if not frozen else {}

    @property
    def model(self) -> torch.nn.Module:
        """The torchaudio WavLM (a child of the front-end only: a frozen one stays in eval mode)."""
        return self.frontend.model

    def layers(self, wav: torch.Tensor) -> torch.Tensor:
        """[B, D, T, L+1], as the original stacks WavLM's layer results (the reference path's [B, L+1, T, D])."""
        return self.frontend(wav).permute(0, 3, 2, 1)

    def embed(self, wav: torch.Tensor) -> torch.Tensor:
        return self.backend(self.layers(wav))

    def forward(self, wav: torch.Tensor, labels: torch.Tensor, reg_weight: float) -> torch.Tensor:
        ce, _ = self.loss(self.embed(wav), labels)
        if self.frozen or not reg_weight:
            return ce / ce.detach()
        reg = 0
        for name, param in self.model.named_parameters():
            # one norm per tensor of the official WavLM module: torchaudio's merged in_proj [3D, ...] is
            # the official q_proj, k_proj and v_proj, three tensors (three norms)
            parts = 3 if name.endswith(("in_proj_weight", "in_proj_bias")) else 1
            for part, anchor in zip(param.chunk(parts), self.anchor[name].chunk(parts), strict=True):
                reg = reg + torch.norm(part - anchor, 2)
        return ce / ce.detach() + reg_weight * reg / (reg.detach() + 1e-5)


class OriginalTrainer:
    """One original training step: zero_grad, forward, backward, AdamW (torch defaults) over the
    original's groups."""

    def __init__(self, model: Original, config: Dict[str, Any]):
        self.model, self.reg = model, config["weight_finetuning_reg"]
        groups = [{"params": list(model.backend.parameters()) + list(model.loss.parameters()),
                   "lr": config["LR_MHFA"]}]
        if not model.frozen:
            for i, layer in enumerate(model.model.encoder.transformer.layers):
                groups.append({"params": list(layer.parameters()),
                               "lr": config["LR_Transformer"] * config["LLRD_factor"] ** i})
        self.optimizer = torch.optim.AdamW(groups, lr=config["lr"])

    def step(self, wav: torch.Tensor, labels: torch.Tensor) -> float:
        self.model.train()
        self.model.zero_grad()
        loss = self.model(wav.reshape(-1, wav.shape[-1]), labels, self.reg)
        loss.backward()
        self.optimizer.step()
        return loss.detach().item()


def original_extraction(model: Original, paths: List[str], device: torch.device) -> Tuple[np.ndarray, np.ndarray]:
    """Per file, as the original's evaluateFromList: crops [5, S] in one pass, the whole file in another."""
    model.eval()
    whole, crops = [], []
    with torch.no_grad():
        for path in paths:
            audio = load_audio(path)
            crop = torch.from_numpy(eval_crops(audio, EVAL_FRAMES, NUM_EVAL)).to(device)
            crops.append(model.embed(crop).cpu().numpy())
            whole.append(model.embed(torch.from_numpy(audio[:MAX_EVAL_SAMPLES])[None].to(device))[0].cpu().numpy())
    return np.stack(whole), np.stack(crops)


# ----------------------------------------------------------------------------- the bench

def build(checkpoint: str, workload: str, device: torch.device, mixedprec: bool) -> Tuple[Dict, SpeakerNet]:
    torch.manual_seed(0)
    config = {**defaults(), "pretrained_model_path": checkpoint, "nClasses": N_CLASSES, "head_nb": HEADS,
              "freeze_ssl": workload == "frozen", "layer_drop": 0.0, "weight_finetuning_reg": 0.01,
              "lr_decay": 1.0,  # a constant learning rate: every call of train_epoch is an "epoch"
              "mixedprec": mixedprec, "device": device}
    return config, SpeakerNet(**config)


def timed(fn: Callable[[], Any], device: torch.device) -> Tuple[float, Any]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, out


def alternate(variants: Dict[str, Callable[[], Any]], rounds: int, device: torch.device,
              rates: List[float]) -> Dict[str, Dict]:
    """Warm-up, then ``rounds`` rounds in alternating order; the float32 matmul rate is measured again
    before each round and appended to ``rates`` (the GEMM bound takes the best: a slow spell of the
    machine during one measurement must not make the bound look slow)."""
    names = list(variants)
    results = {n: {"times": []} for n in names}
    for n in names:
        variants[n]()
    for r in range(rounds):
        rates.append(gemm_rate(device, torch.float32, reps=3))
        for n in (names if r % 2 == 0 else names[::-1]):
            results[n]["times"].append(timed(variants[n], device)[0])
    for n in names:
        results[n]["median"] = statistics.median(results[n]["times"])
    return results


def report(title: str, results: Dict[str, Dict], flops: int, rate: float, unit: str, per: float) -> List[str]:
    base = results["original"]
    bound = flops / rate
    lines = [f"\n{title}", f"  {'':<14}{unit:>16}{'ratio':>8}{'peak RSS total':>16}{'growth (MiB)':>14}"
             f"{'rounds':>30}"]
    for name, r in results.items():
        # the median of the per-round ratios: each round times the variants back to back, so a slow
        # spell of the machine (other load, frequency) cancels out of a round's ratio
        ratio = statistics.median(o / t for o, t in zip(base["times"], r["times"], strict=True))
        lines.append(f"  {name:<14}{r['median'] / per:>16.3f}{ratio:>7.2f}x{r['mem'].total:>16.0f}"
                     f"{r['mem'].growth:>14.0f}   {' '.join(f'{t / per:.3f}' for t in r['times'])}")
    lines.append(f"  our work: {flops / 1e9:.1f} GFLOP; float32 GEMM bound {bound / per:.3f} {unit.split()[0]} "
                 f"(at {rate / 1e9:.0f} GFLOP/s, the best rate measured); "
                 f"ours fp32 at {bound / results['ours fp32']['median']:.0%} of the bound")
    return lines


def training_variants(workload: str, checkpoint: str, device: torch.device, args,
                      only: str = "") -> Tuple[Dict[str, Callable[[], Any]], Dict[str, float]]:
    """The variants' training steps on one fixed batch (``only``: build just that one), and the
    cross-entropy each reaches after --loss_steps steps from the same start (eval mode, no dropout)."""
    config, net = build(checkpoint, workload, device, mixedprec=False)
    gen = torch.Generator().manual_seed(1)
    wav = torch.randn(args.batch, 1, int(args.seconds * SAMPLE_RATE), generator=gen).to(device)
    labels = torch.randint(0, N_CLASSES, (args.batch,), generator=gen).to(device)
    batch = [(wav, labels)]
    variants, models = {}, {}
    if only in ("", "original"):
        original = Original(checkpoint, net, frozen=workload == "frozen").to(device)
        original_trainer = OriginalTrainer(original, config)
        variants["original"], models["original"] = (lambda: original_trainer.step(wav, labels)), original
    if only in ("", "ours fp32"):
        ours = ModelTrainer(net, **config)
        variants["ours fp32"], models["ours fp32"] = (lambda: ours.train_epoch(batch, 1, verbose=False)), net
    del net
    if only in ("", "ours bf16"):
        _, net16 = build(checkpoint, workload, device, mixedprec=True)
        ours16 = ModelTrainer(net16, **{**config, "mixedprec": True})
        variants["ours bf16"], models["ours bf16"] = (lambda: ours16.train_epoch(batch, 1, verbose=False)), net16
    losses = {}
    if not only:
        for name, run in variants.items():
            torch.manual_seed(5)  # the same dropout masks where the same modules draw them
            for _ in range(args.loss_steps):
                run()
            losses[name] = eval_ce(models[name], wav[:, 0], labels)
    return variants, losses


def bench_training(workload: str, checkpoint: str, device: torch.device, args, rates: List[float]) -> List[str]:
    variants, losses = training_variants(workload, checkpoint, device, args)
    results = alternate(variants, args.rounds, device, rates)
    rate = max(rates)
    for name in variants:
        results[name]["mem"] = memory_of(workload, name, args)
    flops = count_flops(variants["ours fp32"])
    lines = report(f"{workload} step: batch {args.batch} x {args.seconds:g} s", results, flops, rate,
                   "step time (s)", 1.0)
    lines.append(f"  cross-entropy (eval mode, same batch) after {args.loss_steps} steps from the same start: "
                 + ", ".join(f"{k} {v:.4f}" for k, v in losses.items()))
    return lines


def memory_of(workload: str, variant: str, args) -> "PeakMemory":
    """Peak memory of one run of ``variant`` (after a warm-up run) in a fresh process that builds only it."""
    command = [sys.executable, os.path.abspath(__file__), "--child", f"{workload}:{variant}", "--folder", args.folder,
               "--device", args.device, "--threads", str(args.threads), "--batch", str(args.batch),
               "--seconds", str(args.seconds), "--files", str(args.files), "--eval_seconds", str(args.eval_seconds),
               "--eval_batch_seconds", str(args.eval_batch_seconds), "--size", args.size]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    memory = PeakMemory(torch.device(args.device))
    memory.total, memory.growth = json.loads(out)
    return memory


def checkpoint_path(args) -> str:
    return os.path.join(args.folder, f"WavLM-{args.size}-random.pt")


def child(args) -> None:
    """--child WORKLOAD:VARIANT: print [total peak RSS, growth] (MiB) of one run, as JSON."""
    workload, variant = args.child.split(":")
    device = torch.device(args.device)
    checkpoint = checkpoint_path(args)
    if workload == "extraction":
        variants = extraction_variants(checkpoint, args.folder, device, args, only=variant)
    else:
        variants = training_variants(workload, checkpoint, device, args, only=variant)[0]
    run = variants[variant]
    run()
    with PeakMemory(device) as memory:
        run()
    print(json.dumps([memory.total, memory.growth]))


def eval_ce(model: torch.nn.Module, wav: torch.Tensor, labels: torch.Tensor) -> float:
    """Cross-entropy of ``wav`` [B, S] in eval mode (float32, no dropout)."""
    model.eval()
    with torch.no_grad():
        if isinstance(model, Original):
            ce = model.loss(model.embed(wav), labels)[0]
        else:
            ce = model.loss_fn(model.encoder(wav), labels)[0]
    return ce.item()


def extraction_keys(folder: str, args) -> List[str]:
    return [f"id{i:05d}/v/{i:05d}.wav" for i in range(args.files)]


def write_files(folder: str, args) -> None:
    rng = np.random.default_rng(0)
    for key in extraction_keys(folder, args):
        os.makedirs(os.path.join(folder, os.path.dirname(key)), exist_ok=True)
        soundfile.write(os.path.join(folder, key), (0.1 * rng.standard_normal(int(args.eval_seconds * SAMPLE_RATE))
                                                    ).astype(np.float32), SAMPLE_RATE)


def extraction_variants(checkpoint: str, folder: str, device: torch.device, args,
                        only: str = "") -> Dict[str, Callable[[], Any]]:
    _, net = build(checkpoint, "extraction", device, mixedprec=False)
    keys = extraction_keys(folder, args)
    paths = [os.path.join(folder, k) for k in keys]
    variants: Dict[str, Callable[[], Any]] = {}
    if only in ("", "original"):
        original = Original(checkpoint, net, frozen=True).to(device)
        variants["original"] = lambda: original_extraction(original, paths, device)
    encoder = net.encoder.to(device).eval()
    del net
    for name, autocast in (("ours fp32", False), ("ours bf16", True)):
        if only in ("", name):
            variants[name] = lambda autocast=autocast: extract_embeddings(
                encoder, keys, folder, EVAL_FRAMES, NUM_EVAL, MAX_EVAL_SAMPLES / SAMPLE_RATE, device, verbose=False,
                autocast=autocast, batch_seconds=args.eval_batch_seconds)
    return variants


def bench_extraction(checkpoint: str, folder: str, device: torch.device, args, rates: List[float]) -> List[str]:
    variants = extraction_variants(checkpoint, folder, device, args)
    results = alternate(variants, args.rounds, device, rates)
    rate = max(rates)
    for name in variants:
        results[name]["mem"] = memory_of("extraction", name, args)
    whole, crops = variants["original"]()
    e, t = np.triu_indices(args.files, k=1)
    reference = trial_scores(whole, e, t, crops)
    lines = report(f"extraction: {args.files} files of {args.eval_seconds:g} s, {NUM_EVAL} crops of {EVAL_FRAMES} "
                   f"frames + whole file", results, count_flops(variants["ours fp32"]), rate, "time per file (s)",
                   float(args.files))
    for name in ("ours fp32", "ours bf16"):
        emb = variants[name]()
        scores = trial_scores(emb.embeddings, e, t, emb.crop_embeddings)
        cos = [float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b))
               for a, b in zip(emb.embeddings, whole, strict=True)]
        lines.append(f"  {name}: largest score change {np.abs(scores - reference).max():.2e} over {len(e)} trials, "
                     f"lowest whole-file embedding cosine to the original's float32 {min(cos):.6f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", nargs="+", choices=("joint", "frozen", "extraction"),
                        default=["joint", "frozen", "extraction"])
    parser.add_argument("--size", choices=sorted(SIZES), default="base",
                        help="WavLM size (random weights): Base (12 x 768) or Large (24 x 1024, layer-norm CNN)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per variant (after one warm-up)")
    parser.add_argument("--batch", type=int, default=4, help="training batch (utterances)")
    parser.add_argument("--seconds", type=float, default=2.0, help="training crop length")
    parser.add_argument("--files", type=int, default=4, help="extraction: number of files (at least 2)")
    parser.add_argument("--eval_seconds", type=float, default=6.0, help="extraction: file length")
    parser.add_argument("--eval_batch_seconds", type=float, default=float(defaults()["eval_batch_seconds"]),
                        help="extraction: most audio per forward pass (ours; eval_batch_seconds)")
    parser.add_argument("--loss_steps", type=int, default=3, help="steps before the loss comparison")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        torch.set_num_threads(args.threads)
        child(args)
        return
    if args.files < 2:
        parser.error("--files must be at least 2 (scores need pairs)")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rates = [gemm_rate(device, torch.float32)]  # float32 matmul rates, measured again before each round
    rate = rates[0]
    rate16 = gemm_rate(device, torch.bfloat16)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} threads"
    print(f"WavLM-{args.size.capitalize()}-size random weights + MHFA ({HEADS} heads), {name}; matmul rate float32 "
          f"{rate / 1e9:.0f} GFLOP/s, bfloat16 {rate16 / 1e9:.0f} GFLOP/s at the start; "
          f"medians of {args.rounds} rounds")
    with tempfile.TemporaryDirectory() as folder:
        args.folder = folder
        checkpoint = checkpoint_path(args)
        write_tiny_wavlm(checkpoint, seed=0, config=SIZES[args.size])
        write_files(folder, args)
        for workload in args.workloads:
            lines = (bench_extraction(checkpoint, folder, device, args, rates) if workload == "extraction"
                     else bench_training(workload, checkpoint, device, args, rates))
            print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
