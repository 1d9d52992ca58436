"""ExecuTorch export: EAPNet -> ``.pte`` for the XNNPACK backend (phone CPUs), fp32 or int8, fully delegated.

The library (:func:`export_pte`, :func:`ptq_source`, :func:`load_pte`, :func:`run_pte`, :func:`open_pte`, ...);
the command line is :mod:`eapnet.export.export_pte` (``eapnet-export-pte``).

A straight line: load + ``torch.export`` at a fixed size in an input/output convention (``eapnet.export.common``:
``io="float"`` or ``"app"``) -> int8 PTQ if asked (``eapnet.compress.quantize``, XNNPACK quantizer) ->
:func:`make_delegable` -> ``to_edge_transform_and_lower`` with ``XnnpackPartitioner`` and this project's
XNNPACK rules (``eapnet.export.xnnpack_rules``) -> delegation check -> the ``.pte`` written to a temporary file,
run once in ExecuTorch's own runtime and compared with the source module (:func:`export_pte`'s self-check)
-> renamed into place, sidecar ``.json`` beside it.

Delegation. XNNPACK (executorch 1.5.1) takes every conv and transposed conv, add/mul/div, sigmoid, ReLU,
clamp, minimum, log, exp, cat, slice, view, permute, average pooling and bilinear x2 of the model, fp32 and
int8, but not these (measured on EAPNet; the partitioner's own reasons in brackets):

- ``torch.exp2`` (``ev_align``): not core ATen; edge conversion fails outright;
- ``x ** 2.24`` (``ev_align``): ``pow.Tensor_Scalar`` [only support power == 2];
- ``mean`` over the channel dim of ``(B, 3, 3, H, W)`` and ``sum`` over the frame dim (``radiance_merge``):
  [mean.dim only supports averaging 4D tensors]; ``sum.dim_IntList`` has no XNNPACK op;
- ``x[:, i]`` (``select.int``) and ``torch.split`` (``Alignment``): no XNNPACK op;
- replicate padding (``pad_frames``): core ATen decomposes it to ``arange``/``clamp``/``index.Tensor``
  (an int64 gather), none of which XNNPACK takes;
- int Python scalars (``1 - x``) become int64 constants cast to float32 outside the delegate;
- ``torch.cat`` of a single tensor (a one-block model's feature fusion) [only 2 or more tensors];
- app programs: ``frames.to(float32)`` of the uint8 frames [dtype conversion ... is not supported] and
  ``unsqueeze`` of a leading dim [unsqueeze_copy only supported on the trailing dimension].

:func:`make_delegable` rewrites them at export time into equivalent delegable ops (see ``_REWRITES``):
``exp2(e) = exp(e ln 2)``, ``x ** g = exp(g log max(x, tiny))``, sums and means over a non-spatial dim =
adds of ``narrow`` slices (times ``1/n``), select/split = ``narrow`` (+ ``reshape``), replicate pad = ``cat``
of the edge row/column, int scalars -> float scalars, a one-tensor cat -> the tensor, a leading unsqueeze ->
``reshape``, and ``uint8.to(float32) * k`` -> ``dequantize_per_tensor(scale k)`` (the same float32 products;
XNNPACK's ``Convert (NC, QU8, F32)`` through ``eapnet.export.xnnpack_rules``' rule 3). The model code is
untouched. Measured: the fp32 ``.pte`` matches eager within 2.4e-7 (tiny) / 1.2e-7 (standard, 1060x1900);
int8 ones match the Q/DQ reference within 1-2 steps of the output conv's int8 scale
(tests/test_executorch_export.py).

Int8 programs stay int8 up to the float output head: bilinear resizes and sigmoids run on int8 tensors, the
XNNPACK quantizer gives each resize and each split half its input's parameters and makes the 2x2 average
pools depthwise convs (``eapnet.export.xnnpack_rules``, which lists every rule and the ExecuTorch version it
was written for), so none of them is a float island between two XNNPACK Converts: the 100 G standard's
int8 program has 7 Converts (the input frames and the head). An int8 ``.pt2`` quantized
before those parameters were shared cannot be delegated whole (its resizes and split halves requantize, which
XNNPACK's int8 resize and slice cannot): :func:`export_pte` raises :class:`DelegationError` saying to
re-quantize it with the current ``compress/qat.py``.

Inputs and output of every ``.pte``: as ``eapnet.export.common`` at the fixed exported size, in its
convention: ``"float"`` ``ldrs`` (1, 3, 3, H, W) in [0, 1], ``evs`` (1, 3) stops -> ``hdr`` (1, 3, H, W)
gamma-encoded HDR, >= 0; ``"app"`` ``frames`` (3, H, W, 3) uint8, ``evs`` (3,) -> ``hdr`` (H, W, 3).
:func:`load_pte` runs both behind the float convention.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import operator
import os
import re
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from eapnet.console import native_stderr
from eapnet.evalsets import calibration, calibration_batches
from eapnet.metrics import psnr_mu

from eapnet.export.common import (
    APP_IO,
    DEFAULT_SIZE,
    IO,
    Source,
    app_example_inputs,
    artifact_name,
    example_inputs,
    export_fixed,
    with_io,
)
from eapnet.compress.fallback import TARGET, find_fallback, quantize_keeping
from eapnet.runs import atomic_path, atomic_write_json
from eapnet.export import xnnpack_rules
from eapnet.export.backends import Artifact, artifact_sha256
from eapnet.export.manifest import build_manifest, executorch_runtime, write_manifest

__all__ = ["FP32_BOUND", "INT8_BOUND_STEPS", "DelegationError", "delegation_report", "export_pte", "load_pte",
           "lower", "make_delegable", "open_pte", "ptq_source", "run_pte", "self_check"]

BACKEND = "xnnpack"
PRECISIONS = ("fp32", "int8")

FP32_BOUND = 1e-4
"""Largest absolute difference :func:`export_pte` accepts between an fp32 ``.pte`` and its float source on
:func:`self_check`'s inputs (HDR units; measured 2.4e-7 for a tiny EAPNet, 1.2e-7 for the standard one)."""
INT8_MEAN_STEPS = 4.0
"""Steps of mean |.pte - Q/DQ| allowed with :data:`INT8_MIN_PSNR_MU` (measured 0.39 for the 100 G program at
1060x1900, 2.0 for a tiny QAT net at 48x64)."""
INT8_MIN_PSNR_MU = 40.0
"""dB: where an int8 ``.pte`` is more than :data:`INT8_BOUND_STEPS` steps off its Q/DQ reference somewhere, it is
still accepted when its mean difference is at most :data:`INT8_MEAN_STEPS` steps and its PSNR-mu against the
reference at least this (a program of another model or a damaged file scores near 20 dB; parity holds int8 to
32 dB against float)."""
INT8_BOUND_STEPS = 2.5
"""The same for an int8 ``.pte`` against its Q/DQ reference, in steps of the reference's output int8 scale
(:func:`int8_output_step`): XNNPACK's int8 kernels round differently from the reference ops now and then, by a
step or two (measured max 1.0 step for small test nets and the standard model at 1060x1900, 2.0 for the
tiny CFG of tests/test_executorch_export.py)."""
CODE_TOLERANCE = 1e-6
"""How far (in [0, 1] units) a float frame value may be from ``code / 255`` for :func:`load_pte` to hand an
app program that code: float32 ``c / 255`` is within 6e-8 of it, anything farther is not an 8-bit frame."""

aten = torch.ops.aten


class DelegationError(RuntimeError):
    """Some compute ops stayed outside the XNNPACK delegate; ``report`` is :func:`delegation_report`'s dict."""

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report

    def __reduce__(self):  # pickles with its report (raised in an export worker process)
        return type(self), (str(self), self.report)


# --------------------------------------------------------------------------------------------------
# Export-time rewrites: each replaces one op XNNPACK does not take by delegable ops with the same result
# (exact, or to float32 rounding). Decompositions in torch.export's sense: ``NotImplemented`` leaves an op
# as it is (e.g. a 4D spatial mean, which XNNPACK runs as global average pooling).


def _select(x, dim, index):
    dim, shape = dim % x.dim(), list(x.shape)
    index = index % shape.pop(dim)
    return x.narrow(dim, index, 1).reshape(shape)                    # exact


def _sum_slices(x, dims, keepdim):
    """Sum over ``dims`` as adds of size-1 slices (XNNPACK has no reduce-sum; the dims here have 3 entries)."""
    for d in dims:
        acc = x.narrow(d, 0, 1)
        for i in range(1, x.shape[d]):
            acc = acc + x.narrow(d, i, 1)
        x = acc
    return x if keepdim else x.reshape([s for i, s in enumerate(x.shape) if i not in dims])


def _dims(x, dims) -> list[int]:
    return sorted({d % x.dim() for d in ([dims] if isinstance(dims, int) else dims)})


def _sum(x, dims, keepdim=False, *, dtype=None):
    if dtype is not None or not dims:
        return NotImplemented
    return _sum_slices(x, _dims(x, dims), keepdim)


def _mean(x, dims, keepdim=False, *, dtype=None):
    if dtype is not None or not dims:
        return NotImplemented
    dims = _dims(x, dims)
    if x.dim() == 4 and dims == [2, 3] and keepdim:                  # XNNPACK's global average pooling
        return NotImplemented
    n = math.prod(x.shape[d] for d in dims)
    return _sum_slices(x, dims, keepdim) * (1.0 / n)                 # torch: sum / n; 1 ulp apart at most


def _pow(x, exponent):
    if exponent == 2 or not x.dtype.is_floating_point:              # XNNPACK squares natively
        return NotImplemented
    # x ** g = exp(g log x) for x > 0; max(x, tiny) keeps log finite at x = 0: exp(2.24 * -87.3) = 0 in float32.
    return torch.exp(exponent * torch.log(x.clamp_min(torch.finfo(x.dtype).tiny)))


def _exp2(x):
    return torch.exp(x * math.log(2.0))


def _cat(tensors, dim=0):
    # XNNPACK concatenates 2 or more tensors; a one-block model's global feature fusion cats a list of one.
    return tensors[0] if len(tensors) == 1 else NotImplemented


def _unsqueeze(x, dim):
    # XNNPACK takes an unsqueeze of the trailing dim only; anywhere else it is the same as a reshape (an app
    # program's ``ldrs.unsqueeze(0)``).
    dim = dim % (x.dim() + 1)
    if dim == x.dim():
        return NotImplemented
    shape = list(x.shape)
    return x.reshape(shape[:dim] + [1] + shape[dim:])                # exact


def _split(x, sizes, dim=0):
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return [x.narrow(dim, s, n) for s, n in zip(starts, sizes)]     # exact


def _pad(x, pad, mode="constant", value=None):
    if mode != "replicate":
        return NotImplemented
    for i in range(len(pad) // 2):                                   # pad = (left, right, top, bottom, ...)
        d, (lo, hi) = x.dim() - 1 - i, pad[2 * i:2 * i + 2]
        n = x.shape[d]
        parts = [x.narrow(d, 0, 1)] * lo + [x] + [x.narrow(d, n - 1, 1)] * hi
        if len(parts) > 1:
            x = torch.cat(parts, d)                                  # exact: copies of the edge row/column
    return x


_REWRITES = {
    aten.exp2.default: _exp2,
    aten.pow.Tensor_Scalar: _pow,
    aten.mean.dim: _mean,
    aten.sum.dim_IntList: _sum,
    aten.select.int: _select,
    aten.split_with_sizes.default: _split,
    aten.split.Tensor: lambda x, size, dim=0: _split(x, [min(size, x.shape[dim] - s)
                                                         for s in range(0, x.shape[dim], size)], dim),
    aten.pad.default: _pad,
    aten.cat.default: _cat,
    aten.unsqueeze.default: _unsqueeze,
}
"""Op -> equivalent function of delegable ops (``NotImplemented``: keep the op). Used as a decomposition table."""
_SCALAR_OPS = (aten.add.Tensor, aten.sub.Tensor, aten.mul.Tensor, aten.div.Tensor, aten.rsub.Scalar)


def make_delegable(ep: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """``ep`` with the ops XNNPACK does not take rewritten into equivalent ops it does (module docstring).

    Int Python scalars of float arithmetic become floats first (``x + 1`` -> ``x + 1.0``): ExecuTorch turns an
    int scalar into an int64 constant plus a cast that stays outside the delegate. Then the decompositions of
    ``_REWRITES``, no-op aliases dropped (:func:`_drop_aliases`) and uint8 casts as dequantizations
    (:func:`_uint8_casts_as_dequantize`). ``ep`` is modified.
    """
    for node in ep.graph.nodes:
        if node.op == "call_function" and node.target in _SCALAR_OPS:
            val = node.meta.get("val")
            if val is not None and val.dtype.is_floating_point:
                node.args = tuple(float(a) if type(a) is int else a for a in node.args)
    ep.graph_module.recompile()
    ep = ep.run_decompositions(_REWRITES)
    _drop_aliases(ep.graph_module)
    _uint8_casts_as_dequantize(ep.graph_module)
    return ep


def _drop_aliases(gm: torch.fx.GraphModule) -> int:
    """Remove ``aten.alias`` nodes (a no-op crop ``hdr[..., :H, :W]`` when H and W are already multiples of 8
    exports as one); XNNPACK has no alias op, so it would stay outside the delegate. Returns how many."""
    aliases = [n for n in gm.graph.nodes if n.op == "call_function" and n.target == aten.alias.default]
    for node in aliases:
        node.replace_all_uses_with(node.args[0])
        gm.graph.erase_node(node)
    if aliases:
        gm.graph.lint()
        gm.recompile()
    return len(aliases)


def _uint8_casts_as_dequantize(gm: torch.fx.GraphModule) -> int:
    """Each ``x.to(float32)`` of a uint8 ``x`` (``_to_copy``) becomes ``dequantize_per_tensor(x, scale, 0, 0, 255,
    uint8)``, with ``scale`` the positive factor of a ``* scale`` that is its only user (folded in), else 1;
    returns how many.

    Why: XNNPACK takes no dtype-changing copy, but it converts uint8 to float32 as a dequantization
    (``eapnet.export.xnnpack_rules``, rule 3): the app program's ``frames.to(float32) * (1 / 255)`` becomes one
    ``Convert (NC, QU8, F32)`` inside the delegate. Exact: both compute ``float32(c) * float32(scale)``, one
    rounding, and ``c * 1`` is ``c``."""
    import torchao.quantization.pt2e.quantize_pt2e  # noqa: F401  registers the quantized_decomposed Q/DQ ops

    dequant = torch.ops.quantized_decomposed.dequantize_per_tensor.default
    changed = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target != aten._to_copy.default:
            continue
        src, val = node.args[0], node.meta.get("val")
        if (not isinstance(src, torch.fx.Node) or getattr(src.meta.get("val"), "dtype", None) != torch.uint8
                or val is None or val.dtype != torch.float32 or set(node.kwargs) - {"dtype"}):
            continue
        scale, last = 1.0, node
        users = list(node.users)
        if (len(users) == 1 and users[0].target == aten.mul.Tensor and users[0].args[0] is node
                and type(users[0].args[1]) is float and math.isfinite(users[0].args[1]) and users[0].args[1] > 0):
            scale, last = users[0].args[1], users[0]
        with gm.graph.inserting_before(node):
            dq = gm.graph.call_function(dequant, (src, scale, 0, 0, 255, torch.uint8))
        dq.meta = dict(last.meta)
        last.replace_all_uses_with(dq)
        for n in (last, node) if last is not node else (node,):
            gm.graph.erase_node(n)
        changed += 1
    if changed:
        gm.graph.lint()
        gm.recompile()
    return changed


def lower(ep: torch.export.ExportedProgram, reasons: bool = False):
    """``to_edge_transform_and_lower`` of ``make_delegable(ep)`` with the XNNPACK partitioner and this project's
    XNNPACK rules (``eapnet.export.xnnpack_rules``: its partitioner configs, its node visitors installed first).

    Raises :class:`DelegationError` for an int8 program with a requantizing bilinear resize
    (``xnnpack_rules.requantizing_int8_ops``: quantized before ``eapnet.compress.quantize`` shared resize parameters),
    which cannot be lowered. Returns the ``EdgeProgramManager`` (pass it to :func:`delegation_report`;
    ``.to_executorch()`` serialises).
    Its ``why_not_delegated`` attribute maps node names to the partitioner's reasons for leaving them out,
    collected only with ``reasons=True``: that turns on the XNNPACK passes' debug logging, which makes the
    lowering about 1.5x slower (37 s against 25 s for a tiny EAPNet), so :func:`export_pte` asks for the
    reasons only after a lowering left nodes outside the delegate.
    """
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import (
        XnnpackPartitioner,
    )
    from executorch.exir import to_edge_transform_and_lower

    ep = make_delegable(ep)
    stuck = xnnpack_rules.requantizing_int8_ops(ep.graph)
    if any("resize" in why for _, why in stuck):   # cannot be lowered at all: say so before ExecuTorch fails
        report = {"delegated_nodes": 0, "non_delegated_nodes": len(stuck), "delegated_subgraphs": 0,
                  "non_delegated": [{"name": n.name, "op": str(n.target), "why": why} for n, why in stuck],
                  "by_operator": {}}
        raise DelegationError(_delegation_message(report, "this int8 program"), report)
    xnnpack_rules.install()
    with _partitioner_reasons() if reasons else contextlib.nullcontext({}) as why:
        edge = to_edge_transform_and_lower(
            ep, partitioner=[XnnpackPartitioner(configs=xnnpack_rules.partitioner_configs())])
    edge.why_not_delegated = why
    return edge


@contextlib.contextmanager
def _partitioner_reasons():
    """Collect the XNNPACK partitioner's ``WhyNoPartition`` debug messages: ``{node name: reason}``."""
    why: dict[str, str] = {}

    class Collect(logging.Handler):
        def emit(self, record):
            msg = record.getMessage()
            m = re.match(r"WhyNoPartition: Node (\S+) was not partitioned because (.*?)\.?$", msg)
            if m:
                why.setdefault(m.group(1), m.group(2))

    logger = logging.getLogger("executorch.backends.xnnpack")
    handler, level, propagate = Collect(logging.DEBUG), logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False          # the reasons go to the report, not to the console
    try:
        yield why
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


# Nodes outside a delegate that compute nothing: unpacking the delegate's output tuple.
_NON_COMPUTE = {operator.getitem}


def delegation_report(program) -> dict:
    """Delegated vs non-delegated compute nodes of a lowered program (ExecuTorch's ``get_delegation_info``).

    ``program``: an ``EdgeProgramManager`` (from :func:`lower`), an ``ExportedProgram`` or its graph module.
    Returns ``{"delegated_nodes", "non_delegated_nodes", "delegated_subgraphs", "non_delegated": [{"name",
    "op", "why" (the partitioner's reason, when it gave one)}, ...], "by_operator": {op: [delegated,
    non_delegated]}}``. ``getitem`` nodes (unpacking a delegate's outputs) are not compute and are not counted
    as non-delegated.
    """
    from executorch.devtools.backend_debug import get_delegation_info

    gm = program
    if hasattr(gm, "exported_program"):
        gm = gm.exported_program()
    if isinstance(gm, torch.export.ExportedProgram):
        gm = gm.graph_module
    info = get_delegation_info(gm)
    outside = [n for n in gm.graph.nodes if n.op == "call_function" and n.target not in _NON_COMPUTE
               and not n.name.startswith("executorch_call_delegate")]
    by_op = {op: [b.delegated, b.non_delegated] for op, b in sorted(info.delegation_by_operator.items())
             if op != "getitem"}
    why = getattr(program, "why_not_delegated", {})
    return {"delegated_nodes": info.num_delegated_nodes, "non_delegated_nodes": len(outside),
            "delegated_subgraphs": info.num_delegated_subgraphs,
            "non_delegated": [{"name": n.name, "op": _op_name(n.target),
                               **({"why": why[n.name]} if n.name in why else {})} for n in outside],
            "by_operator": by_op}


def _op_name(target) -> str:
    return getattr(target, "__name__", None) or str(target)


# --------------------------------------------------------------------------------------------------


def ptq_source(source: Source, calib: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None, *,
               fallback: bool = False, target: float = TARGET, log=print) -> Source:
    """Int8 ``Source`` of a float ``source`` by post-training quantization with the XNNPACK quantizer.

    ``calib``: ``(ldrs (B, 3, 3, H, W) in [0, 1], evs (B, 3) stops)`` batches; default the first
    ``eapnet.evalsets.CALIBRATION_SCENES`` scenes of the shipped calibration set. Its module is the Q/DQ reference model
    (``eapnet.compress.quantize.Padded``: any H, W), the program the int8 ``.pte`` must reproduce.
    ``fallback``: keep the fewest layer groups in float that bring the PSNR-μ lost against ground truth on
    the shipped calibration scenes within ``target`` dB (:func:`eapnet.compress.fallback.find_fallback`); its
    record is the source's ``fallback``.
    """

    if source.precision != "fp32":
        raise ValueError(f"PTQ needs a float source; {source.path} is already {source.precision}")
    calib = calibration_batches() if calib is None else list(calib)
    record = None
    if fallback:
        rec, qmodel = find_fallback(source.module, BACKEND, calib, calibration(), target=target, log=log)
        record = rec.to_dict()
    else:
        qmodel = quantize_keeping(source.module, BACKEND, calib)
    return Source(qmodel, "int8", source.variant, source.path, source.sha256, source.config, source.maccs,
                  source.params, BACKEND, tuple(record["float_groups"]) if record else (), record)


def export_pte(source: Source, out_dir: str | os.PathLike, *, size: tuple[int, int] = DEFAULT_SIZE,
               precision: str | None = None, calib: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
               allow_partial: bool = False, io: str = "float", threads: int | None = None) -> Path:
    """Write ``artifact_name(variant, "xnnpack", precision, size, "pte", io)`` for ``source`` into ``out_dir``
    (``<variant>_xnnpack_<precision>_<H>x<W>.pte``, ``<variant>_app_...`` for ``io="app"``); returns its path.

    ``size``: (H, W) in pixels of the program's fixed input. ``precision``: ``None`` = the source's own
    (``"fp32"`` for a float model, ``"int8"`` for a ``.pt2`` int8 program); ``"int8"`` with a float source
    runs PTQ (:func:`ptq_source`) on ``calib`` batches (float inputs: the app wrapper goes around the
    converted program). ``io``: the program's input/output convention (``eapnet.export.common.IO``).

    Raises :class:`DelegationError`, listing the ops, when any compute op is left outside the XNNPACK
    delegate, unless ``allow_partial``. The program is then written to a temporary file beside the target and
    checked before it is renamed into place (:func:`self_check`: one run in ExecuTorch's runtime, after a
    probe in a child process, on seed-1 inputs, against the source module, within :data:`FP32_BOUND` or
    :data:`INT8_BOUND_STEPS` output steps); a program that fails raises ``RuntimeError`` naming the file and
    the figures. ``threads``: XNNPACK threads of that run (default: the runtime's). A failure at any step
    leaves no new file behind (a previous file of that name stays as it was).

    Beside it, ``<same name>.json``: the ``.pte``'s own sha256 (``artifact_sha256``, checked when it is opened:
    ``eapnet.export.backends.check_stamp``), source file and sha256, precision, size, ``io``,
    :func:`delegation_report`, ``self_check`` (``max_abs``, ``bound``, ``against``, ``inputs``, ``forward_s``),
    ``export_s`` (this call's seconds) and ``file_mb``.
    """
    t0 = time.perf_counter()
    precision = precision or source.precision
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if io not in IO:
        raise ValueError(f"io must be one of {IO}, got {io!r}")
    if source.precision == "int8" and precision == "fp32":
        raise ValueError(f"{source.path} is an int8 program; an fp32 .pte needs the float model (.pt)")
    if source.precision == "int8" and source.quant_backend not in (None, BACKEND):
        raise ValueError(f"{source.path} was quantized for {source.quant_backend!r}; the XNNPACK .pte needs a "
                         f"program from the {BACKEND!r} quantizer (compress/qat.py --backend {BACKEND})")
    if source.precision == "fp32" and precision == "int8":
        source = ptq_source(source, calib)

    edge = lower(export_fixed(source.module, size, io))
    report = delegation_report(edge)
    if report["non_delegated_nodes"]:  # lower again, this time collecting the partitioner's reasons
        edge = lower(export_fixed(source.module, size, io), reasons=True)
        report = delegation_report(edge)
    if report["non_delegated_nodes"] and not allow_partial:
        raise DelegationError(_delegation_message(report, f"{source.variant} {precision}"), report)
    program = edge.to_executorch()
    path = Path(out_dir) / artifact_name(source.variant, BACKEND, precision, size, "pte", io)
    with atomic_path(path) as tmp:               # renamed to ``path`` only once checked
        with open(tmp, "wb") as f:               # the file closes before it is run and renamed
            program.write_to_file(f)
            f.flush()
            os.fsync(f.fileno())
        check = self_check(tmp, source, io, name=path.name, threads=threads)

    atomic_write_json(path.with_suffix(".json"), {
        "pte": path.name, "artifact_sha256": artifact_sha256(path), "variant": source.variant,
        "precision": precision, "io": io, "size": list(size), "backend": BACKEND, "source": source.path,
        "source_sha256": source.sha256, "maccs": source.maccs, "params": source.params, "delegation": report,
        "float_groups": list(source.float_groups), "fallback": source.fallback,
        "self_check": check, "export_s": time.perf_counter() - t0, "file_mb": path.stat().st_size / 2**20})
    write_manifest(path, build_manifest(path, backend=BACKEND, precision=precision, io=io, size=size,
                                        source=source, runtime=executorch_runtime(precision)))
    return path


def _delegation_message(report: dict, what: str) -> str:
    """One line: how many compute nodes of ``what`` stay outside the delegate, each with its op and reason; for
    the requantizing int8 slices and resizes of an int8 program quantized before ``eapnet.compress.quantize`` shared
    their parameters, what to do about it."""
    ops = "; ".join(f"{d['name']} ({d['op']}" + (f": {d['why']}" if "why" in d else "") + ")"
                    for d in report["non_delegated"])
    msg = f"{report['non_delegated_nodes']} compute node(s) of {what} stay outside the XNNPACK delegate: {ops}"
    if any("matching input and output quantization parameters" in d.get("why", "") for d in report["non_delegated"]):
        msg += (". This int8 program requantizes split halves or bilinear resizes, which XNNPACK's int8 kernels "
                "cannot: it was quantized before eapnet.compress.quantize gave them their input's parameters; "
                "re-quantize it with the current compress/qat.py")
    return msg


def int8_output_step(module) -> float:
    """Scale of the last ``quantize_per_tensor`` of an int8 Q/DQ program (``eapnet.compress.quantize.Padded`` or its
    graph module): the int8 step at the output head's input; ValueError if the module has no such node."""
    import torchao.quantization.pt2e.quantize_pt2e  # noqa: F401  registers the quantized_decomposed Q/DQ ops

    quant = torch.ops.quantized_decomposed.quantize_per_tensor.default
    graph = getattr(getattr(module, "inner", module), "graph", None)
    scales = [n.args[1] for n in (graph.nodes if graph is not None else ())
              if n.op == "call_function" and n.target == quant]
    if not scales:
        raise ValueError(f"{type(module).__name__} is not an int8 Q/DQ program (no quantize_per_tensor node)")
    return float(scales[-1])


def self_check(path: str | os.PathLike, source: Source, io: str = "float", *, name: str | None = None,
               threads: int | None = None) -> dict:
    """Run the ``.pte`` at ``path`` once in ExecuTorch's runtime and compare it with ``source.module`` (the
    float model, or the Q/DQ reference of an int8 source) on seed-1 inputs (:func:`example_inputs` /
    :func:`eapnet.export.common.app_example_inputs` at the program's size: not the tracing inputs, seed 0).

    The program is loaded in a child process first (:func:`probe_in_child`). Bound: :data:`FP32_BOUND`, or
    :data:`INT8_BOUND_STEPS` x :func:`int8_output_step` for an int8 source. Returns ``{"max_abs", "bound",
    "against", "inputs", "forward_s"}``; raises ``RuntimeError`` naming the file (``name``, default the path's)
    and the figures when the program does not load or its output is farther than the bound (or not finite).
    """
    path = Path(path)
    name = name or path.name
    try:
        probe_in_child(path)
        method = _load_method(path, threads)
    except ValueError as e:
        raise RuntimeError(f"{name}: the written program does not load in ExecuTorch's runtime ({e})") from e
    program_io = _program_io(method)
    if program_io != io:
        raise RuntimeError(f"{name}: written as an {io!r} program, its input is that of an {program_io!r} one")
    size = _program_size(method, io)
    inputs = app_example_inputs(size, seed=1) if io == APP_IO else example_inputs(size, seed=1)
    t = time.perf_counter()
    got = method.execute(tuple(x.contiguous() for x in inputs))[0]
    forward_s = time.perf_counter() - t
    with torch.no_grad():
        want = with_io(source.module, io)(*inputs)
    if source.precision == "int8":
        bound, against = INT8_BOUND_STEPS * int8_output_step(source.module), "Q/DQ reference"
    else:
        bound, against = FP32_BOUND, "float model"
    if tuple(got.shape) != tuple(want.shape):
        raise RuntimeError(f"{name}: the program returns shape {tuple(got.shape)}, its source "
                           f"{tuple(want.shape)}")
    diff = (got.float() - want.float()).abs()
    max_abs, mean_abs = float(diff.max()), float(diff.mean())
    figures = {"max_abs": max_abs, "mean_abs": mean_abs, "bound": bound, "against": against, "inputs": "seed 1",
               "forward_s": forward_s}
    if source.precision == "int8" and not max_abs <= bound:
        # A faithful int8 program of a large net can be a few steps off in a few pixels (a rounding flipped
        # early propagates); what it cannot be is off on average or in the picture.
        step = bound / INT8_BOUND_STEPS
        ref = want.float().clamp(min=0).numpy()
        figures["psnr_mu"] = min(float(psnr_mu(ref, got.float().clamp(min=0).numpy())), 150.0)
        if mean_abs <= INT8_MEAN_STEPS * step and figures["psnr_mu"] >= INT8_MIN_PSNR_MU:
            return figures
        raise RuntimeError(f"{name} fails its self-check: max abs difference {max_abs:.3g} (bound {bound:.3g}), "
                           f"mean {mean_abs:.3g} (bound {INT8_MEAN_STEPS * step:.3g}) and PSNR-mu "
                           f"{figures['psnr_mu']:.1f} dB (at least {INT8_MIN_PSNR_MU:g}) from the {against} on "
                           f"seed-1 inputs; the file is not kept")
    if not max_abs <= bound:   # NaN fails too
        raise RuntimeError(f"{name} fails its self-check: max abs difference {max_abs:.3g} from the "
                           f"{against} on seed-1 inputs, bound {bound:.3g}; the file is not kept")
    return figures


def check_pte(path: str | os.PathLike) -> None:
    """Check a ``.pte``'s header before the runtime sees it: ExecuTorch's loader aborts the whole process
    (SIGABRT) on some damaged files instead of raising. Layout: a flatbuffer whose file identifier
    ``ET<nn>`` sits at bytes 4-8, then an optional extended header (``eh00``, its length, the program's
    size and the offset of the constant segments), both within the file. ``FileNotFoundError`` or a
    ``ValueError`` naming the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no .pte at {path}")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(32)
    ident = head[4:8]
    if len(head) < 8 or ident[:2] != b"ET" or not ident[2:].isdigit():
        raise ValueError(f"{path} is not an ExecuTorch program (no ET<nn> flatbuffer identifier at byte 4)")
    if head[8:12] == b"eh00":
        if len(head) < 32:
            raise ValueError(f"{path}: the ExecuTorch program's extended header is cut off")
        program_size, segment_base = struct.unpack_from("<QQ", head, 16)
        if program_size > size or segment_base > size:
            raise ValueError(f"{path} is truncated: its header gives a program of {program_size} bytes and "
                             f"data from byte {segment_base}, but the file has {size} bytes")


def probe_in_child(path: str | os.PathLike, timeout: float = 300) -> None:
    """Load the program in a child process first, so that a file the runtime cannot take costs one
    ``ValueError`` (with the child's last message) instead of the caller's whole process."""
    code = ("import sys\n"
            "from executorch.runtime import Runtime\n"
            "Runtime.get().load_program(sys.argv[1]).load_method('forward')\n")
    try:
        done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ValueError(f"{path}: loading the program took longer than {timeout:.0f} s") from None
    if done.returncode != 0:
        lines = [ln for ln in (done.stderr or "").strip().splitlines() if ln.strip()]
        why = lines[-1].strip() if lines else f"exit code {done.returncode}"
        if done.returncode < 0:
            why = f"the runtime aborted ({signal.Signals(-done.returncode).name}): {why}"
        raise ValueError(f"{path} is not a loadable ExecuTorch program ({why})")


def set_threads(threads: int | None) -> None:
    """Size the XNNPACK thread pool of this process (ExecuTorch's experimental ``_unsafe_reset_threadpool``);
    ``None`` keeps the runtime's own (one per core)."""
    if threads is not None:
        from executorch.extension.pybindings.portable_lib import (
            _unsafe_reset_threadpool,
        )

        _unsafe_reset_threadpool(threads)


_SCALAR_TYPES = {0: "uint8", 6: "float32"}
"""ExecuTorch ``ScalarType`` codes of the inputs our programs take (``method.metadata``)."""


def _load_method(path: Path, threads: int | None):
    """The ``forward`` method of a ``.pte`` in ExecuTorch's runtime; ValueError for a damaged file."""
    from executorch.runtime import Runtime

    check_pte(path)
    set_threads(threads)
    try:
        with native_stderr():
            return Runtime.get().load_program(path).load_method("forward")
    except Exception as e:  # the runtime raises RuntimeError/ValueError variants for a damaged file
        raise ValueError(f"{path} is not a loadable ExecuTorch program ({type(e).__name__}: {e})") from e


def _program_io(method) -> str:
    """``"app"`` for a program whose first input is uint8 (the frames), ``"float"`` for float32 ``ldrs``."""
    dtype = _SCALAR_TYPES.get(method.metadata.input_tensor_meta(0).dtype())
    if dtype is None:
        raise ValueError(f"first input of ExecuTorch ScalarType {method.metadata.input_tensor_meta(0).dtype()}: "
                         f"not an EAPNet program (uint8 frames or float32 ldrs)")
    return APP_IO if dtype == "uint8" else "float"


def _program_size(method, io: str) -> tuple[int, int]:
    """(H, W) of a program's fixed input: ``frames`` (3, H, W, 3) or ``ldrs`` (1, 3, 3, H, W)."""
    sizes = tuple(method.metadata.input_tensor_meta(0).sizes())
    return (sizes[1], sizes[2]) if io == APP_IO else (sizes[-2], sizes[-1])


def _codes(ldrs: torch.Tensor, name: str) -> torch.Tensor:
    """``ldrs`` (1, 3, 3, H, W) in [0, 1] as the app's ``frames`` (3, H, W, 3) uint8; ValueError when a value is
    farther than :data:`CODE_TOLERANCE` from a ``code / 255``."""
    scaled = ldrs.float() * 255.0
    codes = torch.round(scaled)
    off = float((scaled - codes).abs().max()) / 255.0 if scaled.numel() else 0.0
    if not off <= CODE_TOLERANCE:
        raise ValueError(f"{name} is an app program (8-bit frames): ldrs must be 8-bit codes / 255, got values "
                         f"{off:.3g} from the nearest one")
    if codes.numel() and (float(codes.min()) < 0 or float(codes.max()) > 255):
        raise ValueError(f"{name} is an app program (8-bit frames): ldrs must be in [0, 1], got values in "
                         f"[{float(codes.min()) / 255:.4g}, {float(codes.max()) / 255:.4g}]")
    return codes[0].to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def load_pte(path: str | os.PathLike, *, threads: int | None = None):
    """Load a ``.pte``'s ``forward`` once in ExecuTorch's runtime; returns ``run(ldrs, evs) -> hdr``.

    ``run`` takes ``ldrs`` (1, 3, 3, H, W) float32 in [0, 1] and ``evs`` (1, 3) stops at the program's
    exported size (``run.size`` = (H, W)) and returns ``hdr`` (1, 3, H, W), whatever the program's convention
    (``run.io``, told from its first input's dtype: ``"float"`` or ``"app"``). For an app program ``run``
    hands it ``frames = round(ldrs * 255)`` as uint8 (3, H, W, 3) and ``evs`` (3,), and returns its (H, W, 3)
    output as (1, 3, H, W); ``ldrs`` must then be 8-bit frames (each value within :data:`CODE_TOLERANCE` of a
    ``code / 255``, ValueError otherwise): an app program cannot take other values. ``threads``: size of the
    XNNPACK thread pool (ExecuTorch's experimental ``_unsafe_reset_threadpool``); default its own (one per core).
    """
    path = Path(path)
    method = _load_method(path, threads)
    io = _program_io(method)
    size = _program_size(method, io)
    want = (1, 3, 3, *size)

    def run(ldrs: torch.Tensor, evs: torch.Tensor) -> torch.Tensor:
        if tuple(ldrs.shape) != want:
            raise ValueError(f"{path.name} takes ldrs of shape {want}, got {tuple(ldrs.shape)}")
        if tuple(evs.shape) != (1, 3):
            raise ValueError(f"{path.name} takes evs of shape (1, 3), got {tuple(evs.shape)}")
        if io == APP_IO:
            out = method.execute((_codes(ldrs, path.name), evs.float().reshape(3).contiguous()))[0]
            return out.permute(2, 0, 1).unsqueeze(0).contiguous()
        return method.execute((ldrs.float().contiguous(), evs.float().contiguous()))[0]

    run.size = size
    run.io = io
    return run


def open_pte(path: str | os.PathLike, *, threads: int | None = None):
    """A ``.pte`` and its sidecar ``.json`` as a ``eapnet.export.backends.Artifact``, ready to run.

    The program is first run once in a child process (:func:`probe_in_child`): a damaged program can abort
    its process, and that must be the child's. Raises ``ValueError`` for a missing or unreadable sidecar or an
    unloadable program."""
    path = Path(path)
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        raise ValueError(f"{path}: its sidecar {sidecar.name} (written by eapnet.export.executorch_export) is "
                         f"missing; it names the source model and precision")
    try:
        meta = json.loads(sidecar.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{sidecar}: not valid JSON ({e})") from None
    check_pte(path)
    probe_in_child(path)
    run = load_pte(path, threads=threads)
    return Artifact(path, "pte", meta.get("precision", "?"), tuple(run.size),
                    "ExecuTorch runtime (XNNPACK delegate" + (", 8-bit app input)" if run.io == APP_IO else ")"),
                    meta, run)


def run_pte(path: str | os.PathLike, ldrs: torch.Tensor, evs: torch.Tensor, *,
            threads: int | None = None) -> torch.Tensor:
    """One forward of a ``.pte`` in ExecuTorch's runtime (:func:`load_pte`, then run)."""
    return load_pte(path, threads=threads)(ldrs, evs)
