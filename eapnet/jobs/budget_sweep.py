"""Accuracy against MAcc budgets: the main job (``compress/qat.py``) for several budgets and methods, tabulated.

The command line is :mod:`eapnet.jobs.sweep` (``eapnet-sweep``).

    from eapnet.jobs.budget_sweep import run_sweep
    from eapnet.compress.pipeline import CompressConfig
    cfg = CompressConfig.load(target_maccs=100e9)
    cfgs = {(100e9, "search"): cfg, (100e9, "uniform"): dataclasses.replace(cfg, method="uniform")}
    md, failed = run_sweep(Path("runs/sweep"), cfgs)

Each budget is one run of the main job (:func:`eapnet.jobs.main_job.compress_and_ship`, in
``<out>/<budget>G/``, with its own report, phone artifacts and parity check), then
:func:`eapnet.export.latency.bench` times its eager model and ``.pte`` files at the export size
(``bench_runs``, 0 = skip). The baselines (``eapnet.compress.pipeline.METHODS``) run at the same budgets, fine-tuned and
quantized the same way (``<out>/<budget>G-uniform/``, ``<out>/<budget>G-blocks/``; float and int8 eager models,
no phone artifacts): ``uniform`` width scaling with every PDUB and ``blocks``, PDUBs dropped at full width (a
budget below one full-width PDUB is unreachable for it and recorded as such, in the run folder's
``unreachable.json``). A run folder that holds a ``report.json`` is finished and kept; an interrupted one starts
again. Tables can be rebuilt from the run folders alone (:func:`tabulate`). The sweep writes:

- ``sweep.md``: one row per budget and method: GMAccs, k params, PDUBs, PSNR-μ of the float model, the int8
  eager model, the int8 ``.pte`` and the W8A8 ``.mlpackage`` (real crops; held-out synthetic), latency of eager fp32,
  ``.pte`` fp32 and ``.pte`` int8, and file sizes; then every model row of every report;
- ``pareto.png``: PSNR-μ against GMAccs (log scale) of each method beside the shipped float model, and the
  paper's own points (its Tables 1, 2 and 6, NTIRE 2022 validation PSNR-μ, AHDR included) in a second panel:
  the two are different test sets, so they share the MAcc axis only;
- ``sweep.json`` and ``sweep.csv`` (the same rows).
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from eapnet.compress.pipeline import CompressConfig
from eapnet.compress.search import BudgetError
from eapnet.browser import BrowserMissing, screenshot
from eapnet.checkpoint import load_model
from eapnet.export import latency, native
from eapnet.export.canvas import load_scenes
from eapnet.export.parity import load_frame, save_frame
from eapnet.export.native_bench import bench_native
from eapnet.inference import SHIP_MAX_TILE, predict
from eapnet.jobs.report_page import checked, run_frames, run_page, shipped_int8, sweep_page
from eapnet.macs import parse_maccs
from eapnet.metrics import psnr_mu
from eapnet.jobs.main_job import compress_and_ship, report_markdown, score_fallback_programs
from eapnet.runs import (atomic_path, atomic_write_json, atomic_write_text, check_run_dir, file_sha256, lock_run_dir,
                         record_run)
from eapnet.stats import change_vs, interval_text
from eapnet.variants import AHDR_MACCS

METHOD_ORDER = {"search": 0, "uniform": 1, "blocks": 2}
"""Run and table order of the methods at one budget: the search first, then the baselines."""


def method_of(rep: dict) -> str:
    """The method (``eapnet.compress.pipeline.METHODS``) a report's model was chosen by."""
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
    q = shipped_int8(m, rep)
    row = {"budget_g": budget / 1e9, "method": method_of(rep), "gmaccs": flt["maccs"] / 1e9,
           "k_params": flt["params"] / 1e3, "pdubs": rep["pdub_count"]}
    teacher = (m.get("teacher (float)") or {}).get("scores") or {}
    for short, d in (("real", "real_crops"), ("heldout", "heldout_synthetic")):
        for col, model in (("float", flt), ("int8_eager", q)):
            scores = ((model or {}).get("scores") or {}).get(d)
            if scores:
                row[f"{short}_{col}"] = scores["psnr_mu"]
                delta = change_vs(scores, teacher.get(d))
                if delta:
                    row[f"{short}_{col}_vs_teacher"] = delta
    ex = rep.get("export") or {}
    arts = ex.get("artifacts") or {}
    for key, col in (("pte-int8", "pte_int8"), ("coreml-w8a8", "mlpackage_w8a8")):
        for short in ("real", "heldout"):
            a = arts.get(key)
            if a and short in a["psnr_mu"]:       # parity scenes: a subset, packed at the export size
                row[f"{short}_{col}"] = a["psnr_mu"][short]
                row[f"{short}_parity_float"] = a["float_psnr_mu"][short]
    for key, f in (rep.get("fallback") or {}).items():   # which layer groups the fallback kept float, per artifact
        row[f"float_groups_{key.replace('-', '_')}"] = ", ".join((f.get("search") or {}).get("float_groups") or [])
        if "ratio" in (f.get("latency") or {}):
            row[f"fallback_latency_{key.replace('-', '_')}"] = f["latency"]["ratio"]
    if ex:
        row["parity"] = "pass" if ex["passed"] else "FAIL: " + ", ".join(ex["failed"])
        margins = [a["gt_margin"] for a in ex["artifacts"].values()
                   if a.get("precision") in ("int8", "w8a8") and isinstance(a.get("gt_margin"), (int, float))]
        if margins:
            row["int8_gt_margin_min"] = min(margins)
        row.update({f"mb_{k.replace('-', '_')}": a["bytes"] / 1e6 for k, a in ex["artifacts"].items()})
    if bench_row:
        for rt in ("eager fp32", "pte fp32", "pte int8"):
            if "median_s" in bench_row[rt]:
                row[f"s_{rt.replace(' ', '_')}"] = bench_row[rt]["median_s"]
            if "peak_rss_mb" in bench_row[rt]:
                row[f"peak_mb_{rt.replace(' ', '_')}"] = bench_row[rt]["peak_rss_mb"]
        if "speedup_pte_int8" in bench_row:
            row["speedup_pte_int8"] = bench_row["speedup_pte_int8"]
    return row


def _csv_value(v):
    return interval_text(v, ("", "")) if isinstance(v, dict) else v


def summary_markdown(rows: list[dict], size: list[int] | None) -> str:
    at = f" at {size[1]}x{size[0]}" if size else ""
    head = ["budget G", "method", "GMAccs", "k params", "PDUBs", "PSNR-μ real crops: float / int8 eager",
            "PSNR-μ held-out: float / int8 eager", "parity scenes, real: float / .pte int8 / .mlpackage W8A8",
            "parity scenes, held-out: float / .pte int8 / .mlpackage W8A8",
            "vs teacher, held-out: float / int8 eager (dB, 95 % CI)", "vs teacher, real crops: float / int8 eager",
            "full-size frame, PSNR-μ vs teacher: float / .pte int8",
            f"s/frame{at}: eager / .pte fp32 / .pte int8", "eager / .pte int8",
            "peak MB: eager / .pte fp32 / .pte int8",
            "native runner, s/frame, whole / tiled: .pte fp32; .pte int8",
            "native runner, peak MB, whole / tiled: .pte fp32; .pte int8",
            "MB .pte fp32 / int8, .mlpackage fp16 / W8A8", "int8 artifacts: least GT budget to spare (dB)",
            "kept float by the fallback: .pte int8; .mlpackage W8A8", "parity"]
    L = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def f(r, k, spec=".2f"):
        return format(r[k], spec) if k in r else "–"

    for r in rows:
        psnr = [" / ".join(f(r, f"{d}_{c}") for c in ("float", "int8_eager")) for d in ("real", "heldout")]
        psnr += [" / ".join(f(r, f"{d}_{c}") for c in ("parity_float", "pte_int8", "mlpackage_w8a8"))
                 for d in ("real", "heldout")]
        psnr += [" / ".join(interval_text(r.get(f"{d}_{c}_vs_teacher")) for c in ("float", "int8_eager"))
                 for d in ("heldout", "real")]
        psnr.append(" / ".join(f(r, f"fullres_{c}_vs_teacher") for c in ("float", "pte_int8")))
        L.append("| " + " | ".join([
            f(r, "budget_g", "g"), r.get("method", "search"), f(r, "gmaccs"), f(r, "k_params"), str(r.get("pdubs", "–")), *psnr,
            " / ".join(f(r, f"s_{k}", ".2f") for k in ("eager_fp32", "pte_fp32", "pte_int8")),
            f(r, "speedup_pte_int8") + ("x" if "speedup_pte_int8" in r else ""),
            " / ".join(f(r, f"peak_mb_{k}", ".0f") for k in ("eager_fp32", "pte_fp32", "pte_int8")),
            "; ".join(" / ".join(format(r[k] / 1e3, ".2f") if k in r else "–"
                                 for k in (f"frame_ms_{p}_whole", f"frame_ms_{p}_tiled")) for p in ("fp32", "int8")),
            "; ".join(" / ".join(f(r, f"frame_mb_{p}_{w}", ".0f") for w in ("whole", "tiled")) for p in ("fp32", "int8")),
            " / ".join(f(r, k) for k in ("mb_pte_fp32", "mb_pte_int8", "mb_coreml_fp16", "mb_coreml_w8a8")),
            f(r, "int8_gt_margin_min"),
            "; ".join(r.get(f"float_groups_{k}") or "–" for k in ("pte_int8", "coreml_w8a8")),
            r.get("parity", "–")]) + " |")
    return "\n".join(L) + "\n"


def plot_pareto(rows: list[dict], path: Path, shipped: dict[str, dict] | None = None) -> Path:
    """``pareto.png``: left, PSNR-μ vs GMAccs of the sweep (each method's float model and the searched int8
    model, whole scenes) and the shipped float teacher on our sets; right, the paper's reported points and AHDR (NTIRE 2022 validation set).
    The artifacts' PSNR-μ (a subset of scenes) is in the table, not the plot."""
    fig = Figure(figsize=(12, 4.8))   # no pyplot: no global figure manager or backend state
    ax, bx = fig.subplots(1, 2)
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
                  size, teacher: dict | None, teacher_run: str | None, commits: dict, frames: dict) -> str:
    """Write sweep.md, sweep.json, sweep.csv, pareto.png and report.html for the budgets done so far; returns
    the Markdown."""
    made = sorted({c for c in commits.values() if c}) or ["not recorded"]
    whose = (f"Teacher: `{teacher['file']}` (sha256 `{teacher['sha256'] or 'not recorded'}`); code: "
             + ", ".join(f"`{c}`" for c in made) + ".\n\n") if teacher else ""
    md = ("# Accuracy vs MAccs\n\n" + whose + summary_markdown(summary, size)
          + "\nPSNR-μ in dB. *float / int8 eager*: the compress/qat.py evaluation on whole scenes (4 real crops, "
            "held-out synthetic); *int8 eager* is the int8 program the shipped int8 .pte was lowered from: the "
            "mixed-precision fallback's (the groups it kept float are named) where the main job re-exported it, "
            "else the QAT model. *GT budget to spare*: of the int8 and W8A8 artifacts, the least ground-truth "
            "budget left in parity (the main job re-exports an artifact with less than 0.1 dB). *parity scenes*: the parity harness's subset (--parity-scenes per dataset), "
            "packed at the export size; the float model on those same scenes stands beside the .pte and "
            ".mlpackage, so compare within a group only. Latency: median seconds per frame on this CPU "
            "(eapnet/bench/bench_mobile.py; each run's bench/ folder). *native runner*: the searched model's .pte "
            "programs on the real full-size frame through eapnet/export/runner, the whole-frame program and the "
            "shipped tile programs over the same frame (median of --frame-runs after a warm-up; peak: the runner "
            "process's resident memory; each run's bench/frames.json). *full-size frame*: the real 1900x1060 frame "
            "has no ground truth; PSNR-μ of the model's output there (tiled as shipped) against the teacher's over "
            "the same tiles is agreement with the teacher, not accuracy. *vs teacher*: the mean PSNR-μ change against "
            "the teacher on the same whole scenes with its 95 % paired bootstrap interval over scenes "
            "(eapnet.stats); **bold**: the interval excludes 0, the change is resolved; otherwise it is within "
            "the scene-to-scene noise of this many scenes. Plot: pareto.png.\n\n## Every model of every run\n\n"
          + table_markdown(rows)
          + "".join(f"\n{name}: " + ("a parity failure (its report.md names the artifact).\n" if rc == 1 else
                                     "budget unreachable for this method.\n") for name, rc in failed.items()))
    atomic_write_json(out / "sweep.json", {"teacher": teacher, "commits": commits, "summary": summary, "rows": rows,
                                           "failed": failed})
    atomic_write_text(out / "sweep.md", md)
    buf = io.StringIO()
    cols = list(dict.fromkeys(k for r in summary for k in r))
    writer = csv.DictWriter(buf, fieldnames=cols)
    writer.writeheader()
    writer.writerows([{k: _csv_value(v) for k, v in r.items()} for r in summary])
    atomic_write_text(out / "sweep.csv", buf.getvalue())
    if summary:
        plot_pareto(summary, out / "pareto.png", shipped)
        try:      # the tables above are the results; the page is a view of them
            checked(sweep_page(out, summary, teacher, commits, frames))
        except (OSError, ValueError, RuntimeError) as e:
            print(f"WARNING {out / 'report.html'} not written: {type(e).__name__}: {e}", file=sys.stderr)
    return md


def _tabulate_run(run: Path, budget: int, state: dict) -> None:
    """Add one finished budget folder (``report.json``, optional ``bench.json``) to the sweep's tables."""
    rep = json.loads((run / "report.json").read_text())
    teacher = {"file": rep.get("teacher_file", rep.get("teacher")), "sha256": rep.get("teacher_sha256")}
    first = state["teacher"]
    if first is None:
        state["teacher"], state["teacher_run"] = teacher, run.name
    elif teacher["sha256"] != first["sha256"]:
        raise TeacherMismatch(
            f"{run / 'report.json'}: its teacher ({teacher['file']}, sha256 {teacher['sha256'] or 'not recorded'}) "
            f"is not the teacher of {state['teacher_run']} ({first['file']}, sha256 {first['sha256'] or 'not recorded'}); "
            "one sweep compares models of one teacher: move the run out or run it again")
    state["commits"][run.name] = rep.get("commit")
    bench_file = run / "bench" / "bench.json"     # eapnet/bench/bench_mobile.py --out <run>/bench
    bench_row = json.loads(bench_file.read_text())["rows"][0] if bench_file.is_file() else None
    frames_file = run / "bench" / FRAME_BENCH
    frames = json.loads(frames_file.read_text()) if frames_file.is_file() else None
    if rep.get("export") and not rep["export"]["passed"]:
        state["failed"][run.name] = 1     # a parity failure: the report says which artifact
    state["rows"] += rows_from_report(budget, rep)
    state["shipped"].update(_shipped_points(rep))
    state["summary"].append({"run": run.name} | summary_row(budget, rep, bench_row) | _frame_columns(frames)
                            | _agreement_columns(run, state))
    if rep.get("export"):
        state["size"] = rep["export"]["size"]


FRAME_BENCH = "frames.json"
"""In a searched run's ``bench/``: whole-frame and tiled latency and peak memory of its ``.pte`` programs through the
native runner on the full-size frame (:func:`frame_bench`)."""


def int8_program(run: Path, rep: dict) -> Path:
    """The int8 program the run's shipped int8 ``.pte`` was lowered from: the fallback's (some groups float) where
    the main job re-exported it, else the QAT model ``int8.pt2``."""
    fb = ((rep.get("fallback") or {}).get("pte-int8") or {}).get("program")
    return run / fb if fb else run / rep["files"]["int8"]     # the main job saves it in the run folder


def bench_programs(run: Path, rep: dict) -> Path:
    """``<run>/bench/programs``, holding a copy of each shipped ``.pte`` and its sidecar: the folder every bench of
    the run exports its programs into (reusing the copies), so that no bench writes into ``export/``."""
    folder = run / "bench" / "programs"
    folder.mkdir(parents=True, exist_ok=True)
    for a in (rep.get("export") or {}).get("artifacts", {}).values():
        f = run / a["file"]
        if f.suffix == ".pte" and not (folder / f.name).is_file():
            for part in (f.with_suffix(".json"), f):     # the program last: its presence marks a whole copy
                with atomic_path(folder / part.name) as tmp:
                    shutil.copy2(part, tmp)
    return folder


def frame_bench(run: Path, rep: dict, *, repeat: int, threads: int, log=print) -> dict:
    """Latency and peak memory of the run's fp32 and int8 ``.pte`` on its full frame (``rep["resolution"]``)
    through the native runner (:func:`eapnet.export.native_bench.bench_native`): the whole-frame program and the
    shipped tile programs (:data:`eapnet.inference.SHIP_MAX_TILE`) tiled over the same frame. The whole-frame
    programs are exported into :func:`bench_programs` (the shipped tile programs are reused there). Returns
    ``{"repeat", "threads", "rows"}``."""
    folder = bench_programs(run, rep)
    rows = bench_native(str(run / rep["files"]["compressed"]), [tuple(rep["resolution"])], ios=("float",),
                        max_tiles=(SHIP_MAX_TILE,), repeat=repeat, threads=threads, artifacts=folder,
                        int8=str(int8_program(run, rep)), log=log)
    return {"repeat": repeat, "threads": threads, "rows": rows}


def _frame_columns(frames: dict | None) -> dict:
    """Summary-row columns of a :func:`frame_bench` result: ``frame_ms_<precision>_<whole|tiled>`` and
    ``frame_mb_<precision>_<whole|tiled>`` (median ms per frame, peak MB), and the tile of the tiled ones."""
    out = {}
    for r in (frames or {}).get("rows", []):
        p = r["precision"]
        if "median_ms" in r.get("whole", {}) and "scaled_from" not in r["whole"]:
            out[f"frame_ms_{p}_whole"] = r["whole"]["median_ms"]
            out[f"frame_mb_{p}_whole"] = r["whole"]["peak_rss_mb"]
        if r.get("tiled"):
            t = r["tiled"][0]
            out[f"frame_ms_{p}_tiled"] = t["median_ms"]
            out[f"frame_mb_{p}_tiled"] = t["peak_rss_mb"]
            out["frame_tile"] = t["tile"]
    return out


def teacher_frame(out: Path, teacher: dict, frame: dict) -> np.ndarray | None:
    """The teacher's output on the full-size frame of a run's kept ``frame`` (:func:`run_frames`), over the same
    tiles, cached in ``out/frames/`` (computed once per sweep); None, with a line on
    stderr, where the teacher file is gone or is not the one the reports name (by sha256)."""
    tile, overlap, scene = tuple(frame["tile"]), frame["overlap"], f"{frame['dataset']}-{frame['id']}"
    sha = teacher.get("sha256") or ""
    cache = out / "frames" / f"teacher-{sha[:12]}-{tile[0]}x{tile[1]}-o{overlap}.{scene}.npy"
    if cache.is_file():
        return load_frame(cache)
    path = Path(teacher.get("file") or "")
    if not path.is_file() or file_sha256(path) != sha:
        print(f"{path}: not the teacher the reports name (sha256 {sha or 'not recorded'}); no full-size frame "
              "agreement", file=sys.stderr)
        return None
    sc = next((s for s in load_scenes([frame["dataset"]], None)[0] if s.id == frame["id"]), None)
    if sc is None:
        print(f"the {scene} frame is not on this machine; no full-size frame agreement", file=sys.stderr)
        return None
    hdr = predict(load_model(path).eval(), sc.ldrs, sc.evs, tile=tile, overlap=overlap)
    save_frame(cache, hdr)
    return load_frame(cache)    # as the runs' frames are kept: float16


AGREEMENT = "fullres_agreement.json"
"""In a searched run's folder: :func:`_agreement_columns` once computed (the kept frames it came from are large
and stay in runs/; this small record travels with the run's reports)."""


def _agreement_columns(run: Path, state: dict) -> dict:
    """``fullres_float_vs_teacher`` and ``fullres_pte_int8_vs_teacher``: PSNR-μ (dB) of the run's float model and
    int8 ``.pte`` on the real full-size frame against the teacher's output there (no ground truth: agreement).
    Read from the run's :data:`AGREEMENT` record where it is of this teacher, else computed from the kept frames
    and recorded. Also files the run's kept frames (or its pictures' record) for the page."""
    try:
        return _agreement(run, state)
    except (OSError, ValueError, RuntimeError) as e:   # the row stands without it; --retabulate tries again
        print(f"WARNING {run.name}: no full-size frame agreement ({type(e).__name__}: {e})", file=sys.stderr)
        return {}


def _agreement(run: Path, state: dict) -> dict:
    frames = run_frames(run)
    if frames:
        state["frames"][run.name] = frames
    record = run / AGREEMENT
    sha = (state["teacher"] or {}).get("sha256")
    if record.is_file():
        saved = json.loads(record.read_text())
        if saved.get("teacher_sha256") == sha:
            return saved["columns"]
    if not frames:
        return {}
    f = frames.get("pte-int8") or next(iter(frames.values()))
    ref = teacher_frame(run.parent, state["teacher"], f)
    if ref is None:
        return {}
    cols = {"fullres_float_vs_teacher": psnr_mu(ref, load_frame(f["float"]))}
    if "pte-int8" in frames:
        cols["fullres_pte_int8_vs_teacher"] = psnr_mu(ref, load_frame(frames["pte-int8"]["output"]))
    atomic_write_json(record, {"teacher_sha256": sha, "scene": f"{f['dataset']}-{f['id']}", "tile": f["tile"],
                               "overlap": f["overlap"], "columns": cols})
    return cols


UNREACHABLE = "unreachable.json"   # in a run folder: the method cannot meet that budget (and why)


class TeacherMismatch(ValueError):
    """Runs of one sweep folder compress different teachers (by the sha256 their reports record)."""


def _new_state() -> dict:
    return {"rows": [], "summary": [], "failed": {}, "shipped": {}, "size": None, "teacher": None,
            "teacher_run": None, "commits": {}, "frames": {}}


def finished_runs(out: Path) -> list[tuple[Path, int]]:
    """The budget folders of the sweep folder ``out`` that hold a ``report.json``, as ``(folder, target
    MAccs)`` in table order: budgets from the largest, the search before the baselines."""
    runs = []
    for d in out.iterdir():
        if (d / "report.json").is_file():
            rep = json.loads((d / "report.json").read_text())
            runs.append((-rep["target_maccs"], METHOD_ORDER[method_of(rep)], d, rep["target_maccs"]))
    return [(run, budget) for *_, run, budget in sorted(runs)]


def tabulate(out: Path, runs: list[tuple[Path, int]]) -> str:
    """Rebuild the tables and plot of the sweep folder ``out`` from its finished ``runs``
    (:func:`finished_runs`: their ``report.json`` and ``bench/bench.json``); runs nothing. Returns sweep.md."""
    state = _new_state()
    for run, budget in runs:
        _tabulate_run(run, budget, state)
    for f in sorted(out.glob(f"*/{UNREACHABLE}")):
        state["failed"][f.parent.name] = 2
    return _write_tables(out, **state)


def run_sweep(out: Path, cfgs: Mapping[tuple[int, str], CompressConfig], *, job: Callable[..., dict] | None = None,
              bench: Callable[..., list[dict]] | None = latency.bench, export_size: tuple[int, int] | None = None,
              parity_scenes: int = 4, bench_runs: int = 3, frame_runs: int = 3,
              progress: bool = True) -> tuple[str, dict[str, int]]:
    """Run the main job for every ``(budget, method) -> CompressConfig`` of ``cfgs``, in order, into
    ``out/<budget>G[-<method>]`` (finished runs are kept), and after each one rewrite the tables. ``job``: the
    main job (None = :func:`eapnet.jobs.main_job.compress_and_ship`); ``bench``: the latency bench
    (:func:`eapnet.export.latency.bench`; None = no latency columns). Only the
    ``search`` runs export and check phone artifacts (at ``export_size``, default the main job's tile programs for the config's size, with
    ``parity_scenes`` per dataset) and are timed (``bench_runs`` runs per figure; 0 or no ``bench``: none), and
    their ``.pte`` programs timed on the whole frame through the native runner (:func:`frame_bench`, ``frame_runs``
    runs per figure, 0 = none; skipped with a line where the runner cannot be built here).
    Returns sweep.md and the failed runs by folder name: 1 for a parity failure, 2 for a budget the method
    cannot reach."""
    job = job or compress_and_ship
    state = _new_state()
    for (budget, method), cfg in cfgs.items():
        run = out / run_name(budget, method)
        searched = method == "search"
        if not (run / "report.json").is_file():
            if run.exists():   # what an interrupted run left: it starts again
                shutil.rmtree(run)
            run.mkdir(parents=True)
            try:
                job(cfg, run, export_size=export_size, parity_scenes=parity_scenes, export=searched,
                    progress=progress)
            except BudgetError as e:
                print(f"{run.name}: {e}", file=sys.stderr)
                atomic_write_json(run / UNREACHABLE, {"budget": budget, "method": method, "error": str(e)})
                state["failed"][run.name] = 2
                _write_tables(out, **state)
                continue
        rep = json.loads((run / "report.json").read_text())
        try:
            if score_fallback_programs(run, rep):    # a run of a main job that did not score its fallback program
                atomic_write_json(run / "report.json", rep)
                atomic_write_text(run / "report.md", report_markdown(rep))
                checked(run_page(run))
            elif not (run / "report.html").is_file() and run_frames(run):   # a shipping run that wrote no page
                checked(run_page(run))
        except (OSError, ValueError, RuntimeError) as e:    # the run is kept as it is; --resume tries again
            print(f"{run.name}: its fallback program could not be scored or its page written ({type(e).__name__}: "
                  f"{e})", file=sys.stderr)
        bench_file = run / "bench" / "bench.json"
        if bench is not None and bench_runs and rep.get("export") and not bench_file.is_file():
            threads = os.cpu_count() or 1
            (bench_row,) = bench([run / "compressed.pt"], [tuple(rep["export"]["size"])], runs=bench_runs,
                                 threads=threads, artifacts=bench_programs(run, rep),
                                 int8=str(int8_program(run, rep)))
            atomic_write_json(bench_file, {"runs": bench_runs, "threads": threads, "rows": [bench_row]})
        frames_file = run / "bench" / FRAME_BENCH
        if frame_runs and rep.get("export") and not frames_file.is_file():
            why = native.missing_tools("host")
            if why:
                print(f"{run.name}: no native frame latency ({why})", file=sys.stderr)
            else:
                try:
                    atomic_write_json(frames_file, frame_bench(run, rep, repeat=frame_runs,
                                                               threads=os.cpu_count() or 1))
                except (native.RunnerError, OSError, ValueError, RuntimeError) as e:   # the run itself is kept
                    print(f"{run.name}: native frame latency failed ({type(e).__name__}: {e}); "
                          "--resume tries again", file=sys.stderr)
        _tabulate_run(run, budget, state)
        _write_tables(out, **state)    # after every run: nothing is lost
    return _write_tables(out, **state), state["failed"]


RECORD_SUFFIXES = (".json", ".md", ".csv", ".html", ".png", ".jpg")
"""What :func:`publish` copies: the records, tables and pictures of a sweep (kilobytes per run)."""
NOT_PUBLISHED = ("frames", "programs", "incomplete")
"""Folders :func:`publish` leaves behind: kept full-size frames and the teacher's (``frames/``, ``parity/frames/``),
the benches' program copies (``bench/programs/``) and what an interrupted run set aside; and every ``.mlpackage``."""


def _published(src: Path) -> list[Path]:
    """The files of the sweep folder ``src`` that :func:`publish` copies, relative to it: every record
    (:data:`RECORD_SUFFIXES`) outside :data:`NOT_PUBLISHED` and ``.mlpackage`` folders, and of each
    ``report_files/`` only the pictures its page shows and their records."""
    files, pages = [], {}
    for p in sorted(src.rglob("*")):
        rel = p.relative_to(src)
        if (not p.is_file() or p.suffix not in RECORD_SUFFIXES or rel.name.startswith(".")
                or any(part in NOT_PUBLISHED or part.endswith(".mlpackage") for part in rel.parts[:-1])):
            continue
        if p.parent.name == "report_files":
            page = p.parent.parent / "report.html"
            if page not in pages:
                pages[page] = page.read_text(encoding="utf-8") if page.is_file() else ""
            shown = pages[page]
            if p.suffix == ".json":     # a picture record: kept when the page shows its pictures
                try:
                    pics = json.loads(p.read_text())
                    keep = bool(pics) and all(f"report_files/{q['src']}" in shown for q in pics)
                except (ValueError, TypeError, KeyError):
                    keep = False
            else:
                keep = f"report_files/{p.name}" in shown
            if not keep:
                continue
        files.append(rel)
    return files


def publish(src: Path, dest: Path, *, overwrite: bool = False, tool: str = "eapnet-sweep", log=print) -> Path:
    """Copy the finished sweep folder ``src`` into ``dest`` (e.g. ``reports/sweep``) without its weights,
    programs and frames (:func:`_published`), rebuild its tables and page there from the copies alone
    (:func:`tabulate`: proof that the published folder stands on its own), and add ``report.png``, a
    screenshot of the page. The copy is made beside ``dest`` and swapped in whole.

    Refused (``ValueError``, one line): ``src`` not a sweep folder, a sweep still writing it, a run of its
    recorded budgets and methods not finished; ``dest`` as :func:`eapnet.runs.check_run_dir` refuses it (with
    ``overwrite``, only a folder this command wrote is replaced)."""
    src, dest = Path(src), Path(dest)
    try:
        args = json.loads((src / "run.json").read_text())["args"]
        names = [run_name(parse_maccs(b), m) for b in args["budgets"] for m in args["methods"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"--publish {src}: not a sweep folder of this tool ({type(e).__name__}: {e})") from None
    lock_run_dir(src, tool=tool, flag="--publish")   # refused while a sweep writes it
    missing = [n for n in names if not ((src / n / "report.json").is_file() or (src / n / UNREACHABLE).is_file())]
    if missing:
        raise ValueError(f"--publish {src}: {len(missing)} of {len(names)} runs not finished ({', '.join(missing)}); "
                         f"--resume {src} finishes them")
    check_run_dir(dest, tool=tool, overwrite=overwrite, inputs=[src])
    tmp = dest.parent / f".{dest.name}.publish-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        for rel in _published(src):
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, tmp / rel)
        tabulate(tmp, finished_runs(tmp))
        record_run(tmp, {"published": str(src), "to": str(dest)}, name="publish.json", tool=tool)
        try:
            screenshot(tmp / "report.html", tmp / "report.png")
        except BrowserMissing as e:
            log(f"no screenshot of the page: {e}")
        old = dest.parent / f".{dest.name}.old-{os.getpid()}"
        if dest.exists():
            dest.rename(old)
        try:
            tmp.rename(dest)
        except OSError:
            if old.exists():    # the published folder stays as it was
                old.rename(dest)
            raise
        if old.exists():
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    log(f"published {src} -> {dest} ({sum(1 for _ in dest.rglob('*') if _.is_file())} files)")
    return dest
