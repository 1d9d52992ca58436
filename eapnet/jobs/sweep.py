"""Accuracy against MAcc budgets: run ``compress/qat.py`` for several budgets and tabulate the results.

    python compress/sweep.py --budgets 150G 120G 100G 80G          # -> runs/sweep-<time>/
    python compress/sweep.py --budgets 150G 100G 60G --methods search uniform blocks
    python compress/sweep.py --resume runs/sweep-<time>             # continue after an interruption
    python compress/sweep.py --publish runs/sweep-<time> --out reports/sweep --overwrite

Each budget is one run of the main job in ``<out>/<budget>G/`` (its own report, phone artifacts and parity
check), timed at the export size (``--bench-runs``, 0 = skip) and on the whole frame through the native runner,
whole and in the shipped tiles (``--frame-runs``). ``--methods`` adds the baselines at the same
budgets (``<out>/<budget>G-uniform/``, ``<out>/<budget>G-blocks/``). ``--resume`` continues a sweep folder with
its recorded arguments: finished runs are kept, an interrupted one starts again. The sweep writes ``sweep.md``,
``pareto.png``, ``sweep.json``, ``sweep.csv`` and ``report.html``; what they hold: :mod:`eapnet.jobs.budget_sweep`.
``--publish`` copies a finished sweep's records, tables and page, without weights, programs or frames, to
``--out`` and screenshots its page (``report.png``). Exit status 1
when a budget is unreachable for a method or an artifact fails parity.

Every compression flag of ``compress/qat.py`` (e.g. ``--steps 100 50``, ``--model lightweight``) applies to
every budget.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from eapnet.cli import Parser, add_overwrite, command, int_at_least, maccs_arg, out_dir, size_arg
from eapnet.jobs.budget_sweep import METHOD_ORDER, finished_runs, publish, run_sweep, tabulate
from eapnet.compress.pipeline import METHODS, add_config_args, config_from_args
from eapnet.runs import lock_run_dir, record_run


def get_args_parser() -> argparse.ArgumentParser:
    p = Parser(prog="eapnet-sweep", description=__doc__.split("\n\n")[0])
    p.add_argument("--budgets", type=maccs_arg, nargs="+", help="MAcc budgets, e.g. 150G 100G 80G")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=["search"],
                   help="how each budget is met: the search and/or the baselines uniform and blocks "
                        "(default: search)")
    add_config_args(p, target=False, skip=("method",))
    p.add_argument("--export-size", type=size_arg, default=None,
                   help="HxW of the phone artifacts (default: the main job's tile programs for --size frames, "
                        "568x680 for 1060x1900)")
    p.add_argument("--parity-scenes", type=int_at_least(1), default=4, help="scenes per dataset in each parity check")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--retabulate", default=None, metavar="SWEEP_DIR",
                   help="rebuild the tables and plot of a finished sweep folder from its runs (report.json, "
                        "bench/bench.json); runs nothing")
    p.add_argument("--resume", default=None, metavar="SWEEP_DIR",
                   help="continue an interrupted sweep with its recorded arguments (finished runs are kept)")
    p.add_argument("--publish", default=None, metavar="SWEEP_DIR",
                   help="copy a finished sweep folder's records, tables and page (no weights, programs or frames) "
                        "to --out, rebuild them there and screenshot the page; runs nothing")
    p.add_argument("--out", default=None, help="output folder (default runs/sweep-<time>; with --publish required)")
    add_overwrite(p)
    p.add_argument("--bench-runs", type=int_at_least(0), default=3,
                   help="timed runs per latency figure (median); 0 = no latency columns")
    p.add_argument("--frame-runs", type=int_at_least(0), default=3,
                   help="timed runs per figure of each searched model's .pte programs on the whole frame, whole "
                        "and tiled, through the native runner (median); 0 = none")
    return p


@command
def main(argv=None) -> int:
    p = get_args_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)

    if args.retabulate:
        out = Path(args.retabulate)
        runs = finished_runs(out)
        if not runs:
            p.error(f"--retabulate {out}: no budget folders with a report.json")
        print(tabulate(out, runs))
        return 0
    if args.publish:
        if not args.out:
            p.error("--publish needs --out, the folder to publish to (e.g. reports/sweep)")
        try:
            publish(Path(args.publish), Path(args.out), overwrite=args.overwrite, tool=p.prog)
        except ValueError as e:    # OutputExistsError included: one line naming the folder
            p.error(str(e))
        return 0
    resuming = args.resume is not None
    if resuming:
        out = Path(args.resume)
        try:
            recorded = json.loads((out / "run.json").read_text())["args"]["sweep_argv"]
        except (OSError, ValueError, KeyError) as e:
            p.error(f"--resume {out}: not a sweep folder of this tool ({type(e).__name__}: {e})")
        args = p.parse_args(recorded)
        lock_run_dir(out, tool=p.prog, flag="--resume")
        record_run(out, {"resumed": str(out)}, name=f"run-resume-{time.strftime('%Y%m%d-%H%M%S')}.json")
    elif not args.budgets:
        p.error("--budgets is required (or --retabulate or --resume a sweep folder)")

    methods = sorted(set(args.methods), key=METHOD_ORDER.get)
    cfgs = {}
    for b in sorted(set(args.budgets), reverse=True):
        base = config_from_args(p, args, target_maccs=b)
        for m in methods:
            cfgs[b, m] = dataclasses.replace(base, method=m, compare_uniform=base.compare_uniform and m == "search")
    if not resuming:
        out = out_dir(p, args, "sweep")
        record_run(out, {"budgets": args.budgets, "methods": methods, "sweep_argv": argv,
                         "compress": next(iter(cfgs.values())).to_dict(), "export_size": args.export_size,
                         "parity_scenes": args.parity_scenes, "bench_runs": args.bench_runs,
                         "frame_runs": args.frame_runs})
    md, failed = run_sweep(out, cfgs, export_size=args.export_size,
                           parity_scenes=args.parity_scenes, bench_runs=args.bench_runs, frame_runs=args.frame_runs,
                           progress=not args.quiet)
    print(md)
    print(f"wrote {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
