"""Compress EAPNet to a MAcc budget and ship it: prune, distil, int8 QAT, phone artifacts, parity.

    python compress/qat.py --target-maccs 100G          # shipped standard model -> runs/compress-100G-<time>/
    eapnet-compress --target-maccs 80G --model lightweight --steps 600 200 --compare-uniform

Compression (search, prune, distilled fine-tune, QAT, evaluation) is :func:`eapnet.compress.pipeline.compress`; the
four phone artifacts (``.pte`` fp32 / int8, ``.mlpackage`` fp16 / W8A8 at ``--export-size``, by default the tile
program an app runs a ``--size`` frame in: 568x680 for 1060x1900) and their parity check against the compressed
float model, on canvases and stitched over the full-size frame, are :func:`eapnet.export.pipeline.export_and_check`; both run in
:func:`eapnet.jobs.main_job.compress_and_ship`. Defaults are ``eapnet/compress/configs/compress.yaml``: every key is
also a flag (``--config`` reads another YAML of those keys).

Outputs in one folder: ``compressed.pt`` (``eapnet.load_model`` reads it), ``int8.pt2``
(``eapnet.compress.quantize.load_quantized``), ``export/``, ``parity/``, ``report.json``, ``report.md`` and
``run.json`` (resolved arguments, versions). Exit status: 0 when every artifact passes parity, 1 when one
drifts, 2 for a bad argument or an unreachable budget (the message names the smallest reachable network).
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from eapnet.compress.pipeline import add_config_args, config_from_args
from eapnet.cli import Parser, add_overwrite, command, int_at_least, size_arg
from eapnet.inference import TILE_OVERLAP, resolve_device, ship_tile
from eapnet.macs import FRAME_SIZE
from eapnet.memory import MemoryBudgetError, check_size, checkpoint_config
from eapnet.export import native
from eapnet.export.pipeline import ARTIFACTS
from eapnet.jobs.main_job import compress_and_ship, report_markdown
from eapnet.cpu import keep_freed_memory
from eapnet.runs import make_run_dir, record_run


ARM_TILE = 256
"""Tile size (pixels) of the programs ``--arm`` runs under QEMU when ``--tile`` is not given."""


def _artifacts_arg(text: str) -> tuple[str, ...]:
    """``pte-int8,coreml-w8a8`` -> the artifact keys in export order; unknown or empty names fail."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in ARTIFACTS]
    if not names or bad:
        raise argparse.ArgumentTypeError(f"{text!r}: choose one or more of {','.join(ARTIFACTS)}")
    return tuple(a for a in ARTIFACTS if a in names)


def get_args_parser() -> argparse.ArgumentParser:
    p = Parser(description=__doc__.split("\n\n")[0], epilog=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p)
    p.add_argument("--export-size", type=size_arg, default=None,
                   help="HxW of the exported .pte / .mlpackage programs (default: the fewest tiles of at most 680 "
                        "pixels a side that cover a --size frame, 568x680 for 1060x1900; --export-size 1060x1900 "
                        "ships whole-frame programs, which need several times the memory here and on the phone)")
    p.add_argument("--allow-large", action="store_true",
                   help="run even where the estimated memory of the export and parity stage exceeds what this "
                        "machine has free")
    p.add_argument("--no-export", action="store_true", help="stop after evaluation: no phone artifacts, no parity")
    p.add_argument("--artifacts", type=_artifacts_arg, default=None, metavar="LIST",
                   help=f"comma-separated phone artifacts to export and check (default: all of {','.join(ARTIFACTS)})")
    p.add_argument("--tile", type=int_at_least(16), default=None, metavar="N",
                   help="also export the artifacts at NxN, for apps that run a frame in tiles, and check them "
                        "stitched over the full-size frame (multiple of 8)")
    p.add_argument("--tile-overlap", type=int_at_least(0), default=None, metavar="PX",
                   help=f"pixels shared by neighbouring tiles in that check (default {TILE_OVERLAP})")
    p.add_argument("--arm", action="store_true",
                   help="also run every .pte through the native runner on this machine and, cross-built for "
                        "aarch64, under QEMU on four ARM kernel families (cortex-a53, cortex-a76, neoverse-n2, max); "
                        "a difference from the Python runtime beyond float rounding fails parity "
                        "(needs scripts/setup_native.sh; ./run.sh --arm runs it). Under QEMU only the tile programs "
                        f"run (a full-size frame takes minutes per CPU): --arm exports them at --tile, default {ARM_TILE}")
    p.add_argument("--no-fallback", action="store_true",
                   help="keep an int8 artifact that fails parity, or passes with less than 0.1 dB of its ground-truth "
                        "budget to spare, as it is (by default it is exported again with the fewest layer groups in "
                        "float that the calibration scenes need; report.md names them)")
    p.add_argument("--parity-scenes", type=int_at_least(1), default=None,
                   help="scenes per dataset in the parity check of the exported artifacts (default 4)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default runs/compress-<budget>-<time>)")
    add_overwrite(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def parse_args(argv=None):
    """``(namespace, CompressConfig)``; bad values exit 2 with the flag named."""
    p = get_args_parser()
    args = p.parse_args(argv)
    export_flags = {"--export-size": args.export_size, "--artifacts": args.artifacts, "--tile": args.tile,
                    "--tile-overlap": args.tile_overlap, "--parity-scenes": args.parity_scenes,
                    "--arm": args.arm or None, "--no-fallback": args.no_fallback or None}
    given = [flag for flag, value in export_flags.items() if value is not None]
    if args.no_export and given:
        p.error(f"--no-export makes no phone artifacts and checks none: {', '.join(given)} would be ignored")
    if args.tile_overlap is not None and args.tile is None:
        p.error("--tile-overlap sets the overlap of the --tile check: give --tile N too, or drop it")
    args.artifacts = args.artifacts or ARTIFACTS
    args.tile_overlap = TILE_OVERLAP if args.tile_overlap is None else args.tile_overlap
    args.parity_scenes = 4 if args.parity_scenes is None else args.parity_scenes
    if args.tile is not None and args.tile % 8:
        p.error(f"--tile {args.tile}: must be a multiple of 8 (EAPNet's padding multiple)")
    if args.tile is not None and not args.tile_overlap < args.tile // 2:
        p.error(f"--tile-overlap {args.tile_overlap}: must be below half the tile ({args.tile // 2})")
    if args.arm:
        missing = native.missing_tools("aarch64")
        if missing:
            p.error(f"--arm: {missing}")
        args.tile = ARM_TILE if args.tile is None else args.tile
    cfg = config_from_args(p, args)
    if not args.no_export:
        _check_export(p, args, cfg)
    return args, cfg


def _check_export(p: argparse.ArgumentParser, args: argparse.Namespace, cfg) -> None:
    """The export stage's sizes, before any compression work: a ``--tile`` that does not fit the full-size
    frame its stitched check runs over, and (unless ``--allow-large``) an export stage whose estimated memory
    (``eapnet.memory``, from the input model's config: the compressed one is narrower) exceeds what this machine
    has available at ``--export-size``."""
    h, w = FRAME_SIZE
    if args.tile is not None and args.tile > min(h, w):
        p.error(f"--tile {args.tile}: larger than the {h}x{w} full-size frame its stitched check runs over "
                f"(at most {min(h, w)})")
    if args.allow_large:
        return
    try:
        config = checkpoint_config(cfg.model)
    except ValueError as e:   # CheckpointError: missing, damaged, foreign or insane file
        p.error(f"--model {cfg.model}: {e}")
    try:
        check_size(config, args.export_size or ship_tile(cfg.size), "ship",
                   flag="--export-size" if args.export_size else "the default --export-size")
    except MemoryBudgetError as e:
        p.error(str(e))


@command
def main(argv=None) -> int:
    args, cfg = parse_args(argv)
    if resolve_device(cfg.device).type == "cpu":
        keep_freed_memory()  # a process-wide malloc setting: no page faults on each step's activations (eapnet/cpu.py)
    run_dir = make_run_dir(args.out, f"compress-{cfg.target_maccs / 1e9:g}G", tool="eapnet-compress",
                           overwrite=args.overwrite, inputs=[cfg.model, cfg.data, cfg.calib])
    record_run(run_dir, {**cfg.to_dict(), "export_size": list(args.export_size or ship_tile(cfg.size)),
                         "no_export": args.no_export, "artifacts": list(args.artifacts),
                         "parity_scenes": args.parity_scenes, "tile": args.tile, "tile_overlap": args.tile_overlap,
                         "arm": args.arm, "fallback": not args.no_fallback,
                         "out": str(run_dir)})
    command = shlex.join(["python", "compress/qat.py", *(argv if argv is not None else sys.argv[1:])])
    report = compress_and_ship(cfg, run_dir, export_size=args.export_size, parity_scenes=args.parity_scenes,
                               export=not args.no_export, artifacts=args.artifacts, tile=args.tile,
                               tile_overlap=args.tile_overlap, runners=("native", "aarch64") if args.arm else (),
                               fallback=not args.no_fallback,
                               command=command, progress=not args.quiet)
    print(report_markdown(report))
    exported = report["export"]
    if exported is not None and not exported["passed"]:
        print(f"error: parity failed for {', '.join(exported['failed'])}; see {run_dir / 'parity' / 'parity.md'}",
              file=sys.stderr)
        return 1
    print(f"done: {run_dir / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
