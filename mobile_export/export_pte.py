"""ExecuTorch export: EAPNet -> ``.pte`` for the XNNPACK backend (phone CPUs), fp32 or int8, fully delegated.

    python -m mobile_export.export_pte --model standard                    # fp32, 1060x1900
    python -m mobile_export.export_pte --model standard --precision int8   # PTQ on calib_data
    python -m mobile_export.export_pte --model runs/compress-100G-x/int8.pt2 --size 512x768
    eapnet-export-pte --model standard

Writes ``<variant>_xnnpack_<precision>_<H>x<W>.pte``, its sidecar ``.json`` and ``<same name>.run.json`` into
``--out`` (default ``runs/executorch-<time>``), then runs the program once in ExecuTorch's runtime and prints
its largest difference from the source model. The export itself, the delegation rewrites and the runtime:
:mod:`mobile_export.executorch_export`.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

from compress.quantize import read_quantized_meta
from eapnet.cli import Parser, command, int_at_least, size_arg, threads_arg
from eapnet.evalsets import CALIBRATION_SCENES, calibration_batches
from eapnet.memory import MemoryBudgetError, check_size, checkpoint_config
from eapnet.model import EAPNetConfig
from mobile_export.common import DEFAULT_SIZE, artifact_name, example_inputs, load_source
from mobile_export.executorch_export import (
    BACKEND,
    PRECISIONS,
    DelegationError,
    export_pte,
    ptq_source,
    run_pte,
)
from eapnet.checkpoint import SHIPPED
from eapnet.runs import OutputExistsError, atomic_write_json, make_run_dir, record_run


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
    p.add_argument("--allow-large", action="store_true",
                   help="export even where the estimated memory of the export exceeds what this machine has free")
    p.add_argument("--calib-scenes", type=int_at_least(1), default=argparse.SUPPRESS,
                   help=f"calibration scenes for int8 PTQ of a float source (default: {CALIBRATION_SCENES})")
    p.add_argument("--threads", type=threads_arg, default=None,
                   help="XNNPACK threads for the runtime check (default: ExecuTorch's, one per core)")
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
        target = out / artifact_name(source.variant, BACKEND, precision, args.size, "pte")
        if target.exists() and not args.overwrite:
            raise OutputExistsError(f"--out {out} already holds {target.name}; pass --overwrite to replace it")
        out.mkdir(parents=True, exist_ok=True)
        resolved = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()}
        argv = sys.argv[1:] if argv is None else list(argv)
        record_run(out, resolved, name=f"{target.stem}.run.json",
                   command=shlex.join(["python", "-m", "mobile_export.export_pte", *argv]))
        reference = source
        if source.precision == "fp32" and precision == "int8":
            reference = ptq_source(source, calibration_batches(limit=args.calib_scenes))   # the Q/DQ program to match
        path = export_pte(reference, out, size=args.size, precision=precision,
                          allow_partial=args.allow_partial)
    except DelegationError as e:   # the model is not exportable as asked: bad input, not a crash
        raise ValueError(str(e)) from e
    export_s = time.time() - t0

    ldrs, evs = example_inputs(args.size, seed=1)   # not the tracing input
    t = time.time()
    got = run_pte(path, ldrs, evs, threads=args.threads)
    run_s = time.time() - t
    with torch.no_grad():
        diffs = {"vs_source": (got - source.module(ldrs, evs)).abs().max().item()}
        if reference is not source:
            diffs["vs_qdq_reference"] = (got - reference.module(ldrs, evs)).abs().max().item()
    sidecar = path.with_suffix(".json")
    summary = {**json.loads(sidecar.read_text()), "export_s": export_s, "runtime_forward_s": run_s,
               "runtime_threads": args.threads, "max_abs_diff": diffs, "file_mb": path.stat().st_size / 2**20}
    atomic_write_json(sidecar, summary)
    d = summary["delegation"]
    print(f"wrote {path} ({summary['file_mb']:.2f} MB) in {export_s:.0f} s")
    print(f"delegation: {d['delegated_nodes']} nodes in {d['delegated_subgraphs']} XNNPACK subgraph(s), "
          f"{d['non_delegated_nodes']} compute nodes outside" +
          (": " + ", ".join(x["op"] for x in d["non_delegated"]) if d["non_delegated"] else ""))
    print(f"runtime forward {run_s:.2f} s; max abs diff of the runtime output " +
          ", ".join(f"{k.replace('_', ' ')} {v:.3g}" for k, v in diffs.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
