"""Embed a folder, a wav.scp (Kaldi data folder) or a list of files into the evaluation's embeddings file.

The .npz holds ``keys``, ``embeddings`` (whole file, before normalisation), ``durations`` and, with the
crop protocol (eval_frames > 0), ``crop_embeddings``: what ``--save_embeddings`` writes, so
``trainSpeakerNet_Eval.py --embeddings OUT`` and ``tools.make_cohort --embeddings OUT`` score from it. The
extraction is the evaluation's (batched, same protocol: by default the one the model was trained with).

Keys: a folder gives the paths of its .wav/.flac files relative to it (as trial lists name them); a Kaldi
data folder (or its wav.scp) the utterance ids; a list file its lines (the last field of each: a
'speaker path' training list works), relative to --root.

The files are embedded a chunk of the batch plan at a time (:mod:`evaluation.extraction`: runs of files in
length order that share no batch with other files), so the batches are those of one extraction of all of them.
Resumable: every --save_every files, rounded up to the end of a chunk, go (atomically) to a file of the folder
OUT.parts/ with a digest of the job (model file, files, embedding options); the same command continues after
them, another job refuses the folder. It is removed when OUT is written.

Data-parallel with --distributed (the launcher of training: one process per GPU, nproc_per_node CPU processes,
or the processes of torchrun / SLURM): each process embeds a share of the files (whole chunks of the batch plan,
near-equal audio, read from the headers: :mod:`evaluation.shares`) into OUT.parts/rank<R>of<W>/, with the
digest of its share, and continues there after an interruption on the same number of processes; rank 0 gathers
the shares and writes OUT in the order of the keys: the embeddings of one process, bit for bit with the same
kernels (on CPU, the same torch thread count). Parts of a run on another number of processes (or of a
single-process run) are refused, naming the folder.

Usage:
  python -m tools.embed --initial_model M.model --input vox1/wav --out exp/vox1.npz
  python -m tools.embed --initial_model M.model --input data/test --out exp/test.npz        # Kaldi: wav.scp keys
  python -m tools.embed --initial_model M.model --input lists/files.txt --root vox1/wav --out exp/vox1.npz
  python -m tools.embed --initial_model M.model --input vox1/wav --out exp/vox1.npz --distributed  # all GPUs
"""
from __future__ import annotations

import argparse
import functools
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
from core.distributed import Context, all_gather, launch, world_size
from core.errors import ConfigError, DataError
from core.logs import progress_options, setup_logging
from dataprep.lists import is_kaldi_folder
from evaluation.cache import cache_key
from evaluation.embeddings import Embeddings, merge_embeddings, save_embeddings
from evaluation.pipeline import extract_files
from evaluation.shares import Share, extraction_shares
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


def share_folder(folder: str, rank: int, world: int) -> str:
    """The partial results of rank ``rank`` of ``world`` processes: a sub-folder of ``folder`` (one process:
    ``folder`` itself)."""
    return folder if world == 1 else os.path.join(folder, f"rank{rank}of{world}")


def require_layout(folder: str, world: int) -> None:
    """``folder`` (OUT.parts) must hold partial results of a run on ``world`` processes, or none: those of
    another number of processes were made from other shares of the files, so they are refused, naming it."""
    if not os.path.isdir(folder):
        return
    names = os.listdir(folder)
    worlds = {int(m.group(2)) for m in (re.fullmatch(r"rank(\d+)of(\d+)", n) for n in names) if m}
    single = any(re.fullmatch(r"\d{9}\.npz", n) for n in names)
    found = ([(f"a run on {w} processes (--distributed)", f"on {w} processes") for w in sorted(worlds) if w != world]
             + ([("a run in one process", "without --distributed")] if single and world > 1 else []))
    if found:
        what, how = found[0]
        raise DataError(f"'{folder}' holds partial results of {what}, and this run has {world} process"
                        f"{'es' if world > 1 else ''}: continue that run {how}, or delete '{folder}' to start this "
                        f"one.")


def embed_command(config: Dict[str, Any]) -> Optional[str]:
    """Embed the files of ``--input`` into ``--out``, continuing an interrupted run of the same job; with
    ``distributed``, in data-parallel processes (:func:`embed_process`). Returns OUT (None on ranks other than 0
    of a torchrun / SLURM job, which write nothing)."""
    setup_logging()
    if not config["initial_model"]:
        raise ConfigError("--initial_model is not set: give the model file to embed with.")
    if config["save_every"] < 1:
        raise ConfigError(f"--save_every must be at least 1, got {config['save_every']}.")
    config = with_model_file(config)
    require_paths(config, frontend_paths(config))
    keys, root = input_files(config["input"], config["root"])
    require_layout(config["out"] + ".parts", world_size(config))  # before any process starts
    return launch(functools.partial(embed_process, keys=keys, root=root), config)


def process_share(keys: List[str], root: str, config: Dict[str, Any], rank: int, world: int) -> Share:
    """The files of ``keys`` that process ``rank`` of ``world`` embeds (all of them in one process), a chunk of
    the batch plan of all ``keys`` at a time (by chunk, then in the order of the keys), with their chunks."""
    files, chunks = extraction_shares(keys, root, config, world)[rank]
    order = sorted(range(len(files)), key=lambda i: (chunks[i], i))
    return Share([files[i] for i in order], [chunks[i] for i in order])


def part_end(chunks: Sequence[int], start: int, save_every: int) -> int:
    """Where the part of files ``start``... of a share ends (with ``chunks``, the files' chunks in share
    order): at the end of the chunk that its ``save_every``-th file is in, or of the share."""
    end = min(start + save_every, len(chunks))
    while 0 < end < len(chunks) and chunks[end] == chunks[end - 1]:
        end += 1
    return end


def embed_process(config: Dict[str, Any], context: Context, keys: List[str], root: str) -> Optional[str]:
    """One process's part of :func:`embed_command`: embed its share of ``keys`` (:func:`process_share`) in
    parts of ``save_every`` files or a little more (:func:`part_end`), each saved to its parts folder, after
    the parts an interrupted run of that share left; rank 0 gathers the shares, writes OUT and removes
    OUT.parts. Returns OUT on rank 0, None on the others."""
    if context.world > 1:
        setup_logging(main=context.main, rank=context.rank)  # rank 0 logs; the others their errors only
    folder = config["out"] + ".parts"
    share = process_share(keys, root, config, context.rank, context.world)
    mine = share_folder(folder, context.rank, context.world)
    digest = job_digest(config, share.files, root)
    parts = load_parts(mine, digest, share.files)
    resumed = all_gather((sum(len(p.keys) for p in parts), len(share.files), mine), context)
    for done, total, where in resumed or ():  # rank 0 says where every process continues
        if done:
            logger.info("Continuing after %d of %d files (%s)", done, total, where)
    shares = all_gather(embed_share(config, share, root, mine, digest, parts, context), context)
    if shares is None:
        return None
    save_embeddings(merge_embeddings([p for p in shares if p is not None], keys), config["out"])
    shutil.rmtree(folder, ignore_errors=True)
    logger.info("Embeddings of %d files written to %s", len(keys), config["out"])
    return config["out"]


def embed_share(config: Dict[str, Any], share: Share, root: str, folder: str, digest: str,
                parts: List[Embeddings], context: Context) -> Optional[Embeddings]:
    """The embeddings of ``share`` (:func:`process_share`; None when it is empty: more processes than chunks):
    ``parts``, those of its first files that an interrupted run saved, then the rest, extracted a part
    (:func:`part_end`: whole chunks, with their chunks of the batch plan) at a time, each part saved to
    ``folder`` with the job's ``digest``."""
    files, chunks = share
    if not files:
        return None
    done = sum(len(p.keys) for p in parts)
    if done < len(files):
        encoder = build_speaker_encoder(config, context.device)
        with tqdm(total=len(files), initial=done, desc="embedding", unit="file", disable=not context.main,
                  **progress_options()) as bar:
            start = done
            while start < len(files):
                end = part_end(chunks, start, config["save_every"])
                part = extract_files(config, files[start:end], root, encoder, context.device, verbose=False,
                                     chunks=chunks[start:end])
                save_part(part, digest, folder, start)
                parts.append(part)
                bar.update(len(part.keys))
                start = end
    return merge_embeddings(parts, files)


def embed_parser() -> argparse.ArgumentParser:
    """The option table's parser plus the tool's own arguments."""
    parser = build_parser(__doc__)
    parser.add_argument("--input", required=True, help="a folder of audio files, a Kaldi data folder (or its "
                                                       "wav.scp), or a list file (last field of each line)")
    parser.add_argument("--root", default="", help="folder the paths of a list file are relative to")
    parser.add_argument("--out", required=True, help="the embeddings .npz to write")
    parser.add_argument("--save_every", type=int, default=500, help="write the results so far every N files, "
                                                                      "rounded up to a chunk of the batch plan "
                                                                      "(OUT.parts/; default 500)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    run_cli(embed_parser(), embed_command, argv, show=lambda out: f"embeddings written to {out}", data_parallel=True)


if __name__ == "__main__":
    main()
