"""Make the synthetic demo data: a VoxCeleb-shaped corpus with MUSAN- and RIR-shaped folders, and a
tiny random-weight WavLM in the official format (see synthetic/demo.py). Same seed, same bytes.

Usage: python -m tools.make_demo_data [--out demo] [--seed 0] [--small]
"""
from __future__ import annotations

import argparse
import logging

from synthetic.demo import make_demo_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="demo", help="output folder (its data/ must be empty or absent)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    parser.add_argument("--small", action="store_true", help="a very small corpus (for tests)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    summary = make_demo_data(args.out, args.seed, args.small)
    for key, value in summary.items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
