#!/usr/bin/env python
"""Scoring at VoxCeleb1-H scale, on random data.

Generates, in a temporary folder that is removed afterwards, random 256-d embeddings for
145,375 files, a 550,894-trial list over them (grouped by enrolment file, as the real
Vox1-E/H lists are) and a 5,994-speaker cohort, then measures:
  (a) the whole eval command from saved embeddings with AS-norm (top 300), score file,
      DET plot and threshold file written: wall time and peak RSS of the child process;
  (b) cosine scoring of all trials in-process from loaded embeddings (also with the trials
      shuffled), against per-trial loops of the same maths on a random sample of trials;
  (c) EER + MinDCF(0.05, 0.01) for 1,000,000 scores.
The targets are in the README (Speed and memory).

Usage: python bench/eval_scoring.py [--files 145375] [--trials 550894] [--cohort 5994]
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from evaluation.embeddings import load_embeddings, trial_rows  # noqa: E402 (after the project root is put on sys.path)
from evaluation.metrics import evaluate_scores  # noqa: E402 (after the project root is put on sys.path)
from evaluation.scoring import score_trials, trial_scores  # noqa: E402 (after the project root is put on sys.path)
from evaluation.trials import read_trials  # noqa: E402 (after the project root is put on sys.path)

REPEATS = 5  # timed runs of the vectorised scoring (median reported)


def make_data(folder: str, n_files: int, n_trials: int, n_cohort: int, dim: int, seed: int = 0) -> dict:
    """Random embeddings / trials / cohort files in ``folder``; returns their paths."""
    rng = np.random.default_rng(seed)
    keys = [f"id{10000 + i // 30:05d}/{i:011d}/{i % 30:05d}.wav" for i in range(n_files)]
    paths = {"emb": os.path.join(folder, "emb.npz"), "cohort": os.path.join(folder, "cohort.npz"),
             "trials": os.path.join(folder, "trials.txt"), "scores": os.path.join(folder, "scores.txt")}
    np.savez(paths["emb"], keys=np.asarray(keys), embeddings=rng.standard_normal((n_files, dim), dtype=np.float32))
    np.savez(paths["cohort"], keys=np.asarray([f"id{i:05d}" for i in range(n_cohort)]),
             embeddings=rng.standard_normal((n_cohort, dim), dtype=np.float32))
    # grouped by enrolment file like the real Vox1-E/H lists (each enrolment file's trials are
    # consecutive lines), test files at random
    pairs = np.stack([np.sort(rng.integers(0, n_files, n_trials)), rng.integers(0, n_files, n_trials)], axis=1)
    labels = rng.integers(0, 2, n_trials)
    with open(paths["trials"], "w") as handle:
        handle.writelines(f"{y} {keys[a]} {keys[b]}\n"
                          for y, (a, b) in zip(labels.tolist(), pairs.tolist(), strict=True))
    return paths


def bench_command(paths: dict) -> tuple:
    """(a): wall seconds and peak RSS (GB) of the real eval CLI."""
    cmd = [sys.executable, os.path.join(ROOT, "trainSpeakerNet_Eval.py"), "--eval", "--test_list", paths["trials"],
           "--embeddings", paths["emb"], "--score_norm", "asnorm", "--cohort_embeddings", paths["cohort"],
           "--top_n", "300", "--score_file", paths["scores"]]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"eval command failed:\n{proc.stderr[-3000:]}")
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 1e9  # ru_maxrss is in KiB on Linux
    return wall, peak_gb, proc.stdout.strip()


def per_trial_loop(whole: np.ndarray, e: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The same maths one trial at a time, in lean NumPy (normalise both rows, dot)."""
    out = np.empty(len(e))
    for n in range(len(e)):
        a, b = whole[e[n]], whole[t[n]]
        out[n] = float(np.dot(a / np.linalg.norm(a), b / np.linalg.norm(b)))
    return out


def per_trial_loop_torch(whole: np.ndarray, e: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The same maths one trial at a time as the original's loop writes it: torch tensors,
    F.normalize of each side, the (here 1 x 1) cosine matrix and its mean."""
    feats = torch.from_numpy(whole)
    out = np.empty(len(e))
    with torch.no_grad():
        for n in range(len(e)):
            ref = F.normalize(feats[e[n]][None], p=2, dim=1)
            com = F.normalize(feats[t[n]][None], p=2, dim=1)
            out[n] = torch.mean(torch.matmul(ref, com.T)).item()
    return out


def median_time(fn, *args) -> tuple:
    """(median seconds over REPEATS calls, last result): the loops below are timed warm too."""
    runs = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        result = fn(*args)
        runs.append(time.perf_counter() - start)
    return statistics.median(runs), result


def bench_scoring(paths: dict, sample: int) -> dict:
    """(b): vectorised scoring of all trials vs a per-trial loop on ``sample`` random trials."""
    emb, trials = load_embeddings(paths["emb"]), read_trials(paths["trials"])
    start = time.perf_counter()
    e, t = trial_rows(emb, {"trials": trials})["trials"]
    mapping = time.perf_counter() - start
    vectorised, scores = median_time(trial_scores, emb.embeddings, e, t)
    shuffle = np.random.default_rng(2).permutation(len(e))  # the same trials in random order: no reuse of
    shuffled, shuffled_scores = median_time(trial_scores, emb.embeddings, e[shuffle], t[shuffle])  # cached rows
    start = time.perf_counter()
    with_keys = score_trials(emb, trials)
    keyed = time.perf_counter() - start
    picked = np.sort(np.random.default_rng(3).choice(len(e), size=min(sample, len(e)), replace=False))
    start = time.perf_counter()
    loop = per_trial_loop(emb.embeddings, e[picked], t[picked])
    loop_full = (time.perf_counter() - start) * len(e) / len(picked)
    start = time.perf_counter()
    loop_torch = per_trial_loop_torch(emb.embeddings, e[picked], t[picked])
    torch_full = (time.perf_counter() - start) * len(e) / len(picked)
    assert np.allclose(loop, scores[picked], atol=1e-5) and np.allclose(loop_torch, scores[picked], atol=1e-5)
    assert np.array_equal(with_keys, scores) and np.array_equal(shuffled_scores, scores[shuffle])
    return {"mapping": mapping, "vectorised": vectorised, "shuffled": shuffled, "keyed": keyed,
            "loop_full": loop_full, "torch_full": torch_full}


def bench_metrics(n: int = 1_000_000, seed: int = 1) -> float:
    """(c): seconds for EER + MinDCF at both priors on n random scores."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    scores = rng.standard_normal(n) + labels
    start = time.perf_counter()
    evaluate_scores(scores, labels, (0.05, 0.01))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=145_375)
    parser.add_argument("--trials", type=int, default=550_894)
    parser.add_argument("--cohort", type=int, default=5_994)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--loop_sample", type=int, default=20_000, help="trials timed in the per-trial loop")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        paths = make_data(folder, args.files, args.trials, args.cohort, args.dim)
        print(f"data: {args.files} files, {args.trials} trials, cohort {args.cohort}, {args.dim}-d "
              f"(made in {time.perf_counter() - start:.1f} s)")
        wall, peak, line = bench_command(paths)
        print(f"(a) eval command, AS-norm top 300, score file written: {wall:.2f} s, "
              f"peak RSS {peak:.2f} GB -> {line}")
        b = bench_scoring(paths, args.loop_sample)
        print(f"(b) cosine scoring of all trials: {b['vectorised']:.3f} s from row indices (median of {REPEATS}; "
              f"{b['shuffled']:.3f} s with the trials in random order); "
              f"key->row mapping {b['mapping']:.3f} s; both together {b['keyed']:.3f} s")
        for what, key in (("lean NumPy", "loop_full"), ("original-style torch", "torch_full")):
            print(f"    per-trial loop ({what}), same maths: {b[key]:.1f} s extrapolated from {args.loop_sample} "
                  f"trials -> vectorised is {b[key] / b['vectorised']:.0f}x faster")
        print(f"(c) EER + MinDCF(0.05, 0.01) for 1,000,000 scores: {bench_metrics():.3f} s")


if __name__ == "__main__":
    main()
