"""Latency of int8-friendly alternatives to the int8 program's float islands (``eapnet/bench/knobs.py``).

    python -m eapnet.bench.bench_knobs                                   # shipped standard, 544x960, 2 threads
    python -m eapnet.bench.bench_knobs --runs 3 --threads 1 --out reports/bench-knobs

Exports each variant's fp32 and int8 ``.pte`` (reused from ``--artifacts``), times them round-robin in one
process and prints the table; ``--out DIR`` writes ``bench.json``, ``bench.md`` and ``run.json``. Every program
stays loaded for the round-robin: about 4 GB at the default 544x960, over 16 GB at 1064x1904.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from eapnet.bench.knobs import VARIANTS, markdown, probe
from eapnet.export.latency import save_report

from eapnet.cli import Parser, add_overwrite, command, int_at_least, out_dir, size_arg, threads_arg


def get_args_parser() -> argparse.ArgumentParser:
    p = Parser(prog="eapnet-bench-knobs", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="standard", help="shipped name or float .pt checkpoint")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--size", type=size_arg, default=(544, 960), help="HxW of the programs (default 544x960)")
    p.add_argument("--runs", type=int_at_least(1), default=3, help="timed runs per program (median)")
    p.add_argument("--threads", type=threads_arg, default=os.cpu_count() or 1)
    p.add_argument("--artifacts", default="runs/bench-knobs-artifacts", help="folder of exported .pte files (reused)")
    p.add_argument("--out", default=None, help="folder for bench.json, bench.md and run.json")
    add_overwrite(p)
    return p


@command
def main(argv=None) -> int:
    p = get_args_parser()
    args = p.parse_args(argv)
    if args.size[0] % 8 or args.size[1] % 8:
        p.error(f"--size {args.size[0]}x{args.size[1]}: both sides must be multiples of 8")
    out = out_dir(p, args, "bench") if args.out else None
    rows = probe(args.model, args.variants, args.size, runs=args.runs, threads=args.threads,
                 folder=Path(args.artifacts))
    md = markdown(rows, args.size, args.runs, args.threads)
    print(md)
    if out is not None:
        save_report(out, vars(args), rows, md, args.runs, args.threads)
    return 0 if all("error" not in r for r in rows if r["variant"] == "base") else 1


if __name__ == "__main__":
    sys.exit(main())
