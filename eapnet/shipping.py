"""Shipping a training run's EMA weights into the package, with a model card: the card's figures and history.

The command line is :mod:`eapnet.ship` (``eapnet-ship``).

:func:`ship` keeps only the EMA weights, config, step and training config of a run's checkpoint (no optimizer: a
few MB), writes ``eapnet/weights/<name>.pt`` and measures the shipped model. The card ``eapnet/weights/<name>.md``
records data, steps, samples seen, hardware, wall time, the recipe, the training curve (held-out PSNR-μ against
samples seen, from ``log.csv``; the lineage (:func:`lineage`) is also stored in the shipped file, so later ships
keep it when the run folders are gone), the evaluation against the classical baselines (whole frame and inside
moving regions), the block ablation table (:mod:`eapnet.ablation`), the dead-channel share
(:mod:`eapnet.diagnostics`), the preview of the real full-size frame (``docs/fullres_<name>.png``,
:mod:`eapnet.rendering`) and the exact commands.
"""
from __future__ import annotations

import csv
import json
import subprocess
import tempfile
from pathlib import Path

import yaml
from torch import nn

from eapnet.checkpoint import WEIGHTS_DIR, CheckpointError, read_checkpoint, save_checkpoint
from eapnet.cpu import cpu_name
from eapnet.macs import count_maccs, count_params
from eapnet.runs import atomic_write_text
from eapnet.ablation import ablation_table, table_markdown
from eapnet.baselines import BASELINES
from eapnet.data import SHARED_SAMPLES
from eapnet.diagnostics import dead_channels, probe_batches
from eapnet.evalreport import evaluate, motion_markdown
from eapnet.evalsets import heldout_synthetic, real_crops, standard_sets
from eapnet.rendering import render

DOCS_DIR = WEIGHTS_DIR.parents[1] / "docs"
"""Where the preview of the real full-size frame goes by default (``docs/fullres_<name>.png``)."""


def run_checkpoint(run: Path) -> Path:
    """The checkpoint shipped from a training run folder: ``model.pt``, or ``last.pt`` for a run stopped early."""
    return run / "model.pt" if (run / "model.pt").is_file() else run / "last.pt"


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
    """The commit the run started at, then each resume's (``run-resume-<step>.json``) where it differs."""
    rec = run / "run.json"
    first = (json.loads(rec.read_text()).get("git_commit") or "unknown") if rec.is_file() else "unknown"
    out, last = [first], first
    for r in sorted(run.glob("run-resume-*.json"), key=lambda p: int(p.stem.split("-")[-1])):
        commit = json.loads(r.read_text()).get("git_commit") or "unknown"
        if commit != last:
            out.append(f"{commit} from step {r.stem.split('-')[-1]}")
            last = commit
    return "; resumed with code at commit ".join(out)


def recipe_text(cfg: dict) -> str:
    """One sentence describing the learning-rate schedule and EMA of a training config."""
    sched = cfg.get("schedule", "step")
    if sched == "wsd":
        lr = (f"flat after a {cfg['warmup_steps']}-step warm-up, then a linear cool-down over the last "
              f"{cfg.get('cooldown', 0.2):.0%} of the steps to {cfg.get('min_lr', 0.0):g} x lr")
    elif sched == "cosine":
        lr = f"{cfg['warmup_steps']}-step warm-up, then cosine to {cfg.get('min_lr', 0.0):g} x lr"
    else:
        lr = f"warm-up {cfg['warmup_steps']}, x{cfg['lr_decay']} every {cfg['lr_decay_every']:,} steps"
    ema = (f"EMA every {cfg['ema_every']} step(s), decay {cfg['ema_decay']}"
           + (" with warm-up min(decay, (1+n)/(10+n))" if cfg.get("ema_warmup") else ""))
    recycle = (f"; dead ReLU channels recycled every {cfg['recycle_every']} steps before the cool-down "
               "(eapnet/recycle.py)" if cfg.get("recycle_every") else "")
    return (f"Adam, lr {cfg['lr']} ({lr}); {ema}; loss {cfg['loss_alpha']} μ-law L1 + {cfg['loss_beta']} Tan-L1"
            + recycle)


def training_curve(log_csv: Path, batch: int) -> list[tuple[int, float, float | None]]:
    """``(step, held-out PSNR-μ, real-crop PSNR-μ or None)`` of every validation row of ``log.csv``."""
    rows = []
    with open(log_csv, newline="") as f:
        for r in csv.DictReader(f):
            if r.get("val_psnr_mu"):
                rows.append((int(r["step"]), float(r["val_psnr_mu"]),
                             float(r["real_psnr_mu"]) if r.get("real_psnr_mu") else None))
    return rows


def lineage(cfg: dict, run: Path, steps: int) -> list[dict]:
    """The runs behind a checkpoint of ``steps`` steps, oldest first: every ``init_from`` before ``run``, then
    ``run``. Each entry: ``run`` folder, ``steps``, ``batch_size``, ``seed``, ``recipe`` (:func:`recipe_text`),
    ``wall_s`` (None where unknown), ``commands`` and ``curve`` (validation rows ``[step, held-out, real]``),
    read from the run's folder. A parent that is a shipped weights file stands for the run it was shipped
    from (its ``metrics.source``); one shipped with its lineage (``metrics.lineage``, every ship since the
    record was added) gives its whole history, so the run folders need not survive. A parent whose folder
    is gone is looked up among the committed versions of the shipped weights by that source; a parent that
    can no longer be read at all ends the history."""
    chain, seen = [(run, cfg, steps)], {Path(run).resolve()}
    recorded: list[dict] = []
    while chain[-1][1].get("init_from"):
        parent = Path(chain[-1][1]["init_from"])
        versions = _committed_versions(parent) or _shipped_from(parent)
        ck, later = None, []
        for candidate in [None, *versions]:
            try:
                ck = read_checkpoint(parent) if candidate is None else candidate()
            except CheckpointError:
                ck = None
                continue
            # a shipped weights file names the run folder it came from (``metrics.source``)
            source = (ck.get("metrics") or {}).get("source")
            folder = Path(source).parent if source else parent.parent
            if folder.resolve() not in seen:
                break
            # a later link of the chain (the run started from an earlier version); its record, if any,
            # holds the history before the runs already walked
            rec = (ck.get("metrics") or {}).get("lineage") or []
            cut = next((i for i, e in enumerate(rec) if Path(e["run"]).resolve() in seen), len(rec))
            later = later or rec[:cut]
            ck = None
        if later or ck is not None and (ck.get("metrics") or {}).get("lineage"):
            recorded = later or ck["metrics"]["lineage"]   # the shipped file carries its history: it ends the walk
            break
        if ck is None:
            break
        seen.add(folder.resolve())
        chain.append((folder, ck["train_config"], int(ck["step"])))
    entries = [dict(e, run=Path(e["run"])) for e in recorded]
    for r, c, n in reversed(chain):
        log = r / "log.csv"
        entries.append({"run": r, "steps": n, "batch_size": c["batch_size"], "seed": c["seed"],
                        "recipe": recipe_text(c), "wall_s": wall_time_s(log) if log.is_file() else None,
                        "commands": _commands(r),
                        "curve": [[st, v, rl] for st, v, rl in training_curve(log, c["batch_size"]) if st <= n]
                        if log.is_file() else []})
    return entries


def _shipped_from(source: Path) -> list:
    """Loaders of the committed shipped weights whose ``metrics.source`` is ``source`` (a run's checkpoint
    whose folder is gone), newest first."""
    want = source.as_posix()
    out = []
    for shipped in sorted(WEIGHTS_DIR.glob("*.pt")):
        for load in _committed_versions(shipped):
            def check(load=load):
                ck = load()
                if (ck.get("metrics") or {}).get("source") != want:
                    raise CheckpointError(f"not shipped from {want}")
                return ck
            out.append(check)
    return out


def _committed_versions(path: Path) -> list:
    """Loaders of the versions of ``path`` committed to git, newest first (none outside a git checkout):
    a run continued from a shipped file that was shipped over later started from one of its earlier
    versions."""
    path = path.resolve()
    if not path.parent.is_dir():
        return []
    try:
        commits = subprocess.run(["git", "log", "--format=%H", "--", path.name], capture_output=True, text=True,
                                 cwd=path.parent, timeout=30).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return []

    def loader(commit: str):
        def load():
            data = subprocess.run(["git", "show", f"{commit}:./{path.name}"], capture_output=True,
                                  cwd=path.parent, timeout=60).stdout
            with tempfile.NamedTemporaryFile(suffix=".pt") as f:
                f.write(data)
                f.flush()
                return read_checkpoint(f.name)
        return load
    return [loader(c) for c in commits]


def shipped_files(name: str, weights_dir: Path = WEIGHTS_DIR, preview_dir: Path | None = DOCS_DIR) -> list[Path]:
    """The files :func:`ship` writes for ``name``: weights, card and, where the shared samples hold the real
    full-size frame and ``preview_dir`` is given, its preview."""

    files = [weights_dir / f"{name}.pt", weights_dir / f"{name}.md"]
    if preview_dir is not None and (SHARED_SAMPLES / "fullres_no_gt").is_dir():
        files.append(preview_dir / f"fullres_{name}.png")
    return files


def ship(model: nn.Module, ckpt: dict, src: Path, name: str, *, heldout: int = 16, size: int = 256,
         hardware: str | None = None, note: str = "", weights_dir: Path = WEIGHTS_DIR,
         preview_dir: Path | None = DOCS_DIR) -> tuple[list[str], Path, Path]:
    """Measure ``model`` (the EMA model of ``ckpt``, read from ``src``: :func:`run_checkpoint` of a training folder)
    and write ``<weights_dir>/<name>.pt`` and its card ``<name>.md``, together, once every measurement
    succeeded. Evaluation on ``heldout`` synthetic scenes of ``size``^2 and the real crops (into
    ``run/ship_eval``), the block ablation, the dead-channel share, and the preview of the real full-size frame
    into ``preview_dir`` (None: no preview) when the shared samples hold it. ``hardware``: the training hardware
    for the card (default: this machine's CPU); ``note``: extra remarks. Returns the card's lines, the weights
    file and the card file."""
    run = src.parent
    cfg = ckpt["train_config"]
    out_pt = weights_dir / f"{name}.pt"

    datasets = {"heldout_synthetic": heldout_synthetic(heldout, size)}
    crops = real_crops()
    if crops:
        datasets["real_crops"] = crops
    report = evaluate({name: model}, list(BASELINES), datasets, run / "ship_eval", save_outputs=False,
                      progress=True, overwrite=True)     # the previous ship's evaluation of this run
    ablation = ablation_table(model, standard_sets(heldout, size))
    preview = None
    if (SHARED_SAMPLES / "fullres_no_gt").is_dir() and preview_dir is not None:
        preview, ghosts = render(model, preview_dir / f"fullres_{name}.png", label=name)
    hw = hardware or f"{cpu_name()}, {cfg.get('threads') or 'all'} thread(s)"
    chain = lineage(cfg, run, int(ckpt["step"]))
    before = chain[:-1]
    wall = sum(c["wall_s"] or 0.0 for c in chain)
    unknown_wall = [str(c["run"]) for c in chain if c["wall_s"] is None]
    maccs, params = count_maccs(model), count_params(model)
    samples = sum(c["steps"] * c["batch_size"] for c in chain)
    all_steps = sum(c["steps"] for c in chain)
    history = "".join(f" Continues `{c['run']}` ({c['steps']:,} steps of {c['batch_size']}, seed {c['seed']}; "
                      f"{c['recipe']})." for c in before)
    lines = [
        f"# EAPNet {name}: shipped EMA weights", "",
        f"- File: `eapnet/weights/{name}.pt` (load with `eapnet.load_model({name!r})`).",
        f"- Model: {maccs / 1e9:.2f} GMAccs at 1900x1060 (NTIRE convention), {params / 1e3:.2f} k params.",
        f"- Data: synthetic bracketed triplets from `eapnet.data.synthetic` (seed {cfg['seed']}, a fresh scene "
        f"per sample), {cfg['patch']}x{cfg['patch']} patches, batch {cfg['batch_size']}; {samples:,} samples "
        f"seen ({samples * cfg['patch'] ** 2 / 1e9:.2f} G pixels). Never trained on the held-out seed or the "
        "real crops.",
        f"- Steps: {all_steps:,} in all"
        + (f" ({ckpt['step']:,} in this run)" if before else "")
        + " (the paper trains 10,000,000 steps of 32 x 256^2 on 4 GPUs).",
        f"- Recipe: {recipe_text(cfg)}." + history,
        f"- Hardware: {hw}. Wall time: {wall / 3600:.2f} h"
        + (f" (not counting {', '.join(f'`{r}`' for r in unknown_wall)}: no log left)." if unknown_wall else "."),
        f"- Source checkpoint: `{src}` at step {ckpt['step']}; code at commit {_run_commit(run)}.", "",
        *([note, ""] if note else []),
    ]
    curve, offset = [], 0
    for c in chain:
        curve += [(str(c["run"]), step, offset + step * c["batch_size"], v, r) for step, v, r in c["curve"]]
        offset += c["steps"] * c["batch_size"]
    if curve:
        lines += ["## Training curve", "",
                  "Validation of the EMA weights during training (PSNR-μ in dB; the held-out set of the run's "
                  f"`val_scenes` = {cfg['val_scenes']} scenes of {cfg['val_size']}^2):", "",
                  "| run | step | samples seen in all | held-out PSNR-μ | real crops PSNR-μ |", "|---|---:|---:|---:|---:|"]
        for folder, step, seen_, v, r in curve:
            lines.append(f"| `{folder}` | {step:,} | {seen_:,} | {v:.2f} | {'–' if r is None else f'{r:.2f}'} |")
        lines.append("")
    lines += ["## Evaluation (official PSNR-μ / PSNR-l, dB)", "",
              f"`python -m eapnet.evaluate --models {name}` on {heldout} held-out synthetic scenes of "
              f"{size}^2 and the real crops:", ""]
    ds = list(report["results"])
    lines.append("| method | " + " | ".join(f"{d} PSNR-μ | {d} PSNR-l" for d in ds) + " |")
    lines.append("|---|" + "---:|" * (2 * len(ds)))
    for method in report["methods"]:
        cells = [f"{report['results'][d][method]['psnr_mu']:.2f} | {report['results'][d][method]['psnr_l']:.2f}"
                 for d in ds]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += ["", "Margin in PSNR-μ over the best classical baseline (mean over scenes):", ""]
    for d, m in report["margins"][name].items():
        lines.append(f"- {d}: {m['margin_db']:+.2f} dB over {m['best_baseline']} "
                     f"({m['scenes_won']}/{m['scenes']} scenes won against every baseline)")
    lines += motion_markdown(report)
    lines += ["", "## What each part adds (block ablation)", "",
              f"`python -m eapnet.ablate --model {name}`: each part turned off without retraining (PSNR-μ, "
              "dB; change against the full model):", "", *table_markdown(ablation), ""]
    dead = dead_channels(model, ((x, e) for x, e, _ in probe_batches(8, 128)))
    worst = max(dead, key=lambda k: dead[k][0] / dead[k][1])
    total = sum(d for d, _ in dead.values()), sum(n for _, n in dead.values())
    lines += ["## Live units", "",
              f"`python -m eapnet.diagnose --model {name}`: {total[0]} of {total[1]} ReLU channels "
              f"({100 * total[0] / total[1]:.1f} %) are zero on more than 99.9 % of the pixels of 8 held-out "
              f"scenes of 128^2; the worst module is `{worst}` with {dead[worst][0]} of {dead[worst][1]}.", ""]
    if preview is not None:
        lines += ["## The real full-size frame", "",
                  f"![medium / merge / {name} on the real 1900x1060 challenge frame](../../docs/{preview.name})",
                  "", "`python -m eapnet.preview --model {0} --out docs/{1} --overwrite`: medium frame, radiance "
                  "merge, the model's own base where it has another (the consistent merge) and the model on the "
                  "challenge's full-size example (no ground truth), one tone map; bottom "
                  "row a 1:1 crop of the crowd, where people moved between the exposures.".format(name,
                                                                                                 preview.name), "",
                  f"Light ghosts (`eapnet.rendering.light_ghosts`): where only the long frame is lit, the output "
                  f"departs from the medium frame by {ghosts['model']:.2f} stops more than elsewhere (mean, "
                  f"either way; the radiance merge {ghosts['base']:.2f}"
                  + (f", the consistent merge the model adds its correction to {ghosts['own_base']:.2f}"
                     if "own_base" in ghosts else "")
                  + "; 0 = the lit regions follow the medium frame).", ""]
    lines += ["## Commands", "", "```bash", *(cmd for c in chain for cmd in c["commands"]),
              f"python -m eapnet.ship --run {run} --name {name} --heldout {heldout} --size {size} --overwrite",
              "```", "", "Resolved training config (every key of `eapnet/configs/train.yaml`):", "", "```yaml",
              yaml.safe_dump(cfg, sort_keys=False).rstrip(), "```"]
    # weights and card are written together, after every measurement succeeded
    record = [dict(c, run=Path(c["run"]).as_posix()) for c in chain]    # the history travels with the weights
    save_checkpoint(out_pt, model, step=ckpt["step"], train_config=cfg,
                    metrics={"source": str(src), **ckpt.get("metrics", {}), "lineage": record}, with_rng=False)
    card = weights_dir / f"{name}.md"
    atomic_write_text(card, "\n".join(lines) + "\n")
    return lines, out_pt, card
