"""Compress EAPNet to a MAcc budget: block dropping + channel pruning, distilled fine-tune, int8 QAT.

    python compress/qat.py --target-maccs 100G          # shipped standard model -> runs/compress-100G-<time>/

Stages (each with a progress bar; wall time of each goes into the report):

1. **search**: per-knob sensitivity on the calibration set (``calib_data/``), then a greedy choice of PDUB
   count and per-layer widths that meets the budget with the least predicted damage (``compress.search``);
   the uniform width-scaling config at the same budget is reported beside it.
2. **prune**: drop the chosen blocks, slice channels with torch-pruning (``compress.prune``): a new config
   plus sliced weights.
3. **finetune**: recover with distillation from the float teacher: loss = ``w`` * EAPNet loss(student,
   teacher) + (1 - ``w``) * EAPNet loss(student, ground truth), on synthetic patches (or ``--data``).
4. **qat**: PT2E int8 quantization-aware training (``compress.quantize``; XNNPACK quantizer: per-channel
   conv weights, per-tensor transposed convs) with the same loss, then ``convert_pt2e``.
5. **evaluate**: PSNR-μ / PSNR-l (official formulas) of teacher, pruned float and int8 on the held-out
   synthetic set and the real crops (when ``../shared/data/ntire_samples`` is present).
6. **export**: ``.pte`` fp32 and int8 (XNNPACK) and ``.mlpackage`` fp16 and W8A8 (Core ML) at
   ``--export-size`` (default 1060x1900) into ``export/`` (``mobile_export.pipeline``).
7. **parity**: every artifact against the compressed float model on real, calibration and held-out scenes
   (``mobile_export.parity``; report in ``parity/``). A threshold breach makes the command exit 1.

Outputs in one folder: ``compressed.pt`` (config + weights, ``eapnet.load_model`` reads it), ``int8.pt2``
(the converted int8 program, ``compress.quantize.load_quantized``), ``export/``, ``parity/``,
``report.json``, ``report.md`` and ``run.json`` (resolved arguments, versions). MAccs are the NTIRE 2022 count (``eapnet.count_maccs``) at
``--resolution`` (default 1060x1900). A budget at or above the input model skips pruning and fine-tuning.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as `python compress/qat.py`: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from torch import nn

DEFAULT_STEPS = (300, 120)
"""Fine-tune and QAT steps of the default run (fits in 30 minutes on 2 CPU cores with the defaults)."""


# ------------------------------------------------------------------------------------------ arguments


def build_parser() -> argparse.ArgumentParser:
    from compress.prune import IMPORTANCE
    from eapnet.cli import int_at_least, maccs_arg, size_arg

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--target-maccs", type=maccs_arg, required=True,
                   help="MAcc budget (NTIRE 2022 count), e.g. 100G, 1.5e11, 150000M")
    p.add_argument("--checkpoint", default="standard",
                   help="teacher / input model: 'standard', 'lightweight' (shipped) or a checkpoint path")
    p.add_argument("--data", default="synthetic",
                   help="fine-tune data: 'synthetic' (the generator's training stream) or an NTIRE/Kalantari folder")
    p.add_argument("--calib", default=None, help="calibration folder (NTIRE layout); default calib_data/default")
    p.add_argument("--steps", type=int_at_least(0), nargs="+", default=list(DEFAULT_STEPS), metavar="N",
                   help="fine-tune steps and QAT steps (one value sets both)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--patch", type=int, default=96, help="training patch size (multiple of 8)")
    p.add_argument("--lr", type=float, default=3e-4, help="fine-tune learning rate (QAT uses a tenth)")
    p.add_argument("--distill-weight", type=float, default=0.5,
                   help="weight of the teacher-output loss; the rest goes to the ground-truth loss")
    p.add_argument("--importance", choices=IMPORTANCE, default="magnitude", help="channel importance criterion")
    p.add_argument("--backend", choices=("xnnpack", "coreml"), default="xnnpack", help="int8 quantizer flavour")
    p.add_argument("--resolution", type=size_arg, default=(1060, 1900), help="HxW at which MAccs are counted")
    p.add_argument("--calib-scenes", type=int, default=16, help="calibration scenes used by the sensitivity probe")
    p.add_argument("--heldout", type=int, default=16, help="held-out synthetic scenes (256x256) in the report")
    p.add_argument("--export-size", type=size_arg, default=(1060, 1900),
                   help="HxW of the exported .pte / .mlpackage programs (fixed input size)")
    p.add_argument("--no-export", action="store_true", help="stop after evaluation: no phone artifacts, no parity")
    p.add_argument("--parity-scenes", type=int_at_least(1), default=4,
                   help="scenes per dataset in the parity check of the exported artifacts")
    p.add_argument("--compare-uniform", action="store_true",
                   help="also fine-tune + quantize the uniform width-scaling baseline and report it")
    p.add_argument("--out", default=None, help="output folder (default runs/compress-<budget>-<time>)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch default)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    p = build_parser()
    a = p.parse_args(argv)
    if len(a.steps) == 1:
        a.steps = a.steps * 2
    if len(a.steps) != 2:
        p.error(f"--steps takes one or two values (fine-tune, QAT), got {len(a.steps)}")
    if a.patch < 16 or a.patch % 8:
        p.error(f"--patch must be a multiple of 8 and >= 16, got {a.patch}")
    if a.batch_size < 1:
        p.error(f"--batch-size must be >= 1, got {a.batch_size}")
    if not (0.0 <= a.distill_weight <= 1.0):
        p.error(f"--distill-weight must be in [0, 1], got {a.distill_weight}")
    if not (a.lr > 0 and math.isfinite(a.lr)):
        p.error(f"--lr must be positive, got {a.lr}")
    if a.calib_scenes < 1 or a.heldout < 0:
        p.error("--calib-scenes must be >= 1 and --heldout >= 0")
    if a.data != "synthetic" and not Path(a.data).is_dir():
        p.error(f"--data {a.data}: no such folder (use 'synthetic' or an NTIRE/Kalantari folder)")
    if a.calib is not None and not Path(a.calib).is_dir():
        p.error(f"--calib {a.calib}: no such folder")
    if a.device not in ("auto", "cpu") and not a.device.startswith("cuda"):
        p.error(f"--device must be auto, cpu, cuda or cuda:N, got {a.device!r}")
    return a


# ------------------------------------------------------------------------------------------ pipeline


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: CUDA is not available on this machine")
    return torch.device(name)


def calibration_batches(folder, n: int, batch: int = 4):
    """``(ldrs, evs, gt)`` tensor batches from the first ``n`` scenes of a calibration folder."""
    from calib_data import DEFAULT, load_calibration

    scenes = load_calibration(Path(folder) if folder else DEFAULT, limit=n)
    out = []
    for i in range(0, len(scenes), batch):
        chunk = scenes[i:i + batch]
        shapes = {s[1].shape for s in chunk}
        if len(shapes) != 1:  # differently sized scenes: one per batch
            for s in chunk:
                out.append(_to_tensors([s]))
            continue
        out.append(_to_tensors(chunk))
    return out


def _to_tensors(scenes):
    ldrs = torch.stack([torch.from_numpy(np.ascontiguousarray(s[1].transpose(0, 3, 1, 2))) for s in scenes]).float()
    evs = torch.stack([torch.as_tensor(np.asarray(s[2]), dtype=torch.float32) for s in scenes])
    gt = torch.stack([torch.from_numpy(np.ascontiguousarray(s[3].transpose(2, 0, 1))) for s in scenes]).float()
    return ldrs, evs, gt


def _stream(data: str, seed: int, patch: int):
    from eapnet.train import FolderStream, SyntheticStream

    # Seed offset: the fine-tune never replays the teacher's exact training samples in lockstep.
    return SyntheticStream(seed + 1000, patch) if data == "synthetic" else FolderStream(data, seed, patch, patch)


def _batches(stream, batch: int, steps: int, start: int = 0):
    from torch.utils.data import DataLoader, Subset

    idx = range(start * batch, (start + steps) * batch)
    return DataLoader(Subset(stream, idx), batch_size=batch, shuffle=False, num_workers=0)


def distill(student, teacher: nn.Module, stream, *, steps: int, batch: int, lr: float, weight: float,
            device: torch.device, desc: str, progress: bool = True, start: int = 0) -> list[float]:
    """Train ``student`` (an nn.Module or a PT2E GraphModule) for ``steps`` steps of Adam with cosine-decayed
    ``lr`` on ``weight`` * loss(student, teacher) + (1 - weight) * loss(student, gt); returns the losses."""
    from tqdm import tqdm

    from eapnet.losses import eapnet_loss

    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / max(steps, 1))))
    teacher.eval()
    losses = []
    bar = tqdm(_batches(stream, batch, steps, start), total=steps, desc=desc, disable=not progress, unit="step")
    for b in bar:
        ldrs, evs, gt = b["ldrs"].to(device), b["evs"].to(device), b["gt"].to(device)
        with torch.no_grad():
            target = teacher(ldrs, evs)
        out = student(ldrs, evs)
        loss = weight * eapnet_loss(out, target) + (1 - weight) * eapnet_loss(out, gt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.5f}")
    return losses


def score(model, datasets: dict, teacher=None) -> dict:
    """Mean PSNR-μ / PSNR-l of ``model`` on each dataset (and PSNR-μ against ``teacher``'s output)."""
    from eapnet.inference import predict
    from eapnet.metrics import psnr_l, psnr_mu

    out = {}
    for name, scenes in datasets.items():
        rows = []
        for sid, ldrs, evs, gt in scenes:
            y = predict(model, ldrs, evs)
            row = {"psnr_mu": psnr_mu(gt, y), "psnr_l": psnr_l(gt, y)}
            if teacher is not None:
                row["psnr_mu_vs_teacher"] = psnr_mu(predict(teacher, ldrs, evs), y)
            rows.append(row)
        out[name] = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} if rows else None
    return out


def _eval_sets(n_heldout: int) -> dict:
    from eapnet.evaluate import heldout_synthetic, materialise, real_crops

    sets = {"heldout_synthetic": materialise(heldout_synthetic(n_heldout, 256)) if n_heldout else []}
    real = real_crops()
    if real:
        sets["real_crops"] = materialise(real)
    return {k: v for k, v in sets.items() if v}


def compress_model(teacher: nn.Module, target: int, args, *, log=print, progress=True) -> dict:
    """Search + prune (stages 1-2). Returns ``{"model", "search", "uniform", "skipped"}``."""
    from compress.prune import drop_blocks, prune_to
    from compress.search import check_reachable, greedy_search, sensitivity, uniform_config
    from eapnet.macs import count_maccs, format_maccs

    h, w = args.resolution
    t_maccs = count_maccs(teacher, h, w)
    if t_maccs <= target:
        log(f"input model {format_maccs(t_maccs)} <= target {format_maccs(target)}: no pruning, quantize only")
        return {"model": teacher, "search": None, "uniform": None, "skipped": True}
    check_reachable(teacher.config, target, height=h, width=w)  # before the slow probe
    calib = calibration_batches(args.calib, args.calib_scenes)
    sens = sensitivity(teacher, [(l, e) for l, e, _ in calib], importance=args.importance,
                       calib_gt=calib, progress=progress)
    res = greedy_search(sens, target, height=h, width=w)
    kept = drop_blocks(teacher, res.kept_blocks) if teacher.config.block == "pdub" else teacher
    student = prune_to(kept, res.config.replace(name=f"{teacher.config.name}-{target / 1e9:g}G"),
                       args.importance, calib)
    maccs = count_maccs(student, h, w)
    if maccs > target:  # the search counts with the same counter; this guards the slicing
        raise RuntimeError(f"pruned model has {format_maccs(maccs)} MAccs > target {format_maccs(target)}")
    from compress.search import damage_fn

    damage = damage_fn(teacher, [(l, e) for l, e, _ in calib])
    uni_cfg, s = uniform_config(teacher.config, target, height=h, width=w)
    uniform = {"config": uni_cfg.to_dict(), "scale": s, "maccs": count_maccs_cfg(uni_cfg, h, w),
               "zero_shot_damage": damage(prune_to(teacher, uni_cfg, args.importance, calib))}
    search = {"kept_blocks": res.kept_blocks, "steps": res.steps, "predicted_damage": res.predicted_damage,
              "zero_shot_damage": damage(student), "sensitivity": sens.to_dict()}
    return {"model": student, "search": search, "uniform": uniform, "skipped": False, "uniform_config": uni_cfg}


def count_maccs_cfg(cfg, h, w) -> int:
    from compress.search import config_maccs

    return config_maccs(cfg, h, w)


def _layer_widths(model) -> dict:
    return {n: m.out_channels for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))}


def report_markdown(rep: dict) -> str:
    from eapnet.macs import format_maccs

    L = [f"# Compression to {format_maccs(rep['target_maccs'])} MAccs", ""]
    L.append(f"Command: `{rep['command']}`  ")
    L.append(f"MAccs counted at {rep['resolution'][1]}x{rep['resolution'][0]} (NTIRE 2022 convention). "
             f"Device: {rep['device']}. Total wall time: {rep['wall_s']['total']:.0f} s.")
    L += ["", "| model | GMAccs | k params | " + " | ".join(f"{d} PSNR-μ | {d} PSNR-l" for d in rep["datasets"]) + " |",
          "|---|---:|---:|" + "---:|---:|" * len(rep["datasets"])]
    for name, row in rep["models"].items():
        cells = []
        for d in rep["datasets"]:
            s = (row.get("scores") or {}).get(d)
            cells += [f"{s['psnr_mu']:.2f}", f"{s['psnr_l']:.2f}"] if s else ["–", "–"]
        maccs = f"{row['maccs'] / 1e9:.2f}" if row.get("maccs") else "–"
        params = f"{row['params'] / 1e3:.2f}" if row.get("params") else "–"
        L.append(f"| {name} | {maccs} | {params} | " + " | ".join(cells) + " |")
    s = rep.get("search")
    if s:
        L += ["", (f"Kept PDUBs: {s['kept_blocks']} of the teacher's. Zero-shot damage (μ-law MSE vs teacher, "
                   f"calibration set, before fine-tuning): searched {s['zero_shot_damage']:.3g}, uniform "
                   f"{rep['uniform']['zero_shot_damage']:.3g} (width scale {rep['uniform']['scale']:.3f}).")]
        L += ["", "Search moves: " + "; ".join(st["move"] for st in s["steps"])]
    ex = rep.get("export")
    if ex:
        L += ["", f"## Phone artifacts ({ex['size'][1]}x{ex['size'][0]}) and parity", "",
              "PSNR-μ (dB) of each artifact against the compressed float model (worst scene) and against ground "
              "truth (artifact / float, per dataset); full report: `parity/parity.md`.", "",
              "| artifact | MB | executed by | vs float | vs GT | parity |", "|---|---:|---|---:|---|---|"]
        for key, a in ex["artifacts"].items():
            gt = ", ".join(f"{d} {v:.2f} / {a['float_psnr_mu'][d]:.2f}" for d, v in a["psnr_mu"].items())
            vs = "–" if a["psnr_mu_vs_float_min"] is None else f"{a['psnr_mu_vs_float_min']:.2f}"
            L.append(f"| `{a['file']}` | {a['bytes'] / 1e6:.2f} | {a['executor'] or '–'} | {vs} | {gt or '–'} | "
                     f"{'pass' if a['passed'] else '**FAIL**'} |")
    L += ["", "Per-layer output widths of the compressed model: see `report.json` (`layer_widths`).", "",
          "Wall time per stage (s): " + ", ".join(f"{k} {v:.0f}" for k, v in rep["wall_s"].items()), ""]
    return "\n".join(L)


def main(argv=None) -> int:
    args = parse_args(argv)
    from eapnet.checkpoint import load_model
    from eapnet.macs import count_maccs, count_params, format_maccs
    from eapnet.runs import (
        atomic_write_json,
        atomic_write_text,
        make_run_dir,
        record_run,
    )

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = _device(args.device)
    progress = not args.quiet
    run_dir = make_run_dir(args.out, f"compress-{args.target_maccs / 1e9:g}G")
    resolved = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()}
    record_run(run_dir, resolved)
    h, w = args.resolution
    wall, t0 = {}, time.time()

    teacher = load_model(args.checkpoint).float().eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    t_maccs, t_params = count_maccs(teacher, h, w), count_params(teacher)
    print(f"teacher {args.checkpoint}: {format_maccs(t_maccs)} MAccs, {t_params / 1e3:.2f} k params; "
          f"target {format_maccs(args.target_maccs)}")

    from compress.search import BudgetError

    t = time.time()
    try:
        stage = compress_model(teacher, args.target_maccs, args, progress=progress)
    except BudgetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    wall["search+prune"] = time.time() - t
    teacher = teacher.to(device)
    stream = _stream(args.data, args.seed, args.patch)
    sets = _eval_sets(args.heldout)
    models = {"teacher (float)": {"maccs": t_maccs, "params": t_params, "scores": score(teacher.cpu(), sets)}}
    runs = [("compressed", stage["model"], "")]
    if args.compare_uniform and not stage["skipped"]:
        from compress.prune import prune_to

        uni = prune_to(teacher.cpu(), stage["uniform_config"], args.importance,
                       calibration_batches(args.calib, args.calib_scenes))
        runs.append(("uniform", uni, "uniform-"))
    losses = {}
    for label, model, prefix in runs:
        if not stage["skipped"]:
            models[f"{label}, before fine-tune (float)"] = {
                "maccs": count_maccs(model, h, w), "params": count_params(model),
                "scores": score(model, sets, teacher.cpu())}
        entries, losses[label], times = finish(model, teacher, stream, args, run_dir, prefix, device,
                                              skipped=stage["skipped"], sets=sets, progress=progress)
        trained = entries.pop("_model")
        if label == "compressed":
            student = trained
        models.update({f"{label} {k}": v for k, v in entries.items()})
        wall.update({f"{prefix}{k}": v for k, v in times.items()})
    exported = None if args.no_export else export_and_check(run_dir, args, wall, progress)
    wall["total"] = time.time() - t0

    report = {
        "command": " ".join(["python", "compress/qat.py", *(argv if argv is not None else sys.argv[1:])]),
        "target_maccs": args.target_maccs, "resolution": [h, w], "device": str(device),
        "teacher": str(args.checkpoint), "skipped_pruning": stage["skipped"],
        "datasets": list(sets), "models": models,
        "config": student.config.to_dict(), "layer_widths": _layer_widths(student),
        "pdub_count": student.config.num_blocks, "search": stage["search"], "uniform": stage["uniform"],
        "losses_last20": losses, "wall_s": wall,
        "files": {"compressed": "compressed.pt", "int8": "int8.pt2"}, "export": exported,
    }
    atomic_write_json(run_dir / "report.json", report)
    atomic_write_text(run_dir / "report.md", report_markdown(report))
    print(report_markdown(report))
    print(f"wrote {run_dir}")
    if exported is not None and not exported["passed"]:
        print(f"error: parity failed for {', '.join(exported['failed'])}; see {run_dir / 'parity' / 'parity.md'}",
              file=sys.stderr)
        return 1
    return 0


def export_and_check(run_dir: Path, args, wall: dict, progress: bool) -> dict:
    """Stages 6-7: the four phone artifacts of the compressed model, then the parity harness on them."""
    from eapnet.runs import atomic_write_json, atomic_write_text
    from mobile_export.parity import report_markdown as parity_markdown
    from mobile_export.parity import run_parity
    from mobile_export.pipeline import export_variant

    t = time.time()
    paths, seconds = export_variant(run_dir / "compressed.pt", run_dir / "int8.pt2", run_dir / "export",
                                    size=args.export_size)
    wall["export"] = time.time() - t
    t = time.time()
    rep = run_parity(list(paths.values()), limit=args.parity_scenes, progress=progress)
    atomic_write_json(run_dir / "parity" / "parity.json", rep)
    atomic_write_text(run_dir / "parity" / "parity.md", parity_markdown(rep))
    wall["parity"] = time.time() - t
    rows = {}
    for key, r in zip(paths, rep["artifacts"], strict=True):
        s = r.get("summary", {})
        path = paths[key]
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size
        rows[key] = {"file": f"export/{path.name}", "bytes": size, "export_s": seconds[key],
                     "executor": r.get("executor"), "passed": r["passed"], "failures": r["failures"],
                     "psnr_mu_vs_float_min": min((d["psnr_mu_vs_float_min"] for d in s.values() if d["scenes"]),
                                                 default=None),
                     "psnr_mu": {d: v["psnr_mu"] for d, v in s.items() if "psnr_mu" in v},
                     "float_psnr_mu": {d: v["float_psnr_mu"] for d, v in s.items() if "float_psnr_mu" in v}}
    return {"size": list(args.export_size), "artifacts": rows, "passed": rep["passed"],
            "failed": [k for k, v in rows.items() if not v["passed"]], "parity_report": "parity/parity.md"}


def finish(model: nn.Module, teacher: nn.Module, stream, args, run_dir: Path, prefix: str,
           device: torch.device, *, skipped: bool, sets: dict, progress: bool):
    """Stages 3-5 for one pruned model: distilled fine-tune, save ``<prefix>compressed.pt``, QAT, convert,
    save ``<prefix>int8.pt2``, score float and int8. Returns ``(report rows, last-20 losses, wall times)``."""
    from compress import quantize
    from eapnet.checkpoint import save_checkpoint
    from eapnet.macs import count_maccs, count_params

    h, w = args.resolution
    ft_steps, qat_steps = args.steps
    student = _copy(model).to(device).train()
    for p in student.parameters():
        p.requires_grad_(True)
    times, losses = {}, {}
    t = time.time()
    if not skipped and ft_steps:
        ft = distill(student, teacher, stream, steps=ft_steps, batch=args.batch_size, lr=args.lr,
                     weight=args.distill_weight, device=device, desc=f"{prefix}finetune", progress=progress)
        losses["finetune"] = float(np.mean(ft[-20:]))
    times["finetune"] = time.time() - t
    student = student.eval().cpu()
    maccs, params = count_maccs(student, h, w), count_params(student)
    save_checkpoint(run_dir / f"{prefix}compressed.pt", student, step=0 if skipped else ft_steps,
                    extra={"teacher": str(args.checkpoint), "target_maccs": args.target_maccs, "maccs": maccs,
                           "resolution": [h, w]})
    t = time.time()
    prepared = quantize.prepare_qat(_copy(student).to(device), backend=args.backend,
                                    example=_example(args.patch, device))
    # Start the observers from the calibration set's ranges (as PTQ would), not from the first training
    # batch: short QAT runs otherwise keep ranges of a few random patches.
    with torch.no_grad():
        for ldrs, evs, _ in calibration_batches(args.calib, args.calib_scenes):
            prepared(ldrs.to(device), evs.to(device))
    if qat_steps:
        q = distill(prepared, teacher, stream, steps=qat_steps, batch=args.batch_size, lr=args.lr / 10,
                    weight=args.distill_weight, device=device, desc=f"{prefix}qat", progress=progress,
                    start=ft_steps)
        losses["qat"] = float(np.mean(q[-20:]))
    int8 = quantize.convert(prepared)
    meta = {"config": student.config.to_dict(), "backend": args.backend, "maccs": maccs, "params": params,
            "teacher": str(args.checkpoint), "resolution": [h, w], "float": f"{prefix}compressed.pt"}
    quantize.save_quantized(run_dir / f"{prefix}int8.pt2", int8, _example(64, "cpu"), meta)
    int8_model, _ = quantize.load_quantized(run_dir / f"{prefix}int8.pt2")
    times["qat"] = time.time() - t
    t = time.time()
    cpu_teacher = teacher.cpu()
    rows = {"(float)": {"maccs": maccs, "params": params, "scores": score(student, sets, cpu_teacher)},
            f"(int8, {args.backend})": {"maccs": maccs, "params": params,
                                        "scores": score(int8_model, sets, cpu_teacher)},
            "_model": student}
    teacher.to(device)
    times["evaluate"] = time.time() - t
    return rows, losses, times


def _copy(model):
    import copy

    return copy.deepcopy(model)


def _example(size: int, device):
    return (torch.rand(2, 3, 3, size, size, device=device), torch.tensor([[-2.0, 0.0, 2.0]] * 2, device=device))


if __name__ == "__main__":
    sys.exit(main())
