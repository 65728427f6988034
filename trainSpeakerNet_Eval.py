#!/usr/bin/env python
"""Evaluate a speaker model (or saved embeddings) on one or several trial lists.

Prints one result line per list: ``EER <pct> MinDCF0.05 <v> MinDCF0.01 <v>``; with several
lists (``--test_list O.txt,E.txt,H.txt`` or ``--test_list O.txt E.txt H.txt``) each line
starts with the list's file name. Every file is extracted once for all lists.
With ``--score_file F`` it also writes ``F.det.png`` (DET curve) and ``F.threshold.json``
(EER threshold and scoring settings, read by ``python -m tools.verify``); with several
lists F becomes ``<F stem>.<list name><F extension>``.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from tools.config import PRECEDENCE, ConfigError, add_options, parse_bool, require_paths, run_cli
from tools.evaluation import (Embeddings, Trials, configured_scores, list_name, list_paths, load_embeddings,
                              read_trials, save_embeddings, threshold_path, write_score_file, write_threshold_file)
from tools.logs import setup_logging
from tools.qmf import calibrate_lists
from tuneThreshold import compute_error_rates, det_curve_png, evaluate_scores, format_result

if TYPE_CHECKING:
    import torch

logger = logging.getLogger("trainSpeakerNet_Eval")
SCORING_KEYS = ("score_norm", "top_n", "cohort_embeddings", "mean_embeddings", "mean_list", "qmf_list")
QMF_LIST = "__qmf_calibration__"


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("evaluation outputs")
    group.add_argument("--score_file", default="", help="write 'label enroll test score' per trial here "
                                                        "(plus <score_file>.det.png and .threshold.json)")
    group.add_argument("--save_embeddings", default="", help="save the extracted embeddings (.npz)")
    group.add_argument("--embedding_cache", type=parse_bool, nargs="?", const=True, default=True,
                       help="cache the embeddings of --initial_model next to it (<model>.emb-<digest>.npz) and "
                            "reuse them when the same model, files and protocol come again (default: true)")
    group.add_argument("--embeddings", default="", help="score from this embeddings .npz (no model, no audio)")
    group.add_argument("--score_norm", choices=("none", "asnorm", "snorm"), default="none",
                       help="score normalisation with a cohort (needs --cohort_embeddings)")
    group.add_argument("--top_n", type=int, default=300, help="AS-norm: cohort size per side")
    group.add_argument("--cohort_embeddings", default="", help="cohort .npz (one row per cohort speaker; "
                                                               "make it with python -m tools.make_cohort)")
    group.add_argument("--mean_embeddings", default="", help="subtract the mean whole-file embedding of this .npz "
                                                             "from every embedding (and the cohort) before scoring")
    group.add_argument("--mean_list", default="", help="compute that mean only over the files of this list "
                                                       "(last field of each line, e.g. a training list)")
    group.add_argument("--qmf_list", default="", help="QMF calibration: fit a logistic regression on score + quality "
                                                      "measures on this labelled trial list; scores become llrs")
    group.add_argument("--threshold", type=float, default=None,
                       help="also report the actual DCF (ActDCF<p>) when accepting scores >= this threshold")
    group.add_argument("--eval_batch_seconds", type=float, default=60.0,
                       help="extraction: most audio (seconds) per forward pass; equal-length inputs are batched")
    group.add_argument("--eval_autocast", type=parse_bool, nargs="?", const=True, default=False,
                       help="extraction under bfloat16 (CPU) / float16 (CUDA) autocast")


def build_parser(description: str = __doc__) -> argparse.ArgumentParser:
    """All configuration options plus the evaluation arguments."""
    parser = argparse.ArgumentParser(description=description + "\n" + PRECEDENCE,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(parser)
    add_eval_arguments(parser)
    return parser


def load_encoder(config: Dict[str, Any], device: torch.device) -> torch.nn.Module:
    """Build the model (weights from initial_model when given) and return its encoder."""
    import torch  # the model stack is imported only when a model is needed: scoring from
    from SpeakerNet import SpeakerNet, load_model_state  # saved embeddings starts 2 s faster

    require_paths(config, ["pretrained_model_path"])
    torch.manual_seed(config["seed"])
    net = SpeakerNet(**{**config, "weight_finetuning_reg": 0.0})  # no regulariser anchor needed to evaluate
    if config["initial_model"]:
        load_model_state(net, config["initial_model"])
        logger.info("Model %s loaded", config["initial_model"])
    else:
        logger.warning("No initial_model given: evaluating the untrained model (pre-trained front-end, "
                       "randomly initialised MHFA, seed %d).", config["seed"])
    return net.encoder.to(device)


def _embeddings(config: Dict[str, Any], trial_sets: Dict[str, Trials], device: Optional[torch.device],
                encoder: Optional[torch.nn.Module]) -> Embeddings:
    """Embeddings from ``--embeddings``, else extracted once for the files of all lists."""
    if config.get("embeddings"):
        return load_embeddings(config["embeddings"])
    from SpeakerNet import resolve_device
    from tools.embedding_cache import cached_embeddings
    from tools.extraction import extract_embeddings

    require_paths(config, ["test_path"])
    device = device or resolve_device(config["device"])
    files = sorted(set().union(*(set(t.enroll) | set(t.test) for t in trial_sets.values())))

    def extract() -> Embeddings:
        model = encoder if encoder is not None else load_encoder(config, device)
        return extract_embeddings(model, files, config["test_path"], config["eval_frames"], config["num_eval"],
                                  config["max_eval_seconds"], device, workers=config["nDataLoaderThread"],
                                  batch_seconds=config.get("eval_batch_seconds", 60.0),
                                  autocast=config.get("eval_autocast", False),
                                  long_files=config.get("eval_long_files", "cut"))

    if encoder is None and config["initial_model"] and config.get("embedding_cache", True):
        return cached_embeddings(config["initial_model"], config["test_path"], files, config, extract)
    return extract()


def score_file_for(score_file: str, name: str, several: bool) -> str:
    """The score file of list ``name``: ``score_file`` itself, or ``<stem>.<name><ext>`` for several lists."""
    if not several:
        return score_file
    stem, ext = os.path.splitext(score_file)
    return f"{stem}.{name}{ext}"


def evaluate(config: Dict[str, Any], device: Optional[torch.device] = None,
             encoder: Optional[torch.nn.Module] = None) -> Optional[Dict[str, Any]]:
    """The whole evaluation: trials -> embeddings -> scores -> normalisation -> metrics.

    Embeddings come from ``--embeddings`` when given, else from ``encoder`` (built from
    the configuration when not passed). Returns the metrics of the single list, or
    ``{'lists': {name: metrics}}`` for several lists (None where a list is unlabelled).
    """
    if not config.get("test_list"):
        raise ConfigError("'test_list' is not set: give it in the YAML file or as --test_list.")
    paths = list_paths(config["test_list"])
    for path in paths:
        require_paths({"test_list": path}, ["test_list"])
    trial_sets = {list_name(p): read_trials(p) for p in paths}
    qmf_list = config.get("qmf_list", "")
    if qmf_list:
        require_paths({"qmf_list": qmf_list}, ["qmf_list"])
    extra = {QMF_LIST: read_trials(qmf_list)} if qmf_list else {}
    emb = _embeddings(config, {**trial_sets, **extra}, device, encoder)
    if config.get("save_embeddings"):
        save_embeddings(emb, config["save_embeddings"])
        logger.info("Embeddings saved to %s", config["save_embeddings"])
    scored = configured_scores(config, emb, {**trial_sets, **extra})
    scores = scored.scores
    if qmf_list:
        scores = calibrate_lists(emb, {**trial_sets, **extra}, scores, QMF_LIST,
                                 None if scored.stats is None else scored.stats[0], config["dcf_p_target"],
                                 rows=scored.rows)
    results = {name: _report(config, name, trials, scores[name], len(trial_sets) > 1)
               for name, trials in trial_sets.items()}
    if len(results) == 1:
        return next(iter(results.values()))
    labelled = {name: r for name, r in results.items() if r is not None}
    return {"lists": labelled} if labelled else None


def _report(config: Dict[str, Any], name: str, trials: Trials, scores: np.ndarray,
            several: bool) -> Optional[Dict[str, Any]]:
    """Score file, metrics, DET curve and EER-threshold file of one list."""
    score_file = score_file_for(config.get("score_file", ""), name, several)
    if score_file:
        write_score_file(score_file, trials, scores)
        logger.info("Scores written to %s", score_file)
    if trials.labels is None:
        logger.warning("Trial list %s has no labels: scores only, no EER.", name)
        return None
    rates = compute_error_rates(scores, trials.labels)
    result = evaluate_scores(scores, trials.labels, p_targets=(0.05, 0.01), c_miss=config["dcf_c_miss"],
                             c_fa=config["dcf_c_fa"], threshold=config.get("threshold"), rates=rates)
    if score_file:
        det_curve_png(rates[0], rates[1], score_file + ".det.png", result["eer"], name)
        settings = {key: config.get(key) for key in SCORING_KEYS + ("eval_frames", "num_eval", "max_eval_seconds",
                                                                      "eval_long_files", "initial_model", "config")}
        write_threshold_file(threshold_path(score_file), result, {**settings, "test_list": name})
    return result


def join_list_arguments(argv: Sequence[str]) -> List[str]:
    """Allow ``--test_list A B C``: the words after --test_list up to the next option become ``A,B,C``."""
    out: List[str] = []
    argv = list(argv)
    i = 0
    while i < len(argv):
        out.append(argv[i])
        if argv[i] == "--test_list":
            j = i + 1
            while j < len(argv) and not argv[j].startswith("--"):
                j += 1
            if j > i + 1:
                out.append(",".join(argv[i + 1:j]))
            i = j
            continue
        i += 1
    return out


def run_command(action: Callable[[Dict[str, Any]], Optional[Dict[str, Any]]],
                argv: Optional[Sequence[str]] = None, description: str = __doc__) -> None:
    """Shared entry point of the train and eval scripts: run ``action`` on the merged
    configuration and print its result line."""
    parser = build_parser(description)
    result = run_cli(parser, action, join_list_arguments(sys.argv[1:] if argv is None else argv))
    if result is not None:
        print(format_result(result), flush=True)


def evaluate_command(config: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    setup_logging()
    return evaluate(config)


def main(argv: Optional[Sequence[str]] = None) -> None:
    run_command(evaluate_command, argv)


if __name__ == "__main__":
    main()
