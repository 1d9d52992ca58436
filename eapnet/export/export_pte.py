"""ExecuTorch export: EAPNet -> ``.pte`` for the XNNPACK backend (phone CPUs), fp32 or int8, fully delegated.

    python -m eapnet.export.export_pte --model standard                    # fp32, 1060x1900
    python -m eapnet.export.export_pte --model standard --precision int8   # PTQ on eapnet.calib
    python -m eapnet.export.export_pte --model runs/compress-100G-x/int8.pt2 --size 512x768
    eapnet-export-pte --model standard

    python -m eapnet.export.export_pte --model standard --io app          # uint8 frames in, (H, W, 3) out

Writes ``<variant>_xnnpack_<precision>_<H>x<W>.pte`` (``<variant>_app_...`` with ``--io app``), its sidecar
``.json`` and ``<same name>.run.json`` into ``--out`` (default ``runs/executorch-<time>``) and prints what the
export measured: delegation, and its self-check (the program run once in ExecuTorch's runtime against the
source model, or the Q/DQ reference of an int8 one; a program that fails it is not kept). The export itself,
the delegation rewrites, the self-check and the runtime: :mod:`eapnet.export.executorch_export`.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from eapnet.compress.quantize import read_quantized_meta
from eapnet.cli import Parser, command, int_at_least, size_arg, threads_arg
from eapnet.evalsets import CALIBRATION_SCENES, calibration_batches
from eapnet.memory import MemoryBudgetError, check_size, checkpoint_config
from eapnet.model import EAPNetConfig
from eapnet.export.common import DEFAULT_SIZE, IO, artifact_name, load_source
from eapnet.export.executorch_export import (
    BACKEND,
    PRECISIONS,
    DelegationError,
    export_pte,
    ptq_source,
)
from eapnet.checkpoint import SHIPPED
from eapnet.runs import OutputExistsError, make_run_dir, record_run


def get_args_parser() -> argparse.ArgumentParser:
    p = Parser(prog="eapnet-export-pte",
               description=__doc__.split("\n\n")[0],
               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", "--source", dest="source", required=True,
                   help="'standard', 'lightweight', a float checkpoint (.pt) or a compress/qat.py int8 program (.pt2)")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="default: the source's own (fp32 for a float model, int8 for a .pt2); int8 with a float "
                        "source runs PTQ on the shipped calibration set")
    p.add_argument("--size", type=size_arg, default=DEFAULT_SIZE, help="HxW of the program's fixed input, pixels")
    p.add_argument("--io", choices=IO, default="float",
                   help="input/output convention: 'float' ldrs (1, 3, 3, H, W) in [0, 1] and evs (1, 3) -> hdr "
                        "(1, 3, H, W); 'app' uint8 frames (3, H, W, 3) and evs (3,) -> hdr (H, W, 3)")
    p.add_argument("--allow-large", action="store_true",
                   help="export even where the estimated memory of the export exceeds what this machine has free")
    p.add_argument("--calib-scenes", type=int_at_least(1), default=argparse.SUPPRESS,
                   help=f"calibration scenes for int8 PTQ of a float source (default: {CALIBRATION_SCENES})")
    p.add_argument("--no-fallback", action="store_true",
                   help="int8 PTQ of a float source: quantize every layer group, even where the int8 model loses "
                        "more than 0.35 dB PSNR-mu against ground truth on the calibration scenes (by default the "
                        "fewest layer groups that bring it within that stay float; the sidecar names them)")
    p.add_argument("--threads", type=threads_arg, default=None,
                   help="XNNPACK threads for the export's self-check run (default: ExecuTorch's, one per core)")
    p.add_argument("--allow-partial", action="store_true",
                   help="write the .pte even if some ops stay outside the XNNPACK delegate")
    p.add_argument("--out", default=None, help="output folder, may hold other artifacts (default runs/executorch-<time>)")
    p.add_argument("--overwrite", action="store_true", help="replace this artifact if --out already holds it")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    p = get_args_parser()
    a = p.parse_args(argv)
    src = str(a.source)

    if src not in SHIPPED:
        if not src.endswith((".pt", ".pt2")):
            p.error(f"--model must be one of {SHIPPED} or a .pt / .pt2 file, got {src!r}")
        if not Path(src).is_file():
            p.error(f"--model {src}: no such file")
    int8_source = src.endswith(".pt2")
    if int8_source and a.precision == "fp32":
        p.error(f"--model {src} is an int8 program: --precision fp32 needs its float checkpoint (.pt)")
    if "calib_scenes" in vars(a) and (int8_source or a.precision != "int8"):
        p.error("--calib-scenes sets the scenes of int8 PTQ of a float source: " +
                (f"--model {src} is already int8" if int8_source else "give --precision int8 too, or drop it"))
    if a.no_fallback and (int8_source or a.precision != "int8"):
        p.error("--no-fallback concerns int8 PTQ of a float source: " +
                (f"--model {src} is already int8" if int8_source else "give --precision int8 too, or drop it"))
    a.calib_scenes = getattr(a, "calib_scenes", CALIBRATION_SCENES)
    if not a.allow_large:   # before any model is built or file written
        try:
            if int8_source:   # the float config it was quantized from, in the program's metadata
                meta = read_quantized_meta(src).get("config")
                config = EAPNetConfig.from_dict(meta) if meta else None
            else:
                config = checkpoint_config(src)
            check_size(config, a.size, f"pte-{a.precision or ('int8' if int8_source else 'fp32')}")
        except MemoryBudgetError as e:
            p.error(str(e))
        except (ValueError, OSError) as e:   # a damaged or foreign file: CheckpointError, ...
            p.error(f"--model {src}: {e}")
    return a


@command
def main(argv=None) -> int:
    args = parse_args(argv)

    t0 = time.time()
    try:
        source = load_source(args.source)
        precision = args.precision or source.precision
        # an artifact folder collects several exports: only this artifact must not exist yet
        out = (make_run_dir(args.out, "executorch", tool="eapnet-export-pte", overwrite=True) if args.out is None
               else Path(args.out))
        target = out / artifact_name(source.variant, BACKEND, precision, args.size, "pte", args.io)
        if target.exists() and not args.overwrite:
            raise OutputExistsError(f"--out {out} already holds {target.name}; pass --overwrite to replace it")
        out.mkdir(parents=True, exist_ok=True)
        resolved = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()}
        argv = sys.argv[1:] if argv is None else list(argv)
        record_run(out, resolved, name=f"{target.stem}.run.json",
                   command=shlex.join(["python", "-m", "eapnet.export.export_pte", *argv]))
        if source.precision == "fp32" and precision == "int8":
            source = ptq_source(source, calibration_batches(limit=args.calib_scenes),   # the Q/DQ program to match
                                fallback=not args.no_fallback)
        path = export_pte(source, out, size=args.size, precision=precision, io=args.io,
                          allow_partial=args.allow_partial, threads=args.threads)
    except DelegationError as e:   # the model is not exportable as asked: bad input, not a crash
        raise ValueError(str(e)) from e

    summary = json.loads(path.with_suffix(".json").read_text())
    d, c = summary["delegation"], summary["self_check"]
    if summary.get("fallback"):
        fb = summary["fallback"]
        print(f"int8: {', '.join(fb['float_groups']) or 'every layer group'} "
              + ("kept in float" if fb["float_groups"] else "in int8")
              + f"; {fb['drop']:.2f} dB lost against ground truth on the calibration scenes (all int8 "
              f"{fb['drop_all_int8']:.2f}, target {fb['target']:g})" + ("" if fb["met"] else ": target NOT met"))
    print(f"wrote {path} ({summary['file_mb']:.2f} MB) in {time.time() - t0:.0f} s")
    print(f"delegation: {d['delegated_nodes']} nodes in {d['delegated_subgraphs']} XNNPACK subgraph(s), "
          f"{d['non_delegated_nodes']} compute nodes outside" +
          (": " + ", ".join(x["op"] for x in d["non_delegated"]) if d["non_delegated"] else ""))
    print(f"self-check ({c['inputs']} inputs, runtime forward {c['forward_s']:.2f} s): max abs diff "
          f"{c['max_abs']:.3g} from the {c['against']}, bound {c['bound']:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
