"""Side-by-side preview of the real full-size challenge frame: medium LDR / radiance-merge base / model.

    python -m eapnet.preview --model standard --out docs/fullres_standard.png
    python -m eapnet.preview --model runs/x/last.pt --crop 560:860,640:1240 --out /tmp/preview.png

Prints the light ghosts of the base and the model (:func:`eapnet.rendering.light_ghosts`, stops). What the panels
show and how they are tone-mapped: :mod:`eapnet.rendering`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from eapnet.cli import Parser, add_overwrite, command
from eapnet import load_model
from eapnet.data import SHARED_SAMPLES
from eapnet.rendering import DEFAULT_CROP, parse_crop, render


def get_args_parser() -> argparse.ArgumentParser:
    p = Parser(prog="eapnet-preview", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="standard", help="shipped name or checkpoint path (default: standard)")
    p.add_argument("--data", type=Path, default=None,
                   help="NTIRE folder holding the frame (default: SHARED_SAMPLES/fullres_no_gt)")
    p.add_argument("--id", default="0000", help="sample id in that folder (default 0000)")
    p.add_argument("--crop", default=None, help="1:1 crop y0:y1,x0:x1 (default: the crowd below the stage)")
    p.add_argument("--out", type=Path, required=True, help="PNG file to write")
    add_overwrite(p, help="replace --out if it exists")
    return p


@command
def main(argv: list[str] | None = None) -> int:
    p = get_args_parser()
    args = p.parse_args(argv)

    try:
        crop = parse_crop(args.crop) if args.crop else DEFAULT_CROP
    except ValueError as e:
        p.error(f"--crop: {e}")
    if args.out.suffix.lower() != ".png":
        p.error(f"--out {args.out}: the preview is a .png file")
    if not args.out.parent.is_dir():
        p.error(f"--out {args.out}: folder {args.out.parent} does not exist")
    if args.out.exists() and not args.overwrite:
        p.error(f"--out {args.out} already exists; pass --overwrite to replace it, or choose another file")
    folder = args.data or SHARED_SAMPLES / "fullres_no_gt"
    if not folder.is_dir():
        p.error(f"--data {folder}: no such folder")
    model = load_model(args.model)
    _, ghosts = render(model, args.out, crop, folder, args.id, label=Path(args.model).stem)
    print(f"wrote {args.out}")
    print(f"light ghosts (stops off the medium frame where only the long frame is lit, beyond elsewhere; "
          f"0 = none): radiance merge {ghosts['base']:.2f}, "
          + (f"consistent merge (its base) {ghosts['own_base']:.2f}, " if "own_base" in ghosts else "")
          + f"model {ghosts['model']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
