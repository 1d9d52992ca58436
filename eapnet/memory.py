"""Memory a run will need, estimated from the model's config and the frame size before anything is allocated,
and the one check that refuses a run that cannot fit, naming the figures.

    from eapnet.memory import estimate_peak_bytes, require_memory
    need = estimate_peak_bytes(STANDARD, 1060, 1900)                   # whole-frame fp32 inference, bytes
    require_memory(need, "--size 1060x1900", "whole-frame inference", "pass --allow-large to try anyway")

**How.** :func:`activation_bytes` runs the model once on PyTorch's meta device (shapes only: nothing is
allocated, so a config of any width costs the same) under a dispatch mode that adds each op's new output
storage and subtracts it when its last tensor is freed: the peak of the tensors alive at once in one eager
batch-1 forward, exact for the graph as written. Every tensor scales with the padded pixel count, so one
simulation per config (at :data:`_REFERENCE` pixels) gives a per-pixel rate. A kind of run (:data:`KINDS`)
adds what the simulation does not see: kernel scratch and allocator slack (a factor on the activations) and a
fixed part (the exporters' graph lowering and runtime libraries), plus the frame-sized arrays around the
forward (:func:`estimate_peak_bytes`).

**Calibration** (peak resident memory, ``resource.getrusage`` / ``/usr/bin/time -v``, this project's 2-core
x86 CPU machine, torch 2.13 CPU, fp32; figures are the growth of the process over what it held before the
run). Whole-frame ``predict`` of the shipped standard model (simulated 2,182 bytes per padded pixel): 128x128
50 MiB, 256x256 187, 384x512 535, 512x512 598-617, 512x768 1,013, 1024x512 1,165, 768x1024 1,759; the
lightweight model (2,118 B/px): 256x256 195, 512x768 936 MiB. The estimate (1.10 x simulated + the input
copy + weights + 64 MiB) is within -3 %..+17 % of each of these from 256x256 up (768x1024: +8 %); it
over-states 128x128 twice (the fixed part). The exporters at 256x256 and 512x512 (fp32 and int8 ``.pte``,
fp16 ``.mlpackage``): within -2 %..+7 %, but the Core ML one over-stated by 0.27 GiB (:data:`KINDS`). At the
full-size 1060x1900 frame: the compressed 100 G standard model grows the process by 3,893 MiB (estimate 4,225,
+9 %); in 568x680 tiles by 1,013 MiB (estimate 953, -6 %); the simulation gives 4.49 GB for the standard model. Not calibrated:
CUDA (where the caching allocator holds freed blocks) and autocast to bf16/fp16, estimated as the same graph
at 2 bytes per value.
"""
from __future__ import annotations

import functools
import math
import os
import resource
import sys
import weakref
from pathlib import Path

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from eapnet.checkpoint import SHIPPED, read_checkpoint, shipped_path, unwrap
from eapnet.model import EAPNet, EAPNetConfig

MIB = 2**20
GIB = 2**30

_REFERENCE = 256
"""Side in pixels of the square frame each config is simulated at once (a multiple of every pad multiple)."""

KINDS: dict[str, tuple[str, float, int]] = {
    # kind: (what the message calls it, factor on the simulated activations, fixed bytes). Export figures are
    # whole processes of ``python -m eapnet.export.export_<x> --model standard --size S``, 0.31 GiB of which
    # is the interpreter, torch and the exporters' modules loaded when the check runs.
    "predict": ("whole-frame inference", 1.10, 64 * MIB),
    # lowering (size-independent), then one runtime and one eager forward at the size: 687 / 1,121 MiB at
    # 256x256 / 512x512 (estimate 699 / 1,156)
    "pte-fp32": ("the fp32 .pte export", 1.10, 224 * MIB),
    # PTQ on the calibration set, lowering, then the runtime, the Q/DQ reference and the float model at the
    # size: 937 / 1,320 MiB (estimate 922 / 1,379)
    "pte-int8": ("the int8 .pte export", 1.10, 448 * MIB),
    # conversion only, nothing runs at the size: fp16 518 / 541 MiB (estimate 786 / 834: the fixed part is
    # the int8 .pte's, to cover w8a8's calibration, which was not measured)
    "coreml": ("the Core ML export", 0.10, 448 * MIB),
    # compress/qat.py's export stage: two export workers side by side (processes of their own: one more
    # interpreter and torch, 320 MiB, and two int8 fixed parts), then parity runs the float model and each
    # artifact at the size in turn; the sum of those parts, not measured end to end
    "ship": ("exporting and checking the phone artifacts", 1.10, (320 + 2 * 448) * MIB),
}
"""Kinds of run :func:`estimate_peak_bytes` knows: ``(description, activation factor, fixed bytes)``."""


class MemoryBudgetError(ValueError):
    """A run whose estimated memory exceeds what this machine (or GPU) has available; the message names the
    argument, the estimate, the machine's total and available memory and how to insist."""


class _LiveBytes(TorchDispatchMode):
    """Peak bytes of the storages alive at once while ops run under it. Storages that existed before (inputs,
    weights) are not counted; an in-place op's output is its input and adds nothing; a view adds a reference
    to its base's storage, which is freed (subtracted) when its last tensor is."""

    def __init__(self, external: list[torch.Tensor]):
        super().__init__()
        self.live = self.peak = 0
        self._refs: dict[int, int] = {}
        self._external = {t.untyped_storage()._cdata for t in external}

    def _release(self, key: int, nbytes: int) -> None:
        self._refs[key] -= 1
        if not self._refs[key]:
            del self._refs[key]
            self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        given = {id(t) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor) or id(t) in given:
                continue
            storage = t.untyped_storage()
            key, nbytes = storage._cdata, storage.nbytes()
            if key in self._external:
                continue
            if key not in self._refs:
                self._refs[key] = 0
                self.live += nbytes
                self.peak = max(self.peak, self.live)
            self._refs[key] += 1
            weakref.finalize(t, self._release, key, nbytes)
        return out


def _config(config: EAPNetConfig | dict) -> EAPNetConfig:
    return config if isinstance(config, EAPNetConfig) else EAPNetConfig.from_dict(dict(config))


@functools.lru_cache(maxsize=32)
def _simulate(config: EAPNetConfig, half: bool) -> tuple[float, int]:
    """``(activation bytes per padded pixel, weight bytes)`` of ``config``: one meta-device forward at
    ``_REFERENCE`` x ``_REFERENCE`` (no padding), channels_last as on CPU, fp32 or (``half``) bf16."""
    dtype = torch.bfloat16 if half else torch.float32
    with torch.device("meta"):
        model = EAPNet(config).to(dtype).eval()
        ldrs = torch.empty(1, 3, 3, _REFERENCE, _REFERENCE, dtype=dtype)
        evs = torch.empty(1, 3, dtype=dtype)
    model.to(memory_format=torch.channels_last)
    state = [*model.parameters(), *model.buffers()]
    mode = _LiveBytes([ldrs, evs, *state])
    with torch.inference_mode(), mode:
        model(ldrs, evs)
    return mode.peak / _REFERENCE**2, sum(t.numel() * t.element_size() for t in state)


def activation_bytes(config: EAPNetConfig | dict, height: int, width: int, *, half: bool = False) -> int:
    """Peak bytes of the tensors alive at once in one batch-1 eager forward of ``config`` on a ``height`` x
    ``width`` frame (pixels), inputs and weights excluded: fp32, or 2-byte values (``half``, as under CUDA
    autocast). Exact for the graph as written (see the module docstring); a run's memory is
    :func:`estimate_peak_bytes`."""
    cfg = _config(config)
    rate, _ = _simulate(cfg, half)
    m = cfg.pad_multiple
    hp, wp = math.ceil(height / m) * m, math.ceil(width / m) * m
    padded = 9 * (2 if half else 4) * hp * wp if (hp, wp) != (height, width) else 0   # the padded input copy
    return int(rate * hp * wp) + padded


def weight_bytes(config: EAPNetConfig | dict, *, half: bool = False) -> int:
    """Bytes of the parameters and buffers of ``config``'s model (fp32, or 2-byte with ``half``)."""
    return _simulate(_config(config), half)[1]


def estimate_peak_bytes(config: EAPNetConfig | dict, height: int, width: int, kind: str = "predict", *,
                        tile: tuple[int, int] | None = None, half: bool = False) -> int:
    """Bytes a run of ``kind`` (a key of :data:`KINDS`) will allocate at ``height`` x ``width`` pixels, beyond
    the interpreter and torch already loaded: the calibrated activations of one forward (:func:`activation_bytes`
    x the kind's factor), the weights, the kind's fixed part and the frame-sized arrays around the forward.
    ``tile`` (``predict`` only): (H, W) of the tiles of tiled inference, whose forward runs at the tile size
    while the frame's input copy, output and blending weights stay whole (64 bytes per frame pixel; a whole
    frame's input copy is 36); a tile covering the frame is the whole frame, as in ``predict``. Calibrated for
    fp32 on CPU (module docstring: -3 %..+17 % from 256x256 up); ``half``: 2-byte activations, not calibrated."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    if tile is not None and kind != "predict":
        raise ValueError(f"tile applies to kind 'predict' only, not {kind!r}")
    _, factor, fixed = KINDS[kind]
    cfg = _config(config)
    if tile is not None and tile[0] >= height and tile[1] >= width:
        tile = None   # predict runs the frame whole
    fh, fw = (height, width) if tile is None else (min(tile[0], height), min(tile[1], width))
    frame = height * width * (36 if tile is None else 64)
    return int(factor * activation_bytes(cfg, fh, fw, half=half)) + weight_bytes(cfg, half=half) + frame + fixed


def _cgroup_limit() -> tuple[int, int] | None:
    """``(limit, usage)`` bytes of this process's memory cgroup (v2 or v1), or None where none is set."""
    v1 = "/sys/fs/cgroup/memory/memory."
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         (v1 + "limit_in_bytes", v1 + "usage_in_bytes")):
        try:
            text = Path(limit).read_text().strip()
            if text == "max":
                return None
            return int(text), int(Path(usage).read_text().strip())
        except (OSError, ValueError):
            continue
    return None


def memory_of(device: str | torch.device | None = None) -> tuple[int, int]:
    """``(total, available)`` bytes: a CUDA device's (``torch.cuda.mem_get_info``'s free memory plus what
    PyTorch's caching allocator holds unused), else this machine's RAM (``/proc/meminfo``'s MemTotal and
    MemAvailable: free plus reclaimable cache), lowered to a memory cgroup's limit where one is set. Without
    ``/proc/meminfo`` (macOS) both are the physical memory."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return total, free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    info = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info[key] = int(value.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    total = info.get("MemTotal") or os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    available = info.get("MemAvailable", total)
    cg = _cgroup_limit()
    if cg is not None and cg[0] < total:
        total, available = cg[0], min(available, max(cg[0] - cg[1], 0))
    return total, available


def _gib(n: int) -> str:
    g = n / GIB
    return f"{g:.1f} GiB" if g < 10 else f"{g:,.0f} GiB"


def require_memory(need: int, what: str, doing: str, hint: str,
                   device: str | torch.device | None = None, *, limit: str = "available") -> None:
    """:class:`MemoryBudgetError` when ``need`` bytes exceed the memory of ``device`` (this machine's RAM by
    default; :func:`memory_of`), as one line: ``<what>: <doing> needs about N GiB, this machine has T GiB
    (A GiB available); <hint>``. ``what`` names the argument (``--size 4096x4096``), ``hint`` how to insist.
    ``limit``: ``"available"`` (what is free now: a command's check before it starts) or ``"total"`` (what
    can never fit: a check deep inside a long job, which a passing dip in free memory must not fail)."""
    if limit not in ("available", "total"):
        raise ValueError(f"limit must be 'available' or 'total', got {limit!r}")
    total, available = memory_of(device)
    if need > (available if limit == "available" else total):
        where = "this GPU" if device is not None and torch.device(device).type == "cuda" else "this machine"
        raise MemoryBudgetError(f"{what}: {doing} needs about {_gib(need)}, {where} has {_gib(total)} "
                                f"({_gib(available)} available); {hint}")


def config_of(model: nn.Module) -> EAPNetConfig | None:
    """The :class:`EAPNetConfig` of an EAPNet (under DDP / ``torch.compile`` wrappers), or None for a model this
    module cannot estimate (AHDR, exported or quantized programs)."""
    model = unwrap(model)
    return model.config if isinstance(model, EAPNet) else None


def checkpoint_config(name_or_path: str | os.PathLike) -> EAPNetConfig | None:
    """The config of a shipped model name or of a checkpoint this project wrote, read without building the
    model (``eapnet.checkpoint.read_checkpoint``: its sizes are checked there); None for an AHDR checkpoint."""
    path = shipped_path(str(name_or_path)) if str(name_or_path) in SHIPPED else Path(name_or_path)
    spec = read_checkpoint(path)["model"]
    return EAPNetConfig.from_dict(dict(spec["config"])) if spec.get("kind") == "eapnet" else None


def check_size(config: EAPNetConfig | dict | None, size: tuple[int, int], kind: str, flag: str = "--size",
               insist: str = "--allow-large") -> None:
    """:class:`MemoryBudgetError` when a run of ``kind`` at ``size`` = (H, W) pixels would not fit this
    machine's available memory, naming the argument (``<flag> HxW``), the estimate and how to insist; nothing
    for a model this module cannot estimate (``config`` None). For command lines, before any model is built."""
    if config is None:
        return
    h, w = size
    require_memory(estimate_peak_bytes(config, h, w, kind), f"{flag} {h}x{w}", KINDS[kind][0],
                   f"pass {insist} to try anyway")


# ------------------------------------------------------------------------------- measured, this process


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB (2**20 bytes) since it started or since the last
    :func:`reset_peak_rss`. Linux: ``VmHWM`` of this process image, not ``ru_maxrss``, which keeps the
    high-water mark of the parent across ``fork`` + ``exec`` (a worker started by a 6 GB process reports 6 GB
    whatever it runs). Elsewhere ``ru_maxrss`` (bytes on macOS, kB on other systems)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0   # kB
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / MIB if sys.platform == "darwin" else rss / 1024.0


def reset_peak_rss() -> bool:
    """Start :func:`peak_rss_mb` afresh from the current resident memory, so that each stage of a job reports its
    own peak (Linux 4.0 or later: ``5`` written to ``/proc/self/clear_refs``). False where that is not possible:
    the peak then remains the process's so far, an upper bound of the stage's."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False
