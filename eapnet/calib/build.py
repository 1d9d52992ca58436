"""Build a calibration set: exposure triplets with ground truth in the NTIRE file layout.

Run from the repository root::

    python -m eapnet.calib.build                                   # the shipped set, eapnet/calib/default
    python -m eapnet.calib.build --out /tmp/calib --data ../shared/data/ntire_samples/crops256 --num 8 --size 128

``--data synthetic`` (the default) draws scenes of the synthetic generator from a seed stream of its own; a
folder in the NTIRE or Kalantari layout gives deterministic random crops of its scenes with ground truth. What
a set holds and how the scenes are chosen: :mod:`eapnet.calib.generate`. The output is built in a temporary
folder next to ``--out`` and renamed into place; an existing non-empty ``--out`` is replaced only with
``--overwrite``, and only when it is itself a calibration set.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from eapnet.calib import MANIFEST
from eapnet.calib.generate import CALIB_SEED, ROOT, build_set
from eapnet.cli import Parser, command, side_arg
from eapnet.data import DataError, scene_sources_from_folder
from eapnet.data.synthetic import HELDOUT_SEED, TRAIN_SEED

MAX_SIZE = 4096
"""Largest ``--size`` (px): the largest side an exported program takes (``eapnet.compress.quantize``); one scene of
4096x4096 already holds 0.8 GB of float32 frames and ground truth."""


def get_args_parser() -> argparse.ArgumentParser:
    p = Parser(prog="eapnet-calib", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "eapnet.calib" / "default",
                   help="output folder (default: the shipped set, eapnet/calib/default)")
    p.add_argument("--data", "--source", dest="source", default="synthetic",
                   help="'synthetic' (default) or a folder in the NTIRE or Kalantari layout to crop")
    p.add_argument("--num", "--n", dest="n", type=int, default=32, help="number of scenes / crops (default 32)")
    p.add_argument("--size", type=side_arg, default=128, metavar="N",
                   help=f"frame side in pixels, N or NxN, a multiple of 8 up to {MAX_SIZE} (default 128)")
    p.add_argument("--seed", type=int, default=CALIB_SEED,
                   help=f"synthetic: base seed of the scene stream; folder: seed of the crop offsets "
                        f"(default CALIB_SEED = {CALIB_SEED})")
    p.add_argument("--overwrite", "--force", dest="force", action="store_true",
                   help="replace an existing calibration set at --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.n < 1:
        p.error(f"--num must be >= 1, got {args.n}")
    if args.size % 8:
        p.error(f"--size must be a multiple of 8, got {args.size}")
    if args.size > MAX_SIZE:   # beyond it a scene's arrays run to gigabytes (OpenCV refuses the allocation)
        p.error(f"--size must be at most {MAX_SIZE} (the largest exported side), got {args.size}")
    if args.source == "synthetic":
        if args.seed in (TRAIN_SEED, HELDOUT_SEED):
            p.error(f"--seed {args.seed} is the {'training' if args.seed == TRAIN_SEED else 'held-out'} seed; "
                    f"calibration must not overlap it (default CALIB_SEED = {CALIB_SEED})")
    else:
        src = Path(args.source)
        if not src.is_dir():
            p.error(f"--data {src}: no such folder (give 'synthetic' or an NTIRE / Kalantari folder)")
        try:
            scene_sources_from_folder(src)
        except DataError as exc:
            p.error(str(exc))  # names the folder and what is missing
        if args.out.resolve() == src.resolve():
            p.error(f"--out {args.out} is the --data folder")
    out = args.out
    if out.exists() and not out.is_dir():
        p.error(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not args.force:
            p.error(f"--out {out} exists and is not empty; pass --overwrite to replace it")
        if not (out / MANIFEST).is_file():
            p.error(f"--out {out} is not a calibration set (no {MANIFEST}); refusing to replace it, even with --overwrite")


@command
def main(argv: list[str] | None = None) -> int:
    p = get_args_parser()
    args = p.parse_args(argv)
    _check_args(p, args)

    try:
        build_set(args.out, args.source, args.n, args.size, args.seed, progress=not args.quiet)
    except DataError as exc:
        p.error(str(exc))
    mb = sum(f.stat().st_size for f in args.out.iterdir()) / 1e6
    print(f"wrote {args.n} scenes of {args.size}x{args.size} ({mb:.2f} MB) to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
