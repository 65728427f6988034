"""Cut raw MUSAN into the 5 s chunks the original augmentation reads (voxceleb_trainer's musan_split).

Reads  <musan>/<noise|speech|music>/<subset>/<recording>.wav
writes <out>/<category>/<subset>/<recording>/<NNNNN>.wav: 5 s chunks with a 3 s hop, chunk k starting at
3k s while start < length - 5 s, named by the start second. Interrupted runs continue where they stopped
(each recording's folder appears complete or not at all). Then set musan_path: <out>.

Usage: python -m tools.split_musan --musan /data/musan --out /data/musan_split
"""
from __future__ import annotations

import argparse
import logging
from typing import Optional, Sequence

from core.cli import run_tool
from dataprep.musan import split_musan

logger = logging.getLogger(__name__)


def split_command(args: argparse.Namespace) -> None:
    counts = split_musan(args.musan, args.out)
    logger.info("%d recordings: %d split now (%d chunks), %d already done; %d too short for a chunk (<= 5 s)",
                counts["recordings"], counts["recordings"] - counts["skipped"], counts["chunks_written"],
                counts["skipped"], counts["without_chunks"])


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--musan", required=True, help="raw MUSAN folder (holds noise/ speech/ music/)")
    parser.add_argument("--out", required=True, help="folder to write the split layout to")
    run_tool(parser, split_command, argv)


if __name__ == "__main__":
    main()
