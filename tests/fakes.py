"""Shared test helpers: random embeddings and trial lists, unit vectors, running a project script."""
import os
import subprocess
import sys

import numpy as np

from tools.evaluation import Embeddings, Trials

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(script: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a top-level script of the project (``python <ROOT>/<script> args``) from the project root."""
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def unit(x):
    """x / ||x|| along the last axis, in float64."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def random_embeddings(n: int, d: int, crops: int = 3, seed: int = 0) -> Embeddings:
    """``n`` files (keys ``idXX/vN/NNN.wav``, 4 speakers), whole-file [n, d] and crop [n, crops, d] embeddings."""
    rng = np.random.default_rng(seed)
    keys = [f"id{i % 4:02d}/v{i}/{i:03d}.wav" for i in range(n)]
    return Embeddings(keys, rng.normal(size=(n, d)).astype(np.float32),
                      rng.normal(size=(n, crops, d)).astype(np.float32) if crops else None)


def random_trials(keys, n: int, seed: int = 1) -> Trials:
    """``n`` random trials over ``keys`` with random labels, both classes present."""
    rng = np.random.default_rng(seed)
    pairs = rng.integers(0, len(keys), size=(n, 2))
    labels = rng.integers(0, 2, n)
    labels[:2] = [0, 1]
    return Trials(labels, [keys[a] for a, _ in pairs], [keys[b] for _, b in pairs])
