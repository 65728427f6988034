#!/usr/bin/env python
"""Evaluate a speaker model (or saved embeddings) on a trial list.

Prints one result line: ``EER <pct> MinDCF0.05 <v> MinDCF0.01 <v>``.
"""
from __future__ import annotations

import argparse
import logging
from typing import Any, Dict, Optional, Sequence

import torch

from SpeakerNet import SpeakerNet, load_model_state, resolve_device
from tools.config import PRECEDENCE, ConfigError, add_options, load_config, require_paths
from tools.evaluation import (extract_embeddings, load_embeddings, normalise_scores, read_trials,
                              save_embeddings, score_trials, unique_files, write_score_file)
from tools.logs import setup_logging
from tuneThreshold import evaluate_scores, format_result

logger = logging.getLogger("trainSpeakerNet_Eval")


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("evaluation outputs")
    group.add_argument("--score_file", default="", help="write 'label enroll test score' per trial here")
    group.add_argument("--save_embeddings", default="", help="save the extracted embeddings (.npz)")
    group.add_argument("--embeddings", default="", help="score from this embeddings .npz (no model, no audio)")
    group.add_argument("--score_norm", choices=("none", "asnorm", "snorm"), default="none",
                       help="score normalisation with a cohort (needs --cohort_embeddings)")
    group.add_argument("--top_n", type=int, default=300, help="AS-norm: cohort size per side")
    group.add_argument("--cohort_embeddings", default="", help="cohort .npz (one row per cohort speaker)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__ + "\n" + PRECEDENCE,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(parser)
    add_eval_arguments(parser)
    return parser


def load_encoder(config: Dict[str, Any], device: torch.device) -> torch.nn.Module:
    """Build the model (weights from initial_model when given) and return its encoder."""
    require_paths(config, ["pretrained_model_path"])
    torch.manual_seed(config["seed"])
    net = SpeakerNet(**config)
    if config["initial_model"]:
        load_model_state(net, config["initial_model"])
        logger.info("Model %s loaded", config["initial_model"])
    else:
        logger.warning("No initial_model given: evaluating the untrained model (pre-trained front-end, "
                       "randomly initialised MHFA, seed %d).", config["seed"])
    return net.encoder.to(device)


def evaluate(config: Dict[str, Any], device: Optional[torch.device] = None,
             encoder: Optional[torch.nn.Module] = None) -> Optional[Dict[str, Any]]:
    """The whole evaluation: trials -> embeddings -> scores -> normalisation -> metrics.

    Embeddings come from ``--embeddings`` when given, else from ``encoder`` (built from
    the configuration when not passed).
    """
    require_paths(config, ["test_list"])
    trials = read_trials(config["test_list"])
    if config.get("embeddings"):
        emb = load_embeddings(config["embeddings"])
    else:
        require_paths(config, ["test_path"])
        device = device or resolve_device(config["device"])
        encoder = encoder if encoder is not None else load_encoder(config, device)
        emb = extract_embeddings(encoder, unique_files(trials), config["test_path"], config["eval_frames"],
                                 config["num_eval"], config["max_eval_seconds"], device,
                                 workers=config["nDataLoaderThread"])
    if config.get("save_embeddings"):
        save_embeddings(emb, config["save_embeddings"])
        logger.info("Embeddings saved to %s", config["save_embeddings"])
    scores = score_trials(emb, trials)
    if config.get("score_norm", "none") != "none":
        if not config.get("cohort_embeddings"):
            raise ConfigError("--score_norm needs --cohort_embeddings (an .npz with one row per cohort speaker).")
        cohort = load_embeddings(config["cohort_embeddings"]).embeddings
        scores = normalise_scores(scores, emb, trials, cohort, config["score_norm"], config.get("top_n", 300))
    if config.get("score_file"):
        write_score_file(config["score_file"], trials, scores)
        logger.info("Scores written to %s", config["score_file"])
    if trials.labels is None:
        logger.warning("The trial list has no labels: scores only, no EER.")
        return None
    return evaluate_scores(scores, trials.labels, p_targets=(0.05, 0.01),
                           c_miss=config["dcf_c_miss"], c_fa=config["dcf_c_fa"])


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = build_parser()
    try:
        config = load_config(parser, argv)
        setup_logging()
        result = evaluate(config)
    except (ConfigError, ValueError, OSError) as err:
        parser.exit(2, f"error: {err}\n")
    if result is not None:
        print(format_result(result), flush=True)


if __name__ == "__main__":
    main()
