"""Smoke run of what exists: build both variants, count their MAccs, run them on real challenge samples.

    python -m eapnet.smoke                      # defaults: ../shared/data/ntire_samples, runs/smoke-<time>
    python -m eapnet.smoke --no-full-res --out runs/quick

Without the shared samples (a machine that lacks ``../shared``) it runs on held-out synthetic scenes.
The models are the shipped trained weights (``eapnet/weights/``, see their model cards); a variant with no
shipped weights runs freshly initialised (seed fixed), and the report says which. Writes ``report.md``, ``report.json``, ``run.json`` and tone-mapped previews into the run folder.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from eapnet.cli import Parser, add_overwrite, command, out_dir
from eapnet import build_model, count_maccs, count_params, load_model
from eapnet.checkpoint import read_checkpoint, shipped_path
from eapnet.data import SHARED_SAMPLES, NtireSource, SyntheticSource, list_ntire_ids
from eapnet.data.synthetic import HELDOUT_SEED, scene_seed
from eapnet.metrics import psnr_l, psnr_mu
from eapnet.runs import atomic_path, atomic_write_json, atomic_write_text, record_run
from eapnet.outputs import tonemap_preview  # the one preview writer
from eapnet.inference import predict
from eapnet.variants import ROWS

DEFAULT_DATA = SHARED_SAMPLES


def get_args_parser() -> argparse.ArgumentParser:
    p = Parser(prog="eapnet-smoke", description="Build both EAPNet variants, count MAccs, run them on real samples.")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA,
                   help="folder with crops256/ and fullres_no_gt/ (NTIRE layout); default: %(default)s")
    p.add_argument("--out", type=Path, default=None, help="output folder (default runs/smoke-<time>)")
    add_overwrite(p)
    p.add_argument("--variants", nargs="+", default=["standard", "lightweight"],
                   choices=["standard", "lightweight"], help="variants to run")
    p.add_argument("--no-full-res", dest="full_res", action="store_false",
                   help="skip the 1900x1060 inference (it takes tens of seconds per variant on 2 cores)")
    p.add_argument("--seed", type=int, default=0, help="initialisation seed of the untrained models")
    return p


@command
def main(argv: list[str] | None = None) -> int:
    p = get_args_parser()
    args = p.parse_args(argv)
    out_dir(p, args, "smoke", create=False)

    crops, full = args.data / "crops256", args.data / "fullres_no_gt"
    if crops.is_dir():
        source = f"real NTIRE samples in {args.data}"
        scenes = [NtireSource(crops, i).load() for i in list_ntire_ids(crops)]
        full_res = [NtireSource(full, i) for i in list_ntire_ids(full)] if full.is_dir() else []
    elif args.data == DEFAULT_DATA:
        # A machine without the shared samples still gets a full run, on held-out synthetic scenes.
        source = f"held-out synthetic scenes (no real samples at {args.data})"
        print(f"note: {args.data} not found; using {source}")
        scenes = [SyntheticSource(scene_seed(HELDOUT_SEED, i), 256, 256, id=f"syn{i}").load() for i in range(4)]
        full_res = [SyntheticSource(scene_seed(HELDOUT_SEED, 100), 1060, 1900, id="syn_full")]
    else:
        p.error(f"--data {args.data}: no crops256/ folder with real samples there")
    run_dir = out_dir(p, args, "smoke")
    record_run(run_dir, {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()})

    rows = {r.key: r for r in ROWS}
    report: dict = {"weights": {},
                    "data": source, "variants": {}, "crops": {}, "full_res": {}}
    report["crops"]["reference_frame"] = {
        s.id: {"psnr_mu": psnr_mu(s.gt, s.ldrs[1]), "psnr_l": psnr_l(s.gt, s.ldrs[1])} for s in scenes}

    for name in tqdm(args.variants, desc="variants", unit="model"):
        if shipped_path(name).is_file():
            model = load_model(name)
            report["weights"][name] = f"shipped ({shipped_path(name).name}, step {read_checkpoint(shipped_path(name))['step']})"
        else:
            torch.manual_seed(args.seed)
            model = build_model(name).eval()
            report["weights"][name] = f"untrained (no shipped weights; random init, seed {args.seed})"
        maccs, params = count_maccs(model), count_params(model)
        report["variants"][name] = {"maccs": maccs, "params": params, "paper_gmaccs": rows[name].paper_gmaccs,
                                    "paper_kparams": rows[name].paper_kparams}
        per = {}
        for s in tqdm(scenes, desc=f"{name} crops", leave=False):
            hdr = predict(model, s.ldrs, s.evs)
            per[s.id] = {"psnr_mu": psnr_mu(s.gt, hdr), "psnr_l": psnr_l(s.gt, hdr)}
        report["crops"][name] = per
        if args.full_res:
            for src in full_res:
                frame = src.load()
                t0 = time.perf_counter()
                hdr = predict(model, frame.ldrs, frame.evs)
                dt = time.perf_counter() - t0
                report["full_res"][f"{name}/{frame.id}"] = {"size": list(hdr.shape[:2]), "seconds_cpu": dt,
                                                     "threads": torch.get_num_threads()}
                with atomic_path(run_dir / f"{name}_{frame.id}_preview.png") as tmp:
                    cv2.imwrite(str(tmp), cv2.cvtColor(tonemap_preview(hdr), cv2.COLOR_RGB2BGR))

    atomic_write_json(run_dir / "report.json", report)
    atomic_write_text(run_dir / "report.md", _markdown(report))
    print(_markdown(report))
    print(f"\nwritten to {run_dir}")
    return 0


def _markdown(r: dict) -> str:
    weights = "; ".join(f"{k}: {v}" for k, v in r["weights"].items())
    out = ["# Smoke run", "", f"Weights: {weights}.", "", f"Data: {r['data']}.", "",
           "| variant | GMAccs @1900x1060 | paper | k params | paper |", "|---|---:|---:|---:|---:|"]
    for n, v in r["variants"].items():
        out.append(f"| {n} | {v['maccs'] / 1e9:.2f} | {v['paper_gmaccs']:.2f} | {v['params'] / 1e3:.2f} | "
                   f"{v['paper_kparams']:.2f} |")
    out += ["", "PSNR on the 256x256 scenes with ground truth (dB; mean over scenes):", "",
            "| output | PSNR-mu | PSNR-l |", "|---|---:|---:|"]
    for n, per in r["crops"].items():
        mu = np.mean([s["psnr_mu"] for s in per.values()])
        lin = np.mean([s["psnr_l"] for s in per.values()])
        out.append(f"| {n} | {mu:.2f} | {lin:.2f} |")
    if r["full_res"]:
        out += ["", "| full-resolution run | size | seconds (CPU) |", "|---|---|---:|"]
        for k, v in r["full_res"].items():
            out.append(f"| {k} | {v['size'][1]}x{v['size'][0]} | {v['seconds_cpu']:.1f} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
