"""Evaluate trained models against classical baselines; write their outputs and a report.

    python -m eapnet.evaluate --models standard lightweight runs/x/last.pt \\
        --baselines reference_frame debevec mertens --heldout 16 --size 256 [--data DIR ...] \\
        [--tile 512 --overlap 64] [--out DIR] [--no-save-outputs]

Datasets: ``--heldout`` held-out synthetic scenes of ``--size`` pixels, the real NTIRE crops when present,
and one dataset per ``--data FOLDER``. The run folder (``--out``, default ``runs/eval-<time>``) holds
``run.json``, ``report.json``, ``report.md`` and each model's outputs; what each holds and how the scores are
computed: :mod:`eapnet.evalreport`.
"""
from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from eapnet.baselines import ALL_BASELINES, BASELINES
from eapnet.checkpoint import SHIPPED, CheckpointError, load_model
from eapnet.cli import Parser, add_overwrite, command, int_at_least, out_dir, side_arg
from eapnet.data import SHARED_SAMPLES, DataError
from eapnet.evalreport import evaluate, report_markdown
from eapnet.evalsets import folder_scenes, heldout_synthetic, real_crops
from eapnet.inference import resolve_device
from eapnet.outputs import require_exr


def _unique(name: str, taken: set[str]) -> str:
    name = re.sub(r"[^A-Za-z0-9._+-]", "_", name).lstrip("._+-") or "model"
    out, k = name, 2
    while out in taken:
        out, k = f"{name}-{k}", k + 1
    return out


def _model_names(entries: Sequence[str], taken: set[str]) -> list[tuple[str, str]]:
    """``(method name, entry)``: shipped names as they are; checkpoints by file stem, prefixed with the
    parent folder's name on a clash (two runs' ``last.pt``), numbered if still taken."""
    out = []
    for e in entries:
        if e in SHIPPED:
            name = e
        else:
            p = Path(e)
            name = p.stem if p.stem not in taken else f"{p.parent.name}-{p.stem}"
        name = _unique(name, taken)
        taken.add(name)
        out.append((name, e))
    return out


def get_args_parser() -> argparse.ArgumentParser:
    p = Parser(prog="eapnet-evaluate",
               description="Evaluate trained EAPNet models against classical HDR baselines.")
    p.add_argument("--models", nargs="*", default=["standard", "lightweight"], metavar="NAME_OR_CKPT",
                   help="shipped model names (standard, lightweight) or checkpoint paths; default: %(default)s")
    p.add_argument("--baselines", nargs="*", default=list(BASELINES), metavar="NAME",
                   help=f"classical baselines, from {', '.join(ALL_BASELINES)}; default: %(default)s")
    p.add_argument("--heldout", type=int_at_least(0), default=16,
                   help="held-out synthetic scenes (0 = none); default %(default)s")
    p.add_argument("--size", type=side_arg, default=256, metavar="N",
                   help="side of the held-out synthetic scenes in pixels, N or NxN; default %(default)s")
    p.add_argument("--no-real-crops", dest="real_crops", action="store_false",
                   help="skip the real NTIRE crops (SHARED_SAMPLES/crops256)")
    p.add_argument("--data", type=Path, action="append", default=[], metavar="DIR",
                   help="extra dataset folder with ground truth (NTIRE or Kalantari layout); repeatable")
    p.add_argument("--tile", type=int_at_least(16), default=None,
                   help="tiled inference with square tiles of this many pixels (default: whole frame)")
    p.add_argument("--tile-overlap", "--overlap", dest="overlap", type=int_at_least(0), default=64,
                   help="tile overlap in pixels, < tile/2; default %(default)s")
    p.add_argument("--amp", choices=["off", "bf16", "fp16"], default="off", help="autocast on CUDA")
    p.add_argument("--device", default="auto", help="torch device for the models (auto = cuda if available)")
    p.add_argument("--out", type=Path, default=None, help="run folder (default runs/eval-<time>)")
    add_overwrite(p)
    p.add_argument("--no-save-outputs", dest="save_outputs", action="store_false",
                   help="only score; write no per-scene output files")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


@command
def main(argv: list[str] | None = None) -> int:
    """CLI entry point (see the module docstring); returns 0, exits 2 with a message on bad arguments."""
    p = get_args_parser()
    args = p.parse_args(argv)
    out_dir(p, args, "eval", create=False)

    bad = [b for b in args.baselines if b not in ALL_BASELINES]
    if bad:
        p.error(f"unknown baseline(s) {', '.join(bad)}: choose from {', '.join(ALL_BASELINES)}")
    if len(set(args.baselines)) != len(args.baselines):
        p.error(f"--baselines names a baseline twice: {args.baselines}")
    if args.tile is not None and args.overlap >= args.tile // 2:
        p.error(f"--tile-overlap {args.overlap} must be < tile/2 = {args.tile // 2}")
    if not args.models and not args.baselines:
        p.error("nothing to evaluate: give --models and/or --baselines")
    try:
        device = resolve_device(args.device)
    except ValueError as e:
        p.error(f"--device: {e}")
    if args.models and args.save_outputs:
        try:
            require_exr()
        except RuntimeError as e:
            p.error(str(e))

    # datasets first (cheap listings), then models: every argument error comes before any output folder
    datasets: dict[str, list] = {}
    sources: dict[str, str] = {}
    if args.heldout:
        datasets["heldout_synthetic"] = heldout_synthetic(args.heldout, args.size)
        sources["heldout_synthetic"] = f"synthetic, HELDOUT_SEED, {args.size}x{args.size}"
    crops = SHARED_SAMPLES / "crops256"
    if args.real_crops and crops.is_dir():
        datasets["real_crops"] = real_crops(crops)
        sources["real_crops"] = f"real NTIRE crops in {crops}"
    elif args.real_crops:
        print(f"note: no real crops at {crops}; skipping real_crops", file=sys.stderr)
    for folder in args.data:
        try:
            scenes, no_gt = folder_scenes(folder)
        except DataError as e:
            p.error(f"--data {folder}: {e}")
        if not scenes:
            p.error(f"--data {folder}: no scene with ground truth ({len(no_gt)} without)")
        name = _unique(folder.resolve().name, set(datasets))
        datasets[name] = scenes
        sources[name] = str(folder) + (f"; skipped {len(no_gt)} scene(s) without gt: {no_gt}" if no_gt else "")
    if not any(datasets.values()):
        p.error("no scenes to evaluate: --heldout 0, no real crops and no --data")

    models: dict[str, nn.Module] = {}
    named = _model_names(args.models, set(args.baselines))
    for name, entry in named:
        try:
            models[name] = load_model(entry, device=device).eval()
        except CheckpointError as e:
            p.error(f"--models {entry}: {e}")

    out = out_dir(p, args, "eval")
    run_args = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    run_args["data"] = [str(d) for d in args.data]
    run_args["models"] = dict(named)
    report = evaluate(models, args.baselines, datasets, out, tile=args.tile, overlap=args.overlap,
                      save_outputs=args.save_outputs, amp=None if args.amp == "off" else args.amp,
                      sources=sources, run_args=run_args, progress=not args.quiet)
    print(report_markdown(report))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
