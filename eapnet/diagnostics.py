"""Is every part of a model alive? Dead ReLU channels and gradient flow per module group.

A network can look fine by its loss while half of it never trains: a ReLU channel that is zero on every
pixel passes no gradient, and a branch behind dead channels (or behind weights too small for Adam's
``eps``) stays at its initialisation. Two measurements make that visible:

- :func:`dead_channels`: for every ReLU (``nn.ReLU`` module), the share of its output channels that are
  zero on more than ``threshold`` (default 99.9 %) of the pixels of a set of scenes;
- :func:`grad_ratios`: after a backward pass, ``|grad| / |w|`` (L2 norms) per module group (encoders,
  attention, alignment, merge, each PDUB, global fusion, up, tail, out).

Training logs both (``health.csv`` of a run folder) and ``tests/test_diagnostics.py`` checks a fresh model.

The command line is :mod:`eapnet.diagnose` (``eapnet-diagnostics``).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from eapnet.data.patches import scene_to_tensors
from eapnet.data.synthetic import HELDOUT_SEED, generate_scene, scene_seed
from eapnet.losses import EAPNetLoss


DEAD_THRESHOLD = 0.999
"""A channel is dead when it is zero on more than this share of the pixels (over all scenes given)."""


def relu_modules(model: nn.Module) -> dict[str, nn.ReLU]:
    """``{qualified name: nn.ReLU}`` of every ReLU module (the name is its owner's, e.g. ``blocks.0.enc1``)."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.ReLU):
            out[name.removesuffix(".act").removesuffix(".act0")] = m
    return out


@torch.no_grad()
def relu_zero_share(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Per ReLU, the share of pixels on which each output channel is zero: ``{name: (C,) tensor in [0, 1]}``.

    ``batches`` yields ``(ldrs, evs)`` model inputs; the model runs in eval mode (restored afterwards)."""
    modules = relu_modules(model)
    zeros: dict[str, torch.Tensor] = {}
    count: dict[str, int] = {}

    def hook(name):
        def fn(_m, _inp, out):
            z = (out == 0).sum(dim=(0, 2, 3)).double().cpu()
            zeros[name] = zeros.get(name, 0) + z
            count[name] = count.get(name, 0) + out.shape[0] * out.shape[2] * out.shape[3]
        return fn

    run_with_hooks(model, {m: hook(n) for n, m in modules.items()}, batches)
    return {n: (zeros[n] / count[n]).float() for n in modules if n in zeros}


@torch.no_grad()
def run_with_hooks(model: nn.Module, hooks: dict[nn.Module, Callable],
                   batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Run ``(ldrs, evs)`` batches through ``model`` in eval mode with a forward hook ``fn(module, inputs,
    output)`` on each module of ``hooks``; the hooks are removed and the model's mode restored afterwards."""
    handles = [m.register_forward_hook(fn) for m, fn in hooks.items()]
    was_training = model.training
    model.eval()
    try:
        for ldrs, evs in batches:
            model(ldrs, evs)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)


def dead_channels(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                  threshold: float = DEAD_THRESHOLD) -> dict[str, tuple[int, int]]:
    """``{relu name: (dead channels, channels)}``: dead = zero on more than ``threshold`` of the pixels."""
    return {n: (int((z > threshold).sum()), z.numel()) for n, z in relu_zero_share(model, batches).items()}


def module_group(name: str) -> str:
    """The group a parameter or module belongs to: ``blocks.2.enc1.pw.weight`` -> ``blocks.2``,
    ``attention.1.0.conv.dw.weight`` -> ``attention``, ``tail.pw.bias`` -> ``tail``."""
    parts = name.split(".")
    if parts[0] == "blocks" and len(parts) > 1:
        return f"blocks.{parts[1]}"
    return parts[0]


def grad_ratios(model: nn.Module) -> dict[str, float]:
    """``{group: |grad| / |w|}`` (L2 norms over the group's parameters) after ``loss.backward()``; a group
    with no gradient at all gives 0. Groups: see :func:`module_group`."""
    g2: dict[str, float] = {}
    w2: dict[str, float] = {}
    for name, p in model.named_parameters():
        grp = module_group(name)
        w2[grp] = w2.get(grp, 0.0) + float(p.detach().double().pow(2).sum())
        if p.grad is not None:
            g2[grp] = g2.get(grp, 0.0) + float(p.grad.detach().double().pow(2).sum())
    return {grp: (g2.get(grp, 0.0) ** 0.5) / max(w2[grp] ** 0.5, 1e-30) for grp in w2}


def group_dead_share(dead: dict[str, tuple[int, int]]) -> dict[str, float]:
    """Dead share per module group (summed over the group's ReLUs)."""
    tot: dict[str, list[int]] = {}
    for name, (d, n) in dead.items():
        t = tot.setdefault(module_group(name), [0, 0])
        t[0] += d
        t[1] += n
    return {g: d / n for g, (d, n) in tot.items()}


def probe_batches(n: int = 8, size: int = 128, seed: int | None = None, batch: int = 4,
                  device: str | torch.device = "cpu") -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``n`` held-out synthetic scenes of ``size``^2 as ``(ldrs, evs, gt)`` batches (never trained on)."""
    seed = HELDOUT_SEED if seed is None else seed
    scenes = [scene_to_tensors(*generate_scene(scene_seed(seed, i), size, size)) for i in range(n)]
    out = []
    for i in range(0, n, batch):
        part = scenes[i:i + batch]
        out.append(tuple(torch.stack([torch.as_tensor(s[k]) for s in part]).to(device) for k in ("ldrs", "evs", "gt")))
    return out


def health(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
           loss_fn: nn.Module | None = None) -> dict[str, dict[str, float]]:
    """Dead share and gradient ratio per module group on ``batches`` (``(ldrs, evs, gt)``):
    ``{"dead": {group: share}, "grad": {group: |grad|/|w|}}``. Gradients come from one backward of
    ``loss_fn`` over the first batch in train mode; existing ``.grad`` values are kept."""
    dead = group_dead_share(dead_channels(model, ((x, e) for x, e, _ in batches)))
    saved = {n: (None if p.grad is None else p.grad.clone()) for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    was_training = model.training
    model.train()
    try:
        x, e, gt = batches[0]
        (loss_fn or EAPNetLoss())(model(x, e), gt).backward()
        grads = grad_ratios(model)
    finally:
        for n, p in model.named_parameters():
            p.grad = saved[n]
        model.train(was_training)
    return {"dead": dead, "grad": grads}


def report_lines(model: nn.Module, batches) -> list[str]:
    """A per-ReLU dead-channel table and per-group gradient ratios, as Markdown lines."""
    dead = dead_channels(model, ((x, e) for x, e, _ in batches))
    h = health(model, batches)
    lines = ["| ReLU | dead channels | share |", "|---|---:|---:|"]
    for name, (d, n) in dead.items():
        lines.append(f"| `{name}` | {d} / {n} | {100 * d / n:.0f} % |")
    total_d, total_n = sum(d for d, _ in dead.values()), sum(n for _, n in dead.values())
    lines.append(f"| **all** | {total_d} / {total_n} | {100 * total_d / max(total_n, 1):.1f} % |")
    lines += ["", "| group | dead share | grad / weight |", "|---|---:|---:|"]
    for grp, r in h["grad"].items():
        d = h["dead"].get(grp)
        lines.append(f"| `{grp}` | {'-' if d is None else f'{100 * d:.0f} %'} | {r:.1e} |")
    return lines
