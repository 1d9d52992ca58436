"""Training throughput and full-frame inference time of the EAPNet variants, as figures.

The command line is :mod:`eapnet.bench.bench_model` (``eapnet-bench``).

CPU training (:func:`bench_cpu_modes`): each mode of :data:`CPU_MODES` runs the real trainer
(``python -m eapnet.train``, or torchrun for 2 processes) in its own process for ``train_steps`` steps of
``batch`` x ``patch``^2 synthetic patches, data generation included, and reports steps/s after ``train_warmup``
steps; modes add one change each (channels_last, glibc keeping freed memory, the dilated-depthwise backward of
eapnet/cpu.py, a DataLoader worker, torch.compile, bf16 autocast where the CPU computes bf16 natively, 2 DDP
processes of 1 thread). CUDA training (:func:`bench_train`): steps/s in this process, fp32 and bf16/fp16, with and
without torch.compile. Inference (:func:`bench_infer`): seconds per 1920x1080 frame (the paper pads 1900x1060 to
that size; it reports 0.24 s standard and 0.15 s lightweight on a V100, :data:`PAPER_V100_S`), median of
``repeats`` runs after a warm-up. :func:`benchmark` measures them all in one run so their ratios compare; the
machine is shared, so read single numbers with care.
"""
from __future__ import annotations

import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import profiler

from eapnet import build_model, count_maccs
from eapnet.cpu import cpu_name, keep_freed_memory, native_bf16, use_fast_depthwise
from eapnet.losses import EAPNetLoss

PAPER_V100_S = {"standard": 0.24, "lightweight": 0.15}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(fn, device, repeats: int) -> float:
    fn()  # warm-up (and compilation)
    _sync(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_train(name: str, device, batch: int, patch: int, repeats: int, amp_dtype, compile_: bool) -> float:
    model = build_model(name).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    net = torch.compile(model) if compile_ else model
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    crit = EAPNetLoss()
    x = torch.rand(batch, 3, 3, patch, patch, device=device)
    e = torch.tensor([[-2.0, 0.0, 2.0]] * batch, device=device)
    gt = torch.rand(batch, 3, patch, patch, device=device)

    def step():
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            pred = net(x, e)
        loss = crit(pred.float(), gt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return _time(step, device, repeats)


def bench_infer(name: str, device, repeats: int, amp_dtype, compile_: bool, h: int = 1080, w: int = 1920) -> float:
    model = build_model(name).to(device).eval()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    net = torch.compile(model) if compile_ else model
    x = torch.rand(1, 3, 3, h, w, device=device)
    e = torch.tensor([[-2.0, 0.0, 2.0]], device=device)

    def run():
        with torch.inference_mode(), torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            net(x, e)

    return _time(run, device, repeats)


# CPU trainer modes: (name, extra flags, processes). Each row adds one change to the row before it,
# except the last two, which start again from "fast depthwise".
_BEFORE = ["--channels-last", "off", "--no-keep-freed-memory", "--fast-depthwise", "off", "--amp", "off"]
CPU_MODES = [
    ("fp32 eager (before)", _BEFORE, 1),
    ("+ channels_last", ["--channels-last", "on", "--no-keep-freed-memory", "--fast-depthwise", "off", "--amp", "off"], 1),
    ("+ keep freed memory", ["--channels-last", "on", "--fast-depthwise", "off", "--amp", "off"], 1),
    ("+ fast depthwise", ["--channels-last", "on", "--fast-depthwise", "on", "--amp", "off"], 1),
    ("+ DataLoader worker", ["--channels-last", "on", "--fast-depthwise", "on", "--amp", "off", "--num-workers", "1"], 1),
    ("+ torch.compile", ["--channels-last", "on", "--fast-depthwise", "on", "--amp", "off", "--num-workers", "1",
                         "--compile"], 1),
    ("fast depthwise + bf16 autocast", ["--channels-last", "on", "--fast-depthwise", "on", "--amp", "bf16"], 1),
    ("fast depthwise, 2 processes x 1 thread", ["--channels-last", "on", "--fast-depthwise", "on", "--amp", "off"], 2),
]


def run_trainer(variant: str, flags: list[str], procs: int, steps: int, batch: int, patch: int, threads: int,
                out: Path, seed: int = 0, log_every: int = 2, timeout: float = 3600) -> Path:
    """Run ``eapnet.train`` (torchrun when ``procs`` > 1) for ``steps`` steps into ``out``; returns its log.csv."""
    cmd = [sys.executable, "-m", "eapnet.train"]
    if procs > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}",
               "-m", "eapnet.train"]
    cmd += ["--model", variant, "--steps", str(steps), "--batch-size", str(batch), "--patch", str(patch),
            "--threads", str(threads), "--log-every", str(log_every), "--val-every", "0", "--val-scenes", "1",
            "--val-size", "64", "--health-every", "0", "--ckpt-every", str(10**9), "--seed", str(seed),
            "--device", "cpu", "--out", str(out), *flags]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise RuntimeError(f"trainer failed (exit {res.returncode}): {tail[0]}")
    return out / "log.csv"


def _loss_rows(log: Path) -> list[dict]:
    with open(log, newline="") as f:
        return [r for r in csv.DictReader(f) if r["loss"]]


def steps_per_s(log: Path, warmup: int) -> float:
    """Steps per second between the first logged step >= ``warmup`` and the last logged step."""
    rows = [r for r in _loss_rows(log) if int(r["step"]) >= warmup]
    if len(rows) < 2:
        raise ValueError(f"{log}: fewer than two logged steps after step {warmup}; raise --train-steps")
    a, b = rows[0], rows[-1]
    return (int(b["step"]) - int(a["step"])) / (float(b["seconds"]) - float(a["seconds"]))


def bench_cpu_modes(variant: str, steps: int, warmup: int, batch: int, patch: int, threads: int) -> list[dict]:
    """Steps/s of every CPU trainer mode (``CPU_MODES``), measured one after the other in this run."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        for i, (mode, flags, procs) in enumerate(CPU_MODES):
            row = {"variant": variant, "mode": mode, "processes": procs, "threads_per_process": threads // procs,
                   "train_batch": batch, "train_patch": patch}
            if "bf16" in flags and not native_bf16():
                row["skipped"] = "no native bf16 on this CPU (AMX-BF16 / AVX512-BF16): emulated bf16 is slower"
            else:
                try:
                    t0 = time.perf_counter()
                    log = run_trainer(variant, flags, procs, steps + (warmup if "--compile" in flags else 0), batch,
                                      patch, threads // procs, Path(tmp) / f"mode{i}")
                    sps = steps_per_s(log, warmup * (2 if "--compile" in flags else 1))
                    row.update(steps_per_s=sps, samples_per_s=sps * batch, s_per_step=1 / sps,
                               wall_s=time.perf_counter() - t0)
                except (RuntimeError, ValueError, subprocess.TimeoutExpired) as e:
                    row["failed"] = str(e)
            rows.append(row)
            base = rows[0].get("steps_per_s")
            if "steps_per_s" in row:
                row["speedup"] = row["steps_per_s"] / base if base else None
                print(f"{variant:<12} {mode:<40} {row['s_per_step']:6.2f} s/step  {row['samples_per_s']:6.2f} samples/s"
                      f"  x{row['speedup']:.2f}", flush=True)
            else:
                print(f"{variant:<12} {mode:<40} {row.get('skipped') or 'failed: ' + row['failed']}", flush=True)
    return rows


def profile_step(variant: str, batch: int, patch: int, fast: bool = True) -> list[tuple[str, float]]:
    """Where one training step's CPU time goes (torch.profiler, self time): ``[(category, seconds)]`` over
    dense convs (incl. 1x1 and transposed) and depthwise convs, forward and backward, then the other ops."""
    torch.manual_seed(0)
    model = build_model(variant)
    torch.nn.init.normal_(model.out.weight, 0, 1e-2)  # as after the first step: every layer gets gradient
    if fast:
        keep_freed_memory()
        model.to(memory_format=torch.channels_last)
        use_fast_depthwise(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    crit = EAPNetLoss()
    x, e = torch.rand(batch, 3, 3, patch, patch), torch.tensor([[-2.0, 0.0, 2.0]] * batch)
    gt = torch.rand(batch, 3, patch, patch)

    def step():
        loss = crit(model(x, e), gt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    step()
    with profiler.profile(activities=[profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
        step()
    cats: dict[str, float] = {}
    for ev in prof.key_averages(group_by_input_shape=True):
        name = ev.key.removeprefix("aten::")
        if name in ("convolution_backward", "mkldnn_convolution", "convolution", "_convolution"):
            if name in ("convolution", "_convolution"):
                continue  # dispatch wrappers: their self time is tiny, their children are counted
            shapes = ev.input_shapes
            w = shapes[2] if name == "convolution_backward" else shapes[1]
            kind = "depthwise conv" if len(w) == 4 and w[1] == 1 else "dense conv"
            name = f"{kind} {'backward' if name == 'convolution_backward' else 'forward'}"
        elif ev.key.startswith("autograd::") or ev.key.startswith("Optimizer"):
            name = "autograd engine / optimizer"
        cats[name] = cats.get(name, 0.0) + ev.self_cpu_time_total / 1e6
    top = sorted(cats.items(), key=lambda kv: -kv[1])
    head, rest = top[:10], sum(v for _, v in top[10:])
    return head + [("everything else", rest)]


def loss_check(variant: str, steps: int, batch: int, patch: int, threads: int) -> dict:
    """Train ``steps`` steps from the same seed in the "before" mode and the fast mode; compare their losses."""
    fast = CPU_MODES[3][1]
    out = {}
    with tempfile.TemporaryDirectory(prefix="bench-loss-") as tmp:
        for name, flags in (("before", _BEFORE), ("fast", fast)):
            log = run_trainer(variant, flags, 1, steps, batch, patch, threads, Path(tmp) / name, log_every=10,
                              timeout=24 * 3600)
            out[name] = [(int(r["step"]), float(r["loss"])) for r in _loss_rows(log)]
    return {"steps": steps, "before": out["before"], "fast": out["fast"], **compare_losses(out["before"], out["fast"])}


def compare_losses(a: list[tuple[int, float]], b: list[tuple[int, float]], window: int = 50) -> dict:
    """Mean loss per ``window`` steps of two runs and their relative differences. Per-step losses of the
    two modes part after a few steps (float rounding changes the trajectory, not its statistics), so the
    comparison is of window means."""
    da, db = dict(a), dict(b)
    common = sorted(set(da) & set(db))
    wins = []
    for lo in range(0, common[-1], window):
        ks = [k for k in common if lo < k <= lo + window]
        if ks:
            ma, mb = sum(da[k] for k in ks) / len(ks), sum(db[k] for k in ks) / len(ks)
            wins.append({"steps": f"{lo + 1}-{lo + window}", "before": ma, "fast": mb, "rel_diff": (mb - ma) / ma})
    first = min(common)
    return {"windows": wins, "first_logged_step": first,
            "first_step_rel_diff": abs(db[first] - da[first]) / max(da[first], 1e-12),
            "max_window_rel_diff": max(abs(w["rel_diff"]) for w in wins)}


def benchmark(variants: Sequence[str], device: torch.device, *, batch: int | None = None, patch: int | None = None,
              train_steps: int = 16, train_warmup: int = 4, threads: int = os.cpu_count() or 1, loss_steps: int = 0,
              profile: bool = False, repeats: int = 5, skip_train: bool = False, skip_modes: bool = False,
              skip_infer: bool = False) -> dict:
    """Measure the ``variants`` on ``device``, printing each figure as it comes; returns ``{"device": what it
    ran on, "train_modes": rows of the CPU trainer modes, "rows": per variant and precision mode, training
    steps/s (CUDA) and inference s/frame}`` plus ``"profile"`` (``profile``: where one fast-mode CPU step's time
    goes) and ``"loss_check"`` (``loss_steps`` > 0: the losses of the before and fast CPU modes over that many
    steps from one seed). ``batch`` x ``patch``^2 training patches (default 32 x 256^2 on CUDA, 8 x 128^2 on
    CPU); ``threads``: CPU threads in all of the trainer processes (this process's are the caller's:
    ``torch.set_num_threads``); ``repeats``: timed runs per figure (median); ``skip_*``: leave out the training
    figures, the CPU mode table or the inference figures."""
    batch = batch or (32 if device.type == "cuda" else 8)
    patch = patch or (256 if device.type == "cuda" else 128)
    modes = [("fp32", None, False)]
    if device.type == "cuda":
        half = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        hname = "bf16" if half == torch.bfloat16 else "fp16"
        modes += [(hname, half, False), ("fp32+compile", None, True), (f"{hname}+compile", half, True)]
    where = torch.cuda.get_device_name() if device.type == "cuda" else \
        f"CPU {cpu_name()}, {threads} threads, native bf16: {native_bf16()}"
    print(f"# {where}, torch {torch.__version__}")
    rows: list[dict] = []
    train_rows: list[dict] = []
    extra: dict = {}
    if device.type == "cpu" and not skip_train:
        print(f"# training: {batch} x {patch}^2 patches per step, data generation included")
        for name in ([] if skip_modes else variants):
            train_rows += bench_cpu_modes(name, train_steps, train_warmup, batch, patch, threads)
        if profile:
            prof = profile_step(variants[0], batch, patch)
            total = sum(v for _, v in prof)
            extra["profile"] = [{"op": k, "seconds": v, "share": v / total} for k, v in prof]
            print(f"# profile of one fast-mode step ({variants[0]}, {threads} threads, in-process, "
                  f"{total:.2f} s of CPU self time):")
            for k, v in prof:
                print(f"#   {k:<34} {v:6.3f} s  {100 * v / total:5.1f} %")
        if loss_steps:
            chk = loss_check(variants[0], loss_steps, batch, patch, threads)
            extra["loss_check"] = chk
            print(f"# loss check over {chk['steps']} steps from one seed: first logged step (step "
                  f"{chk['first_logged_step']}) differs by {chk['first_step_rel_diff']:.1e}; mean loss per window:")
            for w in chk["windows"]:
                print(f"#   steps {w['steps']:>9}: before {w['before']:.5f}  fast {w['fast']:.5f}  "
                      f"({100 * w['rel_diff']:+.1f} %)")
    for name in variants:
        gmaccs = count_maccs(build_model(name), 1080, 1920) / 1e9
        for mode, dtype, comp in modes:
            row = {"variant": name, "mode": mode, "gmaccs_1920x1080": round(gmaccs, 2)}
            if not skip_train and device.type == "cuda":
                s = bench_train(name, device, batch, patch, repeats, dtype, comp)
                row.update(train_batch=batch, train_patch=patch, train_steps_per_s=1 / s,
                           train_samples_per_s=batch / s)
            if not skip_infer:
                row["infer_s_per_1920x1080"] = bench_infer(name, device, repeats, dtype, comp)
                row["paper_v100_s"] = PAPER_V100_S[name]
            if len(row) == 3:
                continue
            rows.append(row)
            tr = (f"train {row['train_steps_per_s']:.3f} it/s ({row['train_samples_per_s']:.1f} samples/s, "
                  f"{batch}x{patch}^2)  " if "train_steps_per_s" in row else "")
            inf = (f"infer {row['infer_s_per_1920x1080']:.3f} s/frame (paper V100: {PAPER_V100_S[name]:.2f} s)"
                   if "infer_s_per_1920x1080" in row else "")
            print(f"{name:<12} {mode:<14} {tr}{inf}")
    inf_rows = [r for r in rows if r["mode"] == "fp32" and "infer_s_per_1920x1080" in r]
    if len(inf_rows) == 2:
        a, b = inf_rows
        print(f"ratio {a['variant']}/{b['variant']} inference time (fp32): "
              f"{a['infer_s_per_1920x1080'] / b['infer_s_per_1920x1080']:.2f} "
              f"(MAcc ratio {a['gmaccs_1920x1080'] / b['gmaccs_1920x1080']:.2f}; paper V100 time ratio "
              f"{PAPER_V100_S[a['variant']] / PAPER_V100_S[b['variant']]:.2f})")
    return {"device": where, "train_modes": train_rows, "rows": rows, **extra}
