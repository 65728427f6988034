"""Make an AS-norm / S-norm cohort: the mean whole-file embedding of each training speaker.

cohort[s] = (1 / |U_s|) * sum_{u in U_s} w_u, with U_s the files of speaker s in the training
list and w_u the whole-file embedding before normalisation (wespeaker: mean embedding per
training speaker). Rows are in sorted speaker order; ``keys`` holds the speaker ids.

Usage:
  from saved embeddings (keys = paths as written in the training list):
    python -m tools.make_cohort --embeddings train_emb.npz --train_list train_list.txt --out cohort.npz
  from a model (whole-file embeddings of every listed file, extracted once):
    python -m tools.make_cohort --config C.yaml --initial_model M.model --train_list L --train_path P \\
        --out cohort.npz [--save_embeddings train_emb.npz]
"""
from __future__ import annotations

import argparse
import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from DatasetLoader import read_speaker_list
from tools.config import add_options, require_paths, run_cli
from tools.evaluation import Embeddings, key_index, load_embeddings, rows_of, save_embeddings
from tools.logs import setup_logging

logger = logging.getLogger(__name__)


def speaker_means(embeddings: np.ndarray, speakers: Sequence[str]) -> Tuple[List[str], np.ndarray]:
    """Mean row per speaker (float64 sums): (sorted speaker ids, [S, D] float32)."""
    names, label = np.unique(np.asarray(speakers), return_inverse=True)
    sums = np.zeros((len(names), embeddings.shape[1]))
    np.add.at(sums, label, embeddings.astype(np.float64))
    counts = np.bincount(label, minlength=len(names))[:, None]
    return names.tolist(), (sums / counts).astype(np.float32)


def make_cohort(emb: Embeddings, speakers: Sequence[str], files: Sequence[str], list_path: str) -> Embeddings:
    """Cohort embeddings (keys = speaker ids) from per-file embeddings of the list's files."""
    rows = rows_of(key_index(emb.keys), files, f"'{list_path}'")
    names, means = speaker_means(emb.embeddings[rows], speakers)
    return Embeddings(names, means, None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(parser)
    parser.add_argument("--embeddings", default="", help="per-file embeddings .npz (else extract with the model)")
    parser.add_argument("--out", required=True, help="cohort .npz to write (keys = speaker ids)")
    parser.add_argument("--save_embeddings", default="", help="also save the extracted per-file embeddings")
    return parser


def cohort_command(config: Dict[str, Any]) -> None:
    """Embeddings of the list (given, or extracted with the model) -> one mean per speaker -> ``--out``."""
    setup_logging()
    require_paths(config, ["train_list"])
    speakers, files = read_speaker_list(config["train_list"])
    if config["embeddings"]:
        emb = load_embeddings(config["embeddings"])
    else:
        from SpeakerNet import resolve_device  # the model stack only when extracting
        from tools.extraction import extract_embeddings
        from trainSpeakerNet_Eval import load_encoder

        require_paths(config, ["train_path"])
        device = resolve_device(config["device"])
        emb = extract_embeddings(load_encoder(config, device), sorted(set(files)), config["train_path"], 0, 1,
                                 config["max_eval_seconds"], device, workers=config["nDataLoaderThread"],
                                 long_files=config["eval_long_files"])
        if config["save_embeddings"]:
            save_embeddings(emb, config["save_embeddings"])
    cohort = make_cohort(emb, speakers, files, config["train_list"])
    save_embeddings(cohort, config["out"])
    logger.info("Cohort of %d speakers (%d files) written to %s", len(cohort.keys), len(files), config["out"])


def main(argv: Optional[Sequence[str]] = None) -> None:
    run_cli(build_parser(), cohort_command, argv)


if __name__ == "__main__":
    main()
