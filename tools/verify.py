"""Verify two recordings: score them with a model and accept or reject at a threshold.

The score is the evaluation's (evaluation/scoring.py: original protocol, optional mean subtraction
and AS-norm / S-norm against a cohort); the trial is accepted when score >= threshold.
The threshold is ``--threshold`` or the EER threshold saved by an evaluation run with
``--score_file F`` (``--threshold_file F.threshold.json``). That file also records the settings
the threshold belongs to, and they are applied here: the extraction protocol (eval_frames,
num_eval, max_eval_seconds, eval_long_files, ...) and the scoring (score_norm, top_n, cohort,
mean). Options written on this command line override the file; the file overrides the YAML and
the model file's protocol (the whole order: core/config.py).

A model file written by training needs no --config (it holds its model and front-end).

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

from core.cli import build_parser, run_cli
from core.config import THRESHOLD_FILE, Config, require_paths, validate
from core.errors import ConfigError, DataError
from core.logs import setup_logging
from evaluation.pipeline import configured_scores
from evaluation.reports import read_threshold_file
from evaluation.trials import Trials
from model_files import with_model_file
from runs.evaluate import embed_files

logger = logging.getLogger(__name__)


def verification_settings(config: Config) -> Config:
    """``config`` on the threshold-file rung of the option ladder (core/config.py): the file's extraction and
    scoring settings and its EER threshold (as ``threshold``) win over the YAML and the model file's protocol;
    options given on the command line win over the file. A threshold is needed: ``--threshold``, or the file's."""
    record = read_threshold_file(config["threshold_file"]) if config["threshold_file"] else {}
    if config["threshold"] is None and not record:
        raise ConfigError("No threshold: give --threshold T, or --threshold_file <score_file>.threshold.json as "
                          "written by trainSpeakerNet_Eval.py --score_file <score_file>.")
    if record and "threshold" not in config.cli and record.get("qmf_list"):
        raise ConfigError(f"The threshold in {config['threshold_file']} is for QMF-calibrated scores, which verify "
                          f"does not compute; give --threshold T for the uncalibrated score instead.")

    def bad(key: str, value: Any, err: Exception) -> DataError:
        return DataError(f"Threshold file '{config['threshold_file']}': bad value for '{key}': {value!r} ({err}).")

    rung = {**record, "threshold": record["eer_threshold"]} if record else {}
    settings = config.climb(THRESHOLD_FILE, rung, f"the threshold file '{config['threshold_file']}'", bad=bad)
    settings = settings.with_values({"qmf_list": ""})  # verify scores without calibration
    validate(settings)
    model = record.get("initial_model")
    if model and os.path.abspath(model) != os.path.abspath(config["initial_model"] or ""):
        logger.warning("The threshold in %s was measured with model %s, not %s.", config["threshold_file"], model,
                       config["initial_model"] or "(none)")
    return settings


def verify(config: Config) -> Dict[str, Any]:
    """Score the two files of ``config['wav']``; returns score, threshold and the decision."""
    settings = verification_settings(config)
    for path in config["wav"]:
        require_paths({"wav": path}, ["wav"])
    enroll, test = config["wav"]
    emb = embed_files(settings, sorted({enroll, test}), "", verbose=False)
    score = float(configured_scores(settings, emb, {"pair": Trials(None, [enroll], [test])}).scores["pair"][0])
    return {"score": score, "threshold": float(settings["threshold"]), "accept": score >= settings["threshold"]}


def verify_command(config: Config) -> Dict[str, Any]:
    setup_logging()
    return verify(with_model_file(config))


def show(result: Dict[str, Any]) -> str:
    decision = "accept" if result["accept"] else "reject"
    return f"score {result['score']:.6f} threshold {result['threshold']:.6f} {decision}"


def verify_parser() -> argparse.ArgumentParser:
    """Every option of the table, the two recordings and ``--threshold_file``."""
    parser = build_parser(__doc__)
    parser.add_argument("wav", nargs=2, metavar="WAV", help="the two recordings (16 kHz mono)")
    parser.add_argument("--threshold_file", default="", help="<score_file>.threshold.json from an evaluation")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    run_cli(verify_parser(), verify_command, argv, show=show)


if __name__ == "__main__":
    main()
