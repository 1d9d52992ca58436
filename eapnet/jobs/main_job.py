"""The main job for one budget: compress (``eapnet.compress.pipeline``), export the phone artifacts and check
their parity (``eapnet.export.pipeline``), write the run's report. The command line is :mod:`eapnet.jobs.qat`
(``python compress/qat.py``, ``eapnet-compress``).

    from eapnet.compress.pipeline import CompressConfig
    from eapnet.jobs.main_job import compress_and_ship
    report = compress_and_ship(CompressConfig.load(target_maccs=100e9), "runs/c")
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from eapnet.compress.pipeline import compress
from eapnet.export.pipeline import ARTIFACTS, export_and_check
from eapnet.inference import TILE_OVERLAP, ship_tile
from eapnet.macs import format_maccs
from eapnet.memory import peak_rss_mb, reset_peak_rss
from eapnet.runs import atomic_write_json, atomic_write_text

__all__ = ["compress_and_ship", "report_markdown"]


def compress_and_ship(cfg, run_dir: str | os.PathLike, *, export_size: tuple[int, int] | None = None,
                      parity_scenes: int = 4, export: bool = True, artifacts: tuple[str, ...] = ARTIFACTS,
                      tile: int | None = None, tile_overlap: int = TILE_OVERLAP, runners: tuple[str, ...] = (),
                      command: str | None = None, progress: bool = True, log=print) -> dict:
    """The main job for one budget: :func:`eapnet.compress.pipeline.compress` (``cfg`` a ``CompressConfig``) into
    ``run_dir``, then :func:`eapnet.export.pipeline.export_and_check` of ``artifacts`` at ``export_size``
    unless ``export`` is False; writes ``report.json`` and ``report.md`` and returns the report. The default
    ``export_size`` is the tile program for ``cfg.size`` frames (:func:`eapnet.inference.ship_tile`: 568x680
    for 1060x1900), which parity also checks stitched over the full-size frame. Raises
    ``eapnet.compress.search.BudgetError`` for an unreachable budget before any slow step."""
    run_dir = Path(run_dir)
    t0 = time.time()
    before = set(run_dir.iterdir()) if run_dir.is_dir() else set()
    try:
        reset_peak_rss()
        result = compress(cfg, run_dir, log=log, progress=progress)
        report = {"command": command, **result.report, "export": None,
                  "peak_rss_mb": {"compress": round(peak_rss_mb())}}
        if export:
            report["export"], wall = export_and_check(run_dir, size=export_size or ship_tile(cfg.size),
                                                      parity_scenes=parity_scenes, which=artifacts,
                                                      tile=tile, tile_overlap=tile_overlap, runners=runners,
                                                      progress=progress, log=log)
            report["wall_s"].update(wall)
            report["peak_rss_mb"].update(
                export=max(a["export_peak_rss_mb"] for a in report["export"]["artifacts"].values()),
                parity=report["export"]["parity_peak_rss_mb"])
    except BaseException as e:
        _set_aside(run_dir, before, e)
        raise
    report["wall_s"]["total"] = time.time() - t0
    atomic_write_json(run_dir / "report.json", report)
    atomic_write_text(run_dir / "report.md", report_markdown(report))
    return report


def _set_aside(run_dir: Path, before: set[Path], error: BaseException) -> None:
    """After a failure, move what the run wrote (``compressed.pt``, ``int8.pt2``, ``export/``, ...) into
    ``run_dir/incomplete/`` beside ``ERROR.txt``, so no file under its final name looks like a finished
    result without its report."""
    made = [p for p in run_dir.iterdir() if p not in before and p.name != "incomplete"] if run_dir.is_dir() else []
    if not made:
        return
    aside = run_dir / "incomplete"
    aside.mkdir(exist_ok=True)
    for p in made:
        p.rename(aside / p.name)
    (aside / "ERROR.txt").write_text(f"{type(error).__name__}: {error}\nThis run did not finish; the files here "
                                     "are what it had written (no report.json).\n")


def report_markdown(rep: dict) -> str:
    """``report.md`` of a compression run (and of its phone artifacts, when ``rep["export"]`` is present)."""

    L = [f"# Compression to {format_maccs(rep['target_maccs'])} MAccs", ""]
    if rep.get("command"):
        L.append(f"Command: `{rep['command']}`  ")
    L.append(f"MAccs counted at {rep['resolution'][1]}x{rep['resolution'][0]} (NTIRE 2022 convention). "
             f"Device: {rep['device']}. Total wall time: {rep['wall_s'].get('total', rep['wall_s']['compress']):.0f} s.")
    L += ["", "| model | GMAccs | k params | " + " | ".join(f"{d} PSNR-μ | {d} PSNR-l" for d in rep["datasets"]) + " |",
          "|---|---:|---:|" + "---:|---:|" * len(rep["datasets"])]
    for name, row in rep["models"].items():
        cells = []
        for d in rep["datasets"]:
            s = (row.get("scores") or {}).get(d)
            cells += [f"{s['psnr_mu']:.2f}", f"{s['psnr_l']:.2f}"] if s else ["–", "–"]
        maccs = f"{row['maccs'] / 1e9:.2f}" if row.get("maccs") else "–"
        params = f"{row['params'] / 1e3:.2f}" if row.get("params") else "–"
        L.append(f"| {name} | {maccs} | {params} | " + " | ".join(cells) + " |")
    s = rep.get("search")
    if s:
        method = s.get("method", "search")
        how = {"search": "searched", "uniform": "uniform width scaling", "blocks": "PDUBs dropped"}[method]
        uni = rep.get("uniform")
        line = (f"Method: {method}. Kept PDUBs: {s['kept_blocks']} of the teacher's. Zero-shot damage (μ-law "
                f"MSE vs teacher, calibration set, before fine-tuning): {how} {s['zero_shot_damage']:.3g}")
        if uni and method != "uniform":
            line += f", uniform {uni['zero_shot_damage']:.3g}"
        line += (f" (width scale {uni['scale']:.3f})." if uni
                 else " (uniform width scaling cannot reach this budget).")
        L += ["", line]
        if s.get("steps"):
            L += ["", "Search moves: " + "; ".join(st["move"] for st in s["steps"])]
    for label, curve in (rep.get("finetune_curve") or {}).items():
        if curve:
            L += ["", f"Held-out PSNR-μ of the {label} model along its fine-tune (step: dB): "
                  + ", ".join(f"{c['step']}: {c['heldout_psnr_mu']:.2f}" for c in curve)]
    ex = rep.get("export")
    if ex:
        L += ["", f"## Phone artifacts ({ex['size'][1]}x{ex['size'][0]}) and parity", "",
              "PSNR-μ (dB) of each artifact against the compressed float model (worst scene) and against ground "
              "truth (artifact / float, per dataset); full report: `parity/parity.md`.", "",
              "| artifact | MB | executed by | vs float | vs GT | parity |", "|---|---:|---|---:|---|---|"]
        for key, a in ex["artifacts"].items():
            gt = ", ".join(f"{d} {v:.2f} / {a['float_psnr_mu'][d]:.2f}" for d, v in a["psnr_mu"].items())
            vs = "–" if a["psnr_mu_vs_float_min"] is None else f"{a['psnr_mu_vs_float_min']:.2f}"
            L.append(f"| `{a['file']}` | {a['bytes'] / 1e6:.2f} | {a['executor'] or '–'} | {vs} | {gt or '–'} | "
                     f"{'pass' if a['passed'] else '**FAIL**'} |")
    L += ["", "Per-layer output widths of the compressed model: see `report.json` (`layer_widths`).", "",
          "Wall time per stage (s): " + ", ".join(f"{k} {v:.0f}" for k, v in rep["wall_s"].items()) + "  "]
    peaks = rep.get("peak_rss_mb") or {}
    if peaks:
        L.append("Peak resident memory per stage (MB; export: the largest of its processes, which run two side by "
                 "side): " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()))
    L.append("")
    return "\n".join(L)
