"""The training library: the data streams, schedules, EMA, the one training step and the training loop.

    from eapnet.training import load_config, train
    cfg = validate_config({**load_config("eapnet/configs/cpu.yaml"), "model": "standard", "steps": 100})
    summary = train(cfg, Path("runs/x"))

``python -m eapnet.train`` is the command line over it (eapnet/train.py). Data is a deterministic stream:
sample ``g`` of a run is a function of (seed, g) alone, so a resumed run sees exactly the batches the
uninterrupted run would have. A run folder holds ``run.json`` (resolved arguments, versions), ``log.csv``
(loss, lr, throughput, validation PSNR), ``health.csv`` (dead channels and gradient flow per module group),
``last.pt`` (everything needed to resume) and, at the end, ``model.pt`` (the EMA model: the result) and
``summary.json``. :func:`train_step` is also the step of the compression fine-tune (``eapnet.compress.distill``).
"""
from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from eapnet import EAPNet, EAPNetConfig, build_model
from eapnet.checkpoint import (build_from_spec, model_from_checkpoint, model_spec, read_checkpoint, save_checkpoint,
                               set_rng_state, unwrap)
from eapnet.cpu import keep_freed_memory, native_bf16, use_fast_depthwise
from eapnet.diagnostics import health, probe_batches
from eapnet.evalsets import heldout_synthetic, materialise, real_crops, score
from eapnet.losses import EAPNetLoss
from eapnet.model import BASES
from eapnet.recycle import find_dead, recycle
from eapnet.runs import atomic_write_json, atomic_write_text
from eapnet.cli import yaml_config
from eapnet.data.patches import PatchDataset, augment, scene_sources_from_folder, scene_to_tensors
from eapnet.data.synth.config import PRESETS
from eapnet.data.synthetic import generate_scene, scene_seed

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "train.yaml"
# Keys a resumed run may change: they do not alter what the uninterrupted run would have computed.
RESUME_MUTABLE = {"steps", "val_every", "ckpt_every", "log_every", "health_every", "num_workers", "threads",
                  "device", "recycle_every"}
LOG_FIELDS = ["step", "loss", "lr", "seconds", "samples_per_s", "val_psnr_mu", "val_psnr_l",
              "real_psnr_mu", "real_psnr_l", "recycled"]
SCHEDULES = ("step", "cosine", "wsd")


# ---------------------------------------------------------------------------------------------- config

def load_config(path: str | Path | None = None) -> dict:
    """Defaults from train.yaml, updated by ``path`` (a YAML mapping of known keys)."""

    return yaml_config(DEFAULT_CONFIG, path, "training")


def validate_config(cfg: dict) -> dict:
    def positive(*keys):
        for k in keys:
            if not isinstance(cfg[k], (int, float)) or cfg[k] <= 0:
                raise ValueError(f"{k} must be positive, got {cfg[k]!r}")

    positive("steps", "batch_size", "patch", "stride", "lr", "ema_every", "ckpt_every", "log_every",
             "val_scenes", "val_size", "lr_decay_every")
    if cfg["schedule"] not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {cfg['schedule']!r}")
    if not 0 <= cfg["cooldown"] <= 1:
        raise ValueError(f"cooldown (a share of the steps) must be in [0, 1], got {cfg['cooldown']}")
    if not 0 <= cfg["min_lr"] <= 1:
        raise ValueError(f"min_lr (a fraction of lr) must be in [0, 1], got {cfg['min_lr']}")
    for k in ("health_every", "recycle_every"):
        if not isinstance(cfg[k], int) or cfg[k] < 0:
            raise ValueError(f"{k} must be a step count >= 0, got {cfg[k]!r}")
    for k in ("threads", "num_workers"):
        if not isinstance(cfg[k], int) or cfg[k] < 0:
            raise ValueError(f"{k} must be an integer >= 0, got {cfg[k]!r}")
    if cfg["base"] not in ("", *BASES):
        raise ValueError(f"base must be '' (the model's own) or one of {', '.join(BASES)}, got {cfg['base']!r}")
    if cfg["init"] not in ("he", "pytorch"):
        raise ValueError(f"init must be he (the model's own) or pytorch (PyTorch's default), got {cfg['init']!r}")
    if cfg["fast_depthwise"] not in ("auto", "on", "off"):
        raise ValueError(f"fast_depthwise must be auto, on or off, got {cfg['fast_depthwise']!r}")
    if not 0 <= cfg["ema_decay"] < 1:
        raise ValueError(f"ema_decay must be in [0, 1), got {cfg['ema_decay']}")
    if not 0 < cfg["lr_decay"] <= 1:
        raise ValueError(f"lr_decay must be in (0, 1], got {cfg['lr_decay']}")
    if cfg["amp"] not in ("auto", "bf16", "fp16", "off"):
        raise ValueError(f"amp must be auto, bf16, fp16 or off, got {cfg['amp']!r}")
    if cfg["channels_last"] not in ("auto", "on", "off"):
        raise ValueError(f"channels_last must be auto, on or off, got {cfg['channels_last']!r}")
    if cfg["device"] not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {cfg['device']!r}")
    if cfg["model"] not in ("standard", "lightweight", "ahdr") and not Path(cfg["model"]).is_file():
        raise ValueError(f"model must be standard, lightweight, ahdr or a JSON/YAML EAPNetConfig file, "
                         f"got {cfg['model']!r}")
    if cfg["data"].startswith("synthetic"):
        preset = cfg["data"].partition(":")[2] or "default"
        if cfg["data"] not in ("synthetic", f"synthetic:{preset}") or preset not in PRESETS:
            raise ValueError(f"data {cfg['data']!r}: the synthetic generator's configs are "
                             f"{', '.join('synthetic:' + k for k in PRESETS)} ('synthetic' = synthetic:default)")
    elif not Path(cfg["data"]).is_dir():
        raise ValueError(f"data must be 'synthetic[:config]' or an NTIRE/Kalantari folder; {cfg['data']!r} is not a folder")
    if cfg["init_from"] and not Path(cfg["init_from"]).is_file():
        raise ValueError(f"init_from {cfg['init_from']!r} is not a file")
    if cfg["patch"] % 8:
        raise ValueError(f"patch must be a multiple of 8 (the model's padding multiple), got {cfg['patch']}")
    return cfg


def model_from_arg(model: str) -> nn.Module:
    """A variant name, or a JSON/YAML file holding an EAPNetConfig (e.g. a pruned or tiny model)."""
    if model in ("standard", "lightweight", "ahdr"):
        return build_model(model)
    with open(model) as f:
        d = yaml.safe_load(f)  # JSON is YAML
    if not isinstance(d, dict):
        raise ValueError(f"--model {model}: expected a mapping of EAPNetConfig fields")
    return build_model(EAPNetConfig.from_dict(d))


def on_base(model: nn.Module, base: str) -> nn.Module:
    """``model`` (an EAPNet) with its residual added to ``base`` (``EAPNetConfig.base``) instead, same weights:
    the base has no parameters, so a trained model moves onto a new base and is fine-tuned there."""
    config = getattr(model, "config", None)
    if not isinstance(config, EAPNetConfig):
        raise ValueError(f"base {base!r}: only an EAPNet has a base (this model is {type(model).__name__})")
    if config.base == base:
        return model
    moved = type(model)(config.replace(base=base)).train(model.training)
    moved.load_state_dict(model.state_dict())
    return moved


# ------------------------------------------------------------------------------------------------- data

class SyntheticStream(Dataset):
    """Sample ``g`` = a fresh synthetic ``patch`` x ``patch`` scene with seed (seed, g), randomly flipped/rotated;
    ``preset`` names the generator's config (:data:`eapnet.data.synth.config.PRESETS`)."""

    def __init__(self, seed: int, patch: int, preset: str = "default"):
        self.seed, self.patch, self.preset = seed, patch, preset

    def __len__(self):
        return 2**62

    def __getitem__(self, g: int) -> dict:
        s = scene_to_tensors(*generate_scene(scene_seed(self.seed, g), self.patch, self.patch, PRESETS[self.preset]))
        k = int(np.random.default_rng([self.seed, g, 7]).integers(8))
        s["ldrs"], s["gt"] = augment(s["ldrs"], s["gt"], k)
        return {"ldrs": s["ldrs"].contiguous(), "evs": s["evs"], "gt": s["gt"].contiguous()}


class FolderStream(Dataset):
    """Sample ``g`` = patch ``perm_epoch[g % N]`` of a folder's scenes (epoch = g // N), randomly flipped/rotated."""

    def __init__(self, folder: str | Path, seed: int, patch: int, stride: int):
        self.ds = PatchDataset(scene_sources_from_folder(folder), patch=patch, stride=stride, augment=False,
                               seed=seed)
        if len(self.ds) == 0:
            raise ValueError(f"data folder {folder} yields no {patch}x{patch} training patches")
        self.seed = seed
        self._perm: tuple[int, np.ndarray] | None = None

    def __len__(self):
        return 2**62

    def __getitem__(self, g: int) -> dict:
        n = len(self.ds)
        epoch = g // n
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, epoch]).permutation(n))
        s = self.ds[int(self._perm[1][g % n])]
        if "gt" not in s:
            raise ValueError(f"training scene {s.get('id')} has no ground truth")
        k = int(np.random.default_rng([self.seed, g, 7]).integers(8))
        ldrs, gt = augment(s["ldrs"], s["gt"], k)
        return {"ldrs": ldrs.contiguous(), "evs": s["evs"], "gt": gt.contiguous()}


class StepSampler(Sampler):
    """Global sample indices of this rank, from ``start_step`` on: step s, rank r -> s*B + r*b ... + b - 1."""

    def __init__(self, start_step: int, global_batch: int, rank: int, world: int):
        self.start, self.B, self.rank, self.b = start_step, global_batch, rank, global_batch // world

    def __iter__(self):
        step = self.start
        while True:
            base = step * self.B + self.rank * self.b
            yield from range(base, base + self.b)
            step += 1

    def __len__(self):
        return 2**62


# ------------------------------------------------------------------------------------------- training

def lr_factor(step: int, warmup: int, every: int, decay: float, schedule: str = "step", total: int = 0,
              min_lr: float = 0.0, cooldown: float = 0.2) -> float:
    """Multiplier of the peak lr at ``step``: linear warm-up over ``warmup`` steps, then

    - ``step`` (paper Sec. 4.2): x``decay`` every ``every`` steps;
    - ``cosine``: half a cosine from 1 at the end of the warm-up down to ``min_lr`` at step ``total``;
    - ``wsd`` (warm-up, stable, decay): 1 until the last ``cooldown`` share of ``total`` steps, then linearly
      down to ``min_lr`` at ``total``. A run resumed with a larger ``--steps`` before its cool-down began
      is the same run as one started with that length, so an open-ended CPU run can be extended.
    """
    warm = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
    if schedule == "cosine":
        t = min(1.0, max(0, step - warmup) / max(1, total - warmup))
        return warm * (min_lr + (1 - min_lr) * 0.5 * (1 + math.cos(math.pi * t)))
    if schedule == "wsd":
        start = total - cooldown * total
        t = min(1.0, max(0.0, step - start) / max(1.0, total - start))
        return warm * (1 - (1 - min_lr) * t)
    return warm * decay ** (step // every)


def train_step(net: nn.Module, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], loss_fn, opt: torch.optim.Optimizer,
               *, scaler: torch.amp.GradScaler | None = None, amp_dtype: torch.dtype | None = None,
               grad_clip: float = 0.0, params=None) -> torch.Tensor:
    """One optimizer step: forward ``net(ldrs, evs)`` (autocast to ``amp_dtype`` when given), ``loss_fn(pred,
    batch)`` in fp32, a finite-loss check, backward (through ``scaler`` for fp16), optional global-norm
    clipping of ``params`` (default: ``net``'s), ``opt.step()``. Returns the detached loss. Shared by training
    (``loss_fn`` = the EAPNet loss against ground truth) and the compression fine-tune and QAT (a distillation
    loss against the teacher's output and the ground truth)."""
    ldrs, evs, _ = batch
    device = ldrs.device
    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        pred = net(ldrs, evs)
    loss = loss_fn(pred.float(), batch)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"loss became {loss.item()}; lower the learning rate (or use --amp off)")
    opt.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
    else:
        loss.backward()
    if grad_clip > 0:
        if scaler is not None:
            scaler.unscale_(opt)
        nn.utils.clip_grad_norm_(list(params if params is not None else net.parameters()), grad_clip)
    if scaler is not None:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()
    return loss.detach()


def pytorch_default_init(model: nn.Module) -> None:
    """PyTorch's default conv init (``reset_parameters``) for every conv but the zero output conv: what
    EAPNet used before :func:`eapnet.model.init_weights`; kept as a training option for ablations."""
    out = getattr(unwrap(model), "out", None)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and m is not out:
            m.reset_parameters()


def ema_decay_at(n: int, decay: float, warmup: bool) -> float:
    """Decay of the ``n``-th EMA update (0-based). With ``warmup`` it is ``min(decay, (1 + n) / (10 + n))``,
    so the average forgets the random initialisation early and whatever the run length (a fixed 0.999
    would still hold 55 % of the initial weights after 600 updates)."""
    return min(decay, (1 + n) / (10 + n)) if warmup else decay


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """``ema = decay * ema + (1 - decay) * model`` for every parameter and float buffer."""
    for e, m in zip(ema.state_dict().values(), unwrap(model).state_dict().values()):
        if e.dtype.is_floating_point:
            e.mul_(decay).add_(m.detach(), alpha=1 - decay)
        else:
            e.copy_(m)


def weights_sha256(model: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in unwrap(model).state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _setup_distributed(cfg: dict) -> tuple[int, int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    want_cuda = cfg["device"] == "cuda" or (cfg["device"] == "auto" and torch.cuda.is_available())
    if cfg["device"] == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda asked for, but CUDA is not available")
    if world > 1:
        dist.init_process_group("nccl" if want_cuda else "gloo")
    if want_cuda:
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
        threads = cfg["threads"] or max(1, (os.cpu_count() or 1) // local_world)
        torch.set_num_threads(threads)
        if cfg["keep_freed_memory"]:
            keep_freed_memory()  # no per-step page faults on large activations (eapnet/cpu.py)
    return rank, world, local, device


def _amp_dtype(cfg: dict, device: torch.device) -> torch.dtype | None:
    """Autocast dtype: CUDA bf16 (fp16 where bf16 is missing); CPU bf16 only when asked for, or on auto
    where the CPU has native bf16; else None (fp32)."""
    if cfg["amp"] == "off":
        return None
    if device.type != "cuda":
        if cfg["amp"] == "fp16":
            raise ValueError("--amp fp16 is for CUDA; on CPU use --amp bf16 or off")
        return torch.bfloat16 if cfg["amp"] == "bf16" or native_bf16() else None
    if cfg["amp"] == "bf16" or (cfg["amp"] == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def _read_log(path: Path, upto: int) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f) if int(r["step"]) <= upto]


def _write_log(path: Path, rows: list[dict], fields: list[str] | None = None) -> None:
    fields = fields or LOG_FIELDS
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in fields})
    atomic_write_text(path, buf.getvalue())


def health_row(step: int, model: nn.Module, batches) -> dict:
    """One ``health.csv`` row: per module group, the dead ReLU-channel share (``dead:<group>``, held-out
    scenes) and ``|grad| / |w|`` of one backward (``grad:<group>``); see eapnet/diagnostics.py."""
    h = health(unwrap(model), batches)
    row = {"step": step}
    row.update({f"dead:{g}": f"{v:.4f}" for g, v in h["dead"].items()})
    row.update({f"grad:{g}": f"{v:.3e}" for g, v in h["grad"].items()})
    return row


def _recycle(step: int, model: nn.Module, ema: nn.Module, opt: torch.optim.Optimizer, probe, seed: int,
             world: int) -> int:
    """Recycle the dead ReLU channels found on the probe scenes (:mod:`eapnet.recycle`); the main rank
    finds them, every rank applies the same draw. Returns the number of channels recycled."""
    dead = [find_dead(unwrap(model), ((x, e) for x, e, _ in probe)) if probe else {}]
    if world > 1:
        dist.broadcast_object_list(dead, src=0)
    return recycle(unwrap(model), dead[0], ema=ema, optimizer=opt,
                   generator=torch.Generator().manual_seed(seed * 1_000_003 + step))


def train(cfg: dict, run_dir: Path, resume: dict | None = None) -> dict:
    """Run (or continue) a training run in ``run_dir``; returns the summary (also written to summary.json)."""
    rank, world, local, device = _setup_distributed(cfg)
    try:
        return _train(cfg, run_dir, resume, rank, world, device)
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg: dict, run_dir: Path, resume: dict | None, rank: int, world: int, device: torch.device) -> dict:
    if cfg["batch_size"] % world:
        raise ValueError(f"batch_size {cfg['batch_size']} is not divisible by the {world} DDP processes")
    main_rank = rank == 0
    torch.manual_seed(cfg["seed"])
    if resume is not None:
        model = build_from_spec(resume["model"])
    elif cfg["init_from"]:
        model = model_from_checkpoint(read_checkpoint(cfg["init_from"]), ema=True).train()
        if cfg["model"] in ("standard", "lightweight") and getattr(model, "config", None) is not None \
                and model.config.name != cfg["model"]:
            raise ValueError(f"init_from {cfg['init_from']} holds a {model.config.name!r} model, "
                             f"but --model is {cfg['model']!r}")
    else:
        model = model_from_arg(cfg["model"])
        if cfg["init"] == "pytorch":
            pytorch_default_init(model)
    if resume is None and cfg["base"]:
        model = on_base(model, cfg["base"])
    ema = build_from_spec(model_spec(model))
    ema.load_state_dict(model.state_dict())
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"], betas=(cfg["beta1"], cfg["beta2"]))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, cfg["warmup_steps"], cfg["lr_decay_every"], cfg["lr_decay"], cfg["schedule"],
                                 cfg["steps"], cfg["min_lr"], cfg["cooldown"]))
    amp_dtype = _amp_dtype(cfg, device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    start = 0
    if resume is not None:
        model.load_state_dict(resume["state_dict"])
        ema.load_state_dict(resume["ema_state_dict"])
        opt.load_state_dict(resume["optimizer"])
        sched.load_state_dict(resume["scheduler"])
        if resume.get("extra", {}).get("scaler"):
            scaler.load_state_dict(resume["extra"]["scaler"])
        start = int(resume["step"])
        set_rng_state(resume["rng"])
    model.to(device)
    ema.to(device).eval()
    for state in opt.state.values():  # optimizer state follows the model to the device
        for k, v in state.items():
            if torch.is_tensor(v) and k != "step":
                state[k] = v.to(device)
    # channels_last: faster on CUDA and on CPU (oneDNN's NHWC kernels; eapnet/bench/bench_model.py measures it)
    channels_last = cfg["channels_last"] in ("on", "auto")
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if cfg["fast_depthwise"] == "on" or (cfg["fast_depthwise"] == "auto" and device.type == "cpu"):
        use_fast_depthwise(model)  # same parameters and state_dict; see eapnet/cpu.py
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg["compile"]:
        net = torch.compile(net)
    criterion = EAPNetLoss(alpha=cfg["loss_alpha"], beta=cfg["loss_beta"])

    stream = SyntheticStream(cfg["seed"], cfg["patch"], cfg["data"].partition(":")[2] or "default") \
        if cfg["data"].startswith("synthetic") else \
        FolderStream(cfg["data"], cfg["seed"], cfg["patch"], cfg["stride"])
    loader = DataLoader(stream, batch_size=cfg["batch_size"] // world,
                        sampler=StepSampler(start, cfg["batch_size"], rank, world),
                        num_workers=cfg["num_workers"], pin_memory=device.type == "cuda",
                        persistent_workers=cfg["num_workers"] > 0)
    batches = iter(loader)

    log_path, health_path = run_dir / "log.csv", run_dir / "health.csv"
    rows = _read_log(log_path, start) if main_rank else []
    health_rows = _read_log(health_path, start) if main_rank else []
    # Dead channels and gradient flow on 8 fixed held-out scenes of 128^2 (eapnet/diagnostics.py)
    # ... the same scenes find the channels to recycle (eapnet/recycle.py)
    health_set = probe_batches(8, 128, device=device) if main_rank and isinstance(unwrap(model), EAPNet) \
        and (cfg["health_every"] or cfg["recycle_every"]) else []
    # Held-out synthetic scenes (seed HELDOUT_SEED, never trained on) steer nothing but the log; the real
    # crops are reported beside them and never trained on.
    val_set = materialise(heldout_synthetic(cfg["val_scenes"], cfg["val_size"])) if main_rank else []
    real_set = materialise(real_crops()) if main_rank else []
    amp_name = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(amp_dtype)

    def validate(step: int) -> dict:
        res = score(ema, val_set, amp=amp_name)
        out = {"step": step, "val_psnr_mu": res["psnr_mu"], "val_psnr_l": res["psnr_l"]}
        if real_set:
            r = score(ema, real_set, amp=amp_name)
            out.update(real_psnr_mu=r["psnr_mu"], real_psnr_l=r["psnr_l"])
        return out

    def checkpoint(step: int, metrics: dict | None = None) -> None:
        save_checkpoint(run_dir / "last.pt", model, ema=ema, optimizer=opt, scheduler=sched, step=step,
                        train_config=cfg, metrics=metrics or {},
                        extra={"scaler": scaler.state_dict() if scaler.is_enabled() else None})

    bar = tqdm(total=cfg["steps"], initial=start, desc=f"train {cfg['model']}", unit="step",
               disable=not main_rank, dynamic_ncols=True)
    t_last, n_last, t_start = time.perf_counter(), start, time.perf_counter()
    last_val: dict = {}
    net.train()
    step = start
    while step < cfg["steps"]:
        b = next(batches)
        batch = tuple(b[k].to(device, non_blocking=True) for k in ("ldrs", "evs", "gt"))
        try:
            loss = train_step(net, batch, lambda pred, bt: criterion(pred, bt[2]), opt, scaler=scaler,
                              amp_dtype=amp_dtype, grad_clip=cfg["grad_clip"], params=model.parameters())
        except FloatingPointError as e:
            raise FloatingPointError(f"step {step}: {e}") from None
        sched.step()
        step += 1
        if step % cfg["ema_every"] == 0:
            ema_update(ema, model, ema_decay_at(step // cfg["ema_every"] - 1, cfg["ema_decay"], cfg["ema_warmup"]))
        if step % cfg["log_every"] == 0 or step == cfg["steps"]:
            lv = loss.clone()
            if world > 1:
                dist.all_reduce(lv)
                lv /= world
            now = time.perf_counter()
            sps = (step - n_last) * cfg["batch_size"] / max(now - t_last, 1e-9)
            t_last, n_last = now, step
            row = {"step": step, "loss": f"{lv.item():.6f}", "lr": f"{sched.get_last_lr()[0]:.6g}",
                   "seconds": f"{now - t_start:.1f}", "samples_per_s": f"{sps:.2f}"}
            if main_rank:
                rows.append(row)
                bar.set_postfix(loss=row["loss"], lr=row["lr"], **({"val_mu": f"{last_val['val_psnr_mu']:.2f}"}
                                                                   if last_val else {}))
        if main_rank and cfg["val_every"] and step % cfg["val_every"] == 0 and step < cfg["steps"]:
            last_val = validate(step)
            rows.append({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in last_val.items()})
        if health_set and cfg["health_every"] and (step % cfg["health_every"] == 0 or step == 1):
            health_rows.append(health_row(step, model, health_set))
        if cfg["recycle_every"] and step % cfg["recycle_every"] == 0 and step <= cfg["steps"] * (1 - cfg["cooldown"]):
            n = _recycle(step, model, ema, opt, health_set, cfg["seed"], world)
            if main_rank:
                rows.append({"step": step, "recycled": n})
        if main_rank and (step % cfg["ckpt_every"] == 0):
            _write_log(log_path, rows)
            if health_rows:
                _write_log(health_path, health_rows, list(health_rows[-1]))
            checkpoint(step, last_val)
        bar.update(1)
    bar.close()

    # Every rank must end with the same weights; a mismatch means the gradients were not synchronised.
    digest = weights_sha256(model)
    digests = [digest]
    if world > 1:
        digests = [None] * world
        dist.all_gather_object(digests, digest)
    summary: dict[str, Any] = {}
    if main_rank:
        final = validate(step)
        rows.append({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in final.items()})
        _write_log(log_path, rows)
        if health_set and cfg["health_every"]:
            if not health_rows or int(health_rows[-1]["step"]) != step:  # the loop may have logged this step
                health_rows.append(health_row(step, model, health_set))
            _write_log(health_path, health_rows, list(health_rows[-1]))
        checkpoint(step, final)
        save_checkpoint(run_dir / "model.pt", ema, step=step, train_config=cfg, metrics=final, with_rng=False)
        summary = {"steps": step, "world_size": world, "device": str(device),
                   "seconds": time.perf_counter() - t_start, "final": final, "rank_weight_sha256": digests,
                   "ranks_identical": len(set(digests)) == 1}
        atomic_write_json(run_dir / "summary.json", summary)
    if len(set(digests)) != 1:
        raise RuntimeError(f"DDP ranks ended with different weights: {digests}")
    return summary
