"""Tabulate short training runs side by side: the recipe ablation table.

    python scripts/recipe_table.py runs/ablate/* --out reports/recipe/recipe.md

For each run folder (``eapnet.train --out``): the training keys that differ between the runs, the EMA
model's held-out and real-crop PSNR-μ at every validation step they share, the mean training loss over the
last 10 logged steps, and the largest dead-ReLU share of any module group at the end (``health.csv``).
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from eapnet.cli import Parser

IGNORED = {"out", "resume", "val_every", "ckpt_every", "log_every", "health_every", "threads", "num_workers",
           "device"}


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def load_run(run: Path) -> dict:
    from eapnet.training import load_config

    # keys added to the recipe after a run started take their defaults, as a resume would
    args = {**load_config(None), **json.loads((run / "run.json").read_text())["args"]}
    log = _rows(run / "log.csv")
    val = {int(r["step"]): (float(r["val_psnr_mu"]), float(r["real_psnr_mu"]) if r.get("real_psnr_mu") else None)
           for r in log if r.get("val_psnr_mu")}
    losses = [float(r["loss"]) for r in log if r.get("loss")]
    dead = None
    if (run / "health.csv").is_file():
        last = _rows(run / "health.csv")[-1]
        dead = max(((k.removeprefix("dead:"), float(v)) for k, v in last.items() if k.startswith("dead:") and v),
                   key=lambda kv: kv[1], default=None)
    return {"name": run.name, "args": args, "val": val, "tail_loss": sum(losses[-10:]) / max(1, len(losses[-10:])),
            "steps": max((int(r["step"]) for r in log if r.get("loss")), default=0), "dead": dead}


def table(runs: list[dict]) -> list[str]:
    keys = sorted(k for k in set().union(*(r["args"] for r in runs)) if k not in IGNORED
                  and len({json.dumps(r["args"].get(k)) for r in runs}) > 1)
    steps = sorted(set.intersection(*(set(r["val"]) for r in runs))) if runs else []
    head = (["run"] + keys + [f"held-out @{s}" for s in steps] + [f"real @{steps[-1]}" if steps else "real",
                                                                   "mean loss, last 10 logged steps", "most dead group"])
    out = ["| " + " | ".join(head) + " |", "|---|" + "---|" * len(keys) + "---:|" * (len(steps) + 2) + "---|"]
    for r in runs:
        cells = [r["name"]] + [str(r["args"].get(k)) for k in keys]
        cells += [f"{r['val'][s][0]:.2f}" for s in steps]
        real = r["val"][steps[-1]][1] if steps else None
        cells += ["–" if real is None else f"{real:.2f}", f"{r['tail_loss']:.4f}",
                  "–" if r["dead"] is None else f"{r['dead'][0]} {100 * r['dead'][1]:.0f} %"]
        out.append("| " + " | ".join(cells) + " |")
    return out


def main(argv: list[str] | None = None) -> int:
    p = Parser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="training run folders")
    p.add_argument("--out", type=Path, default=None, help="also write the table to this Markdown file")
    args = p.parse_args(argv)
    bad = [r for r in args.runs if not (r / "run.json").is_file() or not (r / "log.csv").is_file()]
    if bad:
        p.error(f"not training run folders (no run.json/log.csv): {', '.join(map(str, bad))}")
    lines = table([load_run(r) for r in args.runs])
    print("\n".join(lines))
    if args.out:
        from eapnet.runs import atomic_write_text

        atomic_write_text(args.out, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
