"""Verify two recordings: score them with a model and accept or reject at a threshold.

The score is the evaluation's (tools.scoring: original protocol, optional mean subtraction
and AS-norm / S-norm against a cohort); the trial is accepted when score >= threshold.
The threshold is ``--threshold`` or the EER threshold saved by an evaluation run with
``--score_file F`` (``--threshold_file F.threshold.json``); that file also supplies the
evaluation's scoring settings (score_norm, top_n, cohort, mean), so the threshold applies to
the same kind of score. Options given here override the file's settings.

Usage:
  python -m tools.verify --config C.yaml --initial_model M.model a.wav b.wav --threshold_file F.threshold.json
  python -m tools.verify --config C.yaml --initial_model M.model a.wav b.wav --threshold 0.45
Prints one line: ``score <s> threshold <t> accept|reject``.
"""
from __future__ import annotations

import argparse
import logging
import os
from typing import Any, Dict, Optional, Sequence

from tools.config import ConfigError, add_options, require_paths, run_cli
from tools.evaluation import Trials, configured_scores, read_threshold_file
from tools.logs import setup_logging

logger = logging.getLogger(__name__)
SETTINGS = {"score_norm": "none", "top_n": 300, "cohort_embeddings": "", "mean_embeddings": "", "mean_list": ""}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(parser)
    parser.add_argument("wav", nargs=2, metavar="WAV", help="the two recordings (16 kHz mono)")
    parser.add_argument("--threshold", type=float, default=None, help="accept when score >= this")
    parser.add_argument("--threshold_file", default="", help="<score_file>.threshold.json from an evaluation")
    parser.add_argument("--score_norm", choices=("none", "asnorm", "snorm"), default=None,
                        help="override the threshold file's score normalisation")
    parser.add_argument("--top_n", type=int, default=None, help="override the threshold file's AS-norm top N")
    for key in ("cohort_embeddings", "mean_embeddings", "mean_list"):
        parser.add_argument(f"--{key}", default=None, help=f"override the threshold file's {key}")
    return parser


def scoring_settings(config: Dict[str, Any]) -> Dict[str, Any]:
    """Threshold and scoring settings: command line, else the threshold file, else defaults."""
    record = read_threshold_file(config["threshold_file"]) if config["threshold_file"] else {}
    if config["threshold"] is None and not record:
        raise ConfigError("No threshold: give --threshold T, or --threshold_file <score_file>.threshold.json as "
                          "written by trainSpeakerNet_Eval.py --score_file <score_file>.")
    settings = {key: config[key] if config[key] is not None else record.get(key) or default
                for key, default in SETTINGS.items()}
    if config["threshold"] is None and record.get("qmf_list"):
        raise ConfigError(f"The threshold in {config['threshold_file']} is for QMF-calibrated scores, which verify "
                          f"does not compute; give --threshold T for the uncalibrated score instead.")
    settings["threshold"] = config["threshold"] if config["threshold"] is not None else record["eer_threshold"]
    model = record.get("initial_model")
    if model and os.path.abspath(model) != os.path.abspath(config["initial_model"] or ""):
        logger.warning("The threshold in %s was measured with model %s, not %s.", config["threshold_file"], model,
                       config["initial_model"] or "(none)")
    return settings


def verify(config: Dict[str, Any]) -> Dict[str, Any]:
    """Score the two files of ``config['wav']``; returns score, threshold and the decision."""
    from SpeakerNet import resolve_device  # the model stack, only once the arguments are checked
    from tools.extraction import extract_embeddings
    from trainSpeakerNet_Eval import load_encoder

    settings = scoring_settings(config)
    for path in config["wav"]:
        require_paths({"wav": path}, ["wav"])
    if settings["score_norm"] != "none" and not settings["cohort_embeddings"]:
        raise ConfigError(f"score_norm {settings['score_norm']} needs --cohort_embeddings.")
    device = resolve_device(config["device"])
    enroll, test = config["wav"]
    emb = extract_embeddings(load_encoder(config, device), sorted({enroll, test}), "", config["eval_frames"],
                             config["num_eval"], config["max_eval_seconds"], device, workers=0, verbose=False,
                             long_files=config["eval_long_files"])
    score = float(configured_scores(settings, emb, {"pair": Trials(None, [enroll], [test])}).scores["pair"][0])
    return {"score": score, "threshold": float(settings["threshold"]), "accept": score >= settings["threshold"]}


def verify_command(config: Dict[str, Any]) -> Dict[str, Any]:
    setup_logging()
    return verify(config)


def main(argv: Optional[Sequence[str]] = None) -> None:
    result = run_cli(build_parser(), verify_command, argv)
    print(f"score {result['score']:.6f} threshold {result['threshold']:.6f} "
          f"{'accept' if result['accept'] else 'reject'}", flush=True)


if __name__ == "__main__":
    main()
