"""Latency and peak memory of eager PyTorch fp32 vs ExecuTorch ``.pte`` fp32 vs ``.pte`` int8 on this CPU.

    python -m eapnet.bench.bench_mobile                                     # standard + lightweight, 1060x1900 and 512x512
    python -m eapnet.bench.bench_mobile --models runs/c/compressed.pt --sizes 1060x1900 --runs 3 --out reports/bench-mobile
    python -m eapnet.bench.bench_mobile --models runs/c/compressed.pt --int8 runs/c/int8.pt2 --sizes 1060x1900 --tile 512
    python -m eapnet.bench.bench_mobile --models runs/c/compressed.pt --int8 runs/c/int8.pt2 --sizes 1060x1900 --profile

The measurement is eapnet/export/latency.py (each runtime in its own process; peak resident memory from
``VmHWM``). Ratios (eager / pte) are of figures measured in one invocation; the machine is shared, so single
numbers are noisy. The fp32 / int8 ``.pte`` ratio is measured once more with both programs in one process,
run in turns, so that load drifts hit both alike. ``--out DIR`` writes ``bench.json``, ``bench.md`` and ``run.json``.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from eapnet.export.latency import RUNTIMES, bench, report_markdown, save_report

from eapnet.cli import Parser, add_overwrite, command, int_at_least, out_dir, size_arg, threads_arg


def get_args_parser() -> argparse.ArgumentParser:
    p = Parser(prog="eapnet-bench-mobile", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["standard", "lightweight"],
                   help="shipped names or float .pt checkpoints")
    p.add_argument("--int8", default=None, help="an int8 .pt2 (compress/qat.py) for the single --models entry")
    p.add_argument("--sizes", type=size_arg, nargs="+", default=[(1060, 1900), (512, 512)], help="HxW")
    p.add_argument("--runs", type=int_at_least(1), default=5, help="timed runs per figure (median)")
    p.add_argument("--threads", type=threads_arg, default=os.cpu_count() or 1)
    p.add_argument("--tile", type=int_at_least(16), default=None, metavar="N",
                   help="also run the .pte files exported at NxN tiled over each larger size (multiple of 8)")
    p.add_argument("--profile", action="store_true",
                   help="also the per-operator profile of each .pte (ExecuTorch ETDump; eapnet/export/pte_profile.py)")
    p.add_argument("--artifacts", default="runs/bench-artifacts", help="folder of exported .pte files (reused)")
    p.add_argument("--out", default=None, help="folder for bench.json, bench.md and run.json")
    add_overwrite(p)
    return p


@command
def main(argv=None) -> int:
    p = get_args_parser()
    args = p.parse_args(argv)
    if args.int8 and len(args.models) != 1:
        p.error("--int8 belongs to one float model: give exactly one --models entry")
    if args.tile is not None and args.tile % 8:
        p.error(f"--tile {args.tile}: must be a multiple of 8 (EAPNet's padding multiple)")
    out = out_dir(p, args, "bench") if args.out else None   # before the timing: a bad --out fails now
    rows = bench(args.models, args.sizes, runs=args.runs, threads=args.threads, artifacts=Path(args.artifacts),
                 int8=args.int8, tile=args.tile, profile=args.profile)
    md = report_markdown(rows, args.runs, args.threads)
    print(md)
    failed = any("error" in v for r in rows for k, v in r.items() if k.startswith((*RUNTIMES, "profile")) and isinstance(v, dict))
    if out is not None:
        save_report(out, vars(args), rows, md, args.runs, args.threads)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
