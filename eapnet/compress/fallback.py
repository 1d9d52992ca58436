"""Mixed-precision fallback: the fewest layer groups to keep in float so that an int8 model meets its budget.

Accuracy-aware quantization in the manner of AIMET's AutoQuant and NNCF's accuracy-aware quantization, on
post-training quantization (:func:`eapnet.compress.quantize.prepare_ptq`):

1. quantize everything (bar the backend's own float modules and the output head); if its PSNR-μ drop against
   ground truth on the given scenes is within ``target``, done;
2. otherwise measure each layer group's sensitivity: the drop with only that group left in float
   (:func:`layer_groups`: each encoder, attention and alignment module, each PDUB, and the other top-level
   stages);
3. greedily keep the groups in float in order of that drop, lowest first, until the target is met; then drop
   again any chosen group that the target does not need (fewest groups, not only a greedy prefix).

Each step is one calibration and conversion on the calibration batches and one scoring of the eager int8
model on ``scenes`` (:func:`eapnet.evalsets.score`); a model with G groups takes at most 2G + 2 such steps.
"""
from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn
from tqdm import tqdm

from eapnet.compress.quantize import Padded, convert, prepare_ptq
from eapnet.evalsets import score

__all__ = ["TARGET", "Fallback", "find_fallback", "layer_groups", "quantize_keeping"]

TARGET = 0.35
"""PSNR-μ (dB) an int8 model may lose against ground truth on the calibration scenes before layer groups stay
in float. Parity allows int8 0.5 dB per dataset and the project wants 0.1 dB of that spare; the calibration
scenes are the set int8 loses most on (the 100 G main job's all-int8 ``.pte``: 0.46 dB there, 0.24 on the
held-out set, ``docs/compression.md``), so a model within 0.35 there leaves the margin on every set."""


def layer_groups(model: nn.Module) -> list[str]:
    """Module paths of ``model``'s layer groups, in forward order: each child of a top-level ``ModuleList``
    (``encoders.0``, ``blocks.2``, ...) and every other top-level module with weights, except the output conv
    ``out`` (always float)."""
    groups = []
    for name, child in model.named_children():
        if name == "out" or next(child.parameters(), None) is None:
            continue
        if isinstance(child, nn.ModuleList):
            groups += [f"{name}.{i}" for i, sub in enumerate(child) if next(sub.parameters(), None) is not None]
        else:
            groups.append(name)
    return groups


@dataclass(frozen=True)
class Fallback:
    """The outcome of :func:`find_fallback`. Drops are mean PSNR-μ (dB) of the float model minus the int8
    model's against ground truth on the scenes searched; ``sensitivity``: the drop with only that group in
    float (empty when all-int8 met the target)."""

    backend: str
    target: float
    float_groups: tuple[str, ...]
    drop_all_int8: float
    drop: float
    met: bool
    sensitivity: dict[str, float]
    seconds: float

    def to_dict(self) -> dict:
        return {**asdict(self), "float_groups": list(self.float_groups)}


def quantize_keeping(model: nn.Module, backend: str, calib_batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
                     float_groups: Sequence[str] = (), *, equalise: bool = True) -> Padded:
    """The eager int8 model of ``model`` (PTQ for ``backend`` on ``calib_batches``) with ``float_groups`` kept
    in float, as a :class:`eapnet.compress.quantize.Padded` in eval mode."""
    return Padded(convert(prepare_ptq(model, backend, calib_batches, equalise=equalise,
                                      float_modules=tuple(float_groups)))).eval()


def find_fallback(model: nn.Module, backend: str, calib_batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
                  scenes: Sequence, *, target: float, groups: Sequence[str] | None = None, equalise: bool = True,
                  sensitivity: Mapping[str, float] | None = None, memo: dict | None = None,
                  progress: bool = True, log=print) -> tuple[Fallback, Padded]:
    """The fewest of ``groups`` (default :func:`layer_groups`) to keep in float so that the int8 model's
    PSNR-μ drop against ground truth on ``scenes`` (scene sources with ground truth, e.g. the calibration set)
    is at most ``target`` dB; returns the record and that int8 model. When even every group in float misses the
    target, the record says ``met=False`` and holds the best set found (all groups).

    A second search on the same model, scenes and target (e.g. with one group left out of ``groups``, for a set
    that costs less latency) passes the first one's ``sensitivity`` (its record's) and the same ``memo`` (a dict
    the caller keeps: the drop of every set tried, and the reference score), so no set is quantized twice."""
    t0 = time.time()
    model = model.eval()
    groups = list(layer_groups(model) if groups is None else groups)
    unknown = [g for g in groups if g not in dict(model.named_modules())]
    if unknown:
        raise ValueError(f"layer groups {unknown} are not modules of the model")
    memo = {} if memo is None else memo
    if "reference" not in memo:
        memo["reference"] = score(model, scenes, dataset="fallback")["psnr_mu"]
    reference = memo["reference"]
    # the int8 model of a set is kept only while it meets the target (the answer is one of those, or the
    # last set tried): a graph per layer group would hold memory the export and parity stages need
    tried: dict[tuple[str, ...], tuple[float, Padded | None]] = memo.setdefault("tried", {})

    def drop(keep: Sequence[str]) -> float:
        key = tuple(sorted(keep))   # one key per set, whatever the order or the groups searched
        if key not in tried:
            q = quantize_keeping(model, backend, calib_batches, key, equalise=equalise)
            d = reference - score(q, scenes, dataset="fallback")["psnr_mu"]
            tried[key] = (d, q if d <= target else None)
        return tried[key][0]

    def result(keep: Sequence[str], sensitivity: dict) -> tuple[Fallback, Padded]:
        key = tuple(g for g in groups if g in keep)   # forward order
        d, q = tried[tuple(sorted(key))]
        if q is None:   # the target was not met: quantize the best set found once more
            q = quantize_keeping(model, backend, calib_batches, key, equalise=equalise)
        rec = Fallback(backend, target, key, tried[()][0], d, d <= target, sensitivity, round(time.time() - t0, 1))
        log(f"fallback ({backend}): {', '.join(key) or 'no group'} in float: drop {d:.3f} dB "
            f"(all int8 {rec.drop_all_int8:.3f}, target {target:g})" + ("" if rec.met else ", target NOT met"))
        return rec, q

    if drop(()) <= target:
        return result((), {})
    known = dict(sensitivity or {})
    for g in tqdm([g for g in groups if g not in known], desc="fallback sensitivity", disable=not progress,
                  leave=False):
        known[g] = drop((g,))
    sensitivity = {g: known[g] for g in groups}
    chosen: list[str] = []
    for g in sorted(groups, key=lambda g: (sensitivity[g], groups.index(g))):
        chosen.append(g)
        if drop(chosen) <= target:
            break
    if drop(chosen) <= target:
        for g in sorted(chosen, key=lambda g: -sensitivity[g]):   # the least useful first
            rest = [c for c in chosen if c != g]
            if len(chosen) > 1 and drop(rest) <= target:
                chosen = rest
    return result(chosen, sensitivity)
