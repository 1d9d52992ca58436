"""Compression to a MAcc budget as one library call: search, prune, distilled fine-tune, int8 QAT, evaluate.

    from eapnet.compress.pipeline import CompressConfig, compress
    cfg = CompressConfig.load(target_maccs=100e9)            # eapnet/compress/configs/compress.yaml + overrides
    result = compress(cfg, Path("runs/c"))                   # writes compressed.pt and int8.pt2 there
    result.student, result.report["models"]

Stages (the wall time of each goes into the report):

1. **search**: per-knob sensitivity on the calibration set, then a greedy choice of PDUB count and per-layer
   widths that meets the budget with the least predicted damage (:mod:`eapnet.compress.search`); the uniform
   width-scaling config at the same budget is reported beside it. The baselines replace this choice with
   ``method``: ``uniform`` (one width scale, every PDUB) or ``blocks`` (the most PDUBs that fit, at full width:
   those whose removal alone hurts most on the calibration set stay).
2. **prune**: drop the chosen blocks, slice channels with torch-pruning (:mod:`eapnet.compress.prune`): a new config
   plus sliced weights.
3. **finetune**: distillation from the float teacher (:mod:`eapnet.compress.distill`).
4. **qat**: PT2E int8 quantization-aware training (:mod:`eapnet.compress.quantize`) with the same loss, observers
   started from the calibration set, then ``convert_pt2e``.
5. **evaluate**: PSNR-μ / PSNR-l of teacher, pruned float and int8 on the held-out synthetic set and the real
   crops (:func:`eapnet.evalsets.score`).

MAccs are the NTIRE 2022 count (:func:`eapnet.count_maccs`) at ``size``. A budget at or above the input model
skips pruning and fine-tuning. The phone artifacts and their parity check are a later layer
(``eapnet.export.pipeline.export_and_check``); ``compress/qat.py`` runs both.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from eapnet.cli import int_at_least, maccs_arg, max_threads, parse_size, size_arg, yaml_config
from eapnet.inference import example_inputs, resolve_device
from eapnet.compress import quantize
from eapnet.compress.distill import distill, patch_stream
from eapnet.compress.prune import IMPORTANCE, drop_blocks, prune_to
from eapnet.compress.quantize import QUANT_BACKENDS
from eapnet.compress.search import (
    BudgetError, blocks_config, candidate_searches, check_reachable, config_maccs, damage_fn, sensitivity,
    uniform_config,
)
from eapnet.checkpoint import SHIPPED, load_model, save_checkpoint, shipped_path
from eapnet.data import DataError, list_ntire_ids
from eapnet.data.ntire import ntire_frame_size
from eapnet.evalsets import TeacherOutputs, as_batches, calibration, score, standard_sets
from eapnet.macs import count_maccs, count_params, format_maccs
from eapnet.runs import file_sha256, git_commit

DEFAULTS = Path(__file__).resolve().parent / "configs" / "compress.yaml"
METHODS = ("search", "uniform", "blocks")
"""How a budget is met: ``search`` (the greedy choice of PDUB count and per-layer widths), ``uniform`` (every
width scaled by one factor, all PDUBs kept: the NNCF-style baseline) or ``blocks`` (only PDUBs dropped, every
width kept: the paper's own knob, its Table 2)."""


def _check_calib_sizes(folder: str, limit: int) -> None:
    """ValueError ``calib: ...`` where one of the first ``limit`` scenes of the calibration ``folder`` is smaller
    than 16x16 (HxW; read from the PNG headers): the int8 program is traced at the calibration size, and a side
    of one padded step (8 px) is specialised by ``torch.export``, whose guard then fails after the search."""

    try:
        for sid in list_ntire_ids(folder)[:limit]:
            h, w = ntire_frame_size(folder, sid)
            if h < 16 or w < 16:
                raise ValueError(f"calib: scene {sid} of {folder} is {h}x{w} (HxW); calibration scenes must be "
                                 f"at least 16x16")
    except DataError as e:
        raise ValueError(f"calib: {e}") from None


@dataclass(frozen=True)
class CompressConfig:
    """One compression run (see eapnet/compress/configs/compress.yaml for each key's meaning and default)."""

    target_maccs: int
    model: str
    data: str
    calib: str
    calib_scenes: int
    method: str
    steps: tuple[int, int]
    batch_size: int
    patch: int
    lr: float
    distill_weight: float
    importance: str
    backend: str
    size: tuple[int, int]
    heldout: int
    compare_uniform: bool
    device: str
    seed: int
    threads: int

    def __post_init__(self):
        size = parse_size(self.size) if isinstance(self.size, str) else tuple(int(v) for v in self.size)
        object.__setattr__(self, "size", size)
        steps = tuple(int(v) for v in (self.steps if isinstance(self.steps, (list, tuple)) else [self.steps]))
        object.__setattr__(self, "steps", steps * 2 if len(steps) == 1 else steps)

        def bad(key, why):
            raise ValueError(f"{key}: {why}, got {getattr(self, key)!r}")

        if not (isinstance(self.target_maccs, (int, float)) and self.target_maccs > 0):
            bad("target_maccs", "must be a positive MAcc count")
        if len(self.steps) != 2 or min(self.steps) < 0:
            bad("steps", "takes one or two step counts >= 0 (fine-tune, QAT)")
        if self.patch < 16 or self.patch % 8:
            bad("patch", "must be a multiple of 8 and >= 16")
        if self.batch_size < 1:
            bad("batch_size", "must be >= 1")
        if not 0.0 <= self.distill_weight <= 1.0:
            bad("distill_weight", "must be in [0, 1]")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            bad("lr", "must be positive")
        if self.calib_scenes < 1:
            bad("calib_scenes", "must be >= 1")
        if self.heldout < 0:
            bad("heldout", "must be >= 0")
        if self.method not in METHODS:
            bad("method", f"must be one of {METHODS}")
        if self.compare_uniform and self.method != "search":
            bad("compare_uniform", "compares the search with uniform scaling: needs method search")
        if self.importance not in IMPORTANCE:
            bad("importance", f"must be one of {IMPORTANCE}")
        if self.backend not in QUANT_BACKENDS:
            bad("backend", f"must be one of {QUANT_BACKENDS}")
        if self.data != "synthetic" and not Path(self.data).is_dir():
            bad("data", "no such folder (use 'synthetic' or an NTIRE/Kalantari folder)")
        if self.calib and not Path(self.calib).is_dir():
            bad("calib", "no such folder")
        if self.calib:
            _check_calib_sizes(self.calib, self.calib_scenes)
        if not isinstance(self.threads, int) or not 0 <= self.threads <= max_threads():
            bad("threads", f"must be a CPU thread count from 0 to {max_threads()} (4 per core; 0 = torch's default)")
        try:
            resolve_device(self.device)
        except ValueError as e:
            raise ValueError(str(e)) from None

    @staticmethod
    def defaults(path: str | Path | None = None) -> dict:
        """The YAML defaults (``eapnet/compress/configs/compress.yaml``), updated by the YAML file ``path``."""

        return yaml_config(DEFAULTS, path, "compression")

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides) -> "CompressConfig":
        return cls(**{**cls.defaults(path), **overrides})

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["size"], d["steps"] = list(self.size), list(self.steps)
        return d


def add_config_args(p, target: bool = True, skip: tuple[str, ...] = ()) -> None:
    """Add ``--target-maccs`` (unless ``target`` is False), ``--config`` and one flag per key of
    eapnet/compress/configs/compress.yaml but those in ``skip`` to the argparse parser ``p`` (values default to None:
    unset flags keep the YAML's value)."""
    if target:
        p.add_argument("--target-maccs", type=maccs_arg, required=True,
                       help="MAcc budget (NTIRE 2022 count), e.g. 100G, 1.5e11, 150000M")
    p.add_argument("--config", type=Path, default=None, help="YAML of compression keys (safe-loaded)")
    for key, value in CompressConfig.defaults().items():
        if key in skip:
            continue
        flag = "--" + key.replace("_", "-")
        if key == "steps":
            p.add_argument(flag, type=int_at_least(0), nargs="+", default=None, metavar="N",
                           help=f"fine-tune steps and QAT steps (one value sets both; default {value})")
        elif key == "size":
            p.add_argument(flag, type=size_arg, default=None, help=f"HxW at which MAccs are counted (default {value})")
        elif isinstance(value, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=f"(default {value})")
        else:
            p.add_argument(flag, type=type(value), default=None, help=f"(default {value!r})")


def config_from_args(p, args, target_maccs: int | None = None) -> CompressConfig:
    """The :class:`CompressConfig` of parsed ``args`` (YAML defaults, then ``--config``, then flags); a bad value
    exits through ``p.error`` naming its flag."""
    try:
        defaults = CompressConfig.defaults(args.config)
    except (OSError, ValueError) as e:
        p.error(f"--config: {e}")
    given = {k: getattr(args, k) for k in defaults if getattr(args, k, None) is not None}
    if "steps" in given and len(given["steps"]) > 2:
        p.error(f"--steps takes one or two values (fine-tune, QAT), got {len(given['steps'])}")
    try:
        return CompressConfig(**{**defaults, **given, "target_maccs": target_maccs or args.target_maccs})
    except ValueError as e:
        key = str(e).split(":")[0]
        p.error(f"--{key.replace('_', '-')}{str(e)[len(key):]}")


@dataclass
class CompressResult:
    """What :func:`compress` produced: the compressed float ``student`` and the ``report`` dict (teacher, models
    with MAccs / params / scores, search, uniform baseline, config, layer widths, losses, wall times, files)."""

    student: nn.Module
    report: dict[str, Any] = field(default_factory=dict)


def compress(cfg: CompressConfig, out_dir: Path, *, log: Callable[[str], None] = print,
             progress: bool = True) -> CompressResult:
    """Run stages 1-5 (module docstring); writes ``compressed.pt`` and ``int8.pt2`` (``uniform-*`` too with
    ``compare_uniform``) into ``out_dir``. Raises :class:`eapnet.compress.search.BudgetError` for a budget below the
    smallest reachable network (before any slow step)."""

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    out_dir = Path(out_dir)
    h, w = cfg.size
    wall, t0 = {}, time.time()
    teacher = load_model(cfg.model).float().eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    t_maccs, t_params = count_maccs(teacher, h, w), count_params(teacher)
    log(f"teacher {cfg.model}: {format_maccs(t_maccs)} MAccs, {t_params / 1e3:.2f} k params; "
        f"target {format_maccs(cfg.target_maccs)}")
    calib = calibration(cfg.calib or None, cfg.calib_scenes)

    stream = patch_stream(cfg.data, cfg.seed, cfg.patch)   # a bad --data folder fails here, before the search

    t = time.time()
    stage = search_and_prune(teacher, cfg, calib, log=log, progress=progress)
    wall["search+prune"] = time.time() - t
    t = time.time()
    sets = standard_sets(cfg.heldout)
    models = {"teacher (float)": {"maccs": t_maccs, "params": t_params, "scores": _score(teacher, sets)}}
    reference = TeacherOutputs(teacher)  # the teacher runs once per scene for every student's vs-teacher score
    runs = [("compressed", stage["model"], "")]
    if cfg.compare_uniform and not stage["skipped"] and stage["uniform_config"] is None:
        log(f"uniform width scaling cannot reach {format_maccs(cfg.target_maccs)} MAccs: no uniform baseline")
    elif cfg.compare_uniform and not stage["skipped"]:
        runs.append(("uniform", prune_to(teacher, stage["uniform_config"], cfg.importance, as_batches(calib)),
                     "uniform-"))
    losses, curves = {}, {}
    student = None
    for label, model, prefix in runs:
        if not stage["skipped"]:
            models[f"{label}, before fine-tune (float)"] = {
                "maccs": count_maccs(model, h, w), "params": count_params(model),
                "scores": _score(model, sets, reference)}
        wall["evaluate"] = wall.get("evaluate", 0.0) + time.time() - t
        trained, entries, losses[label], curves[label], times = finetune_and_quantize(
            model, teacher, stream, cfg, calib, out_dir, prefix, device, skipped=stage["skipped"], sets=sets,
            progress=progress, reference=reference)
        if label == "compressed":
            student = trained
        models.update({f"{label} {k}": v for k, v in entries.items()})
        wall["evaluate"] += times.pop("evaluate")  # one figure: the teacher, before and after fine-tune, int8
        wall.update({f"{prefix}{k}": v for k, v in times.items()})
        t = time.time()
    wall["compress"] = time.time() - t0
    teacher_file = shipped_path(cfg.model) if cfg.model in SHIPPED else Path(cfg.model)
    report = {
        "target_maccs": cfg.target_maccs, "resolution": [h, w], "device": str(device), "teacher": str(cfg.model),
        "teacher_file": str(teacher_file), "teacher_sha256": file_sha256(teacher_file), "commit": git_commit(),
        "skipped_pruning": stage["skipped"], "datasets": list(sets), "models": models,
        "config": student.config.to_dict(), "layer_widths": layer_widths(student),
        "pdub_count": student.config.num_blocks, "search": stage["search"], "uniform": stage["uniform"],
        "losses_last20": losses, "finetune_curve": curves, "wall_s": wall,
        "files": {"compressed": "compressed.pt", "int8": "int8.pt2"},
    }
    return CompressResult(student, report)


def search_and_prune(teacher: nn.Module, cfg: CompressConfig, calib: list, *, log=print, progress=True) -> dict:
    """Stages 1-2 for ``cfg.method`` (:data:`METHODS`). Returns ``{"model", "search", "uniform", "uniform_config",
    "skipped"}``; ``search`` describes how the model was chosen (``method``, kept PDUBs, zero-shot damage)."""

    h, w = cfg.size
    target = cfg.target_maccs
    t_maccs = count_maccs(teacher, h, w)
    if t_maccs <= target:
        log(f"input model {format_maccs(t_maccs)} <= target {format_maccs(target)}: no pruning, quantize only")
        return {"model": teacher, "search": None, "uniform": None, "skipped": True, "uniform_config": None}
    base = teacher.config
    # an unreachable budget fails here, before any slow step
    if cfg.method == "search":
        check_reachable(base, target, height=h, width=w)
    if cfg.method == "blocks":
        blocks_config(base, target, height=h, width=w)
    try:   # the uniform baseline's config, reported beside the other methods where it reaches the budget
        uni_cfg, s = uniform_config(base, target, height=h, width=w)
    except BudgetError:
        if cfg.method == "uniform":
            raise
        uni_cfg, s = None, None
    batches = as_batches(calib)
    calib_in = [(l, e) for l, e, _ in batches]
    name = f"{base.name}-{target / 1e9:g}G"
    search: dict = {"method": cfg.method}
    damage = damage_fn(teacher, calib_in)
    if cfg.method == "search":
        sens = sensitivity(teacher, calib_in, importance=cfg.importance, calib_gt=batches, progress=progress)
        tried = []
        for res in candidate_searches(sens, target, height=h, width=w):   # measured, not predicted
            kept = drop_blocks(teacher, res.kept_blocks) if base.block == "pdub" else teacher
            model = prune_to(kept, res.config.replace(name=name), cfg.importance, batches)
            tried.append((damage(model), res, model))
        search["zero_shot_damage"], res, student = min(tried, key=lambda t: t[0])
        search.update(kept_blocks=res.kept_blocks, steps=res.steps, predicted_damage=res.predicted_damage,
                      sensitivity=sens.to_dict(),
                      candidates=[{"kept_blocks": r.kept_blocks, "maccs": r.maccs, "predicted_damage": r.predicted_damage,
                                   "zero_shot_damage": d, "chosen": r is res} for d, r, _ in tried])
        log("search candidates (PDUBs kept: zero-shot damage): " + "; ".join(
            f"{r.kept_blocks}: {d:.3g}" + (" <- chosen" if r is res else "") for d, r, _ in tried))
    elif cfg.method == "uniform":
        student = prune_to(teacher, uni_cfg.replace(name=name), cfg.importance, batches)
        search.update(kept_blocks=list(range(base.num_blocks)), width_scale=s)
    else:
        # which PDUBs stay: the ones whose removal alone hurts most on the calibration set
        sens = sensitivity(teacher, calib_in, importance=cfg.importance, widths=False, progress=progress)
        keep = blocks_config(base, target, sorted(sens.blocks, key=lambda j: -sens.blocks[j]) or [0],
                             height=h, width=w)
        student = drop_blocks(teacher, keep)
        student.config = student.config.replace(name=name)
        search.update(kept_blocks=keep, block_damage={str(j): d for j, d in sens.blocks.items()})
    maccs = count_maccs(student, h, w)
    if maccs > target:  # the choice counts with the same counter; this guards the slicing
        raise RuntimeError(f"pruned model has {format_maccs(maccs)} MAccs > target {format_maccs(target)}")
    if "zero_shot_damage" not in search:   # the search measured its candidates already
        search["zero_shot_damage"] = damage(student)
    uniform = None if uni_cfg is None else {
        "config": uni_cfg.to_dict(), "scale": s, "maccs": config_maccs(uni_cfg, h, w),
        "zero_shot_damage": (search["zero_shot_damage"] if cfg.method == "uniform"
                             else damage(prune_to(teacher, uni_cfg, cfg.importance, batches)))}
    return {"model": student, "search": search, "uniform": uniform, "skipped": False, "uniform_config": uni_cfg}


def finetune_and_quantize(model: nn.Module, teacher: nn.Module, stream, cfg: CompressConfig, calib: list,
                          out_dir: Path, prefix: str, device: torch.device, *, skipped: bool, sets: dict,
                          progress: bool, reference=None):
    """Stages 3-5 for one pruned model: distilled fine-tune, save ``<prefix>compressed.pt``, QAT, convert, save
    ``<prefix>int8.pt2``, score float and int8 (against ``reference``, the teacher's
    :class:`eapnet.evalsets.TeacherOutputs`, when given). Returns ``(student, report rows, mean of the last 20
    losses of each loop, curve, wall times)``; ``curve`` is the held-out PSNR-μ after each third of the
    fine-tune (its last point is the fine-tuned model's report row)."""

    h, w = cfg.size
    ft_steps, qat_steps = cfg.steps
    teacher = teacher.to(device)
    student = copy.deepcopy(model).to(device).train()
    for p in student.parameters():
        p.requires_grad_(True)
    times, losses = {}, {}
    t = time.time()
    curve = []
    if not skipped and ft_steps:
        def probe(step: int) -> None:   # held-out PSNR-μ along the fine-tune: did it have enough steps?
            if sets.get("heldout_synthetic") and step < ft_steps:   # the last step is the report row
                student.eval()
                curve.append({"step": step, "heldout_psnr_mu": score(student, sets["heldout_synthetic"],
                                                                      dataset="heldout_synthetic")["psnr_mu"]})
                student.train()

        ft = distill(student, teacher, stream, steps=ft_steps, batch=cfg.batch_size, lr=cfg.lr,
                     weight=cfg.distill_weight, device=device, desc=f"{prefix}finetune", progress=progress,
                     probe=(max(ft_steps // 3, 1), probe))
        losses["finetune"] = float(np.mean(ft[-20:]))
    times["finetune"] = time.time() - t
    student = student.eval().cpu()
    maccs, params = count_maccs(student, h, w), count_params(student)
    save_checkpoint(out_dir / f"{prefix}compressed.pt", student, step=0 if skipped else ft_steps,
                    extra={"teacher": str(cfg.model), "target_maccs": cfg.target_maccs, "maccs": maccs,
                           "resolution": [h, w]})
    t = time.time()
    # Range-equalised, activation ranges from the calibration set, frozen (PTQ when qat_steps is 0): ranges
    # that follow the training patches grow toward their rarest values and cost accuracy (eapnet/compress/quantize.py).
    prepared = quantize.prepare_qat(copy.deepcopy(student).to(device), backend=cfg.backend,
                                    example=_example(cfg.patch, device),
                                    calib=[(ldrs.to(device), evs.to(device)) for ldrs, evs, _ in as_batches(calib)])
    if qat_steps:
        q = distill(prepared, teacher, stream, steps=qat_steps, batch=cfg.batch_size, lr=cfg.lr / 10,
                    weight=cfg.distill_weight, device=device, desc=f"{prefix}qat", progress=progress,
                    start=ft_steps)
        losses["qat"] = float(np.mean(q[-20:]))
    int8 = quantize.convert(prepared)
    meta = {"config": student.config.to_dict(), "backend": cfg.backend, "maccs": maccs, "params": params,
            "teacher": str(cfg.model), "resolution": [h, w], "float": f"{prefix}compressed.pt"}
    # save_quantized checks that the saved program equals int8 bit for bit: score the one in memory
    quantize.save_quantized(out_dir / f"{prefix}int8.pt2", int8, _example(64, "cpu"), meta)
    int8_model = quantize.Padded(int8).eval()
    times["qat"] = time.time() - t
    t = time.time()

    teacher.cpu()
    reference = reference or TeacherOutputs(teacher)
    rows = {"(float)": {"maccs": maccs, "params": params, "scores": _score(student, sets, reference)},
            f"(int8, {cfg.backend})": {"maccs": maccs, "params": params,
                                       "scores": _score(int8_model, sets, reference)}}
    times["evaluate"] = time.time() - t
    if not skipped and ft_steps and "heldout_synthetic" in sets:
        final = rows["(float)"]["scores"]["heldout_synthetic"]["psnr_mu"]
        curve.append({"step": ft_steps, "heldout_psnr_mu": final})
    return student, rows, losses, curve, times


def _score(model: nn.Module, sets: dict, teacher=None) -> dict:
    return {name: score(model, scenes, teacher=teacher, dataset=name, per_scene=True)
            for name, scenes in sets.items()}


def layer_widths(model: nn.Module) -> dict:
    return {n: m.out_channels for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))}


def _example(size: int, device):
    return example_inputs((size, size), batch=2, device=device)
