"""Ship a training run's EMA weights into the package, with a model card.

    python -m eapnet.ship --run runs/cpu-standard --name standard
    python -m eapnet.ship --run runs/cpu-lightweight --name lightweight --heldout 16 --size 256

Reads the run's ``model.pt`` (or, for a run stopped early, ``last.pt``), writes ``eapnet/weights/<name>.pt``
(EMA weights, config, step and training config: a few MB) and its card ``eapnet/weights/<name>.md``, and the
preview of the real full-size frame ``docs/fullres_<name>.png``, after measuring the shipped model
(:func:`eapnet.shipping.ship`; what the card records: :mod:`eapnet.shipping`). Files shipped before under
``--name`` are replaced only with ``--overwrite``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from eapnet.checkpoint import CheckpointError, WEIGHTS_DIR, model_from_checkpoint, read_checkpoint
from eapnet.cli import Parser, add_overwrite, command, side_arg
from eapnet.shipping import DOCS_DIR, run_checkpoint, ship, shipped_files


def get_args_parser() -> argparse.ArgumentParser:
    p = Parser(prog="eapnet-ship", description=__doc__.split("\n")[0])
    p.add_argument("--run", type=Path, required=True, help="training run folder (eapnet.train --out)")
    p.add_argument("--name", required=True, choices=["standard", "lightweight"], help="shipped model name")
    p.add_argument("--heldout", type=int, default=16, help="held-out synthetic scenes for the card (default 16)")
    p.add_argument("--size", type=side_arg, default=256, metavar="N", help="held-out scene side, N or NxN (default 256)")
    p.add_argument("--hardware", default=None, help="training hardware for the card (default: this machine's CPU)")
    p.add_argument("--note", default="", help="extra remarks for the card (e.g. how the data differed)")
    p.add_argument("--weights-dir", type=Path, default=WEIGHTS_DIR, help="where to write (default: %(default)s)")
    p.add_argument("--preview-dir", type=Path, default=DOCS_DIR,
                   help="where the full-size frame's preview goes (default: %(default)s)")
    add_overwrite(p, help="replace the weights, card and preview of --name shipped before")
    return p


@command
def main(argv: list[str] | None = None) -> int:
    p = get_args_parser()
    args = p.parse_args(argv)

    src = run_checkpoint(args.run)
    try:
        ckpt = read_checkpoint(src)
    except CheckpointError as e:
        p.error(str(e))
    if not (args.run / "log.csv").is_file():
        p.error(f"{args.run} has no log.csv: not a training run folder")
    model = model_from_checkpoint(ckpt, ema=True)
    if getattr(model, "config", None) is None or model.config.name != args.name:
        p.error(f"{src} holds a {getattr(getattr(model, 'config', None), 'name', type(model).__name__)!r} model, "
                f"not {args.name!r}")
    if not args.weights_dir.is_dir():
        p.error(f"--weights-dir {args.weights_dir}: no such folder")
    taken = [f for f in shipped_files(args.name, args.weights_dir, args.preview_dir) if f.exists()]
    if taken and not args.overwrite:
        p.error(f"{taken[0]} already exists (shipped before); pass --overwrite to replace the {args.name} "
                "weights, card and preview")
    lines, out_pt, card = ship(model, ckpt, src, args.name, heldout=args.heldout, size=args.size,
                               hardware=args.hardware, note=args.note, weights_dir=args.weights_dir,
                               preview_dir=args.preview_dir)
    print("\n".join(lines))
    print(f"\nwrote {out_pt} ({out_pt.stat().st_size / 1e6:.1f} MB) and {card}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
