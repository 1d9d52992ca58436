"""Recycle dead ReLU channels during training (ReDo, Sokar et al., "The Dormant Neuron Phenomenon in Deep
Reinforcement Learning", ICML 2023), adapted to EAPNet's depthwise-separable convs.

A ReLU channel that is zero on (almost) every pixel passes no gradient to the conv that produces it, so
once dead it stays dead; with Adam at the CPU recipe's learning rate the decoders of the PDUBs lose such
channels steadily (``health.csv`` of a run). Every ``recycle_every`` steps, training finds the dead
channels on the 8 held-out probe scenes (:func:`eapnet.diagnostics.relu_zero_share`) and gives each one
fresh incoming weights: the producing conv's output row (the ``pw`` 1x1 conv of a DSConv, ``conv0`` of a
frame encoder) is re-drawn from its He distribution scaled by ``scale``, its bias set to zero, and Adam's
moments for those entries cleared. The outgoing weights are kept, so the revived channel receives gradient
at once; the small ``scale`` keeps the change of the model's output small (``tests/test_recycle.py``
bounds it). The same rows are copied into the EMA model so the two stay consistent.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from eapnet.diagnostics import DEAD_THRESHOLD, relu_zero_share
from eapnet.model import DSConv, FrameEncoder

RECYCLE_SCALE = 0.1
"""New incoming weights are this fraction of the He init's standard deviation."""


def producer(model: nn.Module, relu_name: str) -> nn.Conv2d:
    """The conv whose output a ReLU (named as :func:`eapnet.diagnostics.relu_modules` names it) rectifies."""
    owner = model.get_submodule(relu_name)
    if isinstance(owner, DSConv):
        return owner.pw
    if isinstance(owner, FrameEncoder):
        return owner.conv0
    raise TypeError(f"{relu_name}: no known producing conv for a ReLU in {type(owner).__name__}")


def find_dead(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
              threshold: float = DEAD_THRESHOLD) -> dict[str, list[int]]:
    """``{relu name: [dead channel indices]}`` (only ReLUs with at least one dead channel)."""
    shares = relu_zero_share(model, batches)
    return {n: [int(i) for i in torch.nonzero(z > threshold).flatten()] for n, z in shares.items()
            if bool((z > threshold).any())}


@torch.no_grad()
def recycle(model: nn.Module, dead: dict[str, list[int]], *, ema: nn.Module | None = None,
            optimizer: torch.optim.Optimizer | None = None, generator: torch.Generator | None = None,
            scale: float = RECYCLE_SCALE) -> int:
    """Give every channel in ``dead`` (from :func:`find_dead`) new incoming weights in ``model`` (and the
    same values in ``ema``); clear ``optimizer``'s per-entry state for them. Returns the channel count.
    ``generator`` (a CPU generator) makes the draw reproducible, e.g. identical on every DDP rank."""
    count = 0
    for name, idxs in dead.items():
        if not idxs:
            continue
        conv = producer(model, name)
        fan = conv.in_channels // conv.groups * conv.kernel_size[0] * conv.kernel_size[1]
        std = scale * math.sqrt(2.0) / math.sqrt(fan)
        idx = torch.tensor(idxs, dtype=torch.long)
        new_w = torch.randn((len(idxs), *conv.weight.shape[1:]), generator=generator) * std
        targets = [conv] + ([producer(ema, name)] if ema is not None else [])
        for c in targets:
            c.weight[idx.to(c.weight.device)] = new_w.to(c.weight)
            if c.bias is not None:
                c.bias[idx.to(c.bias.device)] = 0.0
        if optimizer is not None:
            for p in (conv.weight, conv.bias):
                state = optimizer.state.get(p) if p is not None else None
                for v in (state or {}).values():
                    if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == p.shape[0]:
                        v[idx.to(v.device)] = 0.0
        count += len(idxs)
    return count
