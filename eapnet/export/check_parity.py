"""Check exported .pte / .mlpackage files against their float model.

    python -m eapnet.export.check_parity runs/compress-100G/export/*.pte runs/compress-100G/export/*.mlpackage \\
        --out runs/compress-100G/parity
    eapnet-parity export/*.pte export/*.mlpackage --data calib --scenes 4 --no-write-back

Prints the Markdown report; ``--out DIR`` also writes ``parity.json``, ``parity.md`` and ``run.json``. The
measured summary is written back into each artifact (``.mlpackage`` metadata ``parity``, the ``.pte``'s sidecar
``.json``) unless ``--no-write-back``, naming the artifact's hash and the reference used. An artifact whose recorded
hash is not the file's, or a ``--model`` that is not the export's recorded source, is warned about loudly (see
:mod:`eapnet.export.parity`). Exit codes: 0 all pass, 1 a threshold is exceeded (or an artifact cannot
be run), 2 bad arguments or inputs. What is compared, on which scenes, and the thresholds:
:mod:`eapnet.export.parity`.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from eapnet.cli import Parser, add_overwrite, command, int_at_least, out_dir, threads_arg
from eapnet.inference import TILE_OVERLAP, resolve_device
from eapnet.export.canvas import DATASETS
from eapnet.export.native import CPUS, missing_tools
from eapnet.export.native_check import RUNNERS
from eapnet.export.parity import report_markdown, run_parity
from eapnet.checkpoint import SHIPPED
from eapnet.runs import atomic_write_json, atomic_write_text, record_run
from eapnet.export.backends import BACKENDS


def get_args_parser() -> argparse.ArgumentParser:
    p = Parser(prog="eapnet-parity",
               description="Check exported .pte / .mlpackage files against their float model.")
    p.add_argument("artifacts", nargs="+", help=".pte and/or .mlpackage paths")
    p.add_argument("--model", "--float", dest="float_spec", default=None,
                   help="float reference (shipped name or .pt); default: the export's recorded source (another "
                        "model is warned about and recorded as the reference in the stamp)")
    p.add_argument("--data", nargs="+", default=list(DATASETS), choices=DATASETS, help="datasets to compare on")
    p.add_argument("--scenes", type=int_at_least(1), default=8, help="at most this many scenes per dataset")
    p.add_argument("--all-exposures", action="store_true",
                   help="compare the first --scenes scenes of each dataset whatever their exposure values (each "
                        "extra exposure triple costs one full-size canvas per artifact); default: scenes that "
                        "share the most common triple")
    p.add_argument("--gutter", type=int_at_least(0), default=16, help="replicated-edge pixels around packed scenes")
    p.add_argument("--stitch", action="store_true",
                   help="the artifacts are tile programs: also run each one tiled over the full-size frame and "
                        "check the stitched output against the float model over the same tiles")
    p.add_argument("--tile-overlap", type=int_at_least(0), default=None,
                   help=f"pixels shared by neighbouring tiles with --stitch (default {TILE_OVERLAP})")
    p.add_argument("--runner", nargs="+", choices=RUNNERS, default=[],
                   help="also run each .pte through the native runner: native (built for this machine), aarch64 "
                        "(cross-built, under QEMU for each --cpus family); a difference from the Python runtime "
                        "beyond float rounding fails (scripts/setup_native.sh installs the aarch64 tools)")
    p.add_argument("--cpus", nargs="+", choices=CPUS, default=None,
                   help=f"aarch64 kernel families for --runner aarch64 (default all: {' '.join(CPUS)})")
    p.add_argument("--device", default="auto", help="device of the float model: auto (cuda if present), cpu, cuda")
    p.add_argument("--threads", type=threads_arg, default=None, help="XNNPACK threads for .pte files")
    p.add_argument("--out", "--report", dest="out", default=None, help="folder for parity.json, parity.md and run.json")
    add_overwrite(p)
    p.add_argument("--no-write-back", action="store_true", help="do not record the result in the artifacts")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse, through ``p.error`` (one line, exit 2), what would otherwise fail late or be ignored: an artifact
    neither ``.pte`` nor ``.mlpackage``, a ``--model`` that is not a float reference (a shipped name or an
    existing ``.pt``: judged by name, nothing is loaded), flags that apply to nothing asked for. Missing
    artifacts: :func:`main`, after ``--out`` (whose refusal comes first)."""

    try:
        resolve_device(args.device)
    except ValueError as e:
        p.error(f"--device: {e}")
    suffixes = tuple(b.suffix for b in BACKENDS.values())
    seen: dict[Path, str] = {}
    for a in args.artifacts:
        if Path(a).suffix not in suffixes:
            p.error(f"{a}: not an exported artifact (want one of {', '.join(suffixes)})")
        if Path(a).resolve() in seen:   # checked twice, and its stamp written twice
            p.error(f"{a}: given twice (also as {seen[Path(a).resolve()]})")
        seen[Path(a).resolve()] = a
    spec = args.float_spec
    if spec is not None and spec not in SHIPPED:
        if Path(spec).suffix != ".pt":
            p.error(f"--model {spec}: the reference must be a float model, one of {', '.join(SHIPPED)} or a .pt "
                    f"checkpoint" + (" (a .pt2 is an int8 program)" if spec.endswith(".pt2") else ""))
        if not Path(spec).is_file():
            p.error(f"--model {spec}: no such file")
    if args.tile_overlap is not None and not args.stitch:
        p.error("--tile-overlap sets the overlap of --stitch: give --stitch too, or drop it")
    if args.cpus is not None and "aarch64" not in args.runner:
        p.error("--cpus picks the CPUs of --runner aarch64: give --runner aarch64 too, or drop it")
    if args.runner and not any(Path(a).suffix == ".pte" for a in args.artifacts):
        p.error("--runner runs .pte files through the native runner: none among the artifacts")
    for runner in args.runner:
        missing = missing_tools("host" if runner == "native" else "aarch64")
        if missing:
            p.error(f"--runner {runner}: {missing}")
    args.cpus = list(CPUS) if args.cpus is None else args.cpus
    if args.threads is not None and not any(Path(a).suffix == ".pte" for a in args.artifacts):
        p.error("--threads sets XNNPACK's threads for .pte files: none among the artifacts")
    args.tile_overlap = TILE_OVERLAP if args.tile_overlap is None else args.tile_overlap


@command
def main(argv: Sequence[str] | None = None) -> int:
    p = get_args_parser()
    args = p.parse_args(argv)
    _check_args(p, args)
    out = out_dir(p, args, "parity") if args.out else None   # before the comparison: a bad --out fails now
    missing = [a for a in args.artifacts if not Path(a).exists()]
    if missing:
        p.error(f"{missing[0]}: no such artifact" + (f" ({len(missing)} missing)" if len(missing) > 1 else ""))
    rep = run_parity(args.artifacts, float_spec=args.float_spec, datasets=args.data, limit=args.scenes,
                     gutter=args.gutter, device=args.device, threads=args.threads,
                     write_back=not args.no_write_back, progress=not args.quiet,
                     shared_exposures=not args.all_exposures, stitch=args.stitch,
                     tile_overlap=args.tile_overlap, runners=args.runner, cpus=args.cpus)
    md = report_markdown(rep)
    if out is not None:
        record_run(out, vars(args))
        atomic_write_json(out / "parity.json", rep)
        atomic_write_text(out / "parity.md", md)
    print(md)
    if not rep["passed"]:
        print("error: parity failed for " + ", ".join(r["artifact"] for r in rep["artifacts"] if not r["passed"]),
              file=sys.stderr)
    return 0 if rep["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
