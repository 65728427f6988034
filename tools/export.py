"""Export a model file to TorchScript and ONNX: waveform -> embedding, dynamic batch and length.

The exported model takes ``wav`` [batch, samples] float32 (16 kHz mono, the raw waveform as read from a
file: a model trained with normalize_input normalises each row inside) and ``lengths`` [batch] int64 (valid
samples of each row; padding after them is ignored), and returns ``embedding`` [batch, nOut], the
whole-file embedding of the evaluation before L2 normalisation (inference/export.py). Each export is
loaded back and checked against the PyTorch model on inputs of several lengths, alone and as one padded
batch; the largest difference is printed, and a file that differs by more than --tolerance is not written.
The ONNX model runs on any onnxruntime provider; the TorchScript model on the device it was traced on (the
tracer records it): the CPU, or the one --device names (--device cuda for a GPU model).

Usage:
  python -m tools.export --initial_model M.model --out exp/model          # exp/model.pt and exp/model.onnx
  python -m tools.export --initial_model M.model --out exp/model --formats onnx --check_files a.wav b.wav c.wav
Use:  torch.jit.load("exp/model.pt")(wav, lengths)
      onnxruntime.InferenceSession("exp/model.onnx").run(None, {"wav": wav, "lengths": lengths})[0]
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

from core.audio import SAMPLE_RATE, load_audio
from core.cli import build_parser, run_cli
from core.config import frontend_paths, require_paths
from core.device import resolve_device
from core.errors import ConfigError
from core.logs import progress_options, setup_logging
from inference.export import export_checked
from model_files import build_speaker_encoder, with_model_file

logger = logging.getLogger(__name__)
EXTENSIONS = {"torchscript": ".pt", "onnx": ".onnx"}


def check_inputs(config: Dict[str, Any]) -> List[np.ndarray]:
    """The waveforms the exports are checked on: --check_files, else seeded noise of --check_seconds."""
    if config["check_files"]:
        require_paths({"check_files": config["check_files"]}, ["check_files"])
        return [load_audio(path) for path in config["check_files"]]
    if min(config["check_seconds"]) * SAMPLE_RATE < 400:
        raise ConfigError(f"--check_seconds {config['check_seconds']}: every input needs at least 400 samples "
                          f"(0.025 s, one CNN frame).")
    rng = np.random.default_rng(0)
    return [(0.1 * rng.standard_normal(int(s * SAMPLE_RATE))).astype(np.float32) for s in config["check_seconds"]]


def export_command(config: Dict[str, Any]) -> List[str]:
    """Export the model of ``config`` in each of --formats; returns the printed report lines."""
    setup_logging()
    if not config["initial_model"]:
        raise ConfigError("--initial_model is not set: give the model file to export.")
    config = with_model_file(config)
    require_paths(config, frontend_paths(config))
    waves = check_inputs(config)
    encoder = build_speaker_encoder(config, torch.device("cpu")).eval()
    device = torch.device("cpu") if config["device"] == "auto" else resolve_device(config["device"])
    seconds = ", ".join(f"{len(w) / SAMPLE_RATE:g}" for w in waves)
    lines = []
    for kind in tqdm(sorted(config["formats"]), desc="export", unit="format", **progress_options()):
        path = config["out"] + EXTENSIONS[kind]
        if kind == "torchscript":  # after ONNX (sorted): the trace records the device it runs on
            encoder.to(device)
        found = export_checked(kind, encoder, path, waves, config["tolerance"], config["opset"])
        lines.append(f"{kind} {path}: largest difference to the PyTorch model {max(found.values()):.3g} "
                     f"(single inputs of {seconds} s: {found['single']:.3g}; one padded batch of {len(waves)}: "
                     f"{found['batch']:.3g})")
    lines.append(f"inputs: wav [batch, samples] float32, 16 kHz mono, raw waveform (normalize_input "
                 f"{config['normalize_input']}: {'normalised inside' if config['normalize_input'] else 'used as is'}); "
                 f"lengths [batch] int64; output: embedding [batch, {config['nOut']}]")
    return lines


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = build_parser(__doc__)
    parser.add_argument("--out", required=True, help="output path without extension: OUT.pt (TorchScript), OUT.onnx")
    parser.add_argument("--formats", nargs="+", choices=sorted(EXTENSIONS), default=["torchscript", "onnx"],
                        help="what to export (default: both)")
    parser.add_argument("--check_seconds", nargs="+", type=float, default=[1.0, 2.5, 6.0],
                        help="lengths of the noise inputs the exports are checked on (default 1 2.5 6)")
    parser.add_argument("--check_files", nargs="+", default=[], help="check on these audio files instead")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest difference allowed (default 1e-4)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    run_cli(parser, export_command, argv, show="\n".join)


if __name__ == "__main__":
    main()
