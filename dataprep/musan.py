"""MUSAN as the original reads it: voxceleb_trainer's ``musan_split`` layout.

Raw MUSAN is ``musan/<category>/<subset>/<recording>.wav``. voxceleb_trainer's preparation cuts each
recording into 5 s chunks with a 3 s hop, ``musan_split/<category>/<subset>/<recording>/<NNNNN>.wav``,
chunk k starting at 3k s for every start with start < length - 5 s (its ``range(0, len - 5 s, 3 s)``:
a recording of exactly 5 s gives no chunk), each file named by its start second. The augmenter draws
noise files from the chunks, so a 6 s crop wraps a chunk rather than covering a long recording.
"""
from __future__ import annotations

import glob
import logging
import os
import shutil
from typing import Dict, List, Tuple

import soundfile
from tqdm import tqdm

from core.audio import AUDIO_ERRORS, SAMPLE_RATE
from core.errors import DataError
from core.logs import progress_options

logger = logging.getLogger(__name__)
CATEGORIES = ("noise", "speech", "music")
CHUNK_SECONDS, HOP_SECONDS = 5, 3


def chunk_starts(length: int, rate: int = SAMPLE_RATE) -> List[int]:
    """Start samples of the chunks of a recording of ``length`` samples (the original's rule)."""
    return list(range(0, length - CHUNK_SECONDS * rate, HOP_SECONDS * rate))


def chunk_name(start: int, rate: int = SAMPLE_RATE) -> str:
    return f"{int(start / rate):05d}.wav"


def split_files(musan_path: str) -> Dict[str, List[str]]:
    """Category -> chunk files of a split folder (``<category>/<subset>/<recording>/<chunk>.wav``)."""
    return {c: sorted(glob.glob(os.path.join(musan_path, c, "*", "*", "*.wav"))) for c in CATEGORIES}


def raw_files(musan_path: str) -> List[str]:
    """Recordings of a raw MUSAN folder (``<category>/<subset>/<recording>.wav``)."""
    return sorted(f for c in CATEGORIES for f in glob.glob(os.path.join(musan_path, c, "*", "*.wav")))


def musan_files(musan_path: str) -> Dict[str, List[str]]:
    """The chunk files of each category of a split MUSAN folder; raw MUSAN, or a category without files, is an
    error that says how to make the split folder."""
    files = split_files(musan_path)
    if not any(files.values()) and raw_files(musan_path):
        raise DataError(f"musan_path '{musan_path}' holds raw MUSAN (<category>/<subset>/<recording>.wav). The "
                        f"original augmentation reads it cut into 5 s chunks (<category>/<subset>/<recording>/"
                        f"<NNNNN>.wav): run 'python -m tools.split_musan --musan {musan_path} --out "
                        f"{musan_path.rstrip('/')}_split' and set musan_path to the new folder.")
    for category, found in files.items():
        if not found:
            raise DataError(f"No MUSAN '{category}' chunks found as {musan_path}/{category}/<subset>/<recording>/"
                            f"<NNNNN>.wav; fix musan_path (a folder made by tools.split_musan) or set "
                            f"augment: false.")
    return files


def recordings(musan_path: str) -> List[Tuple[str, str]]:
    """(category, path) of every recording of a raw MUSAN folder, sorted: what wespeaker's augmentation draws
    from. A split folder, or a folder without recordings, is an error that says what to set."""
    found = [(c, f) for c in CATEGORIES for f in sorted(glob.glob(os.path.join(musan_path, c, "*", "*.wav")))]
    if not found and any(split_files(musan_path).values()):
        raise DataError(f"musan_path '{musan_path}' holds MUSAN cut into 5 s chunks; 'augment_mode: wespeaker' "
                        f"draws whole recordings: set musan_path to raw MUSAN (<category>/<subset>/<recording>.wav), "
                        f"or use 'augment_mode: original'.")
    if not found:
        raise DataError(f"No MUSAN recordings found as {musan_path}/<noise|speech|music>/<subset>/<recording>.wav; "
                        f"fix musan_path (raw MUSAN for 'augment_mode: wespeaker') or set augment: false.")
    return found


def split_recording(path: str, out_folder: str) -> int:
    """Write the chunks of one recording into ``out_folder`` (made complete or not at all); returns their number."""
    try:
        audio, rate = soundfile.read(path, dtype="int16", always_2d=True)
    except AUDIO_ERRORS as err:
        raise DataError(f"Cannot read MUSAN recording '{path}': {err}") from err
    tmp = out_folder + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    starts = chunk_starts(audio.shape[0], rate)
    for start in starts:
        chunk = audio[start:start + CHUNK_SECONDS * rate]
        soundfile.write(os.path.join(tmp, chunk_name(start, rate)), chunk[:, 0] if chunk.shape[1] == 1 else chunk,
                        rate, subtype="PCM_16")
    os.replace(tmp, out_folder)
    return len(starts)


def split_musan(musan_path: str, out_path: str) -> Dict[str, int]:
    """Split every recording of raw MUSAN at ``musan_path`` into ``out_path``; recordings already split
    (a finished folder) are skipped, so an interrupted run continues. Returns counts."""
    recordings = raw_files(musan_path)
    if not recordings:
        raise DataError(f"No raw MUSAN recordings found as {musan_path}/<noise|speech|music>/<subset>/<file>.wav.")
    counts = {"recordings": len(recordings), "skipped": 0, "chunks_written": 0, "without_chunks": 0}
    for path in tqdm(recordings, desc="split MUSAN", unit="rec", disable=None, **progress_options()):
        relative = os.path.relpath(os.path.splitext(path)[0], musan_path)
        folder = os.path.join(out_path, relative)
        if os.path.isdir(folder):
            counts["skipped"] += 1
            continue
        os.makedirs(os.path.dirname(folder), exist_ok=True)
        written = split_recording(path, folder)
        counts["chunks_written"] += written
        counts["without_chunks"] += written == 0
    return counts
