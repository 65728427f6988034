"""VoxCeleb folder trees: the training list of a ``<speaker>/<video>/<utterance>`` tree, and VoxCeleb2's m4a
files converted to 16 kHz mono wav with ffmpeg."""
from __future__ import annotations

import concurrent.futures
import os
import shutil
import subprocess
from typing import Dict, List, Sequence, Tuple

from tqdm import tqdm

from core.errors import ConfigError, DataError
from core.logs import progress_options

AUDIO_EXTENSIONS = (".wav", ".flac", ".m4a")


def tree_files(root: str, extensions: Sequence[str] = AUDIO_EXTENSIONS) -> List[str]:
    """Relative paths ``speaker/video/utterance.ext`` under ``root``, sorted."""
    if not os.path.isdir(root):
        raise DataError(f"'{root}' is not a folder; give the VoxCeleb folder holding id*/<video>/<file> "
                        f"(e.g. vox2/dev/aac or vox2/dev/wav).")
    found = []
    for speaker in tqdm(sorted(os.listdir(root)), desc="list speakers", unit="spk", disable=None,
                        **progress_options()):
        speaker_dir = os.path.join(root, speaker)
        if not os.path.isdir(speaker_dir):
            continue
        for video in sorted(os.listdir(speaker_dir)):
            video_dir = os.path.join(speaker_dir, video)
            if os.path.isdir(video_dir):
                found += [f"{speaker}/{video}/{name}" for name in sorted(os.listdir(video_dir))
                          if name.lower().endswith(tuple(extensions))]
    return found


def train_list_lines(files: Sequence[str], as_extension: str = "") -> List[str]:
    """``speaker relative/path`` lines (the speaker is the first folder); ``as_extension`` renames the files'
    extension (the list of m4a files that will be converted to wav)."""
    lines = []
    for rel in files:
        if as_extension:
            rel = os.path.splitext(rel)[0] + as_extension
        lines.append(f"{rel.split('/')[0]} {rel}\n")
    return lines


def ffmpeg_command(source: str, target: str, ffmpeg: str = "ffmpeg") -> List[str]:
    return [ffmpeg, "-nostdin", "-loglevel", "error", "-y", "-i", source, "-ac", "1", "-ar", "16000",
            "-sample_fmt", "s16", "-f", "wav", target]


def find_ffmpeg(ffmpeg: str = "ffmpeg") -> str:
    found = shutil.which(ffmpeg)
    if not found:
        raise ConfigError(f"'{ffmpeg}' was not found on PATH; m4a conversion needs ffmpeg (e.g. 'conda install "
                          f"ffmpeg' or 'apt install ffmpeg'), or give its path with --ffmpeg.")
    return found


def convert_one(source: str, target: str, ffmpeg: str) -> str:
    """Convert one file to ``target`` (written under a temporary name, then renamed: a target that exists is
    complete). Returns '' or the error text."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = target + ".partial.wav"
    result = subprocess.run(ffmpeg_command(source, tmp, ffmpeg), capture_output=True, text=True)
    if result.returncode != 0 or not os.path.isfile(tmp):
        if os.path.exists(tmp):
            os.remove(tmp)
        return (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
    os.replace(tmp, target)
    return ""


def convert_tree(source_root: str, target_root: str, ffmpeg: str = "ffmpeg", workers: int = 4,
                 extensions: Sequence[str] = (".m4a",)) -> Dict[str, object]:
    """Convert every file of a VoxCeleb tree to 16 kHz mono wav under ``target_root`` (same relative paths,
    extension .wav). Files whose wav exists are skipped, so an interrupted run continues."""
    executable = find_ffmpeg(ffmpeg)
    files = tree_files(source_root, extensions)
    if not files:
        raise DataError(f"No {'/'.join(extensions)} files found as {source_root}/<speaker>/<video>/<file>.")
    jobs: List[Tuple[str, str]] = []
    for rel in files:
        target = os.path.join(target_root, os.path.splitext(rel)[0] + ".wav")
        if not os.path.isfile(target):
            jobs.append((os.path.join(source_root, rel), target))
    failures: List[Tuple[str, str]] = []
    with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
        results = pool.map(lambda job: convert_one(job[0], job[1], executable), jobs)
        for (source, _), error in tqdm(zip(jobs, results, strict=True), total=len(jobs), desc="convert", unit="file",
                                       disable=None, **progress_options()):
            if error:
                failures.append((source, error))
    return {"files": len(files), "skipped": len(files) - len(jobs), "converted": len(jobs) - len(failures),
            "failures": failures}
