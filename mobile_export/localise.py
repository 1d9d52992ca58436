"""Where an int8 model drifts: the relative error of every conv output of a quantized eager model against the
float model, layer by layer in execution order (:func:`layer_errors`), and the first layers where it jumps
(:func:`localise`). The parity harness uses them to localise a failing artifact."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["layer_errors", "localise"]

_CONV = (nn.Conv2d, nn.ConvTranspose2d)


def layer_errors(float_model: nn.Module, quant_model: nn.Module, ldrs: torch.Tensor, evs: torch.Tensor
                 ) -> list[dict]:
    """Relative error ``||q - f|| / ||f||`` of every conv output of ``quant_model`` (a ``compress.quantize``
    int8 model, ``Padded`` or bare converted graph) against the same conv of ``float_model``, in the int8
    graph's execution order. Convs are matched by module path (``nn_module_stack``). The depthwise convs
    that range equalisation rescales before quantizing (``compress.equalise``) are left out: their float
    outputs differ from the int8 model's by a per-channel factor; the pointwise conv after each is compared."""
    from compress.equalise import rescaled_layers
    from compress.quantize import Padded
    from eapnet.model import pad_frames

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
