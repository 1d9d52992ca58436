"""Accuracy against MAcc budgets: run ``compress/qat.py`` for several budgets and tabulate the results.

    python compress/sweep.py --budgets 150G 120G 100G 80G          # -> runs/sweep-<time>/

Each budget is one full ``compress/qat.py`` run (in ``<out>/<budget>/``, with its own report); the sweep
writes ``sweep.json``, ``sweep.md`` and ``sweep.csv``: MAccs, params, PDUB count and PSNR-μ / PSNR-l of the
teacher, the compressed float model and its int8 form on every evaluation set. Arguments after ``--`` go
to every ``compress/qat.py`` run (e.g. ``-- --steps 100 50``).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build_parser() -> argparse.ArgumentParser:
    from eapnet.cli import maccs_arg

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budgets", type=maccs_arg, nargs="+", required=True, help="MAcc budgets, e.g. 150G 100G 80G")
    p.add_argument("--out", default=None, help="output folder (default runs/sweep-<time>)")
    p.add_argument("qat_args", nargs=argparse.REMAINDER, help="after --: arguments for every compress/qat.py run")
    return p


def rows_from_report(budget: int, rep: dict) -> list[dict]:
    """One table row per model of a ``compress/qat.py`` report."""
    rows = []
    for name, m in rep["models"].items():
        row = {"budget_g": budget / 1e9, "model": name, "gmaccs": m["maccs"] / 1e9, "k_params": m["params"] / 1e3,
               "pdubs": rep["pdub_count"]}
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


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from compress import qat
    from eapnet.runs import (
        atomic_write_json,
        atomic_write_text,
        make_run_dir,
        record_run,
    )

    extra = [a for a in args.qat_args if a != "--"]
    for flag in ("--target-maccs", "--out"):
        if any(a == flag or a.startswith(flag + "=") for a in extra):
            raise SystemExit(f"error: {flag} is set by the sweep itself; do not pass it after --")
    out = make_run_dir(args.out, "sweep")
    record_run(out, {"budgets": args.budgets, "qat_args": extra})
    rows, failed = [], {}
    for budget in sorted(set(args.budgets), reverse=True):
        run = out / f"{budget / 1e9:g}G"
        rc = qat.main(["--target-maccs", str(budget), "--out", str(run), *extra])
        if rc != 0:
            failed[budget / 1e9] = rc
            continue
        rows += rows_from_report(budget, json.loads((run / "report.json").read_text()))
    atomic_write_json(out / "sweep.json", {"rows": rows, "failed": failed})
    atomic_write_text(out / "sweep.md", "# Accuracy vs MAccs\n\n" + table_markdown(rows)
                      + "".join(f"\nBudget {b:g} G failed (exit {rc}).\n" for b, rc in failed.items()))
    buf = io.StringIO()
    cols = list(dict.fromkeys(k for r in rows for k in r))
    writer = csv.DictWriter(buf, fieldnames=cols)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "sweep.csv", buf.getvalue())
    print(table_markdown(rows))
    print(f"wrote {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
