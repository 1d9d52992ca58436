"""Latency and peak memory of the native runner (``eapnet/export/runner``) per frame, whole and tiled.

For each precision and frame size: the program exported at the frame's size, run whole, against a tile program
run by the runner's C++ tiler over the same frame (:func:`eapnet.inference.plan_tile`: the fewest tiles of at most
``max_tile`` pixels a side, evened out over the frame, ``overlap`` pixels between neighbours). Each figure is
the median of ``repeat`` runs in one runner process after a warm-up run; peak memory is the runner process's
(``ru_maxrss``: the program, its activations and the frame's buffers). The cost of tiling is reported per
pixel: tiled seconds / whole seconds on the same frame, both measured in one invocation. The goal the tile
plan is held to (:data:`GOAL`): int8 tiled at most 1.3x the whole-frame time per pixel at <= 1 GB peak.
A frame larger than ``whole_max_pixels`` gets no whole-frame program (exporting one checks it against the eager
model at that size, which needs several times this machine's memory at 12 MP): its tiled time per pixel is
compared with the largest whole frame measured at the same precision.

The frames are the real full-size NTIRE triplet (``../shared/data/ntire_samples``), resized (bilinear) to
sizes other than its own: the runner's latency does not depend on the content.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from eapnet.inference import TILE_OVERLAP, plan_tile
from eapnet.export import native
from eapnet.export.canvas import load_scenes
from eapnet.export.common import IO
from eapnet.export.latency import cached_pte

__all__ = ["GOAL", "bench_native", "meets_goal", "report_markdown"]

GOAL = {"tiled_over_whole_per_pixel": 1.3, "peak_mb": 1024}
"""Tiled int8 at most this many times the whole-frame time per pixel, at at most this peak (MB)."""


def meets_goal(fig: dict) -> bool:
    """Whether one tiled figure (``over_whole``, ``peak_rss_mb``) meets :data:`GOAL`."""
    return fig["over_whole"] <= GOAL["tiled_over_whole_per_pixel"] and fig["peak_rss_mb"] <= GOAL["peak_mb"]


def _frames(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The real full-size triplet at ``size`` as uint8 codes ``(3, H, W, 3)`` (what a camera hands over; the
    runner reads them as 8-bit frames, so its peak holds 1 byte per sample, not a float32 copy) and its EVs."""
    scenes, _ = load_scenes(["fullres"], 1)
    if not scenes:
        raise ValueError("the full-size NTIRE triplet is not available (../shared/data/ntire_samples)")
    s = scenes[0]
    x = torch.from_numpy(s.ldrs).permute(0, 3, 1, 2)
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    codes = (x.clamp(0, 1) * 255).round().permute(0, 2, 3, 1).numpy().astype(np.uint8)
    return codes, np.asarray(s.evs, dtype=np.float32)


def _measure(pte: Path, ldrs, evs, repeat: int, threads: int | None, overlap: int) -> tuple[np.ndarray, dict]:
    hdr, stats = native.run_native(pte, ldrs, evs, repeat=repeat + 1, threads=threads, tile_overlap=overlap,
                                   u8=True)
    return hdr, {k: stats[k] for k in ("median_ms", "first_ms", "load_ms", "peak_rss_mb", "tiles", "program")
                 if k in stats} | {"file_mb": pte.stat().st_size / 1e6}


def bench_native(model: str, frames: Sequence[tuple[int, int]], *, precisions: Sequence[str] = ("fp32", "int8"),
                 ios: Sequence[str] = IO, max_tiles: Sequence[int] = (1024,), overlap: int = TILE_OVERLAP,
                 repeat: int = 3, threads: int | None = None, artifacts: Path = Path("runs/bench-artifacts"),
                 int8: str | None = None, whole_max_pixels: int = 2_100_000, log=print) -> list[dict]:
    """One row per (precision, io, frame): whole-frame and, per ``max_tiles`` entry, tiled figures (module
    docstring). ``ios``: input/output conventions (``eapnet.export.common.IO``; ``"app"`` programs take the
    uint8 frames themselves, float ones their codes / 255 from the runner). Each figure after the first of
    ``ios`` carries ``max_abs_vs_<first io>``: the largest difference of its HDR output from that convention's
    program of the same precision and tile (0 when the conversion inside the program is exact). Programs are
    exported into ``artifacts`` once and reused while their source is unchanged."""
    if not ios or any(io not in IO for io in ios):
        raise ValueError(f"ios must be a non-empty subset of {IO}, got {ios!r}")
    rows, per_pixel = [], {}
    for frame in sorted(frames, key=lambda f: f[0] * f[1]):
        ldrs, evs = _frames(frame)
        pixels = frame[0] * frame[1]
        for precision in precisions:
            row = {io: {"precision": precision, "io": io, "frame": list(frame), "overlap": overlap, "tiled": []}
                   for io in ios}
            plans = [None] if pixels <= whole_max_pixels else []
            plans += [t for t in dict.fromkeys(plan_tile(frame, m, overlap) for m in max_tiles) if t != tuple(frame)]
            if pixels > whole_max_pixels:
                for io in ios:
                    if (precision, io) not in per_pixel:
                        raise ValueError(f"frame {frame[0]}x{frame[1]}: above whole_max_pixels and no smaller "
                                         f"frame measured")
                    ms, at = per_pixel[precision, io]
                    row[io]["whole"] = {"median_ms": ms * pixels, "scaled_from": list(at)}
            for tile in plans:
                reference = None
                for io in ios:
                    t = time.time()
                    pte = cached_pte(model, precision, tile or frame, artifacts, int8, log, io)
                    hdr, r = _measure(pte, ldrs, evs, repeat, threads, overlap)
                    if reference is None:
                        reference = hdr
                    else:
                        r[f"max_abs_vs_{ios[0]}"] = float(np.abs(hdr - reference).max())
                    what = f"{precision} {io} {frame[0]}x{frame[1]}"
                    if tile is None:
                        row[io]["whole"] = r
                        per_pixel[precision, io] = (r["median_ms"] / pixels, frame)
                        log(f"{what} whole: {r['median_ms']:.0f} ms, peak {r['peak_rss_mb']:.0f} MB "
                            f"({time.time() - t:.0f} s)")
                        continue
                    r = {"tile": list(tile), **r, "over_whole": r["median_ms"] / row[io]["whole"]["median_ms"]}
                    r["meets_goal"] = meets_goal(r)
                    row[io]["tiled"].append(r)
                    log(f"{what} tiled {tile[0]}x{tile[1]} ({r['tiles']} tiles): {r['median_ms']:.0f} ms "
                        f"({r['over_whole']:.2f}x whole), peak {r['peak_rss_mb']:.0f} MB")
            rows += row.values()
    return rows


def _diff(fig: dict) -> str:
    d = next((v for k, v in fig.items() if k.startswith("max_abs_vs_")), None)
    return "–" if d is None else f"{d:.2g}"


def report_markdown(rows: list[dict], model: str, repeat: int, threads: int | None, machine: str) -> str:
    ios = list(dict.fromkeys(r["io"] for r in rows))
    lines = [f"# Native runner: whole frame vs tiles ({model})", "",
             f"`eapnet/export/runner` on {machine}, {threads or 'all'} thread(s); median of {repeat} runs after a "
             f"warm-up, in one runner process; peak = the runner process's resident memory (the program, its "
             f"activations, the three 8-bit frames and the output). The frame is the real full-size NTIRE triplet "
             f"(resized where the size differs), handed to the runner as 8-bit frames. *io*: `float` programs take "
             f"float32 frames in [0, 1] (the runner converts the codes), `app` programs the uint8 frames "
             f"themselves (`eapnet.export.common.IO`). *x whole*: tiled time / whole-frame time on the same frame "
             f"and io (both process the whole frame, so this is the cost per pixel)."
             + (f" *max diff vs {ios[0]}*: the largest difference of the HDR output from the {ios[0]} program of "
                f"the same precision and tile." if len(ios) > 1 else ""), "",
             "| precision | io | frame | program | tiles | ms | x whole | peak MB | .pte MB |"
             + (f" max diff vs {ios[0]} |" if len(ios) > 1 else ""),
             "|---|---|---|---|---:|---:|---:|---:|---:|" + ("---:|" if len(ios) > 1 else "")]
    tail = (lambda fig: f" {_diff(fig)} |") if len(ios) > 1 else (lambda fig: "")
    for r in sorted(rows, key=lambda r: (r["frame"][0] * r["frame"][1], r["precision"], ios.index(r["io"]))):
        f, head = f"{r['frame'][1]}x{r['frame'][0]}", f"| {r['precision']} | {r['io']} "
        w = r["whole"]
        if "scaled_from" in w:
            lines.append(f"{head}| {f} | whole: not exported (memory); the {w['scaled_from'][1]}x"
                         f"{w['scaled_from'][0]} program's time per pixel | – | {w['median_ms']:.0f} | 1.00 | – | – |"
                         + (" – |" if len(ios) > 1 else ""))
        else:
            lines.append(f"{head}| {f} | whole {r['frame'][0]}x{r['frame'][1]} | 1 | {w['median_ms']:.0f} | "
                         f"1.00 | {w['peak_rss_mb']:.0f} | {w['file_mb']:.2f} |" + tail(w))
        for t in r["tiled"]:
            lines.append(f"{head}| {f} | tile {t['tile'][0]}x{t['tile'][1]} (overlap {r['overlap']}) | "
                         f"{t['tiles']} | {t['median_ms']:.0f} | {t['over_whole']:.2f} | {t['peak_rss_mb']:.0f} | "
                         f"{t['file_mb']:.2f} |" + tail(t))
    int8 = [(r, t) for r in rows if r["precision"] == "int8" for t in r["tiled"]]
    met = [x for x in int8 if meets_goal(x[1])]
    lines += ["", f"Goal: tiled int8 at most {GOAL['tiled_over_whole_per_pixel']}x the whole-frame time per pixel at "
                  f"at most {GOAL['peak_mb']} MB peak: met by {len(met)} of {len(int8)} int8 tile plans"
              + (": " + ", ".join(f"{r['frame'][1]}x{r['frame'][0]} {r['io']} with {t['tile'][0]}x{t['tile'][1]} "
                                  f"tiles ({t['over_whole']:.2f}x, {t['peak_rss_mb']:.0f} MB"
                                  f"{', meets it' if meets_goal(t) else ''})" for r, t in int8) if int8 else "")
              + "."]
    return "\n".join(lines) + "\n"
