"""Convert VoxCeleb2's m4a files to 16 kHz mono 16-bit wav with ffmpeg (which must be installed).

<src>/<speaker>/<video>/<utt>.m4a -> <dst>/<speaker>/<video>/<utt>.wav, several files at a time. Files whose
wav exists are skipped (each wav is written under a temporary name and renamed when complete), so an
interrupted run continues. Failed files are listed at the end (exit status 1).

Usage: python -m tools.convert_m4a --src /data/vox2/dev/aac --dst /data/vox2/dev/wav [--workers 8]
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

from core.cli import run_tool
from dataprep.voxceleb import convert_tree

logger = logging.getLogger(__name__)


def convert_command(args: argparse.Namespace) -> None:
    result = convert_tree(args.src, args.dst, args.ffmpeg, args.workers)
    logger.info("%d files: %d converted, %d already there, %d failed", result["files"], result["converted"],
                result["skipped"], len(result["failures"]))
    for source, error in result["failures"]:
        logger.error("%s: %s", source, error)
    if result["failures"]:
        sys.exit(1)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", required=True, help="folder holding <speaker>/<video>/<utt>.m4a")
    parser.add_argument("--dst", required=True, help="folder to write the wav tree to")
    parser.add_argument("--workers", type=int, default=4, help="ffmpeg processes at a time")
    parser.add_argument("--ffmpeg", default="ffmpeg", help="ffmpeg executable (name on PATH or path)")
    run_tool(parser, convert_command, argv)


if __name__ == "__main__":
    main()
