"""Recycle dead ReLU channels during training (ReDo, Sokar et al., "The Dormant Neuron Phenomenon in Deep
Reinforcement Learning", ICML 2023), adapted to EAPNet's depthwise-separable convs.

A ReLU channel that is zero on (almost) every pixel passes no gradient to the conv that produces it, so
once dead it stays dead; with Adam at the CPU recipe's learning rate the decoders of the PDUBs lose such
channels steadily (``health.csv`` of a run). Every ``recycle_every`` steps, training finds the dead
channels on the 8 held-out probe scenes (:func:`eapnet.diagnostics.relu_zero_share`) and revives each one
as ReDo does:

- **incoming**: the producing conv's output row (the ``pw`` 1x1 conv of a DSConv, ``conv0`` of a frame
  encoder) is re-drawn from its He distribution at full scale, its bias set to zero;
- **outgoing**: the weights that read the channel directly (the next depthwise conv's filter, a dense or
  transposed conv's input slice, found through cat / upsampling by torch-pruning's dependency graph) are
  set to zero, so the model's output does not change and the channel grows back into use by gradient;
- **Adam state**: the first moment of every touched entry is cleared; the second moment is set to the
  mean of the tensor's other entries, so the revived entries take steps of the usual size (cleared
  second moments make Adam's first hundred steps 3-6x larger, enough to kill the channel again).

A channel whose value is also carried by an identity skip or a product with another conv's output (the
residual stream through the PDUBs, the attention gate) cannot be isolated by zeroing weights; it gets
small incoming weights (``SMALL_SCALE`` of He) and keeps its outgoing ones, which bounds the change of the
output instead. The same values go into the EMA model so the two stay consistent.

Measured from the shipped standard model (208 dead channels recycled, then 150 steps at lr 8e-4;
``scripts/recycle_probe.py``, table in ``reports/recipe/recipe.md``): small incoming weights with the outgoing
ones kept let 86 channels die again, full-scale revival with zero outgoing weights 31 (measured with only the
``dec2`` channels' outgoing weights zeroed; this module zeroes them for every channel it can isolate).
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch_pruning as tp
from torch import nn

from eapnet.checkpoint import build_from_spec, model_spec
from eapnet.diagnostics import DEAD_THRESHOLD, relu_zero_share
from eapnet.model import DSConv, FrameEncoder

SMALL_SCALE = 0.1
"""Incoming weights of a channel that cannot be isolated: this fraction of the He init's standard deviation."""


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


def outgoing(model: nn.Module, relu_names: Iterable[str]) -> dict[str, list[tuple[str, int, list[int]]] | None]:
    """For each ReLU (named as :func:`eapnet.diagnostics.relu_modules` names it), the weights that read its
    channels directly: ``{relu name: [(conv name, dim, [index of channel c for c = 0..C-1]), ...]}`` where
    ``dim`` is the weight dimension that holds input channels (0 for depthwise and transposed convs, 1 for
    dense convs). ``None`` for a ReLU whose channels also reach the output another way (an identity skip,
    a product with another conv's output): zeroing weights cannot isolate those.

    Found by torch-pruning's dependency graph on a CPU copy of ``model`` (the same config), which maps
    channels through concatenation, upsampling and splits."""
    ref = build_from_spec(model_spec(model)).eval()
    for p in ref.parameters():  # the graph follows autograd
        p.requires_grad_(True)
    example = (torch.rand(1, 3, 3, 32, 32), torch.tensor([[-2.0, 0.0, 2.0]]))
    with torch.enable_grad():  # callers may hold no_grad
        graph = tp.DependencyGraph().build_dependency(ref, example_inputs=example, forward_fn=lambda m, x: m(*x))
    names = {m: n for n, m in ref.named_modules()}
    convs = (nn.Conv2d, nn.ConvTranspose2d)
    out: dict[str, list[tuple[str, int, list[int]]] | None] = {}
    for relu in relu_names:
        prod = producer(ref, relu)
        n = prod.out_channels
        group = graph.get_pruning_group(prod, tp.prune_conv_out_channels, idxs=list(range(n)))
        direct = {id(prod)}  # nodes that carry the channel's values unchanged (the ReLU, cat, upsampling)
        readers: list[tuple[str, int, list[int]]] | None = []
        for item in group:
            src, tgt = item.dep.source.module, item.dep.target.module
            if tgt is prod or id(src) not in direct:
                continue  # the producer itself, or reached through another conv (a depthwise conv's pw)
            if not isinstance(tgt, convs):
                direct.add(id(tgt))
                continue
            idx = [int(getattr(i, "idx", i)) for i in item.idxs]
            if isinstance(tgt, nn.Conv2d) and tgt.groups == tgt.in_channels > 1:  # depthwise: a filter per channel
                readers.append((names[tgt], 0, idx))
            elif item.dep.handler.__name__.endswith("in_channels"):
                readers.append((names[tgt], 0 if isinstance(tgt, nn.ConvTranspose2d) else 1, idx))
            else:  # another conv's output is added to or multiplied with this channel
                readers = None
                break
        out[relu] = readers
    return out


def _reset_adam(optimizer: torch.optim.Optimizer | None, p: torch.Tensor, dim: int, idx: torch.Tensor) -> None:
    """Clear Adam's first moment of ``p``'s entries ``idx`` along ``dim``; give their second moment the mean
    of the other entries (a cleared one makes the next steps several times larger than usual)."""
    state = optimizer.state.get(p) if optimizer is not None else None
    if not state:
        return
    if torch.is_tensor(state.get("exp_avg")):
        state["exp_avg"].index_fill_(dim, idx.to(p.device), 0.0)
    v = state.get("exp_avg_sq")
    if torch.is_tensor(v):
        keep = torch.ones(v.shape[dim], dtype=torch.bool, device=v.device)
        keep[idx.to(v.device)] = False
        fill = float(v.index_select(dim, torch.nonzero(keep).flatten()).mean()) if bool(keep.any()) else 0.0
        v.index_fill_(dim, idx.to(v.device), fill)


@torch.no_grad()
def recycle(model: nn.Module, dead: dict[str, list[int]], *, ema: nn.Module | None = None,
            optimizer: torch.optim.Optimizer | None = None, generator: torch.Generator | None = None,
            readers: dict[str, list[tuple[str, int, list[int]]] | None] | None = None) -> int:
    """Revive every channel in ``dead`` (from :func:`find_dead`) in ``model`` (and identically in ``ema``) as
    the module docstring says; update ``optimizer``'s Adam state for every touched entry. Returns the channel
    count. ``generator`` (a CPU generator) makes the draw reproducible, e.g. identical on every DDP rank.
    ``readers``: :func:`outgoing` of ``model`` for these ReLUs (computed when not given)."""
    dead = {n: i for n, i in dead.items() if i}
    if readers is None:
        readers = outgoing(model, dead) if dead else {}
    count = 0
    for name, idxs in dead.items():
        conv = producer(model, name)
        fan = conv.in_channels // conv.groups * conv.kernel_size[0] * conv.kernel_size[1]
        isolated = readers.get(name) is not None
        std = (1.0 if isolated else SMALL_SCALE) * math.sqrt(2.0) / math.sqrt(fan)
        idx = torch.tensor(idxs, dtype=torch.long)
        new_w = torch.randn((len(idxs), *conv.weight.shape[1:]), generator=generator) * std
        for net in [model] + ([ema] if ema is not None else []):
            c = producer(net, name)
            c.weight[idx.to(c.weight.device)] = new_w.to(c.weight)
            if c.bias is not None:
                c.bias[idx.to(c.bias.device)] = 0.0
            for reader, dim, mapping in readers.get(name) or []:
                w = net.get_submodule(reader).weight
                w.index_fill_(dim, torch.tensor([mapping[i] for i in idxs], device=w.device), 0.0)
        for p in (conv.weight, conv.bias):
            if p is not None:
                _reset_adam(optimizer, p, 0, idx)
        for reader, dim, mapping in readers.get(name) or []:
            _reset_adam(optimizer, model.get_submodule(reader).weight, dim,
                        torch.tensor([mapping[i] for i in idxs], dtype=torch.long))
        count += len(idxs)
    return count
