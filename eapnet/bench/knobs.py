"""Latency probe of int8-friendly alternatives to the ops XNNPACK runs in float inside an int8 ``.pte``.

With ExecuTorch's stock XNNPACK partitioner and quantizer, the int8 program of an EAPNet kept four kinds of
float islands (``reports/bench-profile``): bilinear x2 resizes and 2x2 average pools (the partitioner takes
``upsample_bilinear2d`` and ``avg_pool2d`` in fp32 only), the attention's sigmoid (fp32 only) and the float
output head; each island cost a quantize / dequantize pair (XNNPACK's Convert). The export now keeps the
first three in int8 without changing the model (``eapnet.export.executorch_export.partitioner_configs``,
``eapnet.compress.quantize``). This module measures, without retraining (latency does not depend on the weights),
what model-level replacements by ops XNNPACK runs in int8 buy on top:

- ``hard-gate``: the attention gate ``clamp(logit, 0, 1)`` (a hard sigmoid with its slope and offset folded
  into the conv before it) instead of ``sigmoid(logit)``;
- ``pool-conv``: the half-resolution attention's and alignment's 2x2 average pool as a fixed 2x2 stride-2
  depthwise conv (the same values);
- ``resize-conv``: every bilinear x2 resize as a fixed 4x4 stride-2 depthwise transposed conv (the same
  values away from the border), and the pools as in ``pool-conv``;
- ``nearest``: every bilinear x2 resize as nearest-neighbour x2 written with ``cat`` and ``view`` (int8 ops).

Each variant swaps the functions of ``eapnet.model`` that build those ops while its programs are exported
(:func:`patched`); they are probes, not model configs. ``python -m eapnet.bench.bench_knobs`` runs it.
"""
from __future__ import annotations

import contextlib
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import eapnet.model as M
from eapnet.export.common import Source, artifact_name, load_source
from eapnet.export.executorch_export import BACKEND, export_pte, load_pte
from eapnet.inference import example_inputs

__all__ = ["VARIANTS", "patched", "export_variant", "probe", "markdown"]

VARIANTS = ("base", "hard-gate", "pool-conv", "resize-conv", "nearest")


_KERNELS: dict[tuple[str, int], torch.Tensor] = {}


def _kernel(kind: str, c: int) -> torch.Tensor:
    """The fixed depthwise kernel, made once outside any trace (:func:`export_variant` runs the model eagerly
    first), so that export sees a constant, not an ``aten.full`` it would have to delegate."""
    if (kind, c) not in _KERNELS:
        _KERNELS[kind, c] = _make_kernel(kind, c)
    return _KERNELS[kind, c]


def _make_kernel(kind: str, c: int) -> torch.Tensor:
    if kind == "pool":
        return torch.full((c, 1, 2, 2), 0.25)
    k = torch.tensor([0.25, 0.75, 0.75, 0.25])   # bilinear x2, align_corners=False, as a transposed conv
    return (k[:, None] * k[None, :]).expand(c, 1, 4, 4).clone()


def _pool_conv(x):
    return F.conv2d(x, _kernel("pool", x.shape[1]), stride=2, groups=x.shape[1])


def _resize_conv(x):
    return F.conv_transpose2d(x, _kernel("up", x.shape[1]), stride=2, padding=1, groups=x.shape[1])


def _nearest(x):
    b, c, h, w = x.shape
    x = torch.cat([x.unsqueeze(-1), x.unsqueeze(-1)], -1).view(b, c, h, 2 * w)
    return torch.cat([x.unsqueeze(-2), x.unsqueeze(-2)], -2).view(b, c, 2 * h, 2 * w)


@contextlib.contextmanager
def patched(variant: str):
    """While inside, ``eapnet.model`` builds ``variant``'s ops (see the module docstring)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    saved = {"_up": M._up, "_conv_at": M._conv_at, "forward": M.Attention.forward}
    up = {"resize-conv": _resize_conv, "nearest": _nearest}.get(variant, M._up)
    down = _pool_conv if variant in ("pool-conv", "resize-conv") else (lambda x: F.avg_pool2d(x, 2))

    def conv_at(conv, x, half):
        return up(conv(down(x))) if half else conv(x)

    def hard_gate(self, f, ref):
        return f * F.hardtanh(M._conv_at(self.conv, torch.cat([f, ref], 1), self.half), 0.0, 1.0)

    M._up, M._conv_at = up, conv_at
    if variant == "hard-gate":
        M.Attention.forward = hard_gate
    try:
        yield
    finally:
        M._up, M._conv_at, M.Attention.forward = saved["_up"], saved["_conv_at"], saved["forward"]


def export_variant(model: str, variant: str, precision: str, size: tuple[int, int], folder: Path) -> Path:
    """The ``.pte`` of shipped name or checkpoint ``model`` built as ``variant`` (reused when present)."""
    src = load_source(model)
    name = f"{src.variant}-{variant}"
    path = folder / artifact_name(name, BACKEND, precision, size, "pte")
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    with patched(variant), torch.no_grad():
        src.module.eval()(*example_inputs((64, 64)))   # makes the fixed kernels (:func:`_kernel`) as constants
        return export_pte(Source(src.module, "fp32", name, src.path, src.sha256, src.config, src.maccs,
                                 src.params), folder, size=size, precision=precision)


def probe(model: str, variants, size: tuple[int, int], *, runs: int, threads: int, folder: Path,
          log=print) -> list[dict]:
    """One row per variant: fp32 and int8 ``.pte`` seconds per forward (median of ``runs``; all programs
    timed round-robin in this process, so the ratios share the machine's load) and delegation reports,
    or the error that stopped the variant."""
    ldrs, evs = example_inputs(size)
    rows, programs = [], {}
    for v in variants:
        row = {"variant": v}
        try:
            for prec in ("fp32", "int8"):
                t = time.perf_counter()
                path = export_variant(model, v, prec, size, folder)
                log(f"{v} {prec}: {path.name} ({time.perf_counter() - t:.0f} s)")
                programs[(v, prec)] = load_pte(path, threads=threads)
                programs[(v, prec)](ldrs, evs)                      # warm-up
                row[f"{prec}_pte"] = path.name
                row[f"{prec}_delegation"] = json.loads(path.with_suffix(".json").read_text())["delegation"]
        except Exception as e:   # one variant failing (export or load) must not cost the others
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
            programs.pop((v, "fp32"), None)
            log(f"{v}: {row['error']}")
        rows.append(row)
    times: dict = {k: [] for k in programs}
    for _ in range(runs):
        for key, run in programs.items():
            t = time.perf_counter()
            run(ldrs, evs)
            times[key].append(time.perf_counter() - t)
    for row in rows:
        for prec in ("fp32", "int8"):
            if times.get((row["variant"], prec)):
                row[f"{prec}_s"] = statistics.median(times[(row["variant"], prec)])
    return rows


def markdown(rows: list[dict], size: tuple[int, int], runs: int, threads: int) -> str:
    base = next((r for r in rows if r["variant"] == "base" and "int8_s" in r), None)
    lines = [f"Seconds per forward at {size[1]}x{size[0]}, median of {runs} runs taken round-robin in one "
             f"process, {threads} thread(s); the variants are described in `eapnet/bench/knobs.py`.", "",
             "| variant | fp32 .pte s | int8 .pte s | fp32 / int8 | int8 vs base int8 | delegated |",
             "|---|---:|---:|---:|---:|---|"]
    for r in rows:
        if "error" in r or "int8_s" not in r:
            lines.append(f"| {r['variant']} | – | – | – | – | fails: {r.get('error', 'not timed')} |")
            continue
        d = r["int8_delegation"]
        rel = f"{base['int8_s'] / r['int8_s']:.2f}x" if base else "–"
        lines.append(f"| {r['variant']} | {r['fp32_s']:.3f} | {r['int8_s']:.3f} | {r['fp32_s'] / r['int8_s']:.2f}x "
                     f"| {rel} | {d['delegated_subgraphs']} subgraph(s), {d['non_delegated_nodes']} node(s) outside |")
    return "\n".join(lines) + "\n"
