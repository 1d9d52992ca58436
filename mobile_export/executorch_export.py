"""ExecuTorch export: EAPNet -> ``.pte`` for the XNNPACK backend (phone CPUs), fp32 or int8, fully delegated.

The library (:func:`export_pte`, :func:`ptq_source`, :func:`load_pte`, :func:`run_pte`, :func:`open_pte`, ...);
the command line is :mod:`mobile_export.export_pte` (``eapnet-export-pte``).

A straight line: load + ``torch.export`` at a fixed size (``mobile_export.common``) -> int8 PTQ if asked
(``compress.quantize``, XNNPACK quantizer) -> :func:`make_delegable` -> ``to_edge_transform_and_lower`` with
``XnnpackPartitioner`` -> delegation check -> ``.pte`` written atomically -> output checked in ExecuTorch's
own runtime (:func:`run_pte`) against the source module.

Delegation. XNNPACK (executorch 1.5.1) takes every conv and transposed conv, add/mul/div, sigmoid, ReLU,
clamp, minimum, log, exp, cat, slice, view, average pooling and bilinear x2 of the model, fp32 and int8, but
not these (measured on EAPNet; the partitioner's own reasons in brackets):

- ``torch.exp2`` (``ev_align``): not core ATen; edge conversion fails outright;
- ``x ** 2.24`` (``ev_align``): ``pow.Tensor_Scalar`` [only support power == 2];
- ``mean`` over the channel dim of ``(B, 3, 3, H, W)`` and ``sum`` over the frame dim (``radiance_merge``):
  [mean.dim only supports averaging 4D tensors]; ``sum.dim_IntList`` has no XNNPACK op;
- ``x[:, i]`` (``select.int``) and ``torch.split`` (``Alignment``): no XNNPACK op;
- replicate padding (``pad_frames``): core ATen decomposes it to ``arange``/``clamp``/``index.Tensor``
  (an int64 gather), none of which XNNPACK takes;
- int Python scalars (``1 - x``) become int64 constants cast to float32 outside the delegate;
- ``torch.cat`` of a single tensor (a one-block model's feature fusion) [only 2 or more tensors];
- int8 programs quantized before ``compress.quantize`` shared a split's parameters with its halves: the
  halves of the alignment's split, requantized to their users' scales [XNNPACK static slice requires matching
  input and output quantization parameters].

:func:`make_delegable` rewrites them at export time into equivalent delegable ops (see ``_REWRITES``):
``exp2(e) = exp(e ln 2)``, ``x ** g = exp(g log max(x, tiny))``, sums and means over a non-spatial dim =
adds of ``narrow`` slices (times ``1/n``), select/split = ``narrow`` (+ ``reshape``), replicate pad = ``cat``
of the edge row/column, int scalars -> float scalars, a one-tensor cat -> the tensor, and an explicit
requantize before a requantizing int8 slice (:func:`_requantize_before_slices`). The model code is untouched.
Measured: the fp32 ``.pte`` matches eager within 2.4e-7 (tiny) / 1.2e-7 (standard, 1060x1900); int8 ones
match the Q/DQ reference within 1-2 steps of the output conv's int8 scale (tests/test_executorch_export.py).

Int8 programs stay int8 up to the float output head: bilinear resizes and sigmoids run on int8 tensors
(:func:`partitioner_configs`; the XNNPACK quantizer of ``compress.quantize`` gives each resize and each split
half its input's parameters and makes the 2x2 average pools depthwise convs). Before, each of those ops was a
float island between two XNNPACK Converts: the 100 G standard's int8 program had 51 Converts, now 7 (the input
frames and the head).

Inputs and output of every ``.pte``: as ``mobile_export.common`` (``ldrs`` (1, 3, 3, H, W) in [0, 1],
``evs`` (1, 3) stops; ``hdr`` (1, 3, H, W) gamma-encoded HDR, >= 0) at the fixed exported size.
"""
from __future__ import annotations

import contextlib
import math
import operator
import os
import re
import signal
import struct
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from eapnet.console import native_stderr
from eapnet.evalsets import calibration_batches

from mobile_export.common import (
    DEFAULT_SIZE,
    Source,
    artifact_name,
    export_fixed,
)
from compress.quantize import Padded, convert, prepare_ptq
from eapnet.runs import atomic_path, atomic_write_json
from mobile_export.backends import Artifact, artifact_sha256

__all__ = ["DelegationError", "delegation_report", "export_pte", "load_pte", "lower", "make_delegable",
           "open_pte", "ptq_source", "run_pte"]

BACKEND = "xnnpack"
PRECISIONS = ("fp32", "int8")

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
}
"""Op -> equivalent function of delegable ops (``NotImplemented``: keep the op). Used as a decomposition table."""
_SCALAR_OPS = (aten.add.Tensor, aten.sub.Tensor, aten.mul.Tensor, aten.div.Tensor, aten.rsub.Scalar)


def make_delegable(ep: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """``ep`` with the ops XNNPACK does not take rewritten into equivalent ops it does (module docstring).

    Int Python scalars of float arithmetic become floats first (``x + 1`` -> ``x + 1.0``): ExecuTorch turns an
    int scalar into an int64 constant plus a cast that stays outside the delegate. ``ep`` is modified.
    """
    for node in ep.graph.nodes:
        if node.op == "call_function" and node.target in _SCALAR_OPS:
            val = node.meta.get("val")
            if val is not None and val.dtype.is_floating_point:
                node.args = tuple(float(a) if type(a) is int else a for a in node.args)
    ep.graph_module.recompile()
    ep = ep.run_decompositions(_REWRITES)
    _drop_aliases(ep.graph_module)
    _requantize_before_slices(ep.graph_module)
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


def _requantize_before_slices(gm: torch.fx.GraphModule) -> int:
    """Int8 programs: ``dq(s1) -> slice -> q(s2)`` with ``s1 != s2`` becomes ``dq(s1) -> q(s2) -> dq(s2) -> slice
    -> q(s2)``; returns how many slices it changed.

    Why: ExecuTorch's XNNPACK quantizer leaves ``torch.split`` (``Alignment``) unannotated, so each half of
    the split is requantized to its user's scale, and XNNPACK's int8 slice cannot requantize [needs matching
    input and output quantization parameters]; the slice then stays outside the delegate. Programs quantized
    by ``compress.quantize`` now give the halves their source's parameters (``_share_split_qparams``) and
    need no change here; ``.pt2`` programs quantized before still do. Slicing and per-tensor
    quantization commute and ``q(dq(q(y))) = q(y)``, so the result is bit-identical in the Q/DQ reference;
    XNNPACK runs the requantization as a convert (int8 -> fp32 -> int8) and the slice in int8.
    """
    from torch._guards import detect_fake_mode

    try:
        qd = torch.ops.quantized_decomposed
        quant, dequant = qd.quantize_per_tensor.default, qd.dequantize_per_tensor.default
    except AttributeError:   # Q/DQ ops not registered: no int8 program exists in this process
        return 0
    changed = 0
    for node in list(gm.graph.nodes):
        if node.target != aten.slice.Tensor or len(node.users) != 1:
            continue
        dq, q = node.args[0], next(iter(node.users))
        if not (isinstance(dq, torch.fx.Node) and dq.target == dequant and q.target == quant):
            continue
        if tuple(dq.args[1:]) == tuple(q.args[1:]):
            continue
        with gm.graph.inserting_before(node):
            q2 = gm.graph.call_function(quant, (dq, *q.args[1:]))
            dq2 = gm.graph.call_function(dequant, (q2, *q.args[1:]))
        fake = detect_fake_mode([dq.meta["val"]])
        with fake:
            q2.meta["val"] = quant(dq.meta["val"], *q.args[1:])
            dq2.meta["val"] = dequant(q2.meta["val"], *q.args[1:])
        node.replace_input_with(dq, dq2)
        changed += 1
    if changed:
        gm.graph.lint()
        gm.recompile()
    return changed


def lower(ep: torch.export.ExportedProgram, reasons: bool = False):
    """``to_edge_transform_and_lower`` of ``make_delegable(ep)`` with the XNNPACK partitioner.

    Returns the ``EdgeProgramManager`` (pass it to :func:`delegation_report`; ``.to_executorch()`` serialises).
    Its ``why_not_delegated`` attribute maps node names to the partitioner's reasons for leaving them out,
    collected only with ``reasons=True``: that turns on the XNNPACK passes' debug logging, which makes the
    lowering about 1.5x slower (37 s against 25 s for a tiny EAPNet), so :func:`export_pte` asks for the
    reasons only after a lowering left nodes outside the delegate.
    """
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import (
        XnnpackPartitioner,
    )
    from executorch.exir import to_edge_transform_and_lower

    with _partitioner_reasons() if reasons else contextlib.nullcontext({}) as why:
        edge = to_edge_transform_and_lower(make_delegable(ep),
                                           partitioner=[XnnpackPartitioner(configs=partitioner_configs())])
    edge.why_not_delegated = why
    return edge


def partitioner_configs() -> list:
    """ExecuTorch's XNNPACK partitioner configs, with bilinear resizes and sigmoids also taken on int8 tensors.

    ExecuTorch 1.5.1 offers ``upsample_bilinear2d`` and ``sigmoid`` in fp32 only, so in an int8 program each
    became a float island: int8 -> fp32 convert, the float op, fp32 -> int8 convert (XNNPACK's Convert was 243
    of 1,654 ms of the 100 G standard's int8 program at 1900x1060, the float resizes 120 ms more). XNNPACK
    itself runs both on int8: the resize needs equal input and output quantization parameters (the XNNPACK
    quantizer of ``compress.quantize`` shares them), the sigmoid is a lookup table for any pair. A resize
    whose ``dequantize -> resize -> quantize`` pattern has unequal parameters (an int8 program quantized
    before that sharing) stays an fp32 op with its converts, as before. The resize visitor is replaced too:
    ExecuTorch's defines the resize's tensors without their quantization parameters.
    """
    from executorch.backends.xnnpack.operators.node_visitor import (
        _node_visitor_dict,
        register_node_visitor,
    )
    from executorch.backends.xnnpack.partition.config import ALL_PARTITIONER_CONFIGS
    from executorch.backends.xnnpack.partition.config.generic_node_configs import (
        SigmoidConfig,
        UpsampleBilinear2dConfig,
    )
    from executorch.backends.xnnpack.partition.config.xnnpack_config import (
        ConfigPrecisionType,
    )
    from executorch.backends.xnnpack.utils.quant_utils import is_dequant, is_quant

    both = [ConfigPrecisionType.FP32, ConfigPrecisionType.STATIC_QUANT]

    class Int8Resize(UpsampleBilinear2dConfig):
        def supported_precision_types(self):
            return both

        def get_node_and_deps(self, node, ep):
            deps = super().get_node_and_deps(node, ep)
            dq, q = node.args[0], next(iter(node.users))
            if (len(deps) > 1 and is_dequant(dq) and is_quant(q)
                    and tuple(dq.args[1:]) != tuple(q.args[1:])):      # int8 resize cannot requantize
                return [node]
            return deps

    class Int8Sigmoid(SigmoidConfig):
        def supported_precision_types(self):
            return both

    resize_visitor = _node_visitor_dict[f"aten.{UpsampleBilinear2dConfig.target_name}"]
    if not getattr(resize_visitor, "defines_quant_params", False):
        class Int8ResizeVisitor(resize_visitor):
            defines_quant_params = True

            def define_node(self, node, xnn_graph, vals_to_ids, debug_handle):
                self.define_nodes_tensor_inputs_outputs(node, xnn_graph, vals_to_ids, convert_to_nhwc=True)
                super().define_node(node, xnn_graph, vals_to_ids, debug_handle)

        register_node_visitor(Int8ResizeVisitor)
    swap = {UpsampleBilinear2dConfig: Int8Resize, SigmoidConfig: Int8Sigmoid}
    return [swap.get(c, c) for c in ALL_PARTITIONER_CONFIGS]


@contextlib.contextmanager
def _partitioner_reasons():
    """Collect the XNNPACK partitioner's ``WhyNoPartition`` debug messages: ``{node name: reason}``."""
    import logging

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


def ptq_source(source: Source, calib: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None) -> Source:
    """Int8 ``Source`` of a float ``source`` by post-training quantization with the XNNPACK quantizer.

    ``calib``: ``(ldrs (B, 3, 3, H, W) in [0, 1], evs (B, 3) stops)`` batches; default the first
    ``eapnet.evalsets.CALIBRATION_SCENES`` scenes of the shipped calibration set. Its module is the Q/DQ reference model
    (``compress.quantize.Padded``: any H, W), the program the int8 ``.pte`` must reproduce.
    """

    if source.precision != "fp32":
        raise ValueError(f"PTQ needs a float source; {source.path} is already {source.precision}")
    calib = calibration_batches() if calib is None else list(calib)
    qmodel = Padded(convert(prepare_ptq(source.module, BACKEND, calib))).eval()
    return Source(qmodel, "int8", source.variant, source.path, source.sha256, source.config, source.maccs,
                  source.params, BACKEND)


def export_pte(source: Source, out_dir: str | os.PathLike, *, size: tuple[int, int] = DEFAULT_SIZE,
               precision: str | None = None, calib: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
               allow_partial: bool = False) -> Path:
    """Write ``<variant>_xnnpack_<precision>_<H>x<W>.pte`` for ``source`` into ``out_dir``; returns its path.

    Beside it, ``<same name>.json``: the ``.pte``'s own sha256 (``artifact_sha256``, checked when it is opened:
    ``mobile_export.backends.check_stamp``), source file and sha256, precision, size and :func:`delegation_report`.

    ``size``: (H, W) in pixels of the program's fixed input. ``precision``: ``None`` = the source's own
    (``"fp32"`` for a float model, ``"int8"`` for a ``.pt2`` int8 program); ``"int8"`` with a float source
    runs PTQ (:func:`ptq_source`) on ``calib`` batches. Raises :class:`DelegationError`, listing the ops,
    when any compute op is left outside the XNNPACK delegate, unless ``allow_partial``. The file is written
    atomically: a failure at any step leaves no (partial) ``.pte`` behind.
    """
    precision = precision or source.precision
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if source.precision == "int8" and precision == "fp32":
        raise ValueError(f"{source.path} is an int8 program; an fp32 .pte needs the float model (.pt)")
    if source.precision == "int8" and source.quant_backend not in (None, BACKEND):
        raise ValueError(f"{source.path} was quantized for {source.quant_backend!r}; the XNNPACK .pte needs a "
                         f"program from the {BACKEND!r} quantizer (compress/qat.py --backend {BACKEND})")
    if source.precision == "fp32" and precision == "int8":
        source = ptq_source(source, calib)

    edge = lower(export_fixed(source.module, size))
    report = delegation_report(edge)
    if report["non_delegated_nodes"]:  # lower again, this time collecting the partitioner's reasons
        edge = lower(export_fixed(source.module, size), reasons=True)
        report = delegation_report(edge)
    if report["non_delegated_nodes"] and not allow_partial:
        ops = "; ".join(f"{d['name']} ({d['op']}" + (f": {d['why']}" if "why" in d else "") + ")"
                        for d in report["non_delegated"])
        raise DelegationError(f"{report['non_delegated_nodes']} compute node(s) of {source.variant} "
                              f"{precision} stay outside the XNNPACK delegate: {ops}", report)
    program = edge.to_executorch()
    path = Path(out_dir) / artifact_name(source.variant, BACKEND, precision, size, "pte")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:   # the file closes before the rename
        program.write_to_file(f)
        f.flush()
        os.fsync(f.fileno())

    atomic_write_json(path.with_suffix(".json"), {
        "pte": path.name, "artifact_sha256": artifact_sha256(path), "variant": source.variant,
        "precision": precision, "size": list(size), "backend": BACKEND, "source": source.path,
        "source_sha256": source.sha256, "maccs": source.maccs, "params": source.params, "delegation": report})
    return path


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


def load_pte(path: str | os.PathLike, *, threads: int | None = None):
    """Load a ``.pte``'s ``forward`` once in ExecuTorch's runtime; returns ``run(ldrs, evs) -> hdr``.

    ``run`` takes ``ldrs`` (1, 3, 3, H, W) float32 in [0, 1] and ``evs`` (1, 3) stops at the program's
    exported size (``run.size`` = (H, W)) and returns ``hdr`` (1, 3, H, W). ``threads``: size of the XNNPACK
    thread pool (ExecuTorch's experimental ``_unsafe_reset_threadpool``); default its own (one per core).
    """
    from executorch.runtime import Runtime

    path = Path(path)
    check_pte(path)
    set_threads(threads)
    try:
        with native_stderr():
            method = Runtime.get().load_program(path).load_method("forward")
    except Exception as e:  # the runtime raises RuntimeError/ValueError variants for a damaged file
        raise ValueError(f"{path} is not a loadable ExecuTorch program ({type(e).__name__}: {e})") from e
    want = tuple(method.metadata.input_tensor_meta(0).sizes())

    def run(ldrs: torch.Tensor, evs: torch.Tensor) -> torch.Tensor:
        if tuple(ldrs.shape) != want:
            raise ValueError(f"{path.name} takes ldrs of shape {want}, got {tuple(ldrs.shape)}")
        return method.execute((ldrs.float().contiguous(), evs.float().contiguous()))[0]

    run.size = want[-2:]
    return run


def open_pte(path: str | os.PathLike, *, threads: int | None = None):
    """A ``.pte`` and its sidecar ``.json`` as a ``mobile_export.backends.Artifact``, ready to run.

    The program is first run once in a child process (:func:`probe_in_child`): a damaged program can abort
    its process, and that must be the child's. Raises ``ValueError`` for a missing or unreadable sidecar or an
    unloadable program."""
    import json

    path = Path(path)
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        raise ValueError(f"{path}: its sidecar {sidecar.name} (written by mobile_export.executorch_export) is "
                         f"missing; it names the source model and precision")
    try:
        meta = json.loads(sidecar.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{sidecar}: not valid JSON ({e})") from None
    check_pte(path)
    probe_in_child(path)
    run = load_pte(path, threads=threads)
    return Artifact(path, "pte", meta.get("precision", "?"), tuple(run.size),
                    "ExecuTorch runtime (XNNPACK delegate)", meta, run)


def run_pte(path: str | os.PathLike, ldrs: torch.Tensor, evs: torch.Tensor, *,
            threads: int | None = None) -> torch.Tensor:
    """One forward of a ``.pte`` in ExecuTorch's runtime (:func:`load_pte`, then run)."""
    return load_pte(path, threads=threads)(ldrs, evs)
