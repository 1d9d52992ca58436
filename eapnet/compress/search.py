"""Budget search: which PDUBs to keep and how wide each layer group stays, for a MAcc budget.

Reference points: AIMET's greedy compression-ratio selection (measure each layer's sensitivity at a few
compression ratios, then pick per-layer ratios that meet the target with the least summed loss) and NNCF's
FLOPs target (one global pruning level, bisected until the FLOPs fit). Ours is AIMET's scheme over
EAPNet's config knobs, with block dropping as one more kind of move:

1. :func:`sensitivity` prunes one knob at a time (each width knob of :func:`eapnet.compress.prune.width_knobs` to
   a few ratios, each PDUB dropped alone), without fine-tuning, and measures the damage on calibration
   scenes: the mean squared error, in the official μ-law tone-mapped domain, between the pruned model's
   output and the unpruned model's (0 = unchanged).
2. :func:`greedy_search` starts from the full config and repeatedly takes the move (one knob one step of
   :data:`LADDER` narrower, or one block dropped) with the least added damage per MAcc saved (damage of
   unmeasured widths interpolated), until the MAccs, counted by the project's one counter, fit the budget.
   :func:`candidate_searches` runs it free and once per PDUB count (the most important PDUBs kept, widths
   only), and the caller keeps the candidate whose pruned model measures least damage.
3. Two baselines to beat: :func:`uniform_config`, every width scaled by one factor (bisected, NNCF-like),
   all blocks kept; and :func:`blocks_config`, only whole PDUBs dropped (the paper's own knob).

MAccs follow the NTIRE 2022 convention (``eapnet.count_maccs``) at the chosen resolution.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from eapnet.compress.prune import (
    MULTIPLE,
    drop_blocks,
    get_width,
    prune_to,
    set_width,
    width_knobs,
)
from eapnet.macs import NTIRE_HEIGHT, NTIRE_WIDTH, format_maccs, macc_factors, maccs_from_factors
from eapnet.model import EAPNet, EAPNetConfig
from eapnet.cpu import cpu_channels_last
from eapnet.metrics import DEFAULT_GAMMA

__all__ = [
    "LADDER",
    "BudgetError",
    "Sensitivity",
    "blocks_config",
    "candidate_searches",
    "check_reachable",
    "config_maccs",
    "greedy_search",
    "minimum_config",
    "round_width",
    "sensitivity",
    "uniform_config",
]

LADDER = (1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125)
"""Width ratios a knob can take (relative to the unpruned width), rounded to multiples of 8."""

MEASURED = (0.75, 0.5, 0.25)
"""Ratios at which each knob's sensitivity is measured (others are interpolated)."""


class BudgetError(ValueError):
    """A MAcc budget the search cannot meet (below the smallest reachable network)."""


def round_width(w: float) -> int:
    """Nearest multiple of :data:`MULTIPLE`, at least one multiple."""
    return max(MULTIPLE, round(w / MULTIPLE) * MULTIPLE)


@functools.lru_cache(maxsize=4096)
def config_maccs(cfg: EAPNetConfig, height: int = NTIRE_HEIGHT, width: int = NTIRE_WIDTH) -> int:
    """MAccs of ``EAPNet(cfg)`` (NTIRE convention) at ``height`` x ``width``; built on meta, cached.

    The one counter's forward on meta tensors takes ~0.3 s, hundreds of times in a search; its per-module
    factors (:func:`eapnet.macs.macc_factors`) depend on the layer structure only, so configs that differ in
    widths alone reuse them (a module the cached structure lacks is counted afresh)."""
    with torch.device("meta"):
        model = EAPNet(cfg)
    key = (_structure(cfg), height, width)
    try:
        return maccs_from_factors(model, _FACTORS[key])
    except KeyError:
        _FACTORS[key] = {**_FACTORS.get(key, {}), **macc_factors(model, height, width)}
        return maccs_from_factors(model, _FACTORS[key])


_FACTORS: dict[tuple, dict[str, int]] = {}


def _structure(cfg: EAPNetConfig) -> EAPNetConfig:
    """``cfg`` without its channel widths, which change no layer's output size."""
    return cfg.replace(name="", enc_channels=1, feat_channels=1, tail_channels=1, drdb_growth=1,
                       pdub_widths=((1, 1, 1),) * len(cfg.pdub_widths))


def minimum_config(cfg: EAPNetConfig) -> EAPNetConfig:
    """The smallest network the search can reach from ``cfg``: one PDUB, every width at its floor."""
    out = cfg.replace(num_blocks=1, pdub_widths=cfg.pdub_widths[:1]) if cfg.block == "pdub" else cfg
    for knob in width_knobs(out):
        out = set_width(out, knob, _ladder(get_width(cfg, knob))[-1] if knob in width_knobs(cfg) else MULTIPLE)
    return out


def check_reachable(base: EAPNetConfig, target_maccs: int, *, height: int = NTIRE_HEIGHT,
                    width: int = NTIRE_WIDTH) -> None:
    """Raise :class:`BudgetError`, naming the minimum, if ``target_maccs`` is below the smallest network the
    search can reach from ``base``."""
    floor = config_maccs(minimum_config(base), height, width)
    if target_maccs < floor:
        raise BudgetError(f"target {format_maccs(target_maccs)} MAccs is below the smallest network this search "
                          f"can reach from {base.name!r} ({format_maccs(floor)} at {height}x{width} (HxW): one PDUB, "
                          f"every width at its floor)")


@functools.lru_cache(maxsize=1024)
def _ladder(w0: int) -> tuple[int, ...]:
    """Distinct widths a knob of unpruned width ``w0`` can take, widest first (``w0`` itself first)."""
    out = [w0]
    for r in LADDER[1:]:
        w = min(w0, round_width(w0 * r))
        if w < out[-1]:
            out.append(w)
    return tuple(out)


@dataclass
class Sensitivity:
    """Damage (μ-law MSE vs the unpruned output) of each single-knob pruning, measured on calibration data.

    ``widths[knob] = {width: damage}`` (the unpruned width has damage 0); ``blocks[j]`` = damage of dropping
    PDUB ``j`` alone."""

    base: EAPNetConfig
    widths: dict[str, dict[int, float]] = field(default_factory=dict)
    blocks: dict[int, float] = field(default_factory=dict)

    def damage(self, knob: str, width: int) -> float:
        """Interpolated damage of ``knob`` at ``width`` (linear between measured widths; below the narrowest
        measured width, extrapolated along the last segment, never below it)."""
        pts = sorted(self.widths[knob].items())
        ws, ds = [p[0] for p in pts], [p[1] for p in pts]
        if width >= ws[0]:
            return float(np.interp(width, ws, ds))
        (w0, d0), (w1, d1) = pts[0], pts[1] if len(pts) > 1 else pts[0]
        slope = (d1 - d0) / (w1 - w0) if w1 != w0 else 0.0
        return max(d0, d0 + slope * (width - w0))

    def to_dict(self) -> dict:
        return {"widths": {k: {str(w): d for w, d in v.items()} for k, v in self.widths.items()},
                "blocks": {str(j): d for j, d in self.blocks.items()}}


def _mu(x: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    """The official scorer's tone map on gamma-encoded HDR: tanh-bounded linear, then μ-law (μ = 5000)."""

    lin = x.clamp_min(0) ** DEFAULT_GAMMA
    return torch.log1p(5000 * torch.tanh(lin / norm)) / np.log1p(5000)


def damage_fn(teacher: torch.nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]
              ) -> Callable[[torch.nn.Module], float]:
    """``f(model)`` = mean μ-law MSE between ``model`` and ``teacher`` on ``batches`` of ``(ldrs, evs)``
    (the official tone map, normalised by the teacher output's 99th percentile per image)."""

    refs = []
    with torch.no_grad(), cpu_channels_last(teacher):
        for ldrs, evs in batches:
            y = teacher(ldrs, evs)
            if not torch.isfinite(y).all():
                raise ValueError("the teacher's output on the calibration scenes holds NaN/inf: the scenes (their "
                                 "exposures, align ratios) or the weights are broken; nothing was searched")
            norm = torch.quantile((y.clamp_min(0) ** 2.24).flatten(1), 0.99, dim=1).clamp_min(1e-6)
            refs.append((ldrs, evs, norm[:, None, None, None], _mu(y, norm[:, None, None, None])))

    def f(model: torch.nn.Module) -> float:
        model.eval()
        with torch.no_grad(), cpu_channels_last(model):
            errs = [torch.mean((_mu(model(l, e), n) - r) ** 2).item() for l, e, n, r in refs]
        err = float(np.mean(errs))
        if not np.isfinite(err):
            raise ValueError(f"a pruned candidate ({getattr(model, 'config', None)}) gives a non-finite score; "
                             "refusing to search on it")
        return err

    return f


def sensitivity(model: EAPNet, batches: Sequence[tuple[torch.Tensor, torch.Tensor]], *,
                importance: str = "magnitude", calib_gt=None, widths: bool = True,
                progress: bool = True) -> Sensitivity:
    """Measure every single-knob pruning of ``model`` (widths at :data:`MEASURED` ratios unless ``widths`` is
    False, each block dropped alone) on calibration ``batches`` of ``(ldrs, evs)``; see :class:`Sensitivity`."""
    cfg = model.config
    damage = damage_fn(model, batches)
    jobs = [(k, w) for k in width_knobs(cfg)
            for w in sorted({min(get_width(cfg, k), round_width(get_width(cfg, k) * r)) for r in MEASURED},
                            reverse=True) if w < get_width(cfg, k)] if widths else []
    n_blocks = cfg.num_blocks if cfg.block == "pdub" and cfg.num_blocks > 1 else 0
    sens = Sensitivity(cfg, {k: {get_width(cfg, k): 0.0} for k in width_knobs(cfg)}, {})
    bar = tqdm(total=len(jobs) + n_blocks, desc="sensitivity", disable=not progress, unit="probe")
    for knob, w in jobs:
        pruned = prune_to(model, set_width(cfg, knob, w), importance, calib_gt)
        sens.widths[knob][w] = damage(pruned)
        bar.update()
    for j in range(n_blocks):
        sens.blocks[j] = damage(drop_blocks(model, [i for i in range(cfg.num_blocks) if i != j]))
        bar.update()
    bar.close()
    return sens


@dataclass
class SearchResult:
    config: EAPNetConfig
    maccs: int
    kept_blocks: list[int]
    predicted_damage: float
    steps: list[dict]


def greedy_search(sens: Sensitivity, target_maccs: int, *, height: int = NTIRE_HEIGHT,
                  width: int = NTIRE_WIDTH, keep: Sequence[int] | None = None) -> SearchResult:
    """Cheapest config (by summed predicted damage) from ``sens.base`` whose MAccs are <= ``target_maccs``.

    Moves: one width knob one ladder step narrower, or one PDUB dropped (its knobs go with it). Each step
    takes the move with the least added damage per MAcc saved. ``keep``: start from these PDUBs only (the
    others dropped) and move widths only. Raises :class:`BudgetError` (with the minimum reachable MAccs) when
    even the smallest network is over budget."""
    base = sens.base
    check_reachable(base, target_maccs, height=height, width=width)
    blocks = list(range(base.num_blocks)) if base.block == "pdub" else []
    fixed = keep is not None and base.block == "pdub"
    if fixed:
        blocks = sorted(set(keep))
        if not blocks or not set(blocks) <= set(range(base.num_blocks)):
            raise ValueError(f"keep: PDUB indices of a {base.num_blocks}-block model, got {list(keep)}")
    widths = {k: get_width(base, k) for k in width_knobs(base)}

    def build(blocks, widths) -> EAPNetConfig:
        cfg = base
        if base.block == "pdub":
            cfg = cfg.replace(num_blocks=len(blocks), pdub_widths=tuple(base.pdub_widths[j] for j in blocks))
        for k, w in widths.items():
            m = k.split(".")
            if m[0] == "pdub":
                if int(m[1]) not in blocks:
                    continue
                k = f"pdub.{blocks.index(int(m[1]))}.{m[2]}"
            cfg = set_width(cfg, k, w)
        return cfg

    def damage(blocks, widths) -> float:
        d = sum(sens.damage(k, w) for k, w in widths.items()
                if not (k.startswith("pdub.") and int(k.split(".")[1]) not in blocks))
        return d + sum(sens.blocks.get(j, 0.0) for j in range(base.num_blocks) if j not in blocks) \
            if base.block == "pdub" else d

    cur_cfg = build(blocks, widths)
    cur_maccs, cur_damage = config_maccs(cur_cfg, height, width), damage(blocks, widths)
    steps = []
    saved_at: dict[str, int] = {}  # last exact MAcc saving of each move (lazy greedy: recounted when picked)
    while cur_maccs > target_maccs:
        moves = {}
        for k, w in widths.items():
            if k.startswith("pdub.") and int(k.split(".")[1]) not in blocks:
                continue
            lad = _ladder(get_width(base, k))
            i = lad.index(w)
            if i + 1 < len(lad):
                moves[f"{k} {w}->{lad[i + 1]}"] = (blocks, {**widths, k: lad[i + 1]})
        if len(blocks) > 1 and not fixed:
            for j in blocks:
                moves[f"drop pdub.{j}"] = ([b for b in blocks if b != j], widths)
        added = {label: max(damage(b, w) - cur_damage, 0.0) for label, (b, w) in moves.items()}
        fresh: set[str] = set()
        for label, move in moves.items():
            if label not in saved_at:
                saved_at[label] = cur_maccs - config_maccs(build(*move), height, width)
                fresh.add(label)
        # Savings change only when a move's layers share a conv with the last move: take the best move by
        # its last known saving, recount it now, and accept it once it is still the best with a fresh count.
        while True:
            live = [m for m in moves if saved_at[m] > 0]
            if not live:
                raise BudgetError(f"no move reduces MAccs below {format_maccs(cur_maccs)}")
            best = min(live, key=lambda m: added[m] / saved_at[m])
            if best in fresh:
                break
            saved_at[best] = cur_maccs - config_maccs(build(*moves[best]), height, width)
            fresh.add(best)
        blocks, widths = moves[best]
        cur_cfg = build(blocks, widths)
        cur_maccs, cur_damage = config_maccs(cur_cfg, height, width), damage(blocks, widths)
        saved_at.pop(best)
        saved_at = {m: v for m, v in saved_at.items() if not m.startswith("drop ")}  # block set changed
        steps.append({"move": best, "maccs": cur_maccs, "predicted_damage": cur_damage})
    return SearchResult(cur_cfg, cur_maccs, list(blocks), cur_damage, steps)


def candidate_searches(sens: Sensitivity, target_maccs: int, *, height: int = NTIRE_HEIGHT,
                       width: int = NTIRE_WIDTH) -> list[SearchResult]:
    """Block count and widths searched jointly: :func:`greedy_search` free, then once per PDUB count ``k``
    with the ``k`` PDUBs whose removal alone hurts most kept and only widths moved; the configs that meet
    the budget, each once. The summed single-knob damages of :func:`greedy_search` rank moves well but
    underestimate many knobs pruned together (a network thinned everywhere), so the caller measures each
    candidate's real damage and picks (``eapnet.compress.pipeline.search_and_prune``)."""
    out = [greedy_search(sens, target_maccs, height=height, width=width)]
    base = sens.base
    if base.block == "pdub" and base.num_blocks > 1:
        order = sorted(range(base.num_blocks), key=lambda j: -sens.blocks.get(j, 0.0))
        for k in range(base.num_blocks, 0, -1):
            try:
                r = greedy_search(sens, target_maccs, height=height, width=width, keep=order[:k])
            except BudgetError:
                continue
            if all(r.config != c.config for c in out):
                out.append(r)
    return out


def blocks_config(base: EAPNetConfig, target_maccs: int, order: Sequence[int] | None = None, *,
                  height: int = NTIRE_HEIGHT, width: int = NTIRE_WIDTH) -> list[int]:
    """Baseline: the PDUBs of ``base`` to keep (every width kept): the longest prefix of ``order`` (block indices,
    most wanted first; default: the cheapest first) whose config fits ``target_maccs``, in block order. Raises
    :class:`BudgetError` (with the one-block minimum) when even one PDUB is over budget."""
    if base.block != "pdub":
        raise BudgetError(f"{base.name!r} has no PDUBs to drop (block type {base.block!r})")

    def kept(keep):
        return base.replace(num_blocks=len(keep), pdub_widths=tuple(base.pdub_widths[j] for j in keep))

    if order is None:
        order = sorted(range(base.num_blocks), key=lambda j: config_maccs(kept([j]), height, width))
    for n in range(len(order), 0, -1):
        keep = sorted(order[:n])
        if config_maccs(kept(keep), height, width) <= target_maccs:
            return keep
    raise BudgetError(f"dropping PDUBs cannot reach {format_maccs(target_maccs)} MAccs from {base.name!r} "
                      f"(one PDUB at full width: {format_maccs(config_maccs(kept(keep), height, width))})")


def uniform_config(base: EAPNetConfig, target_maccs: int, *, height: int = NTIRE_HEIGHT,
                   width: int = NTIRE_WIDTH) -> tuple[EAPNetConfig, float]:
    """Baseline: every width scaled by one factor ``s`` (rounded to multiples of 8, all blocks kept), the
    largest ``s`` in (0, 1] whose MAccs fit, found by bisection. Returns ``(config, s)``."""

    def scaled(s: float) -> EAPNetConfig:
        cfg = base
        for k in width_knobs(base):
            cfg = set_width(cfg, k, min(get_width(base, k), round_width(get_width(base, k) * s)))
        return cfg

    if config_maccs(base, height, width) <= target_maccs:
        return base, 1.0
    lo, hi = 0.0, 1.0
    if config_maccs(scaled(1e-6), height, width) > target_maccs:
        raise BudgetError(f"uniform width scaling cannot reach {format_maccs(target_maccs)} MAccs with "
                          f"{base.num_blocks} blocks (minimum {format_maccs(config_maccs(scaled(1e-6), height, width))})")
    for _ in range(30):
        mid = (lo + hi) / 2
        if config_maccs(scaled(mid), height, width) <= target_maccs:
            lo = mid
        else:
            hi = mid
    return scaled(lo), lo
