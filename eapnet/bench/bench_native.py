"""Latency and peak memory of the native runner per frame: whole-frame programs against tile programs.

    python -m eapnet.bench.bench_native --model runs/c/compressed.pt --int8 runs/c/int8.pt2 --out reports/bench-native
    eapnet-bench-native --frames 1060x1900 --precisions int8 --max-tiles 512 1024

The measurement is :mod:`eapnet.export.native_bench` (the C++ runner of ``eapnet/export/runner``, built for this
machine by ``scripts/build_runner.sh``); its docstring says what each figure is. ``--out DIR`` writes
``bench.json``, ``bench.md`` and ``run.json``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from eapnet.cli import Parser, add_overwrite, command, int_at_least, out_dir, size_arg, threads_arg
from eapnet.inference import TILE_OVERLAP
from eapnet.runs import atomic_write_json, atomic_write_text, record_run
from eapnet.export.common import IO
from eapnet.export.native_bench import bench_native, report_markdown
from eapnet.export.native_check import host_cpu


def get_args_parser() -> argparse.ArgumentParser:
    p = Parser(prog="eapnet-bench-native", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="standard", help="shipped name or float .pt checkpoint")
    p.add_argument("--int8", default=None, help="its int8 .pt2 (compress/qat.py); default PTQ of --model")
    p.add_argument("--frames", type=size_arg, nargs="+", default=[(1060, 1900), (3024, 4032)], help="HxW")
    p.add_argument("--precisions", nargs="+", choices=("fp32", "int8"), default=["fp32", "int8"])
    p.add_argument("--io", nargs="+", choices=IO, default=list(IO),
                   help="program input/output conventions (float: float32 frames in [0, 1]; app: uint8 frames)")
    p.add_argument("--max-tiles", type=int_at_least(64), nargs="+", default=[1024], metavar="N",
                   help="largest tile side of each tile plan (the tile is evened out over the frame)")
    p.add_argument("--overlap", type=int_at_least(0), default=TILE_OVERLAP, help="pixels shared by neighbouring tiles")
    p.add_argument("--repeat", type=int_at_least(1), default=3, help="timed runs per figure (median)")
    p.add_argument("--threads", type=threads_arg, default=None, help="XNNPACK threads (default: one per core)")
    p.add_argument("--artifacts", default="runs/bench-artifacts", help="folder of exported .pte files (reused)")
    p.add_argument("--out", default=None, help="folder for bench.json, bench.md and run.json")
    add_overwrite(p)
    return p


@command
def main(argv=None) -> int:
    p = get_args_parser()
    args = p.parse_args(argv)
    if any(not args.overlap < t // 2 for t in args.max_tiles):
        p.error(f"--overlap {args.overlap}: must be below half of every --max-tiles entry")
    out = out_dir(p, args, "bench") if args.out else None   # before the timing: a bad --out fails now
    rows = bench_native(args.model, args.frames, precisions=args.precisions, ios=args.io, max_tiles=args.max_tiles,
                        overlap=args.overlap, repeat=args.repeat, threads=args.threads,
                        artifacts=Path(args.artifacts), int8=args.int8)
    md = report_markdown(rows, Path(args.model).stem, args.repeat, args.threads, host_cpu())
    print(md)
    if out is not None:
        record_run(out, vars(args))
        atomic_write_json(out / "bench.json", {"machine": host_cpu(), "rows": rows})
        atomic_write_text(out / "bench.md", md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
