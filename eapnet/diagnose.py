"""Dead ReLU channels and gradient flow of a model, on held-out synthetic scenes (:mod:`eapnet.diagnostics`).

    python -m eapnet.diagnose --model standard               # a checkpoint or a fresh variant
    python -m eapnet.diagnose --model fresh:lightweight --scenes 8 --size 128
"""
from __future__ import annotations

import argparse
import sys

from eapnet import build_model, load_model
from eapnet.checkpoint import CheckpointError
from eapnet.cli import Parser, command, int_at_least, side_arg
from eapnet.diagnostics import probe_batches, report_lines
from eapnet.model import EAPNet


def get_args_parser() -> argparse.ArgumentParser:
    p = Parser(prog="eapnet-diagnostics", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="standard",
                   help="shipped name (standard, lightweight), a checkpoint path, or fresh:<variant> for a "
                        "freshly initialised model")
    p.add_argument("--scenes", type=int_at_least(1), default=8, help="held-out synthetic scenes (default 8)")
    p.add_argument("--size", type=side_arg, default=128, metavar="N",
                   help="their side in pixels, N or NxN (default 128)")
    return p


@command
def main(argv: list[str] | None = None) -> int:
    p = get_args_parser()
    args = p.parse_args(argv)
    try:
        model = build_model(args.model.removeprefix("fresh:")) if args.model.startswith("fresh:") \
            else load_model(args.model)
    except (CheckpointError, ValueError) as e:
        p.error(f"--model: {e}")
    if not isinstance(model, EAPNet):
        p.error("--model: only EAPNet models are diagnosed")
    print("\n".join(report_lines(model, probe_batches(args.scenes, args.size))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
