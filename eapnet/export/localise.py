"""Where an int8 model drifts: the relative error of every conv output of a quantized eager model against the
float model, layer by layer in execution order (:func:`layer_errors`); the same for an int8 ``.pte`` against
its eager program, read from ExecuTorch's runtime (:func:`program_gaps`); and the first layers where either
jumps (:func:`localise`). The parity harness uses them to localise a failing artifact."""
from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import torch
from torch import nn

from eapnet.console import native_stderr
from eapnet.compress.equalise import rescaled_layers
from eapnet.compress.quantize import Padded
from eapnet.model import pad_frames
from eapnet.export import executorch_export as ee

__all__ = ["layer_errors", "localise", "program_gaps"]

_CONV = (nn.Conv2d, nn.ConvTranspose2d)


def layer_errors(float_model: nn.Module, quant_model: nn.Module, ldrs: torch.Tensor, evs: torch.Tensor
                 ) -> list[dict]:
    """Relative error ``||q - f|| / ||f||`` of every conv output of ``quant_model`` (a ``eapnet.compress.quantize``
    int8 model, ``Padded`` or bare converted graph) against the same conv of ``float_model``, in the int8
    graph's execution order. Convs are matched by module path (``nn_module_stack``). The depthwise convs
    that range equalisation rescales before quantizing (``eapnet.compress.equalise``) are left out: their float
    outputs differ from the int8 model's by a per-channel factor; the pointwise conv after each is compared."""

    gm = quant_model.inner if isinstance(quant_model, Padded) else quant_model
    if isinstance(quant_model, Padded):
        ldrs = pad_frames(ldrs, quant_model.multiple)
    skip = rescaled_layers(float_model)
    names = {m: n for n, m in float_model.named_modules() if isinstance(m, _CONV) and n not in skip}
    ref, hooks = {}, []
    for m, n in names.items():
        hooks.append(m.register_forward_hook(lambda mod, i, o, n=n: ref.__setitem__(n, o.detach())))
    try:
        with torch.no_grad():
            float_model(ldrs, evs)
    finally:
        for h in hooks:
            h.remove()

    convs = {torch.ops.aten.conv2d.default, torch.ops.aten.conv_transpose2d.input}
    got: dict[str, torch.Tensor] = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            if n.op == "call_function" and n.target in convs:
                stack = n.meta.get("nn_module_stack") or {}
                if stack:
                    got.setdefault(list(stack.values())[-1][0], out.detach())
            return out

    with torch.no_grad():
        Recorder(gm).run(ldrs, evs)
    rows = []
    for name, q in got.items():
        f = ref.get(name)
        if f is None or f.shape != q.shape:
            continue
        rel = float((q.float() - f).norm() / f.norm().clamp_min(1e-12))
        rows.append({"layer": name, "rel_err": rel})
    return rows


def localise(rows: list[dict], *, jump: float = 2.0, floor: float = 1e-3, top: int = 3) -> dict:
    """The first ``top`` layers whose relative error is ``jump`` x the largest before it (and above
    ``floor``), plus the worst layer, from :func:`layer_errors` rows."""
    jumps, running = [], 0.0
    for r in rows:
        if r["rel_err"] > floor and r["rel_err"] > jump * running:
            jumps.append({**r, "x_previous_max": (r["rel_err"] / running) if running else None})
        running = max(running, r["rel_err"])
    worst = max(rows, key=lambda r: r["rel_err"]) if rows else None
    return {"first_jumps": jumps[:top], "worst": worst, "layers": len(rows)}


_QDQ = torch.ops.quantized_decomposed


def _conv_taps(gm: torch.fx.GraphModule) -> dict[str, torch.fx.Node]:
    """For every conv of a converted int8 graph, the ``dequantize`` of its int8 output (after its ReLU, when
    one is fused), keyed by module path; the first such node per module."""
    convs = {torch.ops.aten.conv2d.default, torch.ops.aten.conv_transpose2d.input}
    taps: dict[str, torch.fx.Node] = {}
    for n in gm.graph.nodes:
        if n.op != "call_function" or n.target not in convs or not n.meta.get("nn_module_stack"):
            continue
        out = n
        if len(out.users) == 1 and next(iter(out.users)).target in (torch.ops.aten.relu.default,
                                                                      torch.ops.aten.relu_.default):
            out = next(iter(out.users))
        q = [u for u in out.users if u.target == _QDQ.quantize_per_tensor.default]
        dq = [u for u in (q[0].users if q else ()) if u.target == _QDQ.dequantize_per_tensor.default]
        if dq:
            taps.setdefault(list(n.meta["nn_module_stack"].values())[-1][0], dq[0])
    return taps


def program_gaps(quant_model: nn.Module, ldrs: torch.Tensor, evs: torch.Tensor
                 ) -> tuple[list[dict], torch.Tensor]:
    """Where an int8 ``.pte`` departs from its own eager program: the int8 output of every conv of
    ``quant_model`` (a ``eapnet.compress.quantize`` int8 model, ``Padded`` or bare converted graph) computed by
    ExecuTorch's runtime (the graph lowered to XNNPACK as :func:`eapnet.export.executorch_export.export_pte`
    lowers it, with each conv's output added as a program output) against the same tensor of the eager Q/DQ
    graph, in execution order, on ``ldrs`` (1, 3, 3, H, W) in [0, 1] and ``evs`` (1, 3) stops.

    Rows: ``layer`` (module path; the last row, ``<output>``, is the program's output after the float
    head), ``rel_err`` ``||pte - eager|| / ||eager||``, ``max_steps`` (largest difference in quantization steps
    of that tensor) and ``off_share`` (share of elements more than one step apart; XNNPACK requantizes in fixed
    point, so a faithful artifact differs by rounding flips that accumulate slowly through the network;
    ``None`` for ``<output>``). :func:`localise` names the first jumps. This is Inspector's numeric gap done
    directly: the taps are explicit program outputs, so every row pairs the same tensor on both sides
    (ExecuTorch's debug-handle pairing does not, for a delegated program).

    Returns ``(rows, hdr)``: ``hdr`` (1, 3, H, W) is the re-lowered program's output for the input, to be
    judged like the shipped artifact's."""
    from executorch.runtime import Runtime

    H, W = ldrs.shape[-2:]
    if isinstance(quant_model, Padded):
        ldrs, gm = pad_frames(ldrs, quant_model.multiple), quant_model.inner
    else:
        gm = quant_model
    gm = copy.deepcopy(gm)
    taps = _conv_taps(gm)
    out = next(n for n in gm.graph.nodes if n.op == "output")
    (hdr,) = torch.utils._pytree.tree_leaves(out.args)
    outs = []
    for t in taps.values():   # a dequantize of its own per tap: XNNPACK fails at run time when the one that
        with gm.graph.inserting_after(t):   # feeds later int8 ops is also a program output
            outs.append(gm.graph.call_function(t.target, t.args, t.kwargs))
    out.args = ((hdr, *outs),)
    gm.graph._codegen = torch.fx.graph.CodeGen()   # plain positional (ldrs, evs) -> tuple, no pytree specs
    gm.recompile()
    x, e = ldrs.float().contiguous(), evs.float().contiguous()
    with torch.no_grad():
        eager = gm(x, e)
        ep = torch.export.export(gm, (x, e), strict=False)
    program = ee.lower(ep).to_executorch()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "taps.pte"
        path.write_bytes(program.buffer)
        with native_stderr():
            method = Runtime.get().load_program(path).load_method("forward")
        got = method.execute((x, e))
    rows = []
    for (name, node), a, b in zip(taps.items(), got[1:], eager[1:]):
        scale = float(node.args[1])
        diff = (a.float() - b.float()).abs()
        rows.append({"layer": name, "rel_err": float(diff.norm() / b.float().norm().clamp_min(1e-12)),
                     "max_steps": float(diff.max() / scale), "off_share": float((diff > 1.5 * scale).float().mean())})
    a, b = got[0].float(), eager[0].float()    # the program's output, after the float head
    rows.append({"layer": "<output>", "rel_err": float((a - b).norm() / b.norm().clamp_min(1e-12)),
                 "max_steps": None, "off_share": None})
    return rows, a[..., :H, :W]
