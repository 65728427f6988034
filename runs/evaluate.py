"""Evaluate a model given by the configuration (a self-contained ``initial_model`` alone, or one on
``pretrained_model_path``), or saved embeddings; embed files with it (for cohorts and verification)."""
from __future__ import annotations

import functools
import os
from typing import Any, Dict, List, Optional

from core.device import resolve_device
from core.errors import ConfigError
from core.logs import setup_logging
from evaluation.embeddings import Embeddings
from evaluation.pipeline import evaluate, extract_files, score_file_for
from SpeakerNet import build_encoder, find_checkpoints, with_model_file


def evaluate_model(config: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The evaluation of ``config``; the model is built only when embeddings must be extracted.

    Which model: ``--initial_model F`` written on the command line evaluates exactly F (``none``: the
    untrained model); otherwise the newest ``eval_checkpoints`` checkpoints of ``save_path`` are
    evaluated, a result line each (an ``initial_model`` in the YAML only seeds training). Saved
    ``embeddings`` need no model.
    """
    setup_logging()
    device = resolve_device(config["device"])
    if config["embeddings"] or "initial_model" in getattr(config, "cli", ()):
        config = with_model_file(config)
        return evaluate(config, device, build_encoder=lambda: build_encoder(config, device))
    checkpoints = find_checkpoints(os.path.join(config["save_path"], "model"))[-max(1, config["eval_checkpoints"]):]
    if not checkpoints:
        raise ConfigError(f"No checkpoint to evaluate in '{config['save_path']}/model': give --initial_model FILE "
                          f"(a model file; 'none' evaluates the untrained model), or the save_path of a run.")
    results = {}
    sources = config.sources() if hasattr(config, "sources") else {}
    for _, path in checkpoints:
        name = os.path.splitext(os.path.basename(path))[0]
        several = len(checkpoints) > 1  # output files get the checkpoint's name: <stem>.<name><ext>
        one = with_model_file({**config, "initial_model": path,
                               "score_file": score_file_for(config["score_file"], name, several),
                               "save_embeddings": score_file_for(config["save_embeddings"], name, several)}, sources)
        result = evaluate(one, device, build_encoder=functools.partial(build_encoder, one, device), parts=True)
        if result is not None:
            results[name] = result
    return {"checkpoints": results} if results else None


def embed_files(config: Dict[str, Any], files: List[str], root: str, verbose: bool = True) -> Embeddings:
    """Embeddings of ``files`` (relative to ``root``) by the model of ``config``, with its extraction options
    (``config`` as :func:`with_model_file` completed it, when its model is a self-contained file)."""
    device = resolve_device(config["device"])
    return extract_files(config, files, root, build_encoder(config, device), device, verbose=verbose)
