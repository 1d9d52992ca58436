"""Train EAPNet (or the AHDR baseline); CPU, one GPU, or many through torchrun. The loop is eapnet/training.py.

    python -m eapnet.train --config eapnet/configs/cpu.yaml --model standard --steps 20000 --out runs/std
    python -m eapnet.train --model lightweight --out runs/light           # the paper's recipe (GPU)
    torchrun --nproc_per_node 4 -m eapnet.train --model standard          # DDP, the paper's 4 GPUs
    python -m eapnet.train --resume runs/light                            # continue a killed run exactly
    python -m eapnet.train --resume runs/light --steps 4000                # ... and extend it

Defaults come from ``eapnet/configs/train.yaml`` (the paper's recipe; ``--config`` reads another YAML,
safe-loaded, e.g. the CPU recipe ``eapnet/configs/cpu.yaml``); every key is also a flag. A resumed run
repeats the uninterrupted one exactly (same machine); see eapnet/training.py for the run folder's files.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

import torch

from eapnet.cli import Parser, add_overwrite, command
from eapnet.checkpoint import CheckpointError, read_checkpoint
from eapnet.runs import lock_run_dir, make_run_dir, record_run
from eapnet.training import RESUME_MUTABLE, load_config, train, validate_config


def get_args_parser(defaults: dict | None = None) -> argparse.ArgumentParser:
    """The parser; one flag per training key of ``defaults`` (default: the recipe, :func:`load_config`)."""
    defaults = load_config(None) if defaults is None else defaults
    p = Parser(prog="eapnet-train", description=__doc__.split("\n\n")[0],
               formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--config", type=Path, default=None, help="YAML file of training keys (safe-loaded)")
    p.add_argument("--resume", type=Path, default=None, help="run folder (or last.pt) to continue")
    p.add_argument("--out", type=Path, default=None, help="run folder (default runs/train-<model>-<time>)")
    add_overwrite(p)
    for key, value in defaults.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            p.add_argument(flag, dest=key, action=argparse.BooleanOptionalAction, default=value)
        else:
            p.add_argument(flag, dest=key, type=type(value) if value is not None else str, default=value,
                           help=f"(default {value})")
    return p


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, dict, set[str]]:
    """(namespace, resolved training config, keys given explicitly on the command line)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", type=Path, default=None)
    known, _ = pre.parse_known_args(argv)
    defaults = load_config(known.config)
    parser = get_args_parser(defaults)
    args = parser.parse_args(argv)
    # A parser whose defaults are all SUPPRESS reveals which keys the user typed.
    explicit_parser = get_args_parser(defaults)
    for action in explicit_parser._actions:
        action.default = argparse.SUPPRESS
    explicit = set(vars(explicit_parser.parse_args(argv))) - {"config", "resume", "out", "overwrite", "debug", "verbose",
                                                              "help"}
    cfg = {k: getattr(args, k) for k in defaults}
    try:
        validate_config(cfg)
    except ValueError as e:
        parser.error(str(e))
    return args, cfg, explicit


@command
def main(argv: list[str] | None = None) -> int:
    args, cfg, explicit = parse_args(argv)
    resume = None
    if args.resume is not None:
        path = args.resume / "last.pt" if args.resume.is_dir() else args.resume
        try:
            resume = read_checkpoint(path)
        except CheckpointError as e:
            raise CheckpointError(f"--resume: {e}") from e
        changed = sorted(k for k in explicit - RESUME_MUTABLE if cfg[k] != resume["train_config"].get(k))
        if changed:
            raise ValueError(f"--resume cannot change {changed}: the run would no longer be the same run "
                             f"(changeable: {sorted(RESUME_MUTABLE)})")
        # keys added to the recipe after the run started take their defaults
        cfg = {**load_config(None), **resume["train_config"], **{k: cfg[k] for k in explicit & RESUME_MUTABLE}}
        if cfg["steps"] <= resume["step"]:
            raise ValueError(f"the checkpoint is already at step {resume['step']} of {cfg['steps']}; "
                             "pass a larger --steps to extend it")
        run_dir = path.parent
    else:
        run_dir = args.out
    if run_dir is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("under torchrun pass --out so that every rank agrees on the run folder")
    if args.resume is not None and args.out is not None:
        raise ValueError("--resume continues the run in its own folder; drop --out")
    if cfg["device"] == "cuda" and not torch.cuda.is_available():   # before the run folder, not in the loop
        whose = " (the resumed run's)" if resume is not None and "device" not in explicit else ""
        raise ValueError(f"--device cuda{whose}: CUDA is not available on this machine; pass --device cpu or auto")
    if int(os.environ.get("RANK", "0")) == 0:
        if resume is None:
            run_dir = make_run_dir(run_dir, f"train-{cfg['model']}", tool="eapnet-train", overwrite=args.overwrite,
                                   resume_hint=f"--resume {run_dir} to continue it",
                                   inputs=[cfg["model"], cfg["init_from"], cfg["data"]])
        else:
            lock_run_dir(run_dir, tool="eapnet-train", flag="--resume")
        # A resumed run keeps the original run.json and records its own beside it.
        name = f"run-resume-{resume['step']}.json" if resume is not None else "run.json"
        given = list(sys.argv[1:] if argv is None else argv)
        if args.out is None and args.resume is None:
            given += ["--out", str(run_dir)]
        record_run(run_dir, {**cfg, "resume": str(args.resume) if args.resume else None, "out": str(run_dir)},
                   name=name, command=shlex.join(["python", "-m", "eapnet.train", *given]))
    summary = train(cfg, Path(run_dir), resume)
    if summary:
        print(f"done: {summary['steps']} steps, EMA model {Path(run_dir) / 'model.pt'}; "
              f"held-out PSNR-mu {summary['final']['val_psnr_mu']:.2f} dB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
