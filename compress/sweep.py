"""Accuracy against MAcc budgets: run ``compress/qat.py`` for several budgets and tabulate the results.

    python compress/sweep.py --budgets 150G 120G 100G 80G          # -> runs/sweep-<time>/
    python compress/sweep.py --budgets 150G 100G 60G --methods search uniform blocks
    python compress/sweep.py --resume runs/sweep-<time>             # continue after an interruption

Each budget is one run of the main job (:func:`mobile_export.pipeline.compress_and_ship`, in
``<out>/<budget>G/``, with its own report, phone artifacts and parity check), then
:func:`mobile_export.latency.bench` times its eager model and ``.pte`` files at the export size
(``--bench-runs``, 0 = skip). ``--methods`` adds the baselines at the same budgets, fine-tuned and quantized the
same way (``<out>/<budget>G-uniform/``, ``<out>/<budget>G-blocks/``; float and int8 eager models, no phone
artifacts): ``uniform`` width scaling with every PDUB and ``blocks``, PDUBs dropped at full width (a budget
below one full-width PDUB is unreachable for it and recorded as such). ``--resume`` continues a sweep folder
with its recorded arguments: finished runs are kept, an interrupted one starts again. The sweep writes:

- ``sweep.md``: one row per budget and method: GMAccs, k params, PDUBs, PSNR-μ of the float model, the int8
  eager model, the int8 ``.pte`` and the W8A8 ``.mlpackage`` (real crops; held-out synthetic), latency of eager fp32,
  ``.pte`` fp32 and ``.pte`` int8, and file sizes; then every model row of every report;
- ``pareto.png``: PSNR-μ against GMAccs (log scale) of each method beside the shipped float model, and the
  paper's own points (its Tables 1, 2 and 6, NTIRE 2022 validation PSNR-μ, AHDR included) in a second panel:
  the two are different test sets, so they share the MAcc axis only;
- ``sweep.json`` and ``sweep.csv`` (the same rows).

Every compression flag of ``compress/qat.py`` (e.g. ``--steps 100 50``, ``--model lightweight``) applies to
every budget.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import os
import shutil
import sys
import time
from pathlib import Path

from eapnet.cli import Parser, command


def build_parser() -> argparse.ArgumentParser:
    from compress.pipeline import METHODS, add_config_args
    from eapnet.cli import add_overwrite, int_at_least, maccs_arg, size_arg

    p = Parser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budgets", type=maccs_arg, nargs="+", help="MAcc budgets, e.g. 150G 100G 80G")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=["search"],
                   help="how each budget is met: the search and/or the baselines uniform and blocks "
                        "(default: search)")
    add_config_args(p, target=False, skip=("method",))
    p.add_argument("--export-size", type=size_arg, default=None, help="HxW of the phone artifacts (default: --size)")
    p.add_argument("--parity-scenes", type=int_at_least(1), default=4, help="scenes per dataset in each parity check")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--retabulate", default=None, metavar="SWEEP_DIR",
                   help="rebuild the tables and plot of a finished sweep folder from its runs (report.json, "
                        "bench/bench.json); runs nothing")
    p.add_argument("--resume", default=None, metavar="SWEEP_DIR",
                   help="continue an interrupted sweep with its recorded arguments (finished runs are kept)")
    p.add_argument("--out", default=None, help="output folder (default runs/sweep-<time>)")
    add_overwrite(p)
    p.add_argument("--bench-runs", type=int_at_least(0), default=3,
                   help="timed runs per latency figure (median); 0 = no latency columns")
    return p


def method_of(rep: dict) -> str:
    """The method (``compress.pipeline.METHODS``) a report's model was chosen by."""
    return (rep.get("search") or {}).get("method", "search")


def run_name(budget: int, method: str) -> str:
    """A budget's run folder in the sweep: ``100G`` (search), ``100G-uniform``, ``100G-blocks``."""
    return f"{budget / 1e9:g}G" + ("" if method == "search" else f"-{method}")


def rows_from_report(budget: int, rep: dict) -> list[dict]:
    """One table row per model of a ``compress/qat.py`` report."""
    rows = []
    for name, m in rep["models"].items():
        row = {"budget_g": budget / 1e9, "method": method_of(rep), "model": name, "gmaccs": m["maccs"] / 1e9,
               "k_params": m["params"] / 1e3, "pdubs": rep["pdub_count"]}
        for d, s in (m.get("scores") or {}).items():
            if s:
                row[f"{d}_psnr_mu"] = s["psnr_mu"]
                row[f"{d}_psnr_l"] = s["psnr_l"]
        rows.append(row)
    return rows


def table_markdown(rows: list[dict]) -> str:
    cols = list(dict.fromkeys(k for r in rows for k in r))
    fmt = {"budget_g": ".0f", "gmaccs": ".2f", "k_params": ".2f"}
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c)
            cells.append("–" if v is None else (format(v, fmt.get(c, ".2f")) if isinstance(v, float) else str(v)))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def summary_row(budget: int, rep: dict, bench_row: dict | None) -> dict:
    """The budget's one-line summary (see the module docstring); missing parts are absent keys."""
    m = rep["models"]
    flt = m.get("compressed (float)") or m["teacher (float)"]
    q = next((v for k, v in m.items() if k.startswith("compressed (int8")), None)
    row = {"budget_g": budget / 1e9, "method": method_of(rep), "gmaccs": flt["maccs"] / 1e9,
           "k_params": flt["params"] / 1e3, "pdubs": rep["pdub_count"]}
    for short, d in (("real", "real_crops"), ("heldout", "heldout_synthetic")):
        if d in (flt.get("scores") or {}):
            row[f"{short}_float"] = flt["scores"][d]["psnr_mu"]
        if q and d in (q.get("scores") or {}):
            row[f"{short}_int8_eager"] = q["scores"][d]["psnr_mu"]
    ex = rep.get("export") or {}
    arts = ex.get("artifacts") or {}
    for key, col in (("pte-int8", "pte_int8"), ("coreml-w8a8", "mlpackage_w8a8")):
        for short in ("real", "heldout"):
            a = arts.get(key)
            if a and short in a["psnr_mu"]:       # parity scenes: a subset, packed at the export size
                row[f"{short}_{col}"] = a["psnr_mu"][short]
                row[f"{short}_parity_float"] = a["float_psnr_mu"][short]
    if ex:
        row["parity"] = "pass" if ex["passed"] else "FAIL: " + ", ".join(ex["failed"])
        row.update({f"mb_{k.replace('-', '_')}": a["bytes"] / 1e6 for k, a in ex["artifacts"].items()})
    if bench_row:
        for rt in ("eager fp32", "pte fp32", "pte int8"):
            if "median_s" in bench_row[rt]:
                row[f"s_{rt.replace(' ', '_')}"] = bench_row[rt]["median_s"]
        if "speedup_pte_int8" in bench_row:
            row["speedup_pte_int8"] = bench_row["speedup_pte_int8"]
    return row


def summary_markdown(rows: list[dict], size: list[int] | None) -> str:
    at = f" at {size[1]}x{size[0]}" if size else ""
    head = ["budget G", "method", "GMAccs", "k params", "PDUBs", "PSNR-μ real crops: float / int8 eager",
            "PSNR-μ held-out: float / int8 eager", "parity scenes, real: float / .pte int8 / .mlpackage W8A8",
            "parity scenes, held-out: float / .pte int8 / .mlpackage W8A8",
            f"s/frame{at}: eager / .pte fp32 / .pte int8", "eager / .pte int8",
            "MB .pte fp32 / int8, .mlpackage fp16 / W8A8", "parity"]
    L = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def f(r, k, spec=".2f"):
        return format(r[k], spec) if k in r else "–"

    for r in rows:
        psnr = [" / ".join(f(r, f"{d}_{c}") for c in ("float", "int8_eager")) for d in ("real", "heldout")]
        psnr += [" / ".join(f(r, f"{d}_{c}") for c in ("parity_float", "pte_int8", "mlpackage_w8a8"))
                 for d in ("real", "heldout")]
        L.append("| " + " | ".join([
            f(r, "budget_g", "g"), r.get("method", "search"), f(r, "gmaccs"), f(r, "k_params"), str(r.get("pdubs", "–")), *psnr,
            " / ".join(f(r, f"s_{k}", ".2f") for k in ("eager_fp32", "pte_fp32", "pte_int8")),
            f(r, "speedup_pte_int8") + ("x" if "speedup_pte_int8" in r else ""),
            " / ".join(f(r, k) for k in ("mb_pte_fp32", "mb_pte_int8", "mb_coreml_fp16", "mb_coreml_w8a8")),
            r.get("parity", "–")]) + " |")
    return "\n".join(L) + "\n"


def plot_pareto(rows: list[dict], path: Path, shipped: dict[str, dict] | None = None) -> Path:
    """``pareto.png``: left, PSNR-μ vs GMAccs of the sweep (each method's float model and the searched int8
    model, whole scenes) and the shipped float teacher on our sets; right, the paper's reported points and AHDR (NTIRE 2022 validation set).
    The artifacts' PSNR-μ (a subset of scenes) is in the table, not the plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from eapnet.runs import atomic_path
    from eapnet.variants import AHDR_MACCS

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.8))
    curves = [("search", "float", "C0", "searched, float"), ("search", "int8_eager", "C1", "searched, int8"),
              ("uniform", "float", "C2", "uniform width scaling, float"),
              ("blocks", "float", "C3", "PDUBs dropped, float")]
    for d, marker in (("real", "o"), ("heldout", "s")):
        for method, c, color, label in curves:
            pts = sorted((r["gmaccs"], r[f"{d}_{c}"]) for r in rows
                         if f"{d}_{c}" in r and r.get("method", "search") == method)
            if pts:
                ax.plot(*zip(*pts), marker=marker, color=color, ls="-" if d == "real" else "--",
                        label=f"{label}, {'real crops' if d == 'real' else 'held-out synthetic'}")
        for name, s in (shipped or {}).items():
            if d in s:
                ax.scatter([s["gmaccs"]], [s[d]], marker="*", s=120, color="k" if d == "real" else "grey",
                           zorder=3)
                ax.annotate(f"{name} (float)", (s["gmaccs"], s[d]), textcoords="offset points", xytext=(4, 4),
                            fontsize=7)
    ax.set(xscale="log", xlabel="GMAccs at 1900x1060 (NTIRE 2022 count)", ylabel="PSNR-μ (dB)",
           title="This sweep (our test sets)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    paper = [("Table 1 exp. 1-8", [(152.11, 36.48), (137.66, 36.70), (121.03, 36.87), (146.28, 36.79),
                                   (121.03, 36.79), (146.28, 36.92), (126.43, 36.89), (198.38, 37.02)], "C4"),
             ("Table 2 (2-5 PDUBs)", [(128.25, 36.77), (146.28, 36.92), (164.31, 36.95), (182.34, 36.97)], "C5")]
    for label, pts, color in paper:
        bx.scatter(*zip(*pts), color=color, label=label)
    for name, g, v in (("standard", 198.38, 37.02), ("lightweight", 146.28, 36.92),
                       ("AHDR", AHDR_MACCS / 1e9, 36.86)):
        bx.scatter([g], [v], marker="*", s=140, color="k")
        bx.annotate(name, (g, v), textcoords="offset points", xytext=(4, 4), fontsize=8)
    for r in rows:
        if r.get("method", "search") == "search":
            bx.axvline(r["gmaccs"], color="C1", alpha=0.3, lw=1)
    bx.set(xscale="log", xlabel="GMAccs at 1900x1060", ylabel="PSNR-μ (dB), NTIRE 2022 validation",
           title="The paper's reported points (vertical lines: this sweep's budgets)")
    bx.legend(fontsize=7)
    bx.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return path


def _shipped_points(rep: dict) -> dict[str, dict]:
    """The teacher's float scores of a report, keyed like the summary rows."""
    t = rep["models"]["teacher (float)"]
    pt = {"gmaccs": t["maccs"] / 1e9}
    for short, d in (("real", "real_crops"), ("heldout", "heldout_synthetic")):
        if d in (t.get("scores") or {}):
            pt[short] = t["scores"][d]["psnr_mu"]
    return {Path(str(rep["teacher"])).stem: pt}


def _write_tables(out: Path, *, summary: list[dict], rows: list[dict], failed: dict, shipped: dict,
                  size) -> str:
    """Write sweep.md, sweep.json, sweep.csv and pareto.png for the budgets done so far; returns the Markdown."""
    from eapnet.runs import atomic_write_json, atomic_write_text

    md = ("# Accuracy vs MAccs\n\n" + summary_markdown(summary, size)
          + "\nPSNR-μ in dB. *float / int8 eager*: the compress/qat.py evaluation on whole scenes (4 real crops, "
            "held-out synthetic). *parity scenes*: the parity harness's subset (--parity-scenes per dataset), "
            "packed at the export size; the float model on those same scenes stands beside the .pte and "
            ".mlpackage, so compare within a group only. Latency: median seconds per frame on this CPU "
            "(bench/bench_mobile.py; each run's bench/ folder). Plot: pareto.png.\n\n## Every model of every run\n\n"
          + table_markdown(rows)
          + "".join(f"\n{name}: " + ("a parity failure (its report.md names the artifact).\n" if rc == 1 else
                                     "budget unreachable for this method.\n") for name, rc in failed.items()))
    if summary:
        plot_pareto(summary, out / "pareto.png", shipped)
    atomic_write_json(out / "sweep.json", {"summary": summary, "rows": rows, "failed": failed})
    atomic_write_text(out / "sweep.md", md)
    buf = io.StringIO()
    cols = list(dict.fromkeys(k for r in summary for k in r))
    writer = csv.DictWriter(buf, fieldnames=cols)
    writer.writeheader()
    writer.writerows(summary)
    atomic_write_text(out / "sweep.csv", buf.getvalue())
    return md


def _tabulate_run(run: Path, budget: int, state: dict) -> None:
    """Add one finished budget folder (``report.json``, optional ``bench.json``) to the sweep's tables."""
    rep = json.loads((run / "report.json").read_text())
    bench_file = run / "bench" / "bench.json"     # bench/bench_mobile.py --out <run>/bench
    bench_row = json.loads(bench_file.read_text())["rows"][0] if bench_file.is_file() else None
    state["rows"] += rows_from_report(budget, rep)
    state["shipped"].update(_shipped_points(rep))
    state["summary"].append(summary_row(budget, rep, bench_row))
    if rep.get("export"):
        state["size"] = rep["export"]["size"]


@command
def main(argv=None) -> int:
    p = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    from eapnet.cli import out_dir
    from eapnet.runs import atomic_write_json, record_run

    state = {"rows": [], "summary": [], "failed": {}, "shipped": {}, "size": None}
    if args.retabulate:
        out = Path(args.retabulate)
        runs = []
        for d in out.iterdir():
            if (d / "report.json").is_file():
                rep = json.loads((d / "report.json").read_text())
                runs.append((-rep["target_maccs"], _METHOD_ORDER[method_of(rep)], d, rep["target_maccs"]))
        if not runs:
            p.error(f"--retabulate {out}: no budget folders with a report.json")
        for *_, run, budget in sorted(runs):
            _tabulate_run(run, budget, state)
        print(_write_tables(out, **state))
        return 0
    resuming = args.resume is not None
    if resuming:
        out = Path(args.resume)
        try:
            recorded = json.loads((out / "run.json").read_text())["args"]["sweep_argv"]
        except (OSError, ValueError, KeyError) as e:
            p.error(f"--resume {out}: not a sweep folder of this tool ({type(e).__name__}: {e})")
        args = p.parse_args(recorded)
        record_run(out, {"resumed": str(out)}, name=f"run-resume-{time.strftime('%Y%m%d-%H%M%S')}.json")
    elif not args.budgets:
        p.error("--budgets is required (or --retabulate or --resume a sweep folder)")
    from compress.pipeline import config_from_args
    from compress.search import BudgetError
    from mobile_export.pipeline import compress_and_ship

    methods = sorted(set(args.methods), key=_METHOD_ORDER.get)
    cfgs = {}
    for b in sorted(set(args.budgets), reverse=True):
        base = config_from_args(p, args, target_maccs=b)
        for m in methods:
            cfgs[b, m] = dataclasses.replace(base, method=m, compare_uniform=base.compare_uniform and m == "search")
    if not resuming:
        out = out_dir(p, args, "sweep")
        record_run(out, {"budgets": args.budgets, "methods": methods, "sweep_argv": argv,
                         "compress": next(iter(cfgs.values())).to_dict(), "export_size": args.export_size,
                         "parity_scenes": args.parity_scenes, "bench_runs": args.bench_runs})
    for (budget, method), cfg in cfgs.items():
        run = out / run_name(budget, method)
        searched = method == "search"
        if not (run / "report.json").is_file():
            if run.exists():   # what an interrupted run left: it starts again
                shutil.rmtree(run)
            run.mkdir(parents=True)
            try:
                rep = compress_and_ship(cfg, run, export_size=args.export_size, parity_scenes=args.parity_scenes,
                                        export=searched, progress=not args.quiet)
                if rep["export"] is not None and not rep["export"]["passed"]:
                    state["failed"][run.name] = 1     # a parity failure: the report says which artifact
            except BudgetError as e:
                print(f"{run.name}: {e}", file=sys.stderr)
                state["failed"][run.name] = 2
                continue
        rep = json.loads((run / "report.json").read_text())
        if rep.get("export") and not rep["export"]["passed"]:
            state["failed"][run.name] = 1
        bench_file = run / "bench" / "bench.json"
        if args.bench_runs and rep.get("export") and not bench_file.is_file():
            from mobile_export.latency import bench

            threads = os.cpu_count() or 1
            (bench_row,) = bench([run / "compressed.pt"], [tuple(rep["export"]["size"])], runs=args.bench_runs,
                                 threads=threads, artifacts=run / "export", int8=str(run / "int8.pt2"))
            atomic_write_json(bench_file, {"runs": args.bench_runs, "threads": threads, "rows": [bench_row]})
        _tabulate_run(run, budget, state)
        _write_tables(out, **state)    # after every run: nothing is lost
    md = _write_tables(out, **state)
    print(md)
    print(f"wrote {out}")
    return 1 if state["failed"] else 0


_METHOD_ORDER = {"search": 0, "uniform": 1, "blocks": 2}


if __name__ == "__main__":
    sys.exit(main())
