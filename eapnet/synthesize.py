"""Write synthetic scenes (:mod:`eapnet.data.synthetic`) to a folder in the NTIRE layout.

    python -m eapnet.synthesize --out DIR --num N [--seed S] [--size HxW] [--start I]

Scene ``i`` is sample ``syn{seed}_{i:05d}``: three 8-bit LDR PNGs, its exposures, the 16-bit gamma-encoded
ground truth and its align ratio, as :func:`eapnet.data.ntire.write_ntire` writes them (the layout:
:mod:`eapnet.data.ntire`).
"""
from __future__ import annotations

import argparse
import sys
import time

from eapnet.cli import Parser, command, int_at_least, size_arg
from eapnet.data.ntire import write_ntire
from eapnet.data.synthetic import HELDOUT_SEED, TRAIN_SEED, SyntheticConfig, generate_scene, scene_seed


def get_args_parser() -> argparse.ArgumentParser:
    p = Parser(prog="eapnet-synthetic", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--num", type=int_at_least(0), required=True, help="number of scenes")
    p.add_argument("--seed", type=int, default=TRAIN_SEED, help=f"base seed (held-out: {HELDOUT_SEED})")
    p.add_argument("--size", type=size_arg, default=None, help="HxW, e.g. 1060x1900 (default 256x256)")
    p.add_argument("--start", type=int_at_least(0), default=0, help="first scene index (to resume or shard)")
    return p


@command
def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    default = SyntheticConfig()
    h, w = args.size or (default.height, default.width)
    t0 = time.perf_counter()
    for i in range(args.start, args.start + args.num):
        ldrs, evs, gt = generate_scene(scene_seed(args.seed, i), h, w)
        write_ntire(args.out, f"syn{args.seed}_{i:05d}", ldrs, evs, gt=gt)
    print(f"wrote {args.num} scenes {h}x{w} to {args.out} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
