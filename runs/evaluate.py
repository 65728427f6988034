"""Evaluate a model given by the configuration (a self-contained ``initial_model`` alone, or one on
``pretrained_model_path``), saved embeddings, or a run's newest checkpoints: a list of :class:`ModelResult`, shown
by :func:`format_evaluation`; embed files with a model (for cohorts and verification)."""
from __future__ import annotations

import functools
import logging
import os
from typing import Any, Dict, List, NamedTuple, Optional, Sequence

from core.errors import ConfigError
from core.logs import setup_logging
from evaluation.embeddings import Embeddings
from evaluation.metrics import format_result
from evaluation.pipeline import evaluate, extract_files, score_file_for

logger = logging.getLogger(__name__)


class ModelResult(NamedTuple):
    """The evaluation of one model."""
    name: Optional[str]  # the checkpoint's file name without extension; None: the model the configuration names
    result: Dict[str, Any]  # evaluation.pipeline.evaluate's: the one list's metrics, or {'lists': {list: metrics}}


def evaluate_model(config: Dict[str, Any]) -> List[ModelResult]:
    """The evaluation of ``config``, a :class:`ModelResult` per model evaluated on a labelled trial list (none when
    every list is unlabelled: scores only); the model is built only when embeddings must be extracted.

    Which model: ``--initial_model F`` written on the command line evaluates exactly F (``none``: the
    untrained model), a result without a name; otherwise the newest ``eval_checkpoints`` checkpoints of
    ``save_path`` are evaluated, a result each named by its checkpoint, with the crop-only and whole-file-only
    EERs (an ``initial_model`` in the YAML only seeds training). Saved ``embeddings`` need no model (no name).
    """
    setup_logging()
    if config["distributed"]:  # an option that does nothing here is an error on the command line, noted from a YAML
        if "distributed" in getattr(config, "cli", ()):
            raise ConfigError("--distributed: the eval command extracts and scores in one process (data-parallel "
                              "extraction is not implemented yet); remove --distributed (training uses it).")
        logger.warning("distributed: true (from the YAML) applies to training; the eval command runs in one process.")
    if config["embeddings"]:  # scores only: no model, no device, no torch
        result = evaluate(config, None)
        return [] if result is None else [ModelResult(None, result)]
    # deferred (tests/test_layout.py DEFERRED_IMPORTS): re-scoring saved embeddings does not import torch
    from core.device import resolve_device
    from model_files import build_speaker_encoder, find_checkpoints, with_model_file

    device = resolve_device(config["device"])
    if "initial_model" in getattr(config, "cli", ()):
        config = with_model_file(config)
        result = evaluate(config, device, build_encoder=lambda: build_speaker_encoder(config, device))
        return [] if result is None else [ModelResult(None, result)]
    checkpoints = find_checkpoints(os.path.join(config["save_path"], "model"))[-max(1, config["eval_checkpoints"]):]
    if not checkpoints:
        raise ConfigError(f"No checkpoint to evaluate in '{config['save_path']}/model': give --initial_model FILE "
                          f"(a model file; 'none' evaluates the untrained model), or the save_path of a run.")
    results = []
    sources = config.sources() if hasattr(config, "sources") else {}
    for _, path in checkpoints:
        name = os.path.splitext(os.path.basename(path))[0]
        several = len(checkpoints) > 1  # output files get the checkpoint's name: <stem>.<name><ext>
        one = with_model_file({**config, "initial_model": path,
                               "score_file": score_file_for(config["score_file"], name, several),
                               "save_embeddings": score_file_for(config["save_embeddings"], name, several)}, sources)
        result = evaluate(one, device, build_encoder=functools.partial(build_speaker_encoder, one, device), parts=True)
        if result is not None:
            results.append(ModelResult(name, result))
    return results


def format_evaluation(results: Sequence[ModelResult]) -> str:
    """The lines of :func:`evaluate_model`'s results: a result without a name as :func:`format_result` shows it (a
    line per trial list); a checkpoint's on one line, after its name, trial lists joined by ' | ', with the parts'
    EERs."""
    return "\n".join(format_result(r.result) if r.name is None else
                     f"{r.name} {format_result(r.result, ' | ', parts=True)}" for r in results)


def embed_files(config: Dict[str, Any], files: List[str], root: str, verbose: bool = True) -> Embeddings:
    """Embeddings of ``files`` (relative to ``root``) by the model of ``config``, with its extraction options
    (``config`` as :func:`with_model_file` completed it, when its model is a self-contained file)."""
    from core.device import resolve_device  # deferred (tests/test_layout.py DEFERRED_IMPORTS)
    from model_files import build_speaker_encoder

    device = resolve_device(config["device"])
    return extract_files(config, files, root, build_speaker_encoder(config, device), device, verbose=verbose)
