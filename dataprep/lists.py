"""Training lists: a VoxCeleb list (``speaker_id relative/path.wav`` per line, paths relative to
``train_path``) or a Kaldi data folder (``wav.scp`` + ``utt2spk``; relative paths join ``train_path``).

Each entry remembers where it was read (``file:line``), so every later report about it can point there.
"""
from __future__ import annotations

import os
from typing import Dict, List, NamedTuple, Sequence, Tuple

from core.errors import DataError


class Entry(NamedTuple):
    speaker: str
    path: str  # joined with train_path
    where: str  # "list file:line" it came from


def _lines(path: str) -> List[Tuple[int, List[str]]]:
    """(line number, fields) of every non-blank line."""
    try:
        with open(path, encoding="utf-8") as handle:
            return [(n, line.split()) for n, line in enumerate(handle, 1) if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"Cannot read list '{path}': {err}") from err


def is_kaldi_folder(path: str) -> bool:
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "wav.scp"))


def read_voxceleb_list(list_path: str, train_path: str) -> List[Entry]:
    entries = []
    for number, fields in _lines(list_path):
        if len(fields) != 2:
            raise DataError(f"{list_path}:{number}: expected 'speaker_id relative/path.wav', got {' '.join(fields)!r}")
        entries.append(Entry(fields[0], os.path.join(train_path, fields[1]), f"{list_path}:{number}"))
    return entries


def read_kaldi_folder(folder: str, train_path: str) -> List[Entry]:
    """``wav.scp`` (utterance, file) in its order, speakers from ``utt2spk``."""
    if os.path.exists(os.path.join(folder, "segments")):
        raise DataError(f"Kaldi data folder '{folder}' has a segments file; this toolkit reads whole files: write the "
                        f"segments out as files (e.g. with Kaldi's extract-segments) and list those in wav.scp.")
    utt2spk_path = os.path.join(folder, "utt2spk")
    if not os.path.isfile(utt2spk_path):
        raise DataError(f"Kaldi data folder '{folder}' has wav.scp but no utt2spk (utterance -> speaker).")
    speaker_of: Dict[str, str] = {}
    for number, fields in _lines(utt2spk_path):
        if len(fields) != 2:
            raise DataError(f"{utt2spk_path}:{number}: expected 'utterance speaker', got {' '.join(fields)!r}")
        speaker_of[fields[0]] = fields[1]
    scp = os.path.join(folder, "wav.scp")
    entries = []
    for number, fields in _lines(scp):
        where = f"{scp}:{number}"
        if fields[-1] == "|" or fields[-1].endswith("|"):
            raise DataError(f"{where}: '{' '.join(fields[1:])}' is a command, not a file; this toolkit reads audio "
                            f"files: run the command once per line to write wav files and list those.")
        if len(fields) != 2:
            raise DataError(f"{where}: expected 'utterance path', got {' '.join(fields)!r}")
        if fields[0] not in speaker_of:
            raise DataError(f"{where}: utterance '{fields[0]}' has no line in {utt2spk_path}.")
        entries.append(Entry(speaker_of[fields[0]], os.path.join(train_path, fields[1]), where))
    return entries


def read_training_entries(train_list: str, train_path: str = "") -> List[Entry]:
    """The entries of a VoxCeleb list file or a Kaldi data folder (see the module doc)."""
    if os.path.isdir(train_list):
        if not is_kaldi_folder(train_list):
            raise DataError(f"train_list '{train_list}' is a folder without wav.scp: give a list file "
                            f"('speaker_id relative/path.wav' per line) or a Kaldi data folder (wav.scp + utt2spk).")
        entries = read_kaldi_folder(train_list, train_path)
    else:
        entries = read_voxceleb_list(train_list, train_path)
    if not entries:
        raise DataError(f"Training list '{train_list}' has no entries.")
    return entries


def speaker_labels(entries: List[Entry]) -> Tuple[List[int], List[str]]:
    """Label per entry, speakers indexed in sorted order (the original's rule)."""
    speakers = sorted({e.speaker for e in entries})
    index = {spk: i for i, spk in enumerate(speakers)}
    return [index[e.speaker] for e in entries], speakers


def key_paths(keys: Sequence[str], root: str) -> List[str]:
    """The audio file of each evaluation key: ``root/key``, or, when ``root`` is a Kaldi data folder
    (``wav.scp``), the file its ``wav.scp`` gives for the key (relative paths as Kaldi reads them: from the
    working folder). A key missing from wav.scp is a DataError naming it."""
    if not is_kaldi_folder(root):
        return [os.path.join(root, key) for key in keys]
    scp = os.path.join(root, "wav.scp")
    files: Dict[str, str] = {}
    for number, fields in _lines(scp):
        if len(fields) != 2:
            raise DataError(f"{scp}:{number}: expected 'utterance path' (a file, not a command), got "
                            f"{' '.join(fields)!r}")
        files[fields[0]] = fields[1]
    missing = [key for key in keys if key not in files]
    if missing:
        raise DataError(f"{len(missing)} key(s) of the trial lists are not in {scp} (e.g. {missing[0]!r}).")
    return [files[key] for key in keys]
