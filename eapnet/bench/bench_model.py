"""Training throughput and full-frame inference time of the EAPNet variants, printed as figures.

    python -m eapnet.bench.bench_model                         # this machine's CPU: trainer modes side by side
    python -m eapnet.bench.bench_model --device cuda           # GPU: fp32, bf16/fp16, with and without torch.compile
    python -m eapnet.bench.bench_model --skip-infer --train-steps 24 --out reports/bench-train/bench.json
    python -m eapnet.bench.bench_model --loss-check 300        # ... and the fast mode's loss curve against fp32 eager

CPU training: each trainer mode runs ``python -m eapnet.train`` in its own process for ``--train-steps`` steps of
``--train-batch`` x ``--train-patch``^2 synthetic patches and reports steps/s after ``--train-warmup`` steps.
Inference: seconds per 1920x1080 frame, median of ``--repeats`` runs after a warm-up. The modes and what each
figure means: :mod:`eapnet.bench.throughput`. ``--out FILE`` also writes the rows as JSON (atomically).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from eapnet.bench.throughput import benchmark
from eapnet.cli import Parser, command
from eapnet.runs import atomic_write_json, package_versions


def get_args_parser() -> argparse.ArgumentParser:
    p = Parser(prog="eapnet-bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", nargs="+", default=["standard", "lightweight"], choices=["standard", "lightweight"])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--train-batch", type=int, default=None, help="default: 32 on CUDA, 8 on CPU")
    p.add_argument("--train-patch", type=int, default=None, help="default: 256 on CUDA, 128 on CPU")
    p.add_argument("--train-steps", type=int, default=16, help="CPU: timed trainer steps per mode")
    p.add_argument("--train-warmup", type=int, default=4, help="CPU: steps before timing starts (x2 with compile)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads in all (default: all)")
    p.add_argument("--loss-check", type=int, default=0, metavar="STEPS",
                   help="CPU: also train STEPS steps in the before and fast modes from one seed and compare losses")
    p.add_argument("--profile", action="store_true",
                   help="CPU: also profile one training step of the fast mode in this process (time per op kind)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per inference figure (median reported)")
    p.add_argument("--skip-train", action="store_true", help="only time inference")
    p.add_argument("--skip-modes", action="store_true", help="CPU: skip the trainer-mode table (e.g. only --profile)")
    p.add_argument("--skip-infer", action="store_true", help="only time training")
    p.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    return p


@command
def main(argv: list[str] | None = None) -> int:
    p = get_args_parser()
    args = p.parse_args(argv)
    for name in ("repeats", "train_steps", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.train_warmup < 0 or args.loss_check < 0:
        p.error("--train-warmup and --loss-check must be >= 0")
    if args.out is not None and not args.out.parent.is_dir():
        p.error(f"--out {args.out}: folder {args.out.parent} does not exist")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available here")
    torch.set_num_threads(args.threads)
    result = benchmark(args.variants, device, batch=args.train_batch, patch=args.train_patch,
                       train_steps=args.train_steps, train_warmup=args.train_warmup, threads=args.threads,
                       loss_steps=args.loss_check, profile=args.profile, repeats=args.repeats,
                       skip_train=args.skip_train, skip_modes=args.skip_modes, skip_infer=args.skip_infer)
    if args.out:
        atomic_write_json(args.out, {"device": result.pop("device"), "versions": package_versions(), **result})
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
