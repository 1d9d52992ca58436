"""The same ``.pte`` through the native runner, on this machine and on the phone's instruction set.

The parity harness (:mod:`eapnet.export.parity`) judges an artifact by its outputs in ExecuTorch's Python
runtime on this (x86-64) machine. An app runs the same file through the C++ runtime, on an aarch64 CPU,
where XNNPACK picks other kernels (NEON, dot product, i8mm/SVE2, SME). :func:`runner_rows` runs the very inputs
of the parity check through the project's runner (``eapnet/export/runner``, :mod:`eapnet.export.native`) and
compares its outputs with the Python runtime's:

- ``"native"``: the runner built for this machine; the same kernels, so it must agree to float rounding
  (in practice bit for bit);
- ``"aarch64"``: the runner cross-built for aarch64 and run under QEMU user mode once per kernel family of
  :data:`eapnet.export.native.CPUS`: ``cortex-a53`` (NEON), ``cortex-a76`` (dot product), ``neoverse-n2``
  (i8mm, SVE2) and ``max`` (SME/SME2; with a QEMU older than 10 run as ``max,sme=off``, and recorded so:
  older QEMU miscomputes SME).

A difference beyond float rounding (:data:`TOLERANCE`, relative to the output's largest value) fails the
artifact: the program then computes something else on that CPU. Tile programs are also run by the runner over
the whole full-size frame by the host runner's C++ tiler and compared with the Python tiler's stitched frame
(under QEMU a whole frame takes minutes per CPU family, so the aarch64 runs cover the canvases only).
"""
from __future__ import annotations

import platform
import time
from collections.abc import Sequence

import numpy as np

from eapnet.data import Scene
from eapnet.export import native
from eapnet.export.backends import Artifact
from eapnet.export.canvas import Canvas

__all__ = ["RUNNERS", "TOLERANCE", "host_cpu", "runner_rows"]

RUNNERS = ("native", "aarch64")
"""Values of ``check_parity --runner``."""

TOLERANCE = 1e-5
"""Largest |runner - Python runtime| allowed, relative to max(1, largest |output|) of the scene: float32
rounding of a different kernel order (seen: at most 1.2e-6 on aarch64, 0 on the host)."""


def host_cpu() -> str:
    """This machine's CPU model and the SIMD extensions XNNPACK picks kernels by (from ``/proc/cpuinfo``)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in open("/proc/cpuinfo", encoding="ascii", errors="replace"):
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() in ("flags", "Features"):
                flags = set(value.split())
            if model and flags:
                break
    except OSError:
        pass
    ext = [name for flag, name in (("avx2", "AVX2"), ("avx512f", "AVX-512"), ("avx512_vnni", "AVX-512 VNNI"),
                                   ("avx_vnni", "AVX-VNNI"), ("amx_int8", "AMX-INT8")) if flag in flags]
    return f"{model} ({', '.join(ext)})" if ext else model


def _machines(runner: str, cpus: Sequence[str]) -> list[dict]:
    """One entry per machine the runner runs as: the host, or each aarch64 CPU family under QEMU."""
    if runner == "native":
        return [{"runner": "native", "arch": platform.machine(), "cpu": host_cpu(), "flag": None, "note": None}]
    found = native.qemu()
    if found is None:
        raise ValueError("no QEMU user-mode emulator for aarch64: run scripts/setup_native.sh")
    path, version = found
    rows = []
    for cpu in cpus:
        flag, note = native.cpu_flag(cpu, version)
        rows.append({"runner": "aarch64", "arch": "aarch64",
                     "cpu": f"{cpu} (QEMU {'.'.join(map(str, version))} user mode, -cpu {flag})",
                     "flag": flag, "note": note})
    return rows


def _diff(out: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """(max |out - ref|, the allowed bound for this output)."""
    return float(np.abs(out.astype(np.float64) - ref).max()), TOLERANCE * max(1.0, float(np.abs(ref).max()))


def runner_rows(art: Artifact, canvases: Sequence[Canvas], x86_outs: Sequence[np.ndarray], *,
                runners: Sequence[str], cpus: Sequence[str] = native.CPUS,
                stitched: Sequence[tuple[Scene, np.ndarray]] = (), tile_overlap: int | None = None,
                threads: int | None = None, log=print) -> tuple[list[dict], list[str]]:
    """Run ``art`` (a ``.pte``) through each of ``runners`` on the parity check's ``canvases`` and compare with
    ``x86_outs`` (the Python runtime's outputs on them, ``(H, W, 3)``). ``stitched``: ``(scene, Python's
    stitched output)`` pairs, run by the runner over the whole scene with its own tiler (``tile_overlap``).

    Returns ``(machines, failures)``: per machine its description, the largest difference and its bound,
    seconds, and ``passed``; failures as sentences naming the machine."""
    if art.kind != "pte":
        raise ValueError(f"{art.path.name}: the native runner runs ExecuTorch programs (.pte) only")
    machines, fails = [], []
    for runner in runners:
        if runner not in RUNNERS:
            raise ValueError(f"runner must be one of {RUNNERS}, got {runner!r}")
        target = "host" if runner == "native" else "aarch64"
        for m in _machines(runner, cpus):
            t0, worst, bound, worst_st = time.time(), 0.0, 0.0, None
            try:
                for c, ref in zip(canvases, x86_outs, strict=True):
                    out, _ = native.run_native(art.path, c.ldrs, c.evs, target=target, cpu=m["flag"],
                                               threads=threads)
                    d, b = _diff(out, ref)
                    if d - b > worst - bound or not bound:
                        worst, bound = d, b
                for scene, ref in (stitched if runner == "native" else ()):   # whole frames: hours under QEMU
                    out, _ = native.run_native(art.path, scene.ldrs, scene.evs, target=target, cpu=m["flag"],
                                               tile_overlap=tile_overlap, threads=threads)
                    d, b = _diff(out, ref)
                    worst_st = d if worst_st is None else max(worst_st, d)
                    if d - b > worst - bound:
                        worst, bound = d, b
                error = None
            except Exception as e:   # a runner that cannot run the program fails this machine, not the harness
                error = f"{type(e).__name__}: {e}"
            row = {k: m[k] for k in ("runner", "arch", "cpu")}
            row["executor"] = "native runner (eapnet/export/runner)" + (" under QEMU" if runner == "aarch64" else "")
            row.update(canvases=len(canvases), stitched_scenes=len(stitched) if runner == "native" else 0,
                       seconds=round(time.time() - t0, 1))
            if m["note"]:
                row["note"] = m["note"]
            if error:
                row.update(passed=False, error=error)
                fails.append(f"{m['cpu']}: the {runner} runner failed ({error})")
            else:
                row.update(max_abs_vs_x86=worst, bound=bound, passed=worst <= bound,
                           **({"stitched_max_abs_vs_x86": worst_st} if worst_st is not None else {}))
                if worst > bound:
                    fails.append(f"{m['cpu']}: the {runner} runner's output differs from the Python runtime's on "
                                 f"x86 by {worst:.3g} (> {bound:.3g}, float rounding)")
            log(f"{'PASS' if row['passed'] else 'FAIL'} {art.path.name} on {m['cpu']}: "
                + (row.get("error") or f"max |{runner} - x86| {worst:.3g} (bound {bound:.3g}), {row['seconds']} s"))
            machines.append(row)
    return machines, fails
