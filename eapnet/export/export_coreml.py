"""Export EAPNet to a Core ML .mlpackage (ML Program, iOS 17+).

    python -m eapnet.export.export_coreml --model standard                      # fp16, 1060x1900
    python -m eapnet.export.export_coreml --model lightweight --precision int8w --size 128x192 --out runs/cm
    python -m eapnet.export.export_coreml --model runs/x/int8-coreml.pt2        # w8a8 from a Core ML int8 program
    python -m eapnet.export.export_coreml --model standard --io app            # 8-bit images in, (H, W, 3) out
    eapnet-export-coreml --model standard

Writes ``<variant>[_app]_coreml_<precision>_<H>x<W>.mlpackage``, ``<same name>.manifest.json`` (how to feed it,
what comes out: ``eapnet.export.manifest``) and ``<same name>.run.json`` into ``--out`` (default
``runs/coreml-<time>``) and prints the package's op counts. The conversion, precisions, interface and metadata
of the package: :mod:`eapnet.export.coreml_export`.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from eapnet.compress.quantize import read_quantized_meta
from eapnet.cli import Parser, command, int_at_least, size_arg
from eapnet.evalsets import CALIBRATION_SCENES
from eapnet.memory import MemoryBudgetError, check_size, checkpoint_config
from eapnet.model import EAPNetConfig
from eapnet.export.common import DEFAULT_SIZE, IO, load_source
from eapnet.export.coreml_export import PRECISIONS, export_mlpackage, package_name
from eapnet.export.manifest import manifest_path
from eapnet.checkpoint import CheckpointError, SHIPPED
from eapnet.runs import OutputExistsError, make_run_dir, record_run
from eapnet.export.mil_interp import program_ops


def get_args_parser() -> argparse.ArgumentParser:
    p = Parser(prog="eapnet-export-coreml",
               description="Export EAPNet to a Core ML .mlpackage (ML Program, iOS 17+).")
    p.add_argument("--model", "--source", dest="source", required=True,
                   help="'standard', 'lightweight', a .pt checkpoint or a .pt2 int8 program (compress/qat.py)")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="fp16, int8w (int8 weights), w8a8 or fp32 (reference); default fp16, w8a8 for a .pt2")
    p.add_argument("--size", type=size_arg, default=DEFAULT_SIZE, metavar="HxW",
                   help=f"fixed input size in pixels (default {DEFAULT_SIZE[0]}x{DEFAULT_SIZE[1]})")
    p.add_argument("--io", choices=IO, default="float",
                   help="input/output convention: 'float' (ldrs (1, 3, 3, H, W) in [0, 1], evs (1, 3) -> hdr "
                        "(1, 3, H, W)) or 'app' (three 8-bit RGB images short/medium/long and evs (3,) -> hdr "
                        "(H, W, 3)); default float")
    p.add_argument("--calib-scenes", type=int_at_least(1), default=argparse.SUPPRESS,
                   help=f"eapnet.calib scenes for w8a8 post-training quantization of a float source "
                        f"(default {CALIBRATION_SCENES})")
    p.add_argument("--allow-large", action="store_true",
                   help="export even where the estimated memory of the export exceeds what this machine has free")
    p.add_argument("--out", default=None, help="output folder, may hold other artifacts (default runs/coreml-<time>)")
    p.add_argument("--overwrite", action="store_true", help="replace this artifact if --out already holds it")
    return p


@command
def main(argv: Sequence[str] | None = None) -> int:
    parser = get_args_parser()
    args = parser.parse_args(argv)

    if args.source not in SHIPPED and not Path(args.source).is_file():
        parser.error(f"--model {args.source!r}: neither one of {list(SHIPPED)} nor an existing file")
    int8_source = args.source.endswith(".pt2")
    precision = args.precision or ("w8a8" if int8_source else "fp16")
    if int8_source and precision != "w8a8":
        parser.error(f"--model {args.source} is an int8 program: only --precision w8a8 applies, not {precision}")
    if "calib_scenes" in vars(args) and (int8_source or precision != "w8a8"):
        parser.error("--calib-scenes sets the scenes of w8a8 PTQ of a float source: " +
                     (f"--model {args.source} is already int8" if int8_source else
                      "give --precision w8a8 too, or drop it"))
    args.calib_scenes = getattr(args, "calib_scenes", CALIBRATION_SCENES)
    if not args.allow_large:   # before any model is built or file written
        try:
            if int8_source:   # the float config it was quantized from, in the program's metadata
                meta = read_quantized_meta(args.source).get("config")
                config = EAPNetConfig.from_dict(meta) if meta else None
            else:
                config = checkpoint_config(args.source)
            check_size(config, args.size, "coreml")
        except MemoryBudgetError as e:
            parser.error(str(e))
        except (ValueError, OSError) as e:   # a damaged or foreign file: CheckpointError, ...
            parser.error(f"--model {args.source}: {e}")
    try:
        src = load_source(args.source)
    except (CheckpointError, ValueError, FileNotFoundError) as e:
        parser.error(f"--model {args.source}: {e}")
    # an artifact folder collects several exports: only this artifact must not exist yet
    run_dir = (make_run_dir(args.out, "coreml", tool="eapnet-export-coreml", overwrite=True) if args.out is None
               else Path(args.out))
    target = run_dir / package_name(src.variant, precision, args.size, args.io)
    if target.exists() and not args.overwrite:
        raise OutputExistsError(f"--out {run_dir} already holds {target.name}; pass --overwrite to replace it")
    run_dir.mkdir(parents=True, exist_ok=True)
    record_run(run_dir, {**vars(args), "precision": precision, "size": list(args.size)},
               name=f"{target.stem}.run.json")
    t = time.time()
    path = export_mlpackage(src, run_dir, precision=precision, size=args.size, io=args.io,
                            calib=args.calib_scenes if precision == "w8a8" else None)

    ops = program_ops(path)
    print(f"wrote {path} and {manifest_path(path).name} ({time.time() - t:.1f} s)")
    print("ops: " + ", ".join(f"{k} {v}" for k, v in sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
