"""Latency and peak memory of eager PyTorch fp32 vs ExecuTorch ``.pte`` fp32 vs ``.pte`` int8 on this CPU.

For every model and size: seconds per forward (median of ``runs`` after one warm-up) of

- ``eager fp32``: the PyTorch model (``torch.inference_mode``, ``threads`` intra-op threads);
- ``pte fp32`` and ``pte int8``: the XNNPACK ``.pte`` in ExecuTorch's runtime (``threads`` XNNPACK threads).
  A float model's int8 program is post-training quantized on ``eapnet.calib``; a compression run's ``int8.pt2``
  is used when given (``int8=``).
- with ``tile``: ``pte fp32 tiled`` and ``pte int8 tiled``, the ``.pte`` exported at the tile size run over the
  whole frame in overlapping tiles by the one tiler (``eapnet.inference.predict``): what an app that cannot
  hold the whole-frame program's activations runs instead.
- ``pte pair``: both ``.pte`` files loaded in one process and run in turns; its ratio is the int8 / fp32 speed-up
  the goal is judged on (``int8_vs_fp32_pte``; the ratio of the separate processes' figures is
  ``int8_vs_fp32_pte_apart``).
- with ``profile``: ``profile fp32`` and ``profile int8``, the per-operator time of each ``.pte`` from ExecuTorch's
  ETDump (``eapnet.export.pte_profile``), grouped by operator kind and number format, and how much of the int8
  program runs outside int8 kernels.

Each measurement runs in a fresh subprocess (``python -m eapnet.export.latency KIND PATH HxW RUNS THREADS``,
KIND ``eager``, ``pte``, ``pair`` (PATH: two paths joined by ``os.pathsep``), ``tiled`` or ``profile``, prints
one JSON line), so its peak resident memory (``VmHWM``) is its own; the subprocess's peak before
loading the model (Python, torch and the inputs) is reported beside it. ``.pte`` files are exported into
``artifacts`` once and reused while their source's sha256 matches. The command line is eapnet/bench/bench_mobile.py.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from eapnet.checkpoint import load_model
from eapnet.cpu import machine
from eapnet.inference import TILE_OVERLAP, example_inputs, predict
from eapnet.memory import peak_rss_mb
from eapnet.runs import atomic_write_json, atomic_write_text, record_run
from eapnet.export.backends import check_stamp
from eapnet.export.common import ProgramModule, artifact_name, load_source
from eapnet.export.executorch_export import BACKEND, export_pte, load_pte
from eapnet.export.pte_profile import FORMATS, planned_memory_mb, profile_pte

GOAL_INT8_SPEEDUP = 3.0
"""The project's goal for an int8 ``.pte``: at least this many times faster than eager fp32."""
GOAL_INT8_VS_FP32 = 2.0
"""... and at least this many times faster than the fp32 ``.pte`` of the same model (published phone CPU runs of
convolution-heavy networks reach 1.5-1.9x)."""
RUNTIMES = ("eager fp32", "pte fp32", "pte int8")


def worker(kind: str, path: str, size: tuple[int, int], runs: int, threads: int) -> dict:
    """One measurement in this process: ``kind`` "eager" (``path`` = model spec), "pte" or "tiled" (``path`` =
    a ``.pte``; "tiled" runs it over a ``size`` frame in tiles of its own size) or "profile" (its ETDump profile)."""
    torch.set_num_threads(threads)
    if kind == "profile":
        return {**profile_pte(path, runs=runs, threads=threads).to_dict(), "peak_rss_mb": peak_rss_mb()}
    ldrs, evs = example_inputs(size)
    if kind == "pair":
        return _pair(path.split(os.pathsep), ldrs, evs, runs, threads)
    before = peak_rss_mb()
    if kind == "eager":
        model = load_model(path).float().eval()

        def fn():
            with torch.inference_mode():
                model(ldrs, evs)
    elif kind == "pte":
        run = load_pte(path, threads=threads)
        loaded = peak_rss_mb()

        def fn():
            run(ldrs, evs)
    else:   # "tiled": the program at its own (tile) size, run over the whole frame by the one tiler

        run = load_pte(path, threads=threads)
        loaded = peak_rss_mb()
        program, scene = ProgramModule(run), (ldrs[0].permute(0, 2, 3, 1).numpy(), evs[0].numpy())

        def fn():
            predict(program, *scene, tile=tuple(run.size))
    times = []

    def timed():
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)

    timed()  # warm-up
    for _ in range(runs):
        timed()
    median = statistics.median(times[1:])
    out = {"median_s": median, "runs_s": times[1:], "warmup_s": times[0], "rss_before_mb": before,
           "peak_rss_mb": peak_rss_mb()}
    if kind != "eager":   # where a program's peak goes: ExecuTorch's planned buffers vs the rest (XNNPACK)

        try:
            planned = planned_memory_mb(path)
        except Exception as e:  # a private ExecuTorch reader: a change there must not cost the timing
            planned, out["planned_error"] = None, f"{type(e).__name__}: {e}"
        out.update(rss_loaded_mb=loaded, planned_mb=planned)
    return out


def _pair(paths: list[str], ldrs, evs, runs: int, threads: int) -> dict:
    """Two ``.pte`` programs (fp32, int8) loaded in one process and run in turns, ``runs`` rounds after one
    warm-up round, each round in the other order: the int8 / fp32 ratio of one measurement, which the
    machine's load drifts shift alike for both (separate processes, minutes apart, gave ratios 10 % apart)."""

    progs = [load_pte(p, threads=threads) for p in paths]
    times: list[list[float]] = [[] for _ in progs]
    for r in range(runs + 1):
        for i in (range(len(progs)) if r % 2 else reversed(range(len(progs)))):
            t = time.perf_counter()
            progs[i](ldrs, evs)
            if r:   # round 0 is the warm-up
                times[i].append(time.perf_counter() - t)
    medians = [statistics.median(t) for t in times]
    return {"paths": paths, "median_s": medians, "runs_s": times, "ratio": medians[0] / medians[1],
            "round_ratios": [a / b for a, b in zip(times[0], times[1])], "peak_rss_mb": peak_rss_mb()}


def compare_pte(before: str | os.PathLike, after: str | os.PathLike, *, runs: int = 3,
                threads: int | None = None) -> dict:
    """Latency of two ``.pte`` programs of one input size, loaded in this process and run in turns
    (:func:`_pair`): ``before_s``, ``after_s`` (median seconds per forward) and ``ratio`` = after / before."""
    size = tuple(load_pte(before, threads=threads).size)
    ldrs, evs = example_inputs(size)
    r = _pair([str(before), str(after)], ldrs, evs, runs, threads)
    return {"before_s": r["median_s"][0], "after_s": r["median_s"][1], "ratio": r["median_s"][1] / r["median_s"][0],
            "runs": runs, "size": list(size)}


def _measure(kind: str, path: str, size, runs: int, threads: int) -> dict:
    cmd = [sys.executable, "-m", "eapnet.export.latency", kind, str(path), f"{size[0]}x{size[1]}", str(runs),
           str(threads)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise RuntimeError(f"benchmark worker failed ({kind} {path} {size}):\n{p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def _runtime_error(stderr: str) -> str:
    """The runtime's own explanation in a worker's stderr (ExecuTorch logs it before the Python error)."""
    lines = [ln for ln in stderr.splitlines() if "Attempted" in ln or "failed" in ln.lower()]
    return lines[0].strip() if lines else stderr.strip().splitlines()[-1]


def cached_pte(spec: str, precision: str, size, folder: Path, int8: str | None, log, io: str = "float") -> Path:
    """The ``.pte`` of ``spec`` at ``size`` with input/output convention ``io`` (``eapnet.export.common.IO``):
    reused from ``folder`` when its sidecar names this source's sha256 and the file's own
    (``eapnet.export.backends.check_stamp``), else exported."""

    src = load_source(int8 if (precision == "int8" and int8) else spec)
    path = folder / artifact_name(src.variant, BACKEND, precision, size, "pte", io)
    side = path.with_suffix(".json")
    if path.is_file() and side.is_file():
        meta = json.loads(side.read_text())
        if meta.get("source_sha256") == src.sha256 and check_stamp(path, meta)[0] == "verified":
            return path
    t = time.time()
    path = export_pte(src, folder, size=size, precision=precision, io=io)
    log(f"exported {path.name} in {time.time() - t:.0f} s")
    return path


def bench(models, sizes, *, runs: int, threads: int, artifacts: Path, int8: str | None = None,
          tile: int | None = None, profile: bool = False, log=print) -> list[dict]:
    """One row per model and size (see the module docstring). ``tile``: for sizes larger than it, also the
    fp32 and int8 ``.pte`` at ``tile`` x ``tile`` run tiled over the whole frame (``pte fp32 tiled``,
    ``pte int8 tiled``; :data:`eapnet.inference.TILE_OVERLAP` pixels between tiles). ``profile``: also the
    per-operator profile of both ``.pte`` files (``profile fp32``, ``profile int8``; ``runs`` timed runs each)."""

    rows = []
    for spec in models:
        src = load_source(spec)
        for size in sizes:
            files = {"pte fp32": cached_pte(spec, "fp32", size, artifacts, None, log),
                     "pte int8": cached_pte(spec, "int8", size, artifacts, int8, log)}
            row = {"model": src.variant, "source": str(spec), "gmaccs_1060x1900": (src.maccs or 0) / 1e9,
                   "size": list(size), "threads": threads}
            for rt in RUNTIMES:
                kind, path = ("eager", spec) if rt == "eager fp32" else ("pte", files[rt])
                try:
                    row[rt] = _measure(kind, str(path), size, runs, threads)
                except RuntimeError as e:   # a program that does not run is a result to report, not a crash
                    row[rt] = {"error": str(e).splitlines()[0], "log": _runtime_error(str(e))}
                    log(f"{src.variant} {size[0]}x{size[1]} {rt}: FAILED: {row[rt]['log']}")
                    continue
                if rt != "eager fp32":
                    row[rt]["file_mb"] = Path(path).stat().st_size / 1e6
                log(f"{src.variant} {size[0]}x{size[1]} {rt}: {row[rt]['median_s']:.3f} s, "
                    f"peak {row[rt]['peak_rss_mb']:.0f} MB")
            if all("median_s" in row[rt] for rt in RUNTIMES[1:]):
                try:
                    row["pte pair"] = _measure("pair", os.pathsep.join(str(files[rt]) for rt in RUNTIMES[1:]),
                                               size, runs, threads)
                    log(f"{src.variant} {size[0]}x{size[1]} fp32 / int8 .pte, run in turns in one process: "
                        f"{row['pte pair']['ratio']:.2f}x")
                except RuntimeError as e:
                    row["pte pair"] = {"error": str(e).splitlines()[0], "log": _runtime_error(str(e))}
            if tile and (size[0] > tile or size[1] > tile):
                row["tile"], row["tile_overlap"] = [tile, tile], TILE_OVERLAP
                for precision in ("fp32", "int8"):
                    rt, path = f"pte {precision} tiled", cached_pte(spec, precision, (tile, tile), artifacts, int8, log)
                    try:
                        row[rt] = {**_measure("tiled", str(path), size, runs, threads),
                                   "file_mb": path.stat().st_size / 1e6}
                    except RuntimeError as e:
                        row[rt] = {"error": str(e).splitlines()[0], "log": _runtime_error(str(e))}
                        log(f"{src.variant} {size[0]}x{size[1]} {rt}: FAILED: {row[rt]['log']}")
                        continue
                    log(f"{src.variant} {size[0]}x{size[1]} {rt}: {row[rt]['median_s']:.3f} s, "
                        f"peak {row[rt]['peak_rss_mb']:.0f} MB")
            if profile:
                for precision in ("fp32", "int8"):
                    try:
                        row[f"profile {precision}"] = _measure("profile", str(files[f"pte {precision}"]), size,
                                                               runs, threads)
                    except RuntimeError as e:
                        row[f"profile {precision}"] = {"error": str(e).splitlines()[0], "log": _runtime_error(str(e))}
                        log(f"{src.variant} {size[0]}x{size[1]} profile {precision}: FAILED: "
                            f"{row[f'profile {precision}']['log']}")
                        continue
                    lo, hi = row[f"profile {precision}"]["outside_int8_share"]
                    log(f"{src.variant} {size[0]}x{size[1]} profile {precision}: "
                        f"{row[f'profile {precision}']['operator_ms']:.0f} ms in operators, "
                        f"outside int8 {100 * lo:.0f}-{100 * hi:.0f} %")
            for rt, key in (("pte fp32", "speedup_pte_fp32"), ("pte int8", "speedup_pte_int8")):
                if "median_s" in row["eager fp32"] and "median_s" in row[rt]:
                    row[key] = row["eager fp32"]["median_s"] / row[rt]["median_s"]
            if "median_s" in row["pte fp32"] and "median_s" in row["pte int8"]:
                row["int8_vs_fp32_pte_apart"] = row["pte fp32"]["median_s"] / row["pte int8"]["median_s"]
                row["int8_vs_fp32_pte"] = row.get("pte pair", {}).get("ratio", row["int8_vs_fp32_pte_apart"])
            rows.append(row)
    return rows


def table_markdown(rows: list[dict]) -> str:
    L = ["| model | size | eager fp32 s | pte fp32 s | pte int8 s | eager / pte fp32 | eager / pte int8 | "
         "pte fp32 / int8 | peak MB eager / fp32 / int8 | pte MB fp32 / int8 |",
         "|---|---|---:|---:|---:|---:|---:|---:|---|---|"]

    def v(r, rt, key, spec):
        return format(r[rt][key], spec) if key in r[rt] else ("failed" if "error" in r[rt] else "–")

    for r in rows:
        ratio = [f"{r[k]:.2f}x" if k in r else "–" for k in ("speedup_pte_fp32", "speedup_pte_int8",
                                                              "int8_vs_fp32_pte")]
        if "ratio" in r.get("pte pair", {}):
            ratio[2] += f" ({r['int8_vs_fp32_pte_apart']:.2f}x)"
        L.append(f"| {r['model']} | {r['size'][1]}x{r['size'][0]} | "
                 + " | ".join(v(r, rt, "median_s", ".3f") for rt in RUNTIMES)
                 + f" | {ratio[0]} | {ratio[1]} | {ratio[2]} | "
                 + " / ".join(v(r, rt, "peak_rss_mb", ".0f") for rt in RUNTIMES) + " | "
                 + " / ".join(v(r, rt, "file_mb", ".2f") for rt in RUNTIMES[1:]) + " |")
    fails = [f"- {r['model']} {r['size'][1]}x{r['size'][0]} {rt}: {v['log']}"
             for r in rows for rt, v in r.items() if rt.startswith((*RUNTIMES, "profile")) and isinstance(v, dict)
             and "error" in v]
    return "\n".join(L) + "\n" + ("\nFailed to run:\n\n" + "\n".join(fails) + "\n" if fails else "")


def tiled_markdown(rows: list[dict]) -> str:
    """Whole-frame vs tiled ``.pte`` rows (rows measured with ``tile``), or '' when there are none."""
    rows = [r for r in rows if "tile" in r]
    if not rows:
        return ""
    L = ["| model | frame | tile (overlap) | fp32 s: whole / tiled | int8 s: whole / tiled | "
         "peak MB fp32: whole / tiled | peak MB int8: whole / tiled |", "|---|---|---|---|---|---|---|"]

    def v(r, rt, key, spec):
        return format(r[rt][key], spec) if key in r.get(rt, {}) else ("failed" if "error" in r.get(rt, {}) else "–")

    for r in rows:
        cells = [r["model"], f"{r['size'][1]}x{r['size'][0]}", f"{r['tile'][1]}x{r['tile'][0]} ({r['tile_overlap']})"]
        cells += [f"{v(r, f'pte {p}', 'median_s', '.3f')} / {v(r, f'pte {p} tiled', 'median_s', '.3f')}"
                  for p in ("fp32", "int8")]
        cells += [f"{v(r, f'pte {p}', 'peak_rss_mb', '.0f')} / {v(r, f'pte {p} tiled', 'peak_rss_mb', '.0f')}"
                  for p in ("fp32", "int8")]
        L.append("| " + " | ".join(cells) + " |")
    return "\n".join(L) + "\n"


def memory_markdown(rows: list[dict]) -> str:
    """Where each program's peak resident memory goes: the process before loading (Python, torch, the inputs),
    after loading the program, ExecuTorch's planned buffers, and the peak while running (the rest is XNNPACK's
    workspace for the intermediate tensors of its subgraphs)."""
    L = ["| model | frame | program | before load MB | after load MB | planned MB | peak MB |",
         "|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        for rt in ("pte fp32", "pte int8", "pte fp32 tiled", "pte int8 tiled"):
            m = r.get(rt, {})
            if m.get("planned_mb") is None:
                continue
            prog = rt.removeprefix("pte ") + (f" ({r['tile'][1]}x{r['tile'][0]} tiles)" if "tiled" in rt else "")
            L.append(f"| {r['model']} | {r['size'][1]}x{r['size'][0]} | {prog} | {m['rss_before_mb']:.0f} | "
                     f"{m['rss_loaded_mb']:.0f} | {m['planned_mb']:.0f} | {m['peak_rss_mb']:.0f} |")
    return "\n".join(L) + "\n" if len(L) > 2 else ""


def profile_markdown(rows: list[dict], top: int = 10) -> str:
    """Per row with profiles: the int8 and fp32 programs' time by number format, and by operator kind side
    by side (the kinds where int8 takes the most time first), or '' when nothing was profiled."""

    L = []
    for r in rows:
        pf, pi = r.get("profile fp32", {}), r.get("profile int8", {})
        if "table" not in pf or "table" not in pi:
            continue
        lo, hi = pi["outside_int8_share"]
        L += [f"**{r['model']} {r['size'][1]}x{r['size'][0]}** ({pi['runs']} timed run(s), {pi['threads']} thread(s)): "
              f"operators take {pf['operator_ms']:.0f} ms (fp32) and {pi['operator_ms']:.0f} ms (int8) per run; the "
              f"int8 program spends {100 * lo:.1f} % of it outside int8 kernels, {100 * hi:.1f} % counting the "
              "operators XNNPACK names without a number format.", "",
              "| format | fp32 ms | int8 ms |", "|---|---:|---:|"]
        L += [f"| {f} | {pf['by_format_ms'][f]:.0f} | {pi['by_format_ms'][f]:.0f} |" for f in FORMATS
              if pf["by_format_ms"][f] or pi["by_format_ms"][f]]
        kinds: dict[str, dict[str, float]] = {}
        for prec, prof in (("fp32", pf), ("int8", pi)):
            for t in prof["table"]:
                kinds.setdefault(t["kind"], {"fp32": 0.0, "int8": 0.0, "count": 0})
                kinds[t["kind"]][prec] += t["ms"]
                if prec == "int8":
                    kinds[t["kind"]]["count"] += t["count"]
        order = sorted(kinds.items(), key=lambda kv: -max(kv[1]["int8"], kv[1]["fp32"]))
        L += ["", "| operator | count (int8 program) | fp32 ms | int8 ms | fp32 / int8 |", "|---|---:|---:|---:|---:|"]
        for k, d in order[:top]:
            ratio = f"{d['fp32'] / d['int8']:.2f}x" if d["int8"] > 0 and d["fp32"] > 0 else "–"
            L.append(f"| {k} | {int(d['count'])} | {d['fp32']:.0f} | {d['int8']:.0f} | {ratio} |")
        L.append("")
    return "\n".join(L)


def report_markdown(rows: list[dict], runs: int, threads: int) -> str:
    met = [r for r in rows if r.get("speedup_pte_int8", 0) >= GOAL_INT8_SPEEDUP]
    met2 = [r for r in rows if r.get("int8_vs_fp32_pte", 0) >= GOAL_INT8_VS_FP32]
    tiled = tiled_markdown(rows)
    prof = profile_markdown(rows)
    memory = memory_markdown(rows)
    return "\n".join([
        "# Eager PyTorch vs ExecuTorch (XNNPACK) on this CPU", "",
        f"Seconds per forward, median of {runs} runs after a warm-up, {threads} thread(s); peak resident memory "
        f"of the measuring process (its memory before loading the model is in `bench.json`). pte fp32 / int8: "
        f"both programs loaded in one process and run in turns ({runs} rounds, medians), the ratio the goal is "
        f"judged on; in brackets the ratio of the two separate processes' figures.", "",
        table_markdown(rows),
        *(["Whole frame in one program vs the program at the tile size run over the frame in overlapping tiles "
           "(`eapnet.inference.predict`, the frame's input and output stay in memory):", "", tiled] if tiled else []),
        f"Goal: int8 `.pte` at least {GOAL_INT8_SPEEDUP:g}x faster than eager fp32: met in {len(met)} of "
        f"{len(rows)} rows; at least {GOAL_INT8_VS_FP32:g}x faster than the fp32 `.pte`: met in {len(met2)} of "
        f"{len(rows)} rows.", "",
        *(["## Where the memory goes", "", "Peak resident memory of each measuring process; ExecuTorch plans only "
           "the buffers between delegate calls, XNNPACK allocates the intermediate tensors of its subgraphs itself "
           "(peak minus after-load is mostly that workspace).", "", memory] if memory else []),
        *(["## Where the time goes (ExecuTorch ETDump, per operator)", "", prof] if prof else [])])


if __name__ == "__main__":  # the measuring subprocess (see the module docstring)
    from eapnet.cli import parse_size

    kind, path, size, runs, threads = sys.argv[1:6]
    print(json.dumps(worker(kind, path, parse_size(size), int(runs), int(threads))))


def save_report(out, args: dict, rows: list[dict], md: str, runs: int, threads: int) -> None:
    """A bench command's output folder: ``run.json`` (``args``), ``bench.json`` (the rows) and ``bench.md``
    (``md`` under a line naming the CPU: int8 speed depends on its VNNI support)."""

    cpu = machine()
    record_run(out, args)
    atomic_write_json(Path(out) / "bench.json", {"runs": runs, "threads": threads, "machine": cpu, "rows": rows})
    atomic_write_text(Path(out) / "bench.md", f"CPU: {cpu}.\n\n{md}")
