"""Ship a training run's EMA weights into the package, with a model card.

    python -m eapnet.ship --run runs/cpu-standard --name standard
    python -m eapnet.ship --run runs/cpu-lightweight --name lightweight --heldout 16 --size 256

Reads the run's ``model.pt`` (or, for a run stopped early, ``last.pt``), keeps only the EMA weights, config,
step and training config (no optimizer: a few MB), writes ``eapnet/weights/<name>.pt`` and evaluates the
shipped model against the classical baselines on the held-out synthetic set and the real crops. The card
``eapnet/weights/<name>.md`` records data, steps, hardware, wall time, the metrics table and the exact
commands that produced the run.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import yaml

from eapnet.checkpoint import (CheckpointError, WEIGHTS_DIR, model_from_checkpoint, read_checkpoint,
                               save_checkpoint)
from eapnet.cpu import cpu_name
from eapnet.macs import count_maccs, count_params
from eapnet.runs import atomic_write_text


def wall_time_s(log_csv: Path) -> float:
    """Training wall time from ``log.csv``: its ``seconds`` column restarts at each resume, so sum segments."""
    total, seg = 0.0, 0.0
    with open(log_csv, newline="") as f:
        for row in csv.DictReader(f):
            if not row.get("seconds"):
                continue
            s = float(row["seconds"])
            if s < seg:  # a resumed segment began
                total += seg
            seg = s
    return total + seg


def _commands(run: Path) -> list[str]:
    """The recorded commands of the run and of each resume, in order."""
    recs = [run / "run.json", *sorted(run.glob("run-resume-*.json"), key=lambda p: int(p.stem.split("-")[-1]))]
    return [json.loads(r.read_text()).get("command", "(command not recorded)") for r in recs if r.is_file()]


def _run_commit(run: Path) -> str:
    rec = run / "run.json"
    return (json.loads(rec.read_text()).get("git_commit") or "unknown") if rec.is_file() else "unknown"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, required=True, help="training run folder (eapnet.train --out)")
    p.add_argument("--name", required=True, choices=["standard", "lightweight"], help="shipped model name")
    p.add_argument("--heldout", type=int, default=16, help="held-out synthetic scenes for the card (default 16)")
    p.add_argument("--size", type=int, default=256, help="held-out scene size (default 256)")
    p.add_argument("--hardware", default=None, help="training hardware for the card (default: this machine's CPU)")
    p.add_argument("--note", default="", help="extra remarks for the card (e.g. how the data differed)")
    p.add_argument("--weights-dir", type=Path, default=WEIGHTS_DIR, help="where to write (default: %(default)s)")
    args = p.parse_args(argv)
    src = args.run / "model.pt" if (args.run / "model.pt").is_file() else args.run / "last.pt"
    try:
        ckpt = read_checkpoint(src)
    except CheckpointError as e:
        p.error(str(e))
    if not (args.run / "log.csv").is_file():
        p.error(f"{args.run} has no log.csv: not a training run folder")
    cfg = ckpt["train_config"]
    model = model_from_checkpoint(ckpt, ema=True)
    if getattr(model, "config", None) is None or model.config.name != args.name:
        p.error(f"{src} holds a {getattr(getattr(model, 'config', None), 'name', type(model).__name__)!r} model, "
                f"not {args.name!r}")
    out_pt = args.weights_dir / f"{args.name}.pt"
    save_checkpoint(out_pt, model, step=ckpt["step"], train_config=cfg,
                    metrics={"source": str(src), **ckpt.get("metrics", {})}, with_rng=False)

    from eapnet.baselines import BASELINES
    from eapnet.evaluate import evaluate, heldout_synthetic, real_crops

    datasets = {"heldout_synthetic": heldout_synthetic(args.heldout, args.size)}
    crops = real_crops()
    if crops:
        datasets["real_crops"] = crops
    report = evaluate({args.name: model}, list(BASELINES), datasets, args.run / "ship_eval", save_outputs=False,
                      progress=True)
    hw = args.hardware or f"{cpu_name()}, {cfg.get('threads') or 'all'} thread(s), no GPU"
    wall = wall_time_s(args.run / "log.csv")
    maccs, params = count_maccs(model), count_params(model)
    lines = [
        f"# EAPNet {args.name}: shipped EMA weights", "",
        f"- File: `eapnet/weights/{args.name}.pt` (load with `eapnet.load_model({args.name!r})`).",
        f"- Model: {maccs / 1e9:.2f} GMAccs at 1900x1060 (NTIRE convention), {params / 1e3:.2f} k params.",
        f"- Data: synthetic bracketed triplets from `eapnet.data.synthetic` (seed {cfg['seed']}, a fresh scene "
        f"per sample), {cfg['patch']}x{cfg['patch']} patches, batch {cfg['batch_size']}; "
        f"{ckpt['step'] * cfg['batch_size']:,} samples seen. Never trained on the held-out seed or the real crops.",
        f"- Steps: {ckpt['step']:,} of the paper's 10,000,000 (lr {cfg['lr']}, warm-up {cfg['warmup_steps']}, "
        f"x{cfg['lr_decay']} every {cfg['lr_decay_every']:,}; EMA every {cfg['ema_every']} steps, decay "
        f"{cfg['ema_decay']}).",
        f"- Hardware: {hw}. Wall time: {wall / 3600:.2f} h.",
        f"- Source checkpoint: `{src}` at step {ckpt['step']}; code at commit {_run_commit(args.run)}.", "",
        "This is a short CPU run (no GPU was lent to the issue that trained it): the weights are far from "
        "converged and far below the paper's numbers; retrain with the command below on a GPU.", "",
        *([args.note, ""] if args.note else []),
        "## Commands", "", "```bash", *_commands(args.run),
        f"python -m eapnet.ship --run {args.run} --name {args.name} --heldout {args.heldout} --size {args.size}",
        "```", "", "Resolved training config (every key of `eapnet/configs/train.yaml`):", "", "```yaml",
        yaml.safe_dump(cfg, sort_keys=False).rstrip(), "```", "", "## Metrics (official PSNR-μ / PSNR-l, dB)", "",
    ]
    ds = list(report["results"])
    lines.append("| method | " + " | ".join(f"{d} PSNR-μ | {d} PSNR-l" for d in ds) + " |")
    lines.append("|---|" + "---:|" * (2 * len(ds)))
    for name in report["methods"]:
        cells = [f"{report['results'][d][name]['psnr_mu']:.2f} | {report['results'][d][name]['psnr_l']:.2f}"
                 for d in ds]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Margin in PSNR-μ over the best classical baseline (mean over scenes):", ""]
    for d, m in report["margins"][args.name].items():
        lines.append(f"- {d}: {m['margin_db']:+.2f} dB over {m['best_baseline']} "
                     f"({m['scenes_won']}/{m['scenes']} scenes won against every baseline)")
    card = args.weights_dir / f"{args.name}.md"
    atomic_write_text(card, "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nwrote {out_pt} ({out_pt.stat().st_size / 1e6:.1f} MB) and {card}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
