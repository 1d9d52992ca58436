"""Per-module MAcc breakdown of a model in the NTIRE 2022 convention (see eapnet/macs.py).

    python -m eapnet.breakdown --model standard
    python -m eapnet.breakdown --model lightweight --size 512x512 --depth 1
"""
from __future__ import annotations

import argparse
import sys

from eapnet.cli import Parser, command, size_arg
from eapnet import MODEL_NAMES, build_model
from eapnet.macs import NTIRE_HEIGHT, NTIRE_WIDTH, count_params, macc_breakdown


def get_args_parser() -> argparse.ArgumentParser:
    p = Parser(prog="eapnet-breakdown", description=__doc__.split("\n\n")[0],
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", "--variant", dest="variant", default="standard", choices=list(MODEL_NAMES),
                   help="model to count (default: standard)")
    p.add_argument("--size", type=size_arg, default=(NTIRE_HEIGHT, NTIRE_WIDTH), metavar="HxW",
                   help=f"scene size in pixels (default {NTIRE_HEIGHT}x{NTIRE_WIDTH})")
    p.add_argument("--depth", type=int, default=2, help="module nesting depth of the breakdown (default 2)")
    return p


@command
def main(argv: list[str] | None = None) -> int:
    p = get_args_parser()
    args = p.parse_args(argv)
    args.height, args.width = args.size
    if args.depth < 1:
        p.error("--depth must be at least 1")
    model = build_model(args.variant)
    rows = macc_breakdown(model, args.height, args.width, args.depth)
    total = sum(rows.values())
    w = max(len(k) for k in rows) if rows else 10
    print(f"{args.variant} at {args.width}x{args.height} (MAccs, NTIRE 2022 convention)")
    for k, v in rows.items():
        print(f"  {k:<{w}}  {v / 1e9:10.3f} G  {100 * v / total:6.2f} %")
    print(f"  {'total':<{w}}  {total / 1e9:10.3f} G   params {count_params(model) / 1e3:.2f} k")
    return 0


if __name__ == "__main__":
    sys.exit(main())
