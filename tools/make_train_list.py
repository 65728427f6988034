"""Write a training list ('speaker_id relative/path' per line) from a VoxCeleb folder tree
<root>/<speaker>/<video>/<utterance>.<wav|flac|m4a>, the speaker being the first folder.

With --as_wav the list names .wav files although the tree holds m4a: the list for the folder that
tools.convert_m4a writes. Set train_list to the output and train_path to the tree (or the wav tree).

Usage: python -m tools.make_train_list --root /data/vox2/dev/aac --out vox2_train.txt [--as_wav]
"""
from __future__ import annotations

import argparse
import logging
from typing import Optional, Sequence

from core.cli import run_tool
from core.errors import DataError
from core.files import write_text
from dataprep.voxceleb import AUDIO_EXTENSIONS, train_list_lines, tree_files

logger = logging.getLogger(__name__)


def list_command(args: argparse.Namespace) -> None:
    files = tree_files(args.root, [f".{e.lstrip('.')}" for e in args.ext])
    if not files:
        raise DataError(f"No {', '.join(args.ext)} files found as {args.root}/<speaker>/<video>/<file>.")
    lines = train_list_lines(files, ".wav" if args.as_wav else "")
    write_text(args.out, "".join(lines))
    logger.info("%d files of %d speakers written to %s", len(lines), len({f.split('/')[0] for f in files}), args.out)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="folder holding <speaker>/<video>/<file>")
    parser.add_argument("--out", required=True, help="list file to write")
    parser.add_argument("--ext", nargs="+", default=[e.lstrip(".") for e in AUDIO_EXTENSIONS],
                        help="file extensions to list (default: wav flac m4a)")
    parser.add_argument("--as_wav", action="store_true", help="name every file with the .wav extension")
    run_tool(parser, list_command, argv)


if __name__ == "__main__":
    main()
