"""Shared test helpers: random embeddings and trial lists, unit vectors, tiny models, running a project script
(in this process, or as a real command)."""
import contextlib
import io
import os
import socket
import subprocess
import sys

import numpy as np
import torch

from core import audio
from core.options import defaults
from evaluation.embeddings import Embeddings
from evaluation.trials import Trials
from model_files import model_file_fields, save_model_file
from SpeakerNet import SpeakerNet
from synthetic.checkpoints import torchaudio_state_to_wavlm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(script: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a top-level script of the project as a real command (``python <ROOT>/<script> args``) in the current
    folder (the test's tmp_path). For what only a new process shows: --help, signals, the launcher."""
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], capture_output=True, text=True,
                          timeout=timeout)


def run_main(script, *args: str) -> subprocess.CompletedProcess:
    """Call an entry script's ``main(argv)`` in this process, as the shell would run ``python script args``: the
    exit status (``SystemExit.code``; 0 when main returns) and what it printed on stdout and stderr. Any other
    exception propagates (a real command would have printed a traceback). Like a new process, the run starts with
    no conversion noted yet (they are logged once per run)."""
    audio._NOTED.clear()  # process-wide "logged once" state: a fresh process has none
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            script.main(list(args))
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    return subprocess.CompletedProcess([script.__name__, *args], code, out.getvalue(), err.getvalue())


def free_port() -> str:
    """A TCP port nothing listens on now, for the processes of a distributed test (fixed ports collide when test
    sessions run side by side)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


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


def write_file(tmp_path, text: str, name: str = "scores.txt") -> str:
    """Write ``text`` to ``tmp_path/name``; returns the path."""
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def make_net(checkpoint: str, **over) -> SpeakerNet:
    """A tiny SpeakerNet (nOut 8, 2 heads, 3 classes, regulariser on) on ``checkpoint``, seeded."""
    torch.manual_seed(0)
    cfg = dict(model="MHFA", trainfunc="aamsoftmax", pretrained_model_path=checkpoint, nOut=8, head_nb=2,
               compression_dim=4, nClasses=3, weight_finetuning_reg=0.01)
    cfg.update(over)
    return SpeakerNet(**cfg)


MODEL_OPTIONS = {"nOut": 16, "head_nb": 2, "compression_dim": 8, "nClasses": 3}


def save_tiny_model(checkpoint: str, path) -> tuple:
    """A random SpeakerNet (tiny WavLM + MHFA) saved as a model file; returns its encoder and the CLI options."""
    torch.manual_seed(0)
    net = SpeakerNet(**{**defaults(), **MODEL_OPTIONS, "pretrained_model_path": checkpoint})
    torch.save({"model": net.state_dict()}, path)
    options = [f"--{k}={v}" for k, v in MODEL_OPTIONS.items()]
    return net.encoder.eval(), options + ["--pretrained_model_path", checkpoint, "--initial_model", str(path)]


def save_self_contained_model(checkpoint: str, path, **over) -> tuple:
    """A random tiny SpeakerNet (MODEL_OPTIONS + ``over``) saved as training saves it: tensors, every option and
    the front-end architecture. Returns its encoder (eval mode) and the configuration it was built with."""
    config = {**defaults(), **MODEL_OPTIONS, **over, "pretrained_model_path": checkpoint}
    torch.manual_seed(0)
    net = SpeakerNet(**config)
    save_model_file({"model": net.state_dict(), **model_file_fields(net, config)}, str(path))
    return net.encoder.eval(), config


def to_original_format(state):
    """Our model state -> the original repo's keys (__S__.model.<official WavLM>, __S__.backend.*, __L__.*)."""
    prefix = "encoder.frontend.model."
    frontend = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    out = {f"__S__.model.{k}": v for k, v in torchaudio_state_to_wavlm(frontend, "group_norm").items()}
    out.update({k.replace("encoder.backend.", "__S__.backend."): v for k, v in state.items()
                if k.startswith("encoder.backend.")})
    out.update({k.replace("loss_fn.", "__L__."): v for k, v in state.items() if k.startswith("loss_fn.")})
    return out


def device_tolerance(device, atol, rtol):
    """(atol, rtol) of an equivalence test of the device tier: as given on the CPU; on a GPU 100x looser, for
    cuDNN's TF32 convolutions (torch's default) and other reduction orders."""
    return (atol, rtol) if torch.device(device).type == "cpu" else (100 * atol, 100 * rtol)
