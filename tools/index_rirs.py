"""Index the RIRs of an RIRS_NOISES simulated_rirs folder (<room type>/<room>/<file>.wav) into a list file.

Every file is checked (readable audio with samples) and the bad ones are reported, not indexed. Set
rir_path to the index: training then reads the list instead of globbing ~60 k files at every start.

Usage: python -m tools.index_rirs --rir_path /data/RIRS_NOISES/simulated_rirs --out /data/rirs.txt
"""
from __future__ import annotations

import argparse
import logging
import os
from typing import Optional, Sequence

from core.cli import run_tool
from core.errors import DataError
from core.files import write_text
from dataprep.check import check_files, format_problems
from dataprep.rirs import find_rirs, room_types

logger = logging.getLogger(__name__)


def index_command(args: argparse.Namespace) -> None:
    if not os.path.isdir(args.rir_path):
        raise DataError(f"--rir_path '{args.rir_path}' is not a folder.")
    files = find_rirs(args.rir_path)
    report = check_files(files, [args.rir_path] * len(files), min_seconds=0.0, workers=args.workers,
                         desc="check RIRs")
    if report.problems:
        logger.warning("%d RIR file(s) are unusable and left out:\n%s", len(report.problems),
                       format_problems(report.problems))
    folder = os.path.dirname(os.path.abspath(args.out))
    good = [os.path.relpath(os.path.abspath(f), folder) for f, ok in zip(files, report.good, strict=True) if ok]
    if not good:
        raise DataError(f"No usable RIR file in '{args.rir_path}'.")
    os.makedirs(folder, exist_ok=True)
    write_text(args.out, "".join(f"{f}\n" for f in good))
    logger.info("Indexed %d RIRs (%s) in %s; set rir_path: %s", len(good),
                ", ".join(f"{k} {v}" for k, v in sorted(room_types(good).items())), args.out, args.out)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rir_path", required=True, help="folder of <room type>/<room>/<file>.wav")
    parser.add_argument("--out", required=True, help="index file to write (paths relative to its folder)")
    parser.add_argument("--workers", type=int, default=8, help="threads reading file headers")
    run_tool(parser, index_command, argv)


if __name__ == "__main__":
    main()
