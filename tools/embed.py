"""Embed a folder, a wav.scp (Kaldi data folder) or a list of files into the evaluation's embeddings file.

The .npz holds ``keys``, ``embeddings`` (whole file, before normalisation), ``durations`` and, with the
crop protocol (eval_frames > 0), ``crop_embeddings``: what ``--save_embeddings`` writes, so
``trainSpeakerNet_Eval.py --embeddings OUT`` and ``tools.make_cohort --embeddings OUT`` score from it. The
extraction is the evaluation's (batched, same protocol: by default the one the model was trained with).

Keys: a folder gives the paths of its .wav/.flac files relative to it (as trial lists name them); a Kaldi
data folder (or its wav.scp) the utterance ids; a list file its lines (the last field of each: a
'speaker path' training list works), relative to --root.

Resumable: every --save_every files go (atomically) to a file of the folder OUT.parts/ with a digest of the
job (model file, files, embedding options); the same command continues after them, another job refuses the
folder. It is removed when OUT is written.

Usage:
  python -m tools.embed --initial_model M.model --input vox1/wav --out exp/vox1.npz
  python -m tools.embed --initial_model M.model --input data/test --out exp/test.npz        # Kaldi: wav.scp keys
  python -m tools.embed --initial_model M.model --input lists/files.txt --root vox1/wav --out exp/vox1.npz
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import zipfile
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from core.cli import build_parser, run_cli
from core.config import frontend_paths, require_paths
from core.device import resolve_device
from core.errors import ConfigError, DataError
from core.logs import progress_options, setup_logging
from dataprep.lists import is_kaldi_folder
from evaluation.cache import cache_key
from evaluation.embeddings import Embeddings, merge_embeddings, save_embeddings
from evaluation.pipeline import extract_files
from model_files import build_speaker_encoder, with_model_file

logger = logging.getLogger(__name__)
AUDIO_FILES = (".wav", ".flac")


def read_fields(path: str) -> List[List[str]]:
    try:
        with open(path, encoding="utf-8") as handle:
            return [line.split() for line in handle if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"Cannot read '{path}': {err}") from err


def input_files(source: str, root: str = "") -> Tuple[List[str], str]:
    """(keys, the folder or Kaldi data folder they are relative to) of ``source`` (module docstring)."""
    if os.path.basename(source) == "wav.scp" and os.path.isfile(source):
        source = os.path.dirname(source) or "."
    if is_kaldi_folder(source):
        keys = [fields[0] for fields in read_fields(os.path.join(source, "wav.scp"))]
        root = source
    elif os.path.isdir(source):
        keys = sorted(os.path.relpath(os.path.join(folder, name), source) for folder, _, names in os.walk(source)
                      for name in names if name.lower().endswith(AUDIO_FILES))
        root = source
    elif os.path.isfile(source):
        keys = [fields[-1] for fields in read_fields(source)]
    else:
        raise ConfigError(f"--input '{source}' does not exist: give a folder of audio files, a Kaldi data folder "
                          f"(or its wav.scp), or a list file.")
    if not keys:
        raise DataError(f"'{source}' holds no audio files to embed ({', '.join(AUDIO_FILES)} files, wav.scp lines "
                        f"or list lines).")
    seen: Dict[str, int] = {}
    for key in keys:
        seen[key] = seen.get(key, 0) + 1
        if seen[key] == 2:
            raise DataError(f"'{source}' names '{key}' more than once; each key must be one file.")
    return keys, root


def job_digest(config: Dict[str, Any], keys: Sequence[str], root: str) -> str:
    """What the embeddings depend on (the evaluation cache's key: model file, files, embedding options)."""
    what = cache_key(config["initial_model"], root, list(keys), config)
    return hashlib.sha1(json.dumps(what, sort_keys=True).encode()).hexdigest()


def part_name(start: int) -> str:
    return f"{start:09d}.npz"


def save_part(emb: Embeddings, digest: str, folder: str, start: int) -> None:
    """One chunk's embeddings (files ``start``...) and the job's digest, in one file written atomically."""
    os.makedirs(folder, exist_ok=True)
    save_embeddings(emb, os.path.join(folder, part_name(start)), job=np.asarray(digest))


def load_parts(folder: str, digest: str, keys: Sequence[str]) -> List[Embeddings]:
    """The chunks an interrupted run of this job finished, in order (none without the folder)."""
    if not os.path.isdir(folder):
        return []
    parts: List[Embeddings] = []
    done = 0
    for name in sorted(f for f in os.listdir(folder) if re.fullmatch(r"\d{9}\.npz", f)):
        path = os.path.join(folder, name)
        try:
            with np.load(path, allow_pickle=False) as data:
                found = {field: data[field] for field in data.files}
        except (OSError, ValueError, zipfile.BadZipFile) as err:
            raise DataError(f"Cannot read the partial results '{path}' ({err}); delete '{folder}' to start "
                            f"again.") from err
        part_keys = found["keys"].tolist() if "keys" in found else []
        if str(found.get("job", "")) != digest:
            raise DataError(f"'{folder}' holds partial results of another job (other model file, files or "
                            f"embedding options); delete it to start this one, or run the command that made it.")
        if int(name[:9]) != done or part_keys != list(keys[done:done + len(part_keys)]):
            raise DataError(f"'{path}' does not continue the files before it; delete '{folder}' to start again.")
        parts.append(Embeddings(part_keys, found["embeddings"], found.get("crop_embeddings"), found["durations"]))
        done += len(part_keys)
    return parts


def embed_command(config: Dict[str, Any]) -> str:
    """Embed the files of ``--input`` into ``--out``, continuing an interrupted run of the same job."""
    setup_logging()
    if not config["initial_model"]:
        raise ConfigError("--initial_model is not set: give the model file to embed with.")
    if config["save_every"] < 1:
        raise ConfigError(f"--save_every must be at least 1, got {config['save_every']}.")
    config = with_model_file(config)
    require_paths(config, frontend_paths(config))
    keys, root = input_files(config["input"], config["root"])
    folder, digest = config["out"] + ".parts", job_digest(config, keys, root)
    parts = load_parts(folder, digest, keys)
    done = sum(len(p.keys) for p in parts)
    if done:
        logger.info("Continuing after %d of %d files (%s)", done, len(keys), folder)
    if done < len(keys):
        device = resolve_device(config["device"])
        encoder = build_speaker_encoder(config, device)
        with tqdm(total=len(keys), initial=done, desc="embedding", unit="file", **progress_options()) as bar:
            for start in range(done, len(keys), config["save_every"]):
                part = extract_files(config, keys[start:start + config["save_every"]], root, encoder, device,
                                     verbose=False)
                save_part(part, digest, folder, start)
                parts.append(part)
                bar.update(len(part.keys))
    save_embeddings(merge_embeddings(parts, keys), config["out"])
    shutil.rmtree(folder, ignore_errors=True)
    logger.info("Embeddings of %d files written to %s", len(keys), config["out"])
    return config["out"]


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = build_parser(__doc__)
    parser.add_argument("--input", required=True, help="a folder of audio files, a Kaldi data folder (or its "
                                                       "wav.scp), or a list file (last field of each line)")
    parser.add_argument("--root", default="", help="folder the paths of a list file are relative to")
    parser.add_argument("--out", required=True, help="the embeddings .npz to write")
    parser.add_argument("--save_every", type=int, default=500, help="write the results so far every N files "
                                                                      "(OUT.parts/; default 500)")
    run_cli(parser, embed_command, argv, show=lambda out: f"embeddings written to {out}")


if __name__ == "__main__":
    main()
