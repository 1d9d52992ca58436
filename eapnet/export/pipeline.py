"""The phone artifacts of one compressed variant: export the four files ``compress/qat.py`` ships.

    from eapnet.export.pipeline import export_variant
    files = export_variant("runs/c/compressed.pt", "runs/c/int8.pt2", "runs/c/export", size=(1060, 1900))

=================  ===================================  ==============================================
key                file                                 made from (backends: ``eapnet.export.backends``)
=================  ===================================  ==============================================
``pte-fp32``       ``<variant>_xnnpack_fp32_HxW.pte``    the float checkpoint
``pte-int8``       ``<variant>_xnnpack_int8_HxW.pte``    the int8 program if quantized for XNNPACK (QAT),
                                                        else PTQ of the float model on ``eapnet.calib``
``coreml-fp16``    ``<variant>_coreml_fp16_HxW.mlpackage`` the float checkpoint
``coreml-w8a8``    ``<variant>_coreml_w8a8_HxW.mlpackage`` the int8 program if quantized for Core ML (QAT),
                                                        else PTQ of the float model on ``eapnet.calib``
=================  ===================================  ==============================================

So the quantizer flavour ``compress/qat.py --backend`` trained with gets its QAT weights, the other backend a
post-training quantization of the same float model; the parity harness (``eapnet.export.parity``) then shows
whether that is enough. Every file is written atomically by its exporter.
"""
from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import torch

from eapnet.inference import TILE_OVERLAP
from eapnet.memory import peak_rss_mb, reset_peak_rss
from eapnet.export.backends import ARTIFACTS, artifact_backend
from eapnet.export.common import DEFAULT_SIZE, load_source
from eapnet.export.parity import report_markdown as parity_markdown
from eapnet.export.parity import run_parity
from eapnet.runs import atomic_write_json, atomic_write_text

__all__ = ["ARTIFACTS", "check_artifacts", "export_variant", "export_and_check"]


def export_variant(float_ckpt: str | os.PathLike, int8_program: str | os.PathLike | None,
                   out_dir: str | os.PathLike, *, size: tuple[int, int] = DEFAULT_SIZE,
                   which: tuple[str, ...] = ARTIFACTS, workers: int | None = None, isolate: bool = False,
                   log=print) -> tuple[dict[str, Path], dict[str, float]]:
    """Write the artifacts ``which`` (keys of :data:`ARTIFACTS`) of one variant into ``out_dir``.

    ``float_ckpt``: the variant's float ``.pt``; ``int8_program``: its ``.pt2`` from ``compress/qat.py`` (or
    None: both int8 artifacts by PTQ). ``size``: (H, W) of the fixed input in pixels. ``workers``: processes
    exporting side by side (default: one per CPU core, at most one per artifact; 1 = in this process unless
    ``isolate``): the lowering is mostly single-threaded Python graph work. ``isolate``: worker processes even
    for one export (its memory is its own, not added to what this process holds). Returns
    ``({key: path}, {key: {"seconds": s, "peak_rss_mb": MB}})`` in :data:`ARTIFACTS` order: each export's wall time and the peak resident memory of the process that ran it during that export (where
    :func:`eapnet.memory.reset_peak_rss` works; else the process's peak so far)."""
    unknown = sorted(set(which) - set(ARTIFACTS))
    if unknown:
        raise ValueError(f"unknown artifact(s) {unknown}; choose from {list(ARTIFACTS)}")
    keys = [k for k in ARTIFACTS if k in which]
    jobs = [(k, str(float_ckpt), None if int8_program is None else str(int8_program), str(out_dir), tuple(size))
            for k in keys]
    workers = min(len(keys), os.cpu_count() or 1) if workers is None else max(1, min(workers, len(keys)))
    done: dict[str, tuple[Path, dict]] = {}
    if workers == 1 and not isolate:
        for job in jobs:
            done[job[0]] = _export_one(*job)
            log(f"exported {done[job[0]][0].name} in {done[job[0]][1]['seconds']:.0f} s")
    else:
        # longest first (int8 lowering, then Core ML W8A8), so the two processes finish close together
        order = sorted(jobs, key=lambda j: _EXPECTED_ORDER.index(j[0]))
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_one_thread_worker) as pool:
            futures = {pool.submit(_export_one, *job): job[0] for job in order}
            for f in as_completed(futures):
                done[futures[f]] = f.result()
                log(f"exported {done[futures[f]][0].name} in {done[futures[f]][1]['seconds']:.0f} s")
    return {k: done[k][0] for k in keys}, {k: done[k][1] for k in keys}


_EXPECTED_ORDER = ("pte-int8", "coreml-w8a8", "pte-fp32", "coreml-fp16")
"""Artifacts by export time, longest first (the ``export_s`` of each artifact in a main job's ``report.json``)."""


def _one_thread_worker() -> None:
    torch.set_num_threads(1)  # two exports share the cores; their numeric parts are small


def _export_one(key: str, float_ckpt: str, int8_program: str | None, out_dir: str,
                size: tuple[int, int]) -> tuple[Path, dict]:
    """Export one artifact (a job of :func:`export_variant`, also run in a worker process): its path, wall
    seconds and the process's peak resident memory."""
    t = time.time()
    reset_peak_rss()   # a worker runs several exports: each reports its own peak
    backend, precision = artifact_backend(key)
    src = load_source(float_ckpt)
    if precision == backend.shipped[1] and int8_program is not None:
        q = load_source(int8_program)
        if q.quant_backend == backend.name:   # quantized for this backend (QAT); else PTQ of the float model
            src = q
    path = backend.export(src, Path(out_dir), precision=precision, size=size)
    return path, {"seconds": round(time.time() - t, 1), "peak_rss_mb": round(peak_rss_mb())}


def export_and_check(run_dir: str | os.PathLike, *, size: tuple[int, int] = DEFAULT_SIZE, parity_scenes: int = 4,
                     prefix: str = "", which: tuple[str, ...] = ARTIFACTS, tile: int | None = None,
                     tile_overlap: int = TILE_OVERLAP, runners: tuple[str, ...] = (), progress: bool = True,
                     log=print) -> tuple[dict, dict[str, float]]:
    """The artifacts ``which`` (default: all four) of the compressed variant in ``run_dir``
    (``<prefix>compressed.pt`` and ``<prefix>int8.pt2``, as ``eapnet.compress.pipeline.compress`` writes them) into
    ``run_dir/export``, then the parity harness on them (``run_dir/parity/parity.{json,md}``). ``size``: (H, W)
    of the programs; ``tile``: the same artifacts also at ``tile`` x ``tile`` (keys ``<key>@<tile>``). Parity
    also runs every program smaller than the full-size frame tiled over it, as an app does (``tile_overlap``
    pixels between tiles), against the float model over the same tiles.
    ``runners``: parity also runs every ``.pte`` through the native runner (``eapnet.export.native_check``:
    ``"native"`` this machine, ``"aarch64"`` each aarch64 kernel family under QEMU; the aarch64 runs take the
    tile programs only: a full-size frame takes minutes per CPU family under QEMU).
    Returns ``(summary, wall seconds)``: the summary holds per artifact its file, size, executor, verdict,
    PSNR-μ figures and its export's peak resident memory, the parity stage's peak (``parity_peak_rss_mb``), and
    ``passed`` / ``failed``."""
    run_dir = Path(run_dir)
    wall = {}
    t = time.time()
    paths, made = export_variant(run_dir / f"{prefix}compressed.pt", run_dir / f"{prefix}int8.pt2",
                                    run_dir / "export", size=size, which=which, log=log)
    if tile:
        tp, tm = export_variant(run_dir / f"{prefix}compressed.pt", run_dir / f"{prefix}int8.pt2",
                                run_dir / "export", size=(tile, tile), which=which, log=log)
        paths.update({f"{k}@{tile}": v for k, v in tp.items()})
        made.update({f"{k}@{tile}": v for k, v in tm.items()})
    wall["export"] = time.time() - t
    summary, wall["parity"] = check_artifacts(run_dir, paths, made, parity_scenes=parity_scenes,
                                              tile_overlap=tile_overlap, runners=runners, progress=progress,
                                              log=log)
    summary["size"] = list(size)
    return summary, wall


def check_artifacts(run_dir: Path, paths: dict[str, Path], made: dict[str, dict], *, parity_scenes: int = 4,
                    tile_overlap: int = TILE_OVERLAP, runners: tuple[str, ...] = (), name: str = "parity",
                    progress: bool = True, log=print) -> tuple[dict, float]:
    """Parity of the exported ``paths`` (``{key: artifact}``, ``made`` as :func:`export_variant` returns it)
    into ``run_dir/parity/<name>.{json,md}``; returns ``(summary, seconds)`` (see :func:`export_and_check`)."""
    t = time.time()
    reset_peak_rss()
    rep = run_parity(list(paths.values()), limit=parity_scenes, progress=progress,
                     stitch=True, keep_frames=run_dir / "parity" / "frames",
                     tile_overlap=tile_overlap, log=log,
                     runners={str(v): (runners if "@" in k else tuple(r for r in runners if r != "aarch64"))
                              for k, v in paths.items()})
    atomic_write_json(run_dir / "parity" / f"{name}.json", rep)
    atomic_write_text(run_dir / "parity" / f"{name}.md", parity_markdown(rep))
    seconds = time.time() - t
    parity_peak = round(peak_rss_mb())
    rows = {}
    for key, r in zip(paths, rep["artifacts"], strict=True):
        s = r.get("summary", {})
        path = paths[key]
        nbytes = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() \
            else path.stat().st_size
        rows[key] = {"file": str(path.relative_to(run_dir)), "bytes": nbytes, "export_s": made[key]["seconds"],
                     "export_peak_rss_mb": made[key]["peak_rss_mb"], "precision": r.get("precision"),
                     "gt_margin": r.get("gt_margin"),
                     "executor": r.get("executor"), "passed": r["passed"], "failures": r["failures"],
                     "psnr_mu_vs_float_min": min((d["psnr_mu_vs_float_min"] for d in s.values() if d["scenes"]),
                                                 default=None),
                     "machines": [{k: m.get(k) for k in ("runner", "cpu", "max_abs_vs_x86", "passed")}
                                  for m in r.get("machines", [])],
                     "psnr_mu": {d: v["psnr_mu"] for d, v in s.items() if "psnr_mu" in v},
                     "float_psnr_mu": {d: v["float_psnr_mu"] for d, v in s.items() if "float_psnr_mu" in v}}
        if r.get("stitched"):
            st = r["stitched"]["summary"]
            rows[key]["stitched_psnr_mu_vs_float_min"] = min(
                (d["psnr_mu_vs_float_min"] for d in st.values() if d["scenes"]), default=None)
    summary = {"artifacts": rows, "passed": rep["passed"], "parity_peak_rss_mb": parity_peak,
               "failed": [k for k, v in rows.items() if not v["passed"]], "parity_report": f"parity/{name}.md"}
    return summary, seconds
