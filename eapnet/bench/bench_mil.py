"""Time of the MIL reference interpreter per canvas against eager PyTorch fp32 of the same model.

    python -m eapnet.bench.bench_mil                                        # standard, fp32 + fp16, 256x384
    python -m eapnet.bench.bench_mil --model lightweight --size 1060x1900 --precisions fp16 w8a8 --runs 2

Parity runs every ``.mlpackage`` through ``eapnet.export.mil_interp`` where no Core ML runtime exists
(everywhere but macOS), so its speed decides how long a proof takes. Both are timed in this process on the
same inputs and threads, median of ``--runs``; the ratio ``interpreter / eager`` is of figures measured in one
run. ``--out DIR`` writes ``bench.json``, ``bench.md`` and ``run.json``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from eapnet.cli import Parser, add_overwrite, command, int_at_least, out_dir, size_arg, threads_arg
from eapnet.runs import atomic_write_json, atomic_write_text, record_run
from eapnet.export.common import example_inputs, load_source
from eapnet.export.coreml_export import export_mlpackage
from eapnet.export.mil_interp import load_program


def get_args_parser() -> argparse.ArgumentParser:
    p = Parser(prog="eapnet-bench-mil", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="standard", help="shipped name or float .pt checkpoint")
    p.add_argument("--size", type=size_arg, default=(256, 384), metavar="HxW", help="canvas size")
    p.add_argument("--precisions", nargs="+", default=["fp32", "fp16"], choices=["fp32", "fp16", "int8w", "w8a8"])
    p.add_argument("--runs", type=int_at_least(1), default=3, help="timed runs per figure (median)")
    p.add_argument("--threads", type=threads_arg, default=None, help="torch threads (default: torch's)")
    p.add_argument("--out", default=None, help="folder for bench.json, bench.md and run.json")
    add_overwrite(p)
    return p


def _median_s(fn, runs: int) -> float:
    fn()   # warm-up: first-call allocations and lazy initialisation
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


@command
def main(argv=None) -> int:
    p = get_args_parser()
    args = p.parse_args(argv)
    out = out_dir(p, args, "bench-mil") if args.out else None
    if args.threads:
        torch.set_num_threads(args.threads)
    src = load_source(args.model)
    ldrs, evs = example_inputs(args.size, seed=1)
    with torch.no_grad():
        eager_s = _median_s(lambda: src.module(ldrs, evs), args.runs)
    rows = [{"runtime": "eager fp32 (PyTorch)", "median_s": eager_s, "ratio": 1.0}]
    with tempfile.TemporaryDirectory() as tmp:
        for precision in args.precisions:
            t = time.time()
            pkg = export_mlpackage(src, tmp, precision=precision, size=args.size)
            export_s = time.time() - t
            program = load_program(pkg)
            inputs = {"ldrs": ldrs.numpy(), "evs": evs.numpy()}
            s = _median_s(lambda: program.run(inputs), args.runs)
            rows.append({"runtime": f"MIL interpreter {precision}", "median_s": s, "ratio": s / eager_s,
                         "export_s": export_s})
            print(f"{precision}: {s:.2f} s per canvas = {s / eager_s:.2f}x eager fp32 ({eager_s:.2f} s)")
    h, w = args.size
    md = "\n".join([f"# MIL reference interpreter vs eager PyTorch, {src.variant}, {h}x{w}, "
                    f"{torch.get_num_threads()} threads, median of {args.runs}", "",
                    "| runtime | s per canvas | x eager fp32 |", "|---|---:|---:|",
                    *(f"| {r['runtime']} | {r['median_s']:.3f} | {r['ratio']:.2f} |" for r in rows)]) + "\n"
    print(md)
    if out is not None:
        record_run(out, vars(args))
        atomic_write_json(out / "bench.json", {"model": args.model, "size": [h, w], "runs": args.runs,
                                               "threads": torch.get_num_threads(), "rows": rows})
        atomic_write_text(out / "bench.md", md)
        print(f"wrote {Path(out) / 'bench.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
