"""Average the weights of several model files into one, evaluable like any other model file.

Either name the files (``--models A.model B.model ...``) or take the newest ``--last N`` checkpoints of a
run's ``save_path`` (from ``--config`` or ``--save_path``). Floating-point tensors are averaged in float64
and stored in their own type; other tensors (counters) are taken from the newest file. The output holds
``model`` (and the newest file's ``config`` and ``frontend``: self-contained like it), written atomically;
optimiser state is not kept, so it starts a new stage (``initial_model``) rather than resuming one.

Usage:
  python -m tools.average_models --config yaml/Baseline_lm.yaml --last 3 --out exp/avg3.model
  python -m tools.average_models --models exp/a/model/model000000014.model exp/a/model/model000000015.model \\
      --out exp/avg.model
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional, Sequence

from core.cli import build_parser, run_cli
from core.errors import CheckpointError, ConfigError
from core.logs import setup_logging
from frontend.formats import load_torch_file
from model_files import average_states, find_checkpoints, save_model_file

logger = logging.getLogger(__name__)


def model_files(config: Dict[str, Any]) -> List[str]:
    """The files to average: ``--models``, else the newest ``--last`` checkpoints of save_path (oldest first)."""
    if config["models"]:
        return config["models"]
    found = [path for _, path in find_checkpoints(os.path.join(config["save_path"], "model"))]
    if len(found) < max(config["last"], 1):
        raise ConfigError(f"--last {config['last']}: '{config['save_path']}/model' holds {len(found)} checkpoints; "
                          f"lower --last or name the files with --models.")
    return found[-config["last"]:]


def average_command(config: Dict[str, Any]) -> str:
    setup_logging()
    paths = model_files(config)
    objects = [load_torch_file(path) for path in paths]
    states = []
    for path, obj in zip(paths, objects, strict=True):
        if not (isinstance(obj, dict) and isinstance(obj.get("model"), dict)):
            raise CheckpointError(f"'{path}' is not a model file of this toolkit (no 'model' state).")
        states.append(obj["model"])
    averaged = {"model": average_states(states, paths), "averaged_from": list(paths)}
    for key in ("config", "frontend"):  # the newest file's: with both, the average is self-contained
        if key in objects[-1]:
            averaged[key] = objects[-1][key]
    save_model_file(averaged, config["out"])
    logger.info("Averaged %d model files into %s", len(paths), config["out"])
    return config["out"]


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = build_parser(__doc__)
    parser.add_argument("--models", nargs="+", default=[], help="the model files to average")
    parser.add_argument("--last", type=int, default=2, help="without --models: the newest N checkpoints of "
                                                            "save_path (default 2)")
    parser.add_argument("--out", required=True, help="the averaged model file to write")
    run_cli(parser, average_command, argv, show=lambda out: f"averaged model written to {out}")


if __name__ == "__main__":
    main()
