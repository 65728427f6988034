"""Evaluate a model given by the configuration (a self-contained ``initial_model`` alone, or one on
``pretrained_model_path``), saved embeddings, or a run's newest checkpoints: a list of :class:`ModelResult`, shown
by :func:`format_evaluation`; embed files with a model (for cohorts and verification)."""
from __future__ import annotations

import functools
import logging
import os
from typing import TYPE_CHECKING, Any, Dict, List, NamedTuple, Optional, Sequence

from core.errors import ConfigError
from core.files import write_text
from core.logs import setup_logging
from evaluation.embeddings import Embeddings
from evaluation.metrics import format_result, result_fields
from evaluation.pipeline import evaluate, extract_files, score_file_for

if TYPE_CHECKING:  # annotations only: re-scoring saved embeddings does not import torch
    from core.distributed import Context

logger = logging.getLogger(__name__)
SUMMARY_FILE = "eval_summary.txt"  # in <save_path>/result/, when a run's checkpoints are evaluated


class ModelResult(NamedTuple):
    """The evaluation of one model."""
    name: Optional[str]  # the checkpoint's file name without extension; None: the model the configuration names
    result: Dict[str, Any]  # evaluation.pipeline.evaluate's: the one list's metrics, or {'lists': {list: metrics}}


def evaluate_model(config: Dict[str, Any]) -> List[ModelResult]:
    """The evaluation of ``config``, a :class:`ModelResult` per model evaluated on a labelled trial list (none when
    every list is unlabelled: scores only); the model is built only when embeddings must be extracted.

    Which model: ``--initial_model F`` written on the command line evaluates exactly F (``none``: the
    untrained model), a result without a name; otherwise the newest ``eval_checkpoints`` checkpoints of
    ``save_path`` are evaluated, one after the other, a result each named by its checkpoint, with the crop-only
    and whole-file-only EERs (an ``initial_model`` in the YAML only seeds training). Saved ``embeddings`` need no
    model (no name), no device and no torch, and run in this process. With ``distributed``, the launcher of
    training (:func:`core.distributed.launch`) runs :func:`evaluate_models` in every data-parallel process: each
    extracts a share of the files, rank 0 scores, writes every output and returns the results.
    """
    setup_logging()
    if config["embeddings"]:  # scores only: no model, no device, no torch
        if config["distributed"] and "distributed" in getattr(config, "cli", ()):
            raise ConfigError("--distributed: re-scoring saved embeddings (--embeddings) extracts nothing, so it "
                              "runs in one process; remove --distributed (it shares the extraction of embeddings by "
                              "a model over processes).")
        if config["distributed"]:
            logger.info("distributed (from the YAML): re-scoring saved embeddings runs in one process.")
        result = evaluate(config, None)
        return summarised(config, [] if result is None else [ModelResult(None, result)])
    from core.distributed import launch  # deferred (tests/test_layout.py DEFERRED_IMPORTS): it imports torch

    return summarised(config, launch(evaluate_models, config) or [])


def summarised(config: Dict[str, Any], results: List[ModelResult]) -> List[ModelResult]:
    """``results``, after logging their table when they cover several checkpoints or lists (:func:`format_summary`);
    a run's checkpoints (results with names) also get it in ``<save_path>/result/eval_summary.txt``."""
    table = format_summary(results)
    if table:
        logger.info("Summary (%s):\n%s", "checkpoint x trial list", table)
        if any(r.name is not None for r in results):
            path = os.path.join(config["save_path"], "result", SUMMARY_FILE)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            write_text(path, table + "\n")
            logger.info("Summary written to %s", path)
    return results


def evaluate_models(config: Dict[str, Any], context: Context) -> List[ModelResult]:
    """:func:`evaluate_model`'s evaluation with a model, in one process of the launcher (``context``: its rank
    and device); the results on rank 0, nothing on the others. Several checkpoints are evaluated one after the
    other, every process taking part in each."""
    # deferred (tests/test_layout.py DEFERRED_IMPORTS): re-scoring saved embeddings does not import torch
    from model_files import build_speaker_encoder, find_checkpoints, with_model_file

    if context.world > 1:
        setup_logging(main=context.main, rank=context.rank)  # rank 0 logs; the others their errors only
    device = context.device
    if "initial_model" in getattr(config, "cli", ()):
        config = with_model_file(config)
        result = evaluate(config, device, build_encoder=lambda: build_speaker_encoder(config, device),
                          context=context)
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
        result = evaluate(one, device, build_encoder=functools.partial(build_speaker_encoder, one, device), parts=True,
                          context=context)
        if result is not None:
            results.append(ModelResult(name, result))
    return results


def summary_rows(results: Sequence[ModelResult]) -> List[List[str]]:
    """The table of ``results``: a header, then a row per checkpoint x labelled trial list with the EER, the MinDCFs
    (and ActDCFs, CropEER and WholeEER where computed), formatted as the result lines print them ('-' where a row
    lacks a column)."""
    rows = []
    for model in results:
        lists = model.result["lists"] if "lists" in model.result else {"": model.result}
        for name, metrics in lists.items():
            rows.append((model.name or "model", name or "trials", result_fields(metrics)))
    columns = list(dict.fromkeys(key for _, _, fields in rows for key in fields))
    return [["checkpoint", "list", *columns]] + [[m, n, *(f.get(c, "-") for c in columns)] for m, n, f in rows]


def format_summary(results: Sequence[ModelResult]) -> str:
    """The table of :func:`summary_rows` as aligned text; empty for a single checkpoint on a single list (its
    result line says it all)."""
    table = summary_rows(results)
    if len(table) <= 2:
        return ""
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in table)


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
