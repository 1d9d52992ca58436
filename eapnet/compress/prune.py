"""Structured pruning of EAPNet: drop progressive blocks, then slice channel groups to a narrower config.

A pruned model is never a patched module tree: it is a new :class:`eapnet.EAPNetConfig` (the same row with
fewer PDUBs and/or smaller widths) plus weights sliced from its parent, loaded into ``EAPNet(config)``. So
a pruned checkpoint rebuilds from its config alone, like every other checkpoint.

Two operations:

- :func:`drop_blocks` keeps a subset of the PDUBs (the paper's blocks are plug-and-play, Table 2): each
  block is a residual on the trunk, so removing one removes its weights and its slice of the global fusion
  conv's input, nothing else.
- :func:`prune_to` slices channels to a target config of the same structure with torch-pruning's DepGraph,
  which finds every layer coupled to a channel (depthwise convs, concats, residual adds, the alignment's
  split, the attention's gating). The target config fixes how many channels each conv keeps; importance
  (:data:`IMPORTANCE`) picks which.

Width knobs (:func:`width_knobs`) are the config fields channel pruning changes: ``enc_channels`` (C, every
encoder/attention/alignment width), ``feat_channels`` (F, the restoration trunk), ``tail_channels`` and
each block's ``pdub.<j>.w1|w2|w3``. Widths stay multiples of :data:`MULTIPLE` (phone int8 kernels).
"""
from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Sequence

import torch
import torch_pruning as tp
from torch import nn

from eapnet.losses import eapnet_loss
from eapnet.model import EAPNet, EAPNetConfig

__all__ = [
    "IMPORTANCE",
    "MULTIPLE",
    "PruneError",
    "drop_blocks",
    "get_width",
    "prune_to",
    "set_width",
    "width_knobs",
]

MULTIPLE = 8
"""Pruned widths are multiples of this (XNNPACK / Core ML int8 kernels are fastest on multiples of 8)."""

IMPORTANCE = ("magnitude", "taylor")
"""Channel importance criteria: ``magnitude`` = L2 norm of a channel's weights summed over every coupled
layer (data-free); ``taylor`` = first-order Taylor estimate |w * dL/dw| of the loss change when the channel
is removed, with L the training loss against ground truth on calibration scenes."""

_SCALAR_KNOBS = ("enc_channels", "feat_channels", "tail_channels")
_PDUB_KNOB = re.compile(r"^pdub\.(\d+)\.w([123])$")


class PruneError(ValueError):
    """A pruning request that cannot be carried out (bad knob, structure mismatch, ...)."""


# ---------------------------------------------------------------------------------------------- config


def width_knobs(cfg: EAPNetConfig) -> list[str]:
    """The prunable width fields of ``cfg``: C, F, the tail and each PDUB's three level widths."""
    knobs = list(_SCALAR_KNOBS)
    if cfg.block == "pdub":
        knobs += [f"pdub.{j}.w{k}" for j in range(cfg.num_blocks) for k in (1, 2, 3)]
    return knobs


def get_width(cfg: EAPNetConfig, knob: str) -> int:
    if knob in _SCALAR_KNOBS:
        return getattr(cfg, knob)
    m = _PDUB_KNOB.match(knob)
    if not m or int(m.group(1)) >= len(cfg.pdub_widths):
        raise PruneError(f"unknown width knob {knob!r}; known: {width_knobs(cfg)}")
    return cfg.pdub_widths[int(m.group(1))][int(m.group(2)) - 1]


def set_width(cfg: EAPNetConfig, knob: str, value: int) -> EAPNetConfig:
    """``cfg`` with one width changed (validated; any positive int, rounding is the caller's choice)."""
    value = int(value)
    if value < 1:
        raise PruneError(f"width {knob} must be >= 1, got {value}")
    if knob in _SCALAR_KNOBS:
        return cfg.replace(**{knob: value})
    get_width(cfg, knob)  # validates
    m = _PDUB_KNOB.match(knob)
    j, k = int(m.group(1)), int(m.group(2)) - 1
    rows = [list(r) for r in cfg.pdub_widths]
    rows[j][k] = value
    return cfg.replace(pdub_widths=tuple(tuple(r) for r in rows))


# ------------------------------------------------------------------------------------------ block drop


def drop_blocks(model: EAPNet, keep: Sequence[int]) -> EAPNet:
    """A new ``EAPNet`` with only the PDUBs ``keep`` (indices into ``model.blocks``, in order), weights copied.

    Each block is ``y + block(y)`` on the trunk, and the global feature fusion conv ``gff[0]`` reads the
    concatenation of every block's output, so its input columns of dropped blocks are removed. Keeping all
    blocks returns an exact copy (same outputs)."""
    cfg = model.config
    if cfg.block != "pdub":
        raise PruneError(f"block dropping needs PDUB blocks, the model has {cfg.block!r}")
    keep = [int(j) for j in keep]
    if not keep or sorted(set(keep)) != keep or keep[0] < 0 or keep[-1] >= cfg.num_blocks:
        raise PruneError(f"keep must be increasing block indices in [0, {cfg.num_blocks}), got {keep}")
    new_cfg = cfg.replace(num_blocks=len(keep), pdub_widths=tuple(cfg.pdub_widths[j] for j in keep))
    F = cfg.feat_channels
    state = {}
    for key, value in model.state_dict().items():
        m = re.match(r"^blocks\.(\d+)\.(.*)$", key)
        if m:
            j = int(m.group(1))
            if j in keep:
                state[f"blocks.{keep.index(j)}.{m.group(2)}"] = value
        elif key == "gff.0.weight":
            state[key] = torch.cat([value[:, j * F:(j + 1) * F] for j in keep], 1)
        else:
            state[key] = value
    out = EAPNet(new_cfg)
    out.load_state_dict(state)
    return out.train(model.training)


# --------------------------------------------------------------------------------------- channel pruning


def _is_channel_conv(module: nn.Module) -> bool:
    """A conv whose output channels are free (not depthwise: depthwise outputs follow their inputs)."""
    if isinstance(module, nn.ConvTranspose2d):
        return True
    return isinstance(module, nn.Conv2d) and module.groups == 1


def _example_inputs(h: int = 32, w: int = 32) -> list[torch.Tensor]:
    return [torch.rand(1, 6, h, w) for _ in range(3)]


def _importance(kind: str):
    if kind == "magnitude":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if kind == "taylor":
        return tp.importance.GroupTaylorImportance()
    raise PruneError(f"importance must be one of {IMPORTANCE}, got {kind!r}")


def _taylor_grads(model: EAPNet, calib: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> None:
    """Accumulate d(training loss vs ground truth)/dw over calibration batches into ``.grad``."""
    model.zero_grad(set_to_none=True)
    for ldrs, evs, gt in calib:
        eapnet_loss(model(ldrs, evs), gt).backward()


def prune_to(model: EAPNet, target: EAPNetConfig, importance: str = "magnitude",
             calib: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None) -> EAPNet:
    """Slice ``model``'s channels down to ``target`` (same structure, widths <= the model's); returns a new
    ``EAPNet(target)`` holding the kept weights. ``model`` is not modified.

    DepGraph (torch-pruning) groups every coupled channel; within a group, each free conv output keeps its
    target count, chosen by ``importance`` (see :data:`IMPORTANCE`; ``taylor`` needs ``calib``, a list of
    ``(ldrs, evs, gt)`` batches). A target equal to the model's config returns an exact copy."""
    src = model.config
    if target.replace(name=src.name, **_widths_of(src)) != src:
        raise PruneError("prune_to changes widths only: the target differs from the model in "
                         + ", ".join(f.name for f in _diff_fields(src, target)))
    for knob in width_knobs(src):
        if get_width(target, knob) > get_width(src, knob):
            raise PruneError(f"{knob}: target width {get_width(target, knob)} exceeds the model's "
                             f"{get_width(src, knob)}; pruning only removes channels")
    if importance == "taylor" and not calib:
        raise PruneError("taylor importance needs calibration batches (calib)")
    work = copy.deepcopy(model).cpu().float().eval()
    for p in work.parameters():  # DepGraph traces autograd: frozen weights (a teacher) would hide layers
        p.requires_grad_(True)
    if target == src:
        return _rebuild(work, target)
    if importance == "taylor":
        _taylor_grads(work, calib)
    with torch.device("meta"):
        want = {n: m.out_channels for n, m in EAPNet(target).named_modules() if _is_channel_conv(m)}
    names = {m: n for n, m in work.named_modules()}
    imp = _importance(importance)
    graph = tp.DependencyGraph().build_dependency(
        work, example_inputs=_example_inputs(), forward_fn=lambda m, x: m.residual(x))
    roots = [(g[0].dep.target.module, g[0].dep.handler)
             for g in graph.get_all_groups(ignored_layers=[work.out],
                                           root_module_types=[nn.Conv2d, nn.ConvTranspose2d])]
    for root, handler in roots:
        n = root.out_channels
        group = graph.get_pruning_group(root, handler, idxs=list(range(n)))
        remove = _channels_to_remove(group, want, names, imp)
        if remove:
            graph.get_pruning_group(root, handler, idxs=remove).prune()
    model.zero_grad(set_to_none=True)
    return _rebuild(work, target)


def _widths_of(cfg: EAPNetConfig) -> dict:
    return {"enc_channels": cfg.enc_channels, "feat_channels": cfg.feat_channels,
            "tail_channels": cfg.tail_channels, "pdub_widths": cfg.pdub_widths}


def _diff_fields(a: EAPNetConfig, b: EAPNetConfig):
    skip = set(_widths_of(a)) | {"name"}
    return [f for f in dataclasses.fields(a) if f.name not in skip and getattr(a, f.name) != getattr(b, f.name)]


def _channels_to_remove(group, want: dict[str, int], names: dict[nn.Module, str], imp) -> list[int]:
    """Root indices to remove so that every free conv in ``group`` ends at its target width.

    A group's root index space can span several convs (e.g. a depthwise conv over a concat of four
    branches): each free conv owns a segment of root indices and keeps its quota of the most important."""
    segments: dict[frozenset, int] = {}
    for item in group:
        module = item.dep.target.module
        if not (_is_channel_conv(module) and item.dep.handler.__name__.endswith("out_channels")):
            continue
        name = names.get(module)
        seg = frozenset(int(i) for i in item.root_idxs)
        current = module.out_channels
        if name not in want:
            raise PruneError(f"{name}: no counterpart in the target config")
        if (want[name] * len(seg)) % current:
            raise PruneError(f"{name}: {want[name]} of {current} channels does not map to whole root channels")
        quota = want[name] * len(seg) // current  # e.g. the alignment conv maps 2 outputs per root channel
        if segments.get(seg, quota) != quota:
            raise PruneError(f"{name}: coupled layers disagree on the width to keep ({quota} vs {segments[seg]})")
        segments[seg] = quota
    covered = set()
    for seg in segments:
        if covered & seg:
            raise PruneError("overlapping channel segments in one pruning group; the config cannot express it")
        covered |= seg
    n_root = len(group[0].root_idxs)
    if not segments or covered != set(range(n_root)):
        raise PruneError(f"pruning group rooted at {names.get(group[0].dep.target.module)} is not fully owned "
                         "by convs with a target width")
    if all(len(s) == q for s, q in segments.items()):
        return []
    scores = imp(group)
    if scores is None:  # e.g. taylor without gradients for this group
        raise PruneError(f"no importance for the group rooted at {names.get(group[0].dep.target.module)}")
    remove = []
    for seg, quota in segments.items():
        idx = sorted(seg)
        order = torch.argsort(scores[idx], descending=True, stable=True).tolist()
        remove += [idx[i] for i in order[quota:]]
    return sorted(remove)


def _rebuild(work: EAPNet, target: EAPNetConfig) -> EAPNet:
    """``EAPNet(target)`` with ``work``'s (sliced) weights; shapes must match exactly."""
    out = EAPNet(target)
    want, have = out.state_dict(), work.state_dict()
    bad = [k for k in want if k not in have or have[k].shape != want[k].shape]
    if bad or set(have) != set(want):
        k = bad[0] if bad else min(set(have) ^ set(want))
        raise PruneError(f"pruned weights do not match the target config at {k}: "
                         f"{tuple(have[k].shape) if k in have else None} vs "
                         f"{tuple(want[k].shape) if k in want else None}")
    out.load_state_dict(have)
    return out.eval()
