"""What each part of a trained EAPNet adds, measured by turning it off (no retraining; :mod:`eapnet.ablation`).

    python -m eapnet.ablate --model standard                      # shipped weights, table on stdout
    python -m eapnet.ablate --model runs/x/last.pt --heldout 16 --size 256 --out runs/ablate-x
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from eapnet import load_model
from eapnet.ablation import ablation_table, table_markdown
from eapnet.checkpoint import CheckpointError
from eapnet.cli import Parser, add_overwrite, command, int_at_least, out_dir, side_arg
from eapnet.evalsets import standard_sets
from eapnet.model import EAPNet
from eapnet.runs import atomic_write_json, atomic_write_text, record_run


def get_args_parser() -> argparse.ArgumentParser:
    p = Parser(prog="eapnet-ablate", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="standard", help="shipped name or checkpoint path (default: standard)")
    p.add_argument("--heldout", type=int_at_least(1), default=16, help="held-out synthetic scenes (default 16)")
    p.add_argument("--size", type=side_arg, default=256, metavar="N", help="their side in pixels, N or NxN (default 256)")
    p.add_argument("--no-real-crops", dest="real", action="store_false", help="skip the real NTIRE crops")
    p.add_argument("--out", type=Path, default=None, help="also write ablation.md and ablation.json here")
    add_overwrite(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


@command
def main(argv: list[str] | None = None) -> int:
    p = get_args_parser()
    args = p.parse_args(argv)
    out_dir(p, args, "ablate", create=False)
    try:
        model = load_model(args.model)
    except CheckpointError as e:
        p.error(f"--model: {e}")
    if not isinstance(model, EAPNet):
        p.error(f"--model {args.model}: ablations apply to EAPNet models, not {type(model).__name__}")
    with torch.no_grad():  # scoped: main() may run inside a test process
        result = ablation_table(model, standard_sets(args.heldout, args.size, args.real), progress=not args.quiet)
    lines = table_markdown(result)
    print("\n".join(lines))
    if args.out is not None:
        out = out_dir(p, args, "ablate")
        record_run(out, vars(args))
        atomic_write_json(out / "ablation.json", {"model": args.model, **result})
        atomic_write_text(out / "ablation.md", "\n".join(lines) + "\n")
        print(f"wrote {out / 'ablation.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
