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

from eapnet.checkpoint import load_model
from eapnet.compress.fallback import TARGET, find_fallback, layer_groups
from eapnet.compress.pipeline import compress
from eapnet.compress.quantize import load_quantized, read_quantized_meta, save_quantized
from eapnet.evalsets import as_batches, calibration, score, standard_sets
from eapnet.export.backends import artifact_backend
from eapnet.export.latency import compare_pte
from eapnet.export.pipeline import ARTIFACTS, check_artifacts, export_and_check, export_variant
from eapnet.inference import TILE_OVERLAP, example_inputs, ship_tile
from eapnet.macs import format_maccs
from eapnet.memory import peak_rss_mb, reset_peak_rss
from eapnet.jobs.report_page import checked, run_page
from eapnet.runs import atomic_write_json, atomic_write_text

__all__ = ["FALLBACK_MARGIN", "LATENCY_GOAL", "compress_and_ship", "fallback_artifacts", "needs_fallback", "report_markdown"]

LATENCY_GOAL = 1.10
"""The int8 latency a fallback's float groups may add (after / before, per program): above it the fallback
looks for another set of groups that meets its target (:func:`_fallback_program`)."""
LATENCY_RUNS = 7
"""Timed runs of each program when a fallback is timed (median; the two programs in turns)."""

FALLBACK_MARGIN = 0.1
"""dB of its ground-truth budget (parity's ``max_gt_drop``) an int8 artifact must leave spare on every dataset;
one that fails parity or leaves less is exported again with layer groups kept in float (:func:`fallback_artifacts`)."""


def compress_and_ship(cfg, run_dir: str | os.PathLike, *, export_size: tuple[int, int] | None = None,
                      parity_scenes: int = 4, export: bool = True, artifacts: tuple[str, ...] = ARTIFACTS,
                      tile: int | None = None, tile_overlap: int = TILE_OVERLAP, runners: tuple[str, ...] = (),
                      fallback: bool = True, command: str | None = None, progress: bool = True, log=print) -> dict:
    """The main job for one budget: :func:`eapnet.compress.pipeline.compress` (``cfg`` a ``CompressConfig``) into
    ``run_dir``, then :func:`eapnet.export.pipeline.export_and_check` of ``artifacts`` at ``export_size``
    unless ``export`` is False; writes ``report.json``, ``report.md`` and ``report.html``
    (:func:`eapnet.jobs.report_page.run_page`) and returns the report. The default
    ``export_size`` is the tile program for ``cfg.size`` frames (:func:`eapnet.inference.ship_tile`: 568x680
    for 1060x1900), which parity also checks stitched over the full-size frame. ``fallback``: int8 artifacts
    that fail parity or leave less than :data:`FALLBACK_MARGIN` spare are exported again with the fewest layer
    groups in float that the calibration scenes need (:func:`fallback_artifacts`; ``report["fallback"]``). Raises
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
            if fallback:
                t = time.time()
                report["fallback"] = fallback_artifacts(run_dir, report["export"], calib=cfg.calib or None,
                                                        calib_scenes=cfg.calib_scenes, parity_scenes=parity_scenes,
                                                        tile_overlap=tile_overlap, runners=runners,
                                                        progress=progress, log=log)
                try:
                    score_fallback_programs(run_dir, report, log=log)
                except (OSError, ValueError, RuntimeError) as e:   # the artifacts stand; the row is missing
                    report["fallback_scoring_error"] = f"{type(e).__name__}: {e}"
                    log(f"WARNING the fallback program could not be scored: {report['fallback_scoring_error']}")
                report["wall_s"]["fallback"] = time.time() - t
            report["peak_rss_mb"].update(
                export=max(a["export_peak_rss_mb"] for a in report["export"]["artifacts"].values()),
                parity=report["export"]["parity_peak_rss_mb"])
    except BaseException as e:
        _set_aside(run_dir, before, e)
        raise
    report["wall_s"]["total"] = time.time() - t0
    atomic_write_json(run_dir / "report.json", report)
    atomic_write_text(run_dir / "report.md", report_markdown(report))
    try:
        checked(run_page(run_dir), log)
    except (OSError, ValueError, RuntimeError) as e:    # the run's results are written; the page is a view of them
        log(f"WARNING {run_dir / 'report.html'} not written: {type(e).__name__}: {e}")
    return report


def needs_fallback(row: dict) -> str | None:
    """Why an int8 artifact's summary row calls for the fallback (it failed parity, or leaves less than
    :data:`FALLBACK_MARGIN` of its budget), or None."""
    if row.get("precision") not in ("int8", "w8a8"):
        return None
    if not row["passed"]:
        return "it failed parity"
    margin = row.get("gt_margin")   # parity's: dB of the ground-truth budget spare on the worst dataset
    if margin is not None and margin < FALLBACK_MARGIN:
        return f"it passes parity with {margin:.3f} dB of its ground-truth budget to spare (< {FALLBACK_MARGIN:g})"
    return None


def fallback_artifacts(run_dir: Path, export: dict, *, calib: str | None, calib_scenes: int, parity_scenes: int,
                       tile_overlap: int, runners: tuple[str, ...], progress: bool, log) -> dict:
    """The mixed-precision fallback for the int8 artifacts of ``export`` (the summary of
    :func:`eapnet.export.pipeline.export_and_check`, updated in place) that :func:`needs_fallback`: per
    quantizer backend, :func:`eapnet.compress.fallback.find_fallback` on the float ``compressed.pt`` (PTQ on the
    run's calibration set, ``calib`` and ``calib_scenes`` as the compression used them, which also scores the
    search; target :data:`eapnet.compress.fallback.TARGET`), saved as
    ``int8-<backend>-fallback.pt2`` (for a ``.pte``, the set of the least latency among those that meet the
    target when the fewest cost more than :data:`LATENCY_GOAL`: :func:`_fallback_program`); each such
    artifact moves to ``export/rejected/`` and is exported again
    from that program and checked (``parity/parity-fallback.{json,md}``). Returns ``{key: record}``: why, the
    float groups and the search's figures, the artifact's size and verdict before and after, and for a
    ``.pte`` the latency ratio after / before (both programs run in turns in this process)."""
    todo = {key: why for key, row in export["artifacts"].items() if (why := needs_fallback(row))}
    if not todo:
        return {}
    model = load_model(run_dir / "compressed.pt")
    scenes = calibration(calib, calib_scenes)
    batches = [(ldrs, evs) for ldrs, evs, _ in as_batches(scenes)]
    meta = read_quantized_meta(run_dir / "int8.pt2")
    programs: dict[str, tuple[Path, dict]] = {}
    rejected = run_dir / "export" / "rejected"
    rejected.mkdir(exist_ok=True)
    records, paths, made, timed = {}, {}, {}, {}
    for key, why in todo.items():
        base, _, tile = key.partition("@")
        backend, _ = artifact_backend(base)
        log(f"fallback for {key}: {why}")
        old = run_dir / export["artifacts"][key]["file"]
        size = (int(tile), int(tile)) if tile else tuple(export["size"])
        aside = rejected / old.name
        for f in [old, *old.parent.glob(old.stem + ".*json")]:
            f.rename(rejected / f.name)
        if backend.name not in programs:
            program, rec, shipped = _fallback_program(
                run_dir, model, backend.name, batches, scenes, meta, base, size,
                aside if aside.suffix == ".pte" else None, progress=progress, log=log)
            programs[backend.name] = program, rec
            if shipped:   # exported and timed from this very program: the artifact itself
                paths[key], made[key], timed[key] = shipped
        program, rec = programs[backend.name]
        if key not in paths:
            p, m = export_variant(run_dir / "compressed.pt", program, run_dir / "export", size=size, which=(base,),
                                  workers=1, isolate=True, log=log)
            paths[key], made[key] = p[base], m[base]
        records[key] = {"why": why, "program": program.name, "search": rec, "before": {
            k: export["artifacts"][key][k] for k in ("file", "bytes", "passed", "psnr_mu", "float_psnr_mu")}}
        records[key]["before"].update(file=str(aside.relative_to(run_dir)),
                                      margin=export["artifacts"][key]["gt_margin"])
    summary, _ = check_artifacts(run_dir, paths, made, parity_scenes=parity_scenes, tile_overlap=tile_overlap,
                                 runners=runners, name="parity-fallback", progress=progress, log=log)
    for key, row in summary["artifacts"].items():
        records[key]["after"] = {"file": row["file"], "bytes": row["bytes"], "passed": row["passed"],
                                 "margin": row["gt_margin"]}
        if paths[key].suffix == ".pte":
            records[key]["latency"] = timed.get(key) or compare_pte(run_dir / records[key]["before"]["file"],
                                                                    paths[key], runs=LATENCY_RUNS)
        export["artifacts"][key] = {**row, "fallback": records[key]["search"]["float_groups"]}
    export["failed"] = [k for k, v in export["artifacts"].items() if not v["passed"]]
    export["passed"] = not export["failed"]
    return records


def _fallback_program(run_dir: Path, model, backend: str, batches, scenes, meta: dict, base: str,
                      size: tuple[int, int], before: Path | None, *, progress: bool,
                      log) -> tuple[Path, dict, tuple[Path, dict, dict] | None]:
    """``int8-<backend>-fallback.pt2``, its search record and, with ``before`` (the all-int8 ``.pte`` of
    artifact ``base`` at ``size``), that artifact exported from it into ``run_dir/export`` with its export
    figures and its latency against ``before`` (:func:`eapnet.export.latency.compare_pte`); else None.

    The program holds :func:`eapnet.compress.fallback.find_fallback`'s fewest float groups. With ``before``,
    when their ``.pte`` costs more than :data:`LATENCY_GOAL`, the search runs again once without each of those
    groups in turn, each new set that meets the target is exported and timed the same way, and the one of least
    latency is kept (``rec["latency_search"]``: every set timed). Each candidate is saved and exported under the
    final names, so the shipped artifact is the one timed (exported again only when the fastest was not the
    last one tried)."""
    memo: dict = {}
    rec, q = find_fallback(model, backend, batches, scenes, target=TARGET, memo=memo, progress=progress, log=log)
    program = run_dir / f"int8-{backend}-fallback.pt2"

    def ship(rec, q, timed: bool = True) -> tuple[Path, dict, dict | None] | None:
        save_quantized(program, q, example_inputs((64, 64), batch=2),
                       {**meta, "backend": backend, "float_groups": list(rec.float_groups)})
        if before is None:
            return None
        paths, made = export_variant(run_dir / "compressed.pt", program, run_dir / "export", size=size,
                                     which=(base,), workers=1, isolate=True, log=log)
        lat = compare_pte(before, paths[base], runs=LATENCY_RUNS) if timed else None
        if lat:
            log(f"fallback latency: {', '.join(rec.float_groups)} in float: x{lat['ratio']:.3f} per "
                f"{size[0]}x{size[1]}")
        return paths[base], made[base], lat

    shipped = ship(rec, q)
    if shipped is None or not rec.met or not rec.float_groups or shipped[2]["ratio"] <= LATENCY_GOAL:
        return program, rec.to_dict(), shipped
    tries = [(rec, q, shipped[2])]
    groups = layer_groups(model)
    for g in rec.float_groups:
        alt, q = find_fallback(model, backend, batches, scenes, target=TARGET, memo=memo, progress=progress,
                               groups=[h for h in groups if h != g], sensitivity=rec.sensitivity, log=log)
        if alt.met and all(alt.float_groups != r.float_groups for r, _, _ in tries):
            shipped = ship(alt, q)
            tries.append((alt, q, shipped[2]))
    best, q, lat = min(tries, key=lambda t: t[2]["ratio"])
    artifact, made, _ = shipped if best is tries[-1][0] else ship(best, q, timed=False)   # the last one is in place
    search = [{"float_groups": list(r.float_groups), "drop": r.drop, "latency_ratio": t["ratio"]} for r, _, t in tries]
    return program, {**best.to_dict(), "latency_search": search}, (artifact, made, lat)


def score_fallback_programs(run_dir: Path, report: dict, log=print) -> bool:
    """Add each fallback program of ``report["fallback"]`` (the int8 program a re-exported artifact was lowered
    from, some groups float) to ``report["models"]`` as ``shipped (int8, <backend>, float: <groups>)``, scored on
    the scenes the compressed float model was scored on (per scene, so its change against the teacher has an
    interval): the ``compressed (int8, ...)`` row is the all-int8 program those artifacts no longer ship.
    Returns whether a row was added (a program already scored is not scored again)."""
    flt = report["models"].get("compressed (float)")
    names = dict.fromkeys(r["program"] for r in (report.get("fallback") or {}).values())
    if not flt or not names:
        return False
    heldout = len(((flt.get("scores") or {}).get("heldout_synthetic") or {}).get("per_scene") or {})
    sets = {k: v for k, v in standard_sets(heldout).items() if k in flt["scores"]}
    added = False
    for name in names:
        q, meta = load_quantized(run_dir / name)
        key = f"shipped (int8, {meta['backend']}, float: {', '.join(meta.get('float_groups') or []) or 'none'})"
        if key in report["models"]:
            continue
        t = time.time()
        report["models"][key] = {"maccs": flt["maccs"], "params": flt["params"], "program": name,
                                 "scores": {d: score(q, scenes, dataset=d, per_scene=True) for d, scenes in sets.items()}}
        added = True
        log(f"{key}: " + ", ".join(f"{d} {v['psnr_mu']:.2f} dB" for d, v in report["models"][key]["scores"].items())
            + f" ({time.time() - t:.0f} s)")
    return added


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


def _f(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}"


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
    for key, fb in (rep.get("fallback") or {}).items():
        lat = fb.get("latency")
        L += ["", f"Mixed-precision fallback for `{key}` ({fb['why']}): "
              + (", ".join(f"`{g}`" for g in fb["search"]["float_groups"]) or "no layer group") + " kept in float "
              f"(calibration scenes: {fb['search']['drop']:.2f} dB lost against ground truth, all int8 "
              f"{fb['search']['drop_all_int8']:.2f}); ground-truth budget to spare "
              f"{_f(fb['before'].get('margin'))} -> {_f(fb['after'].get('margin'))} dB, "
              f"{fb['before']['bytes'] / 1e6:.2f} -> {fb['after']['bytes'] / 1e6:.2f} MB"
              + (f", latency x{lat['ratio']:.2f} ({lat['before_s']:.3f} -> {lat['after_s']:.3f} s)" if lat else "")
              + f"; the all-int8 file is in `{Path(fb['before']['file']).parent}/`."]
    L += ["", "Per-layer output widths of the compressed model: see `report.json` (`layer_widths`).", "",
          "Wall time per stage (s): " + ", ".join(f"{k} {v:.0f}" for k, v in rep["wall_s"].items()) + "  "]
    peaks = rep.get("peak_rss_mb") or {}
    if peaks:
        L.append("Peak resident memory per stage (MB; export: the largest of its processes, which run two side by "
                 "side): " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()))
    L.append("")
    return "\n".join(L)
