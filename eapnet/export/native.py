"""The native runner (``eapnet/export/runner``, binary ``eapnet_runner``) from Python: build it, run a ``.pte``
through it on this machine or, cross-built for aarch64, under QEMU user mode, and read the HDR back.

The runner is the C++ program an app copies (ExecuTorch's C++ runtime, the XNNPACK delegate, the tiler of
``eapnet.inference.predict``). :func:`run_native` hands it a scene in the layout
``eapnet.inference.predict`` takes and returns ``(hdr (H, W, 3) float32, stats)``, so its output compares
directly with ``predict(ProgramModule(load_pte(pte)), ldrs, evs, tile=program size, overlap=...)``: on this
machine the two are equal bit for bit (same kernels, same tiler arithmetic); on aarch64 XNNPACK picks other
kernels per CPU family (:data:`CPUS`) and the outputs agree to float rounding.

Tools: ``scripts/build_runner.sh`` (CMake) builds ``build/runner-host`` / ``build/runner-aarch64``;
``scripts/setup_native.sh`` installs the aarch64 cross compiler, QEMU 10 (``.tools/qemu``) and the aarch64
ExecuTorch runtime (``.tools/executorch-aarch64-<version>``).
"""
from __future__ import annotations

import fcntl
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from eapnet.inference import TILE_OVERLAP, frame_size

__all__ = ["CPUS", "TARGETS", "RunnerError", "RunnerMissing", "build_runner", "cpu_flag", "program_info", "qemu",
           "run_native", "runner_path"]

ROOT = Path(__file__).resolve().parents[2]   # the repository (scripts/, build/)
BUILD_SCRIPT = ROOT / "scripts" / "build_runner.sh"
TARGETS = ("host", "aarch64")
"""``target`` values: ``"host"`` (this machine, the venv's ExecuTorch wheel) and ``"aarch64"`` (under QEMU)."""
CPUS = ("cortex-a53", "cortex-a76", "neoverse-n2", "max")
"""QEMU ``-cpu`` models, one per XNNPACK aarch64 kernel family: NEON, dot product, i8mm + SVE2, SME/SME2."""
SYSROOT = Path("/usr/aarch64-linux-gnu")
"""The cross toolchain's sysroot: QEMU's ``-L`` (the aarch64 loader and C/C++ libraries)."""
QEMU_SME = (10,)
"""The first QEMU version whose SME/SME2 arithmetic is right (7.2, Debian 12's, gives wrong int8 results)."""
EXIT_BAD_INPUT = 2
"""The runner's exit status for a bad argument or input file (1: the runtime failed)."""

_built: dict[str, Path] = {}   # target -> binary, built (or found up to date) by this process


class RunnerError(RuntimeError):
    """The runner failed; the message ends with its last line on stderr. ``returncode`` (None for a timeout)
    and ``stderr`` (its whole stderr) as attributes."""

    def __init__(self, message: str, returncode: int | None = None, stderr: str = ""):
        super().__init__(message)
        self.returncode = returncode
        self.stderr = stderr


class RunnerMissing(RunnerError):
    """The runner cannot be built or run here: a tool is missing (the message says which, and what installs it)."""


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def runner_path(target: str = "host") -> Path:
    """Where :func:`build_runner` puts the binary of ``target`` (:data:`TARGETS`); it may not exist yet."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    return ROOT / "build" / f"runner-{target}" / "eapnet_runner"


def build_runner(target: str = "host", *, timeout: float = 900) -> Path:
    """Build (or bring up to date: CMake rebuilds only what changed) the runner for ``target`` (:data:`TARGETS`)
    with ``scripts/build_runner.sh``; returns the binary's path. :class:`RunnerMissing` when a tool is missing
    (cmake, the cross compiler, the aarch64 runtime: run ``scripts/setup_native.sh``), :class:`RunnerError`
    with the end of the build log when the build fails. ``timeout`` in seconds. Processes building at once
    (test workers) take turns: one build folder, one CMake at a time."""
    lock = runner_path(target).parent.with_suffix(".lock")   # build/runner-<target>.lock
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        try:
            done = subprocess.run(["bash", str(BUILD_SCRIPT), target], capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RunnerError(f"building the {target} runner took longer than {timeout:.0f} s") from None
    if done.returncode == EXIT_BAD_INPUT:
        raise RunnerMissing(_last_line(done.stderr), done.returncode, done.stderr)
    if done.returncode != 0:
        raise RunnerError(f"building the {target} runner failed: {_last_line(done.stderr)}", done.returncode,
                          done.stderr)
    path = Path(_last_line(done.stdout))
    _built[target] = path
    return path


def qemu() -> tuple[Path, tuple[int, ...]] | None:
    """The QEMU aarch64 user-mode emulator and its version, e.g. ``(Path(".tools/qemu/qemu-aarch64"), (10, 0,
    13))``: the project's own (``scripts/setup_native.sh``) first, else one on ``PATH``; None when there is none."""
    candidates = [ROOT / ".tools" / "qemu" / "qemu-aarch64"]
    candidates += [Path(p) for p in (shutil.which("qemu-aarch64"), shutil.which("qemu-aarch64-static")) if p]
    for path in candidates:
        if not (path.is_file() and os.access(path, os.X_OK)):
            continue
        try:
            out = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        m = re.search(r"version (\d+)\.(\d+)(?:\.(\d+))?", out)
        if m:
            return path, tuple(int(g) for g in m.groups() if g is not None)
    return None


def cpu_flag(cpu: str, qemu_version: tuple[int, ...]) -> tuple[str, str | None]:
    """QEMU's ``-cpu`` value for ``cpu`` (one of :data:`CPUS`) and a note for the caller, or None: a QEMU older
    than 10 computes SME wrongly, so ``max`` runs as ``max,sme=off`` and the note says SME was not covered."""
    if cpu not in CPUS:
        raise ValueError(f"cpu must be one of {CPUS}, got {cpu!r}")
    if cpu == "max" and tuple(qemu_version) < QEMU_SME:
        v = ".".join(map(str, qemu_version))
        return "max,sme=off", (f"QEMU {v} computes SME instructions wrongly, so max ran as max,sme=off: the SME/"
                               f"SME2 kernels were not covered (scripts/setup_native.sh installs QEMU 10)")
    return cpu, None


def missing_tools(target: str = "host") -> str | None:
    """What this machine lacks to build and run the runner for ``target``, as one sentence naming what installs
    it, or None. Looks only (nothing is built): cmake and a C++ compiler; for aarch64 also the cross compiler,
    its sysroot, the aarch64 ExecuTorch runtime and QEMU."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    need = [t for t in ("cmake", "g++") if shutil.which(t) is None]
    if target == "aarch64":
        need += [t for t in ("aarch64-linux-gnu-g++",) if shutil.which(t) is None]
        if not SYSROOT.is_dir():
            need.append(f"the aarch64 sysroot {SYSROOT}")
        if not (_aarch64_lib() / "libexecutorch.so").is_file():
            need.append(f"the aarch64 ExecuTorch runtime ({_aarch64_lib().parent.parent})")
        if qemu() is None:
            need.append("QEMU user mode (qemu-aarch64)")
    if not need:
        return None
    fix = "scripts/setup_native.sh" if target == "aarch64" else "apt-get install cmake g++"
    return f"missing {', '.join(need)}: run {fix}"


def _aarch64_lib() -> Path:
    version = importlib.metadata.version("executorch")
    return ROOT / ".tools" / f"executorch-aarch64-{version}" / "executorch" / "lib"


def _runner(target: str) -> Path:
    """The binary for ``target``, built once per process (later calls reuse it)."""
    return _built.get(target) or build_runner(target)


def _command(target: str, cpu: str | None) -> tuple[list[str], dict]:
    """The command prefix that runs the runner of ``target`` (under QEMU for aarch64), and what it runs as:
    ``{"target", "cpu", "note"}`` (+ ``"qemu"``, its version). ``cpu``: a :data:`CPUS` name (mapped by
    :func:`cpu_flag`) or any QEMU ``-cpu`` value (e.g. ``"max,sme=off"``); None = ``"max"``. Ignored on the host."""
    runner = _runner(target)
    if target == "host":
        return [str(runner)], {"target": "host", "cpu": None, "note": None}
    found = qemu()
    if found is None:
        raise RunnerMissing("no QEMU user-mode emulator for aarch64 (qemu-aarch64): run scripts/setup_native.sh")
    if not SYSROOT.is_dir():
        raise RunnerMissing(f"no aarch64 sysroot at {SYSROOT} (QEMU's -L): run scripts/setup_native.sh")
    path, version = found
    cpu = cpu or "max"
    flag, note = cpu_flag(cpu, version) if cpu in CPUS else (cpu, None)
    prefix = [str(path), "-L", str(SYSROOT), "-cpu", flag, "-E", f"LD_LIBRARY_PATH={_aarch64_lib()}", str(runner)]
    return prefix, {"target": "aarch64", "cpu": flag, "note": note, "qemu": ".".join(map(str, version))}


def _run(cmd: list[str], what: str, timeout: float) -> str:
    """Run the runner; its stdout. :class:`RunnerError` naming ``what`` with its last stderr line otherwise."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        raise RunnerError(f"the runner did not finish {what} within {timeout:.0f} s", None, err) from None
    if done.returncode != 0:
        why = _last_line(done.stderr) or (f"killed by signal {-done.returncode}" if done.returncode < 0
                                          else "no message on stderr")
        raise RunnerError(f"the runner failed {what} (exit {done.returncode}): {why}", done.returncode, done.stderr)
    return done.stdout


def program_info(pte: str | os.PathLike, *, target: str = "host", cpu: str | None = None,
                 timeout: float = 300) -> dict:
    """``{"program": [H, W], "io": "float" | "app"}`` of a ``.pte``, as the runner reads its method metadata."""
    return _info(_command(target, cpu)[0], Path(pte), timeout)


def _info(prefix: list[str], pte: Path, timeout: float) -> dict:
    return json.loads(_last_line(_run(prefix + [str(pte), "--info"], f"reading {pte.name}", timeout)))


def _write_ppm(path: Path, frame: np.ndarray) -> None:
    h, w, _ = frame.shape
    path.write_bytes(b"P6\n%d %d\n255\n" % (w, h) + np.ascontiguousarray(frame, dtype=np.uint8).tobytes())


def _codes(ldrs: np.ndarray) -> np.ndarray:
    """Float frames that are exact 8-bit codes / 255 (to float32 rounding) as uint8 codes; ValueError otherwise."""
    x = np.asarray(ldrs, dtype=np.float64) * 255.0
    if not np.isfinite(x).all():
        raise ValueError("ldrs contain NaN/inf values")
    codes = np.round(x)
    off = float(np.abs(x - codes).max())
    if off > 1e-3 or codes.min() < 0 or codes.max() > 255:
        raise ValueError(f"an app program takes 8-bit frames: ldrs must be codes / 255 in [0, 1], but they are up "
                         f"to {off:.3g} codes off the nearest code (in [{x.min() / 255:.4g}, {x.max() / 255:.4g}]);"
                         f" pass uint8 codes with u8=True, or quantise them first")
    return codes.astype(np.uint8)


def run_native(pte: str | os.PathLike, ldrs: np.ndarray, evs, *, target: str = "host", cpu: str | None = None,
               tile_overlap: int | None = TILE_OVERLAP, threads: int | None = None, repeat: int = 1,
               u8: bool = False, timeout: float = 600) -> tuple[np.ndarray, dict]:
    """Run ``pte`` through the native runner on one scene; returns ``(hdr, stats)``.

    ``ldrs``: ``(3, H, W, 3)`` short, medium, long frames, RGB: float32 in [0, 1] as ``eapnet.inference.predict``
    takes them, or uint8 codes with ``u8=True`` (handed over as 8-bit PPM frames; a float program then sees
    ``code * (1/255)`` in float32, as ``common.AppIO`` computes). A float program gets float frames bit for bit
    (raw float32, ``--ldrs-f32``); an app program takes 8-bit frames, so float ``ldrs`` must then be exact codes
    / 255 (ValueError otherwise). ``evs``: 3 exposures, stops relative to the medium frame, strictly increasing.
    A frame of the program's size runs whole; a larger one in tiles of the program's size with
    ``tile_overlap`` pixels shared (None = ``TILE_OVERLAP``; in [0, tile side / 2)), blended as ``predict``.

    ``target``: ``"host"`` or ``"aarch64"`` (under QEMU; ``cpu``: a :data:`CPUS` name or a QEMU ``-cpu`` value,
    default ``"max"``). ``threads``: XNNPACK thread pool size (None = the runtime's). ``repeat``: runs in the
    one runner process, the first a warm-up. ``timeout``: seconds for the runner.

    ``hdr``: ``(H, W, 3)`` float32 whatever the program's output layout. ``stats``: the runner's JSON line
    (``program``, ``io``, ``frame``, ``tiles``, ``overlap``, ``load_ms``, ``first_ms``, ``latency_ms`` (runs after
    the first), ``median_ms`` (None for one run), ``peak_rss_mb`` (MiB; under QEMU the emulator's), ``threads``)
    plus ``target``, ``cpu`` (the QEMU ``-cpu`` value, None on the host) and ``note`` (None, or what was not
    covered). :class:`RunnerError` (its last stderr line in the message) when the runner fails or times out;
    ValueError for a scene of the wrong shape or type.
    """
    pte = Path(pte)
    if not pte.is_file():
        raise FileNotFoundError(f"no .pte at {pte}")
    H, W = frame_size(ldrs)
    ldrs = np.asarray(ldrs)
    evs = np.asarray(evs, dtype=np.float32).reshape(-1)
    if evs.shape != (3,):
        raise ValueError(f"evs must hold 3 exposure values, got shape {evs.shape}")
    if u8 and ldrs.dtype != np.uint8:
        raise ValueError(f"u8=True takes uint8 codes, got ldrs of dtype {ldrs.dtype}")
    if not u8 and ldrs.dtype.kind != "f":
        raise ValueError(f"ldrs must be floats in [0, 1] (or uint8 codes with u8=True), got dtype {ldrs.dtype}")
    if not (isinstance(repeat, int) and repeat >= 1):
        raise ValueError(f"repeat must be an integer >= 1, got {repeat!r}")
    if threads is not None and not (isinstance(threads, int) and threads >= 1):
        raise ValueError(f"threads must be None or an integer >= 1, got {threads!r}")
    overlap = TILE_OVERLAP if tile_overlap is None else tile_overlap

    prefix, ran_as = _command(target, cpu)
    io = None if u8 else _info(prefix, pte, timeout)["io"]   # uint8 frames suit both conventions
    with tempfile.TemporaryDirectory(prefix="eapnet-native-") as tmp:
        tmp = Path(tmp)
        args = [str(pte)]
        if io == "float":   # the float program's own input, bit for bit: (frame, channel, row, col)
            np.ascontiguousarray(ldrs.transpose(0, 3, 1, 2), dtype=np.float32).tofile(tmp / "ldrs.f32")
            args += ["--ldrs-f32", str(tmp / "ldrs.f32"), "--size", f"{H}x{W}"]
        else:
            codes = ldrs if u8 else _codes(ldrs)
            names = [tmp / f"{n}.ppm" for n in ("short", "medium", "long")]
            for path, frame in zip(names, codes):
                _write_ppm(path, frame)
            args += ["--frames", *map(str, names)]
        args += ["--evs", *(repr(float(e)) for e in evs), "--overlap", str(overlap), "--repeat", str(repeat),
                 "--out-f32", str(tmp / "hdr.f32")]
        if threads is not None:
            args += ["--threads", str(threads)]
        out = _run(prefix + args, f"on {pte.name}", timeout)
        hdr = np.fromfile(tmp / "hdr.f32", dtype=np.float32).reshape(H, W, 3)
    stats = json.loads(_last_line(out))
    stats.update(ran_as)
    return hdr, stats
