"""The evaluation, step by step: read trials -> embeddings -> scores -> normalise (-> calibrate) -> metrics -> reports.

Scoring follows the original protocol (:mod:`evaluation.scoring`): embeddings are
L2-normalised; with crops, s1 = mean of the crop x crop cosine matrix, s2 = cosine of
whole-file embeddings, score = (s1 + s2) / 2; without crops the score is s2. AS-norm and
S-norm always use the whole-file embeddings. The model is not built here: the caller passes
the encoder, or a function that builds it (called only when embeddings must be extracted).
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
from typing import TYPE_CHECKING, Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import numpy as np

from core.audio import quiet_conversions
from core.config import PATHS_IF_SET, frontend_paths, loader_workers, require_paths, require_paths_if_set
from core.errors import DataError, OutputError, TrialListError
from core.forks import CAN_FORK, Forked
from core.options import THRESHOLD, with_role
from dataprep.check import cache_file, check_files, format_problems
from dataprep.lists import key_paths
from evaluation.cache import cache_path, cached_embeddings, read_cache, write_cache
from evaluation.embeddings import Embeddings, load_embeddings, load_mean, merge_embeddings, save_embeddings
from evaluation.metrics import compute_eer, compute_error_rates, evaluate_scores
from evaluation.qmf import calibrate_lists
from evaluation.reports import (
    DetCurve,
    det_curve,
    det_curve_png,
    import_plotting_in_background,
    threshold_path,
    write_score_file,
    write_threshold_file,
)
from evaluation.scoring import Scored, StatsAhead, cohort_size, protocol_parts, score_all, subtract_mean
from evaluation.trials import Trials, file_lines, list_name, list_paths, read_trials

if TYPE_CHECKING:  # annotations only: scoring saved embeddings imports neither torch nor the extraction
    import torch

    from core.distributed import Context

logger = logging.getLogger(__name__)
QMF_LIST = "__qmf_calibration__"
# Settings an EER threshold belongs to, recorded in the threshold file and applied by tools/verify.py: the options
# of role ``threshold`` (core.options.ROLES) but the threshold itself, which the file records as its eer_threshold.
THRESHOLD_SETTINGS = [k for k in with_role(THRESHOLD) if k != "threshold"]
EncoderBuilder = Callable[[], "torch.nn.Module"]


def evaluation_paths(config: Dict[str, Any], reads_model_file: bool = True) -> None:
    """Check every file and folder an evaluation of ``config`` reads, before any work starts
    (``initial_model`` too when the model is built from it rather than passed in)."""
    extracts = not config["embeddings"]
    require_paths(config, ["test_list"] + (["test_path"] + frontend_paths(config) if extracts else []))
    require_paths_if_set(config, PATHS_IF_SET + (("initial_model",) if extracts and reads_model_file else ()))


def check_trial_files(config: Dict[str, Any], paths: List[str]) -> None:
    """The data check of the files the trial lists name, resolved against test_path (no model needed): a
    DataError lists each unusable file at the list line where it first appears. Missing files under speaker
    folders that test_path lacks get a hint (VoxCeleb1-E/H span the dev and test parts)."""
    wheres, files = [], []
    for path in paths:
        read_trials(path)  # a malformed list is reported as such first
        for name, line in file_lines(path).items():
            files.append(name)
            wheres.append(f"{path}:{line}")
    report = check_files(key_paths(files, config["test_path"]), wheres, config["min_audio_seconds"],
                         cache_file(config), workers=max(8, loader_workers(config)), desc="data check (trials)")
    for conversion, count in sorted(report.converted.items()):
        logger.warning("Trial lists: %d file(s) will be %s on reading.", count, conversion)
    quiet_conversions()  # reported here with their counts
    problems = report.problems
    if not problems:
        return
    absent = sorted({f.split("/")[0] for f, ok in zip(files, report.good, strict=True)
                     if not ok and "/" in f and not os.path.isdir(os.path.join(config["test_path"], f.split("/")[0]))})
    hint = (f"\n{len(absent)} speaker folder(s) the lists use are not in test_path '{config['test_path']}' (e.g. "
            f"{', '.join(absent[:3])}): VoxCeleb1-E and -H trials span the dev and test parts, so test_path must "
            f"hold the speaker folders of both." if absent else "")
    raise DataError(f"Trial lists: {len(problems)} of {len(files)} files are unusable; fix test_path or the files "
                    f"(evaluation never drops trials: that would change the protocol):\n"
                    f"{format_problems(problems)}{hint}")


class ScoringInputs(NamedTuple):
    cohort: Optional[np.ndarray]  # cohort embeddings (score_norm asnorm / snorm), else None
    mean: Optional[np.ndarray]  # the mean embedding subtracted first (mean_embeddings), else None
    ahead: Optional[StatsAhead]  # the cohort statistics of saved embeddings, begun early, else None


def scoring_inputs(config: Dict[str, Any], emb: Optional[Embeddings] = None) -> ScoringInputs:
    """The files the scoring options name (cohort_embeddings, mean_embeddings, mean_list), read once. Given the
    embeddings ``emb`` with AS-norm / S-norm, their statistics begin at once on a background thread
    (:class:`evaluation.scoring.StatsAhead`): the caller closes ``ahead`` when done."""
    norm = config["score_norm"]
    cohort = load_embeddings(config["cohort_embeddings"]).embeddings if norm != "none" else None
    mean = load_mean(config["mean_embeddings"], config["mean_list"]) if config["mean_embeddings"] else None
    ahead = None
    if emb is not None and cohort is not None:
        ahead = StatsAhead(subtract_mean(emb.embeddings, mean), subtract_mean(cohort, mean),
                           cohort_size(norm, config["top_n"], len(cohort)))
    return ScoringInputs(cohort, mean, ahead)


def configured_scores(config: Dict[str, Any], emb: Embeddings, trial_sets: Dict[str, Trials],
                      inputs: Optional[ScoringInputs] = None) -> Scored:
    """:func:`evaluation.scoring.score_all` with the scoring options of a configuration (score_norm,
    top_n, cohort_embeddings, mean_embeddings, mean_list); the files they name are read here unless ``inputs``
    (:func:`scoring_inputs` of ``emb``) holds them."""
    cohort, mean, ahead = inputs if inputs is not None else scoring_inputs(config)
    return score_all(emb, trial_sets, config["score_norm"], cohort, config["top_n"], mean, ahead)


def extract_files(config: Dict[str, Any], files: List[str], root: str, encoder: torch.nn.Module,
                  device: torch.device, verbose: bool = True, chunks: Optional[List[int]] = None) -> Embeddings:
    """:func:`evaluation.extraction.extract_embeddings` with the extraction options of a configuration;
    ``chunks``: the files' chunks of the batch plan of a longer list (a share of :mod:`evaluation.shares`)."""
    from evaluation.extraction import extract_embeddings  # deferred (tests/test_layout.py DEFERRED_IMPORTS)

    return extract_embeddings(encoder, files, root, config["eval_frames"], config["num_eval"],
                              config["max_eval_seconds"], device, workers=loader_workers(config),
                              verbose=verbose, batch_seconds=config["eval_batch_seconds"],
                              autocast=config["eval_autocast"], long_files=config["eval_long_files"],
                              chunks=chunks)


def trial_embeddings(config: Dict[str, Any], trial_sets: Dict[str, Trials], device: torch.device,
                     encoder: Optional[torch.nn.Module] = None, build_encoder: Optional[EncoderBuilder] = None,
                     context: Optional[Context] = None) -> Optional[Embeddings]:
    """Embeddings extracted once for the files of all lists (from the embedding cache when ``initial_model`` was
    evaluated the same way before; not for a model passed in as ``encoder``, training's, which no file names). The
    model is built (``build_encoder()``) only when something is extracted. Data-parallel (``context`` of several
    processes): :func:`shared_embeddings`; rank 0 gets them all, the others None."""
    files = sorted(set().union(*(set(t.enroll) | set(t.test) for t in trial_sets.values())))
    models: List[torch.nn.Module] = []  # built at the first extraction, once

    def extract(keys: List[str], chunks: Optional[List[int]] = None) -> Embeddings:
        if not models:
            models.append(encoder if encoder is not None else build_encoder())
        return extract_files(config, keys, config["test_path"], models[0], device,
                             verbose=context is None or context.main, chunks=chunks)

    cached = encoder is None and bool(config["initial_model"]) and config["embedding_cache"]
    if context is not None and context.world > 1:
        return shared_embeddings(config, files, extract, context, cached)
    if cached:
        return cached_embeddings(config["initial_model"], config["test_path"], files, config, lambda: extract(files))
    return extract(files)


def shared_embeddings(config: Dict[str, Any], files: List[str],
                      extract: Callable[[List[str], Optional[List[int]]], Embeddings], context: Context,
                      cached: bool) -> Optional[Embeddings]:
    """The embeddings of ``files`` extracted by ``context.world`` processes: each ``extract``s its share with
    its files' chunks of the batch plan of all ``files`` (:func:`evaluation.shares.extraction_shares`: whole
    chunks, near-equal audio, the same split in every process), so its batches are those one process runs; rank
    0 gathers the shares in the order of ``files`` and returns them (bit-identical to one process's); the other
    ranks return None.

    With the embedding cache (``cached``): when every process sees the entry of all the files, none extracts
    and rank 0 reads it; otherwise each process reads or writes the entry of its share, and rank 0 writes the
    entry of all the files, which a later run of one process reads (module docstring of :mod:`evaluation.cache`).
    """
    from core.distributed import all_gather, barrier, everywhere  # deferred (tests/test_layout.py DEFERRED_IMPORTS)
    from evaluation.shares import extraction_shares  # deferred: the batch plan imports the extraction (torch)

    model, root = config["initial_model"], config["test_path"]
    whole = cache_path(model, root, files, config) if cached else ""
    if cached and all(everywhere(os.path.isfile(whole), context)):
        return read_cache(whole, len(files)) if context.main else None
    share, chunks = extraction_shares(files, root, config, context.world)[context.rank]
    logger.info("%d processes extract the embeddings of %d files (rank 0: %d)", context.world, len(files),
                len(share))
    mine = None
    if share:  # more processes than chunks leave some without any
        mine = (cached_embeddings(model, root, share, config, lambda: extract(share, chunks)) if cached
                else extract(share, chunks))
    parts = all_gather(mine, context)
    emb = None if parts is None else merge_embeddings([p for p in parts if p is not None], files)
    if cached:
        if emb is not None:
            write_cache(emb, whole)
        barrier(context)  # the entry of all the files is complete before a share's entry goes
        if share and os.path.isfile(whole):
            with contextlib.suppress(OSError):  # the share's entry is no longer needed (a process that cannot
                os.remove(cache_path(model, root, share, config))  # see the whole entry keeps it)
    return emb


def require_both_labels(path: str, trials: Trials) -> None:
    """A labelled trial list with one label only cannot give an EER: a TrialListError naming the list ``path``.
    :func:`evaluate` checks every list this way before any extraction, so :func:`report` need not."""
    if trials.labels is not None and trials.labels.min() == trials.labels.max():
        raise TrialListError(f"Trial list '{path}' has only label {trials.labels[0]} ({len(trials.labels)} "
                             f"trials): the EER needs target (1) and non-target (0) trials. Give it without "
                             f"labels ('enroll test' lines) to get scores only.")


def score_file_for(score_file: str, name: str, several: bool) -> str:
    """The output file of list (or checkpoint) ``name``: ``score_file`` itself, or ``<stem>.<name><ext>`` for several.
    An empty ``score_file`` stays empty (nothing is written): never a hidden ``.<name>`` in the working directory."""
    if not several or not score_file:
        return score_file
    stem, ext = os.path.splitext(score_file)
    return f"{stem}.{name}{ext}"


def evaluate(config: Dict[str, Any], device: Optional[torch.device], encoder: Optional[torch.nn.Module] = None,
             build_encoder: Optional[EncoderBuilder] = None, context: Optional[Context] = None,
             parts: bool = False) -> Optional[Dict[str, Any]]:
    """The whole evaluation of the lists in ``test_list``.

    Embeddings come from ``embeddings`` when set, else from ``encoder`` (or the model
    ``build_encoder()`` returns). Returns the metrics of the single list, or
    ``{'lists': {name: metrics}}`` for several lists (None where a list is unlabelled).
    Data-parallel (``context``): the data check runs on rank 0 before any process extracts, every process
    extracts a share (:func:`shared_embeddings`), rank 0 scores and writes every output; the others return None.
    ``parts``: also the crop-only and whole-file-only EERs (``result['parts']``) of the raw protocol.
    """
    evaluation_paths(config, reads_model_file=encoder is None)
    paths = list_paths(config["test_list"])
    if config["embeddings"]:  # saved: their AS-norm statistics begin on one core while the other reads the lists
        emb = load_embeddings(config["embeddings"])
        inputs = scoring_inputs(config, emb)
        with inputs.ahead or contextlib.nullcontext():
            return evaluate_lists(config, paths, lambda trial_sets: emb, inputs, parts)
    if config["check_data"]:
        if context is None or context.main:
            check_trial_files(config, paths)
        if context is not None and context.world > 1:
            from core.distributed import barrier  # deferred (tests/test_layout.py DEFERRED_IMPORTS)

            barrier(context)  # no process extracts before the files are known good (a failed check ends them all)
    return evaluate_lists(config, paths, lambda trial_sets: trial_embeddings(config, trial_sets, device, encoder,
                                                                             build_encoder, context), None, parts)


def evaluate_lists(config: Dict[str, Any], paths: List[str],
                   embeddings: Callable[[Dict[str, Trials]], Optional[Embeddings]], inputs: Optional[ScoringInputs],
                   parts: bool) -> Optional[Dict[str, Any]]:
    """:func:`evaluate` from the trial lists on: read and check them, get their files' ``embeddings(trial_sets)``
    (None on a data-parallel process other than rank 0, which then returns None), score (with ``inputs`` when
    read already), calibrate, report."""
    trial_sets = {list_name(p): read_trials(p) for p in paths}
    for path, trials in zip(paths, trial_sets.values(), strict=True):  # before any extraction
        require_both_labels(path, trials)
    extra = {QMF_LIST: read_trials(config["qmf_list"])} if config["qmf_list"] else {}
    emb = embeddings({**trial_sets, **extra})
    if emb is None:
        return None
    if config["save_embeddings"]:
        save_embeddings(emb, config["save_embeddings"])
        logger.info("Embeddings saved to %s", config["save_embeddings"])
    if config["score_file"] and any(t.labels is not None for t in trial_sets.values()):
        import_plotting_in_background()  # the DET plots' imports, beside the scoring (AS-norm's products)
    scored = configured_scores(config, emb, {**trial_sets, **extra}, inputs)
    scores = scored.scores
    if extra:
        scores = calibrate_lists(emb, {**trial_sets, **extra}, scores, QMF_LIST,
                                 None if scored.stats is None else scored.stats[0], config["dcf_p_target"],
                                 rows=scored.rows)
    reported = {name: report(config, name, trials, scores[name], len(trial_sets) > 1, aside=inputs is not None)
                for name, trials in trial_sets.items()}
    results = {name: result for name, (result, _) in reported.items()}
    curves = [curve for _, curve in reported.values() if curve is not None]
    if config["score_file"] and config["det_plot"] == "combined" and len(trial_sets) > 1 and curves:
        det_curve_png(curves, config["score_file"] + ".det.png", " | ".join(c.name for c in curves))
    raw = config["score_norm"] == "none" and not config["mean_embeddings"] and not extra
    for name, result in results.items():
        if parts and result is not None and raw and emb.crop_embeddings is not None:
            s1, s2 = protocol_parts(emb.embeddings, *scored.rows[name], emb.crop_embeddings)
            result["parts"] = {"crops": compute_eer(s1, trial_sets[name].labels)[0],
                               "whole": compute_eer(s2, trial_sets[name].labels)[0]}
    if len(results) == 1:
        return next(iter(results.values()))
    labelled = {name: r for name, r in results.items() if r is not None}
    return {"lists": labelled} if labelled else None


def report(config: Dict[str, Any], name: str, trials: Trials, scores: np.ndarray, several: bool,
           aside: bool = False) -> Tuple[Optional[Dict[str, Any]], Optional[DetCurve]]:
    """Score file, metrics, DET plot (``det_plot`` separate, or one list alone) and EER-threshold file of one list;
    returns its metrics and DET curve (None, None for an unlabelled list). ``aside`` (re-scoring saved embeddings,
    where no torch runs): the score file is written by a forked process (:mod:`core.forks`) while this one
    computes the metrics and draws the plot (half a second at Vox1-H size; both hold the GIL, so a thread would
    not help); its error is raised here as it would have been."""
    score_file = score_file_for(config["score_file"], name, several)
    writing = None
    if score_file and aside and CAN_FORK:
        writing = Forked(functools.partial(write_score_file, score_file, trials, scores))
    elif score_file:
        write_score_file(score_file, trials, scores)
    try:
        outcome = list_results(config, name, trials, scores, score_file, several)
    finally:
        failed = writing.join() if writing is not None else None
    if failed is not None:
        raise OutputError(failed)
    if score_file:
        logger.info("Scores written to %s", score_file)
    return outcome


def list_results(config: Dict[str, Any], name: str, trials: Trials, scores: np.ndarray, score_file: str,
                 several: bool) -> Tuple[Optional[Dict[str, Any]], Optional[DetCurve]]:
    """:func:`report` but the score file: the metrics, DET plot and threshold file of one list."""
    if trials.labels is None:
        logger.warning("Trial list %s has no labels: scores only, no EER.", name)
        return None, None
    rates = compute_error_rates(scores, trials.labels)
    result = evaluate_scores(scores, trials.labels, p_targets=(0.05, 0.01), c_miss=config["dcf_c_miss"],
                             c_fa=config["dcf_c_fa"], threshold=config["threshold"], rates=rates)
    curve = det_curve(name, rates, result)
    if score_file:
        if config["det_plot"] == "separate" or not several:
            det_curve_png([curve], score_file + ".det.png", name)
        settings = {key: config[key] for key in THRESHOLD_SETTINGS + ["initial_model", "config"]}
        write_threshold_file(threshold_path(score_file), result, {**settings, "test_list": name})
    return result, curve
