"""The data check: every listed file exists and is readable audio of usable length, before a run starts.

Files are probed in parallel threads (header, plus the last sample, which catches a file cut short
after its header was written) with a progress bar. The facts found are cached per file, keyed by
its size and modification time, so the next run over the same data only stats the files.
A run stops with a report of the bad lines (``file:line: path: reason``), or, when told to drop
them, goes on without them and says how many it dropped.
"""
from __future__ import annotations

import collections
import concurrent.futures
import json
import logging
import os
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import soundfile
from tqdm import tqdm

from core.audio import AUDIO_ERRORS, SAMPLE_RATE, converted_length
from core.config import loader_workers
from core.errors import DataError
from core.files import write_text
from core.logs import EVERY_RANK, progress_options
from dataprep.lists import Entry

logger = logging.getLogger(__name__)
CACHE_VERSION = 1
REPORT_LINES = 20  # bad lines shown in an error; the rest are counted


class Probe(NamedTuple):
    """What a file holds (size and mtime identify the version probed)."""
    size: int
    mtime_ns: int
    frames: int
    rate: int
    channels: int
    error: str  # '' when readable


class Problem(NamedTuple):
    where: str  # list file:line
    path: str
    reason: str


class CheckReport(NamedTuple):
    good: List[bool]  # per entry
    problems: List[Problem]
    converted: Dict[str, int]  # 'resampled from 8000 Hz' / 'averaged from 2 channels' -> number of files


def probe(path: str, stat: os.stat_result) -> Probe:
    """Read the header of ``path`` and its last sample."""
    try:
        handle = soundfile.SoundFile(path)
    except AUDIO_ERRORS as err:
        return Probe(stat.st_size, stat.st_mtime_ns, 0, 0, 0, f"unreadable audio ({err})")
    with handle:
        frames, rate, channels = handle.frames, handle.samplerate, handle.channels
        try:
            ok = frames == 0 or (handle.seek(frames - 1) == frames - 1
                                 and handle.read(1, dtype="float32", always_2d=True).shape[0] == 1)
        except AUDIO_ERRORS:
            ok = False
    error = "" if ok else f"cannot read up to the length its header gives ({frames} samples): truncated or corrupt"
    return Probe(stat.st_size, stat.st_mtime_ns, frames, rate, channels, error)


def reason(found: Optional[Probe], min_samples: int) -> str:
    """Why a probed file is unusable ('' if it is fine); None = missing."""
    if found is None:
        return "missing"
    if found.size == 0:
        return "empty file (0 bytes)"
    if found.error:
        return found.error
    if found.frames == 0:
        return "no samples"
    length = converted_length(found.frames, found.rate)
    if length < min_samples:
        return f"too short ({length / SAMPLE_RATE:.3f} s, at least {min_samples / SAMPLE_RATE:g} s needed)"
    return ""


def load_cache(path: str) -> Dict[str, Probe]:
    if not path or not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        if data.get("version") != CACHE_VERSION:
            return {}
        return {key: Probe(*value) for key, value in data["files"].items()}
    except (OSError, ValueError, TypeError, KeyError) as err:
        logger.warning("Data check cache '%s' is unreadable (%s); checking every file again.", path, err,
                       extra=EVERY_RANK)  # another rank may read it (another node: another file system)
        return {}


def save_cache(path: str, probes: Dict[str, Probe]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_text(path, json.dumps({"version": CACHE_VERSION, "files": {k: list(v) for k, v in probes.items()}}))


def probe_files(paths: Sequence[str], cache_path: str = "", workers: int = 8,
                desc: str = "data check") -> Dict[str, Optional[Probe]]:
    """Probe each distinct path (None: missing), reusing cached probes of unchanged files."""
    cache = load_cache(cache_path)
    distinct = list(dict.fromkeys(paths))

    def one(path: str) -> Tuple[Optional[Probe], bool]:
        try:
            stat = os.stat(path)
        except OSError:
            return None, False
        known = cache.get(path)
        if known is not None and (known.size, known.mtime_ns) == (stat.st_size, stat.st_mtime_ns):
            return known, False
        return probe(path, stat), True

    found: Dict[str, Optional[Probe]] = {}
    changed = False
    with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
        results = pool.map(one, distinct, chunksize=256)
        for path, (result, new) in tqdm(zip(distinct, results, strict=True), total=len(distinct), desc=desc,
                                        unit="file", disable=None, **progress_options()):
            found[path] = result
            changed |= new
    if cache_path and changed:
        cache.update({p: f for p, f in found.items() if f is not None})
        save_cache(cache_path, cache)
    return found


def check_files(paths: Sequence[str], wheres: Sequence[str], min_seconds: float = 0.0, cache_path: str = "",
                workers: int = 8, desc: str = "data check") -> CheckReport:
    """Check the files of a list (``wheres[i]`` says where ``paths[i]`` was listed)."""
    found = probe_files(paths, cache_path, workers, desc)
    min_samples = int(round(min_seconds * SAMPLE_RATE))
    good, problems = [], []
    converted: Dict[str, int] = collections.Counter()
    for path, where in zip(paths, wheres, strict=True):
        why = reason(found[path], min_samples)
        good.append(not why)
        if why:
            problems.append(Problem(where, path, why))
            continue
        info = found[path]
        if info.rate != SAMPLE_RATE:
            converted[f"resampled from {info.rate} Hz to {SAMPLE_RATE} Hz"] += 1
        if info.channels != 1:
            converted[f"averaged from {info.channels} channels to one"] += 1
    return CheckReport(good, problems, dict(converted))


def format_problems(problems: Sequence[Problem]) -> str:
    lines = [f"  {p.where}: {p.path}: {p.reason}" for p in problems[:REPORT_LINES]]
    if len(problems) > REPORT_LINES:
        lines.append(f"  ... and {len(problems) - REPORT_LINES} more")
    return "\n".join(lines)


def enforce(report: CheckReport, what: str, drop: bool) -> List[bool]:
    """Stop on bad entries (DataError listing them), or with ``drop`` warn with their count and return the
    keep mask. Conversions that reading will do are logged once, with counts."""
    for conversion, count in sorted(report.converted.items()):
        logger.warning("%s: %d file(s) will be %s on reading.", what, count, conversion)
    if not report.problems:
        return report.good
    reasons = collections.Counter(p.reason.split(" (")[0] for p in report.problems)
    summary = ", ".join(f"{n} {r}" for r, n in reasons.most_common())
    if drop:
        logger.warning("%s: dropping %d of %d entries whose files are unusable (%s):\n%s", what, len(report.problems),
                       len(report.good), summary, format_problems(report.problems))
        if not any(report.good):
            raise DataError(f"{what}: no usable entries are left after dropping the bad ones.")
        return report.good
    raise DataError(f"{what}: {len(report.problems)} of {len(report.good)} entries are unusable ({summary}); fix or "
                    f"remove these lines, or set drop_bad_data: true to train without them:\n"
                    f"{format_problems(report.problems)}")


def cache_file(config: Dict[str, Any]) -> str:
    """The data check's cache of a configuration: ``data_check_cache``, else ``<save_path>/data_check.json``."""
    return config["data_check_cache"] or os.path.join(config["save_path"], "data_check.json")


def check_training_list(config: Dict[str, Any], entries: Sequence[Entry]) -> CheckReport:
    """The data check of a training list's entries with a configuration's settings (min length, cache)."""
    return check_files([e.path for e in entries], [e.where for e in entries], config["min_audio_seconds"],
                       cache_file(config), workers=max(8, loader_workers(config)),
                       desc="data check (training list)")
