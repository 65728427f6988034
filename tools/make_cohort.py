"""Make an AS-norm / S-norm cohort: the mean whole-file embedding of each training speaker
(see evaluation/cohort.py).

Usage:
  from saved embeddings (keys = paths as written in the training list):
    python -m tools.make_cohort --embeddings train_emb.npz --train_list train_list.txt --out cohort.npz
  from a model (whole-file embeddings of every listed file, extracted once; a model file written by training
  needs no --config):
    python -m tools.make_cohort --config C.yaml --initial_model M.model --train_list L --train_path P \\
        --out cohort.npz [--save_embeddings train_emb.npz]
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Optional, Sequence

from core.cli import build_parser, run_cli
from core.config import frontend_paths, require_paths, require_paths_if_set
from core.logs import setup_logging
from DatasetLoader import read_speaker_list
from evaluation.cohort import make_cohort
from evaluation.embeddings import load_embeddings, save_embeddings
from model_files import with_model_file
from runs.evaluate import embed_files

logger = logging.getLogger(__name__)


def cohort_command(config: Dict[str, Any]) -> None:
    """Embeddings of the list (given, or extracted with the model) -> one mean per speaker -> ``--out``."""
    setup_logging()
    require_paths(config, ["train_list"])
    require_paths_if_set(config, ["embeddings"])
    speakers, files = read_speaker_list(config["train_list"])
    if config["embeddings"]:
        emb = load_embeddings(config["embeddings"])
    else:
        config = with_model_file(config)
        require_paths(config, ["train_path"] + frontend_paths(config))
        whole_files_only = {**config, "eval_frames": 0, "num_eval": 1}
        emb = embed_files(whole_files_only, sorted(set(files)), config["train_path"])
        if config["save_embeddings"]:
            save_embeddings(emb, config["save_embeddings"])
    cohort = make_cohort(emb, speakers, files, config["train_list"])
    save_embeddings(cohort, config["out"])
    logger.info("Cohort of %d speakers (%d files) written to %s", len(cohort.keys), len(files), config["out"])


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = build_parser(__doc__)
    parser.add_argument("--out", required=True, help="cohort .npz to write (keys = speaker ids)")
    run_cli(parser, cohort_command, argv)


if __name__ == "__main__":
    main()
