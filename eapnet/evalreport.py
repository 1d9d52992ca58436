"""Evaluation of trained models against classical baselines: scores, output files and the report
(the library behind ``python -m eapnet.evaluate``; ``eapnet.shipping`` uses it for the model cards).

Datasets (every scene has ground truth):

- ``heldout_synthetic``: ``--heldout`` scenes of ``--size`` x ``--size`` from the synthetic generator with
  the held-out seed (``generate_scene(scene_seed(HELDOUT_SEED, i), size, size)``), ids ``0000``, ``0001``...;
- ``real_crops``: the real NTIRE 256x256 crops in ``SHARED_SAMPLES/crops256`` when that folder exists
  (never trained on);
- one dataset per ``--data FOLDER`` (NTIRE or Kalantari layout), named after the folder.

Methods: models (``--models``: shipped names through :func:`eapnet.checkpoint.load_model`, or checkpoint
paths) run through :func:`eapnet.inference.predict` at full resolution (the model pads and crops back) or
tiled (``--tile``/``--overlap``); baselines are :mod:`eapnet.baselines`. Scores are the official NTIRE
PSNR-μ and PSNR-l (dB) between the ground truth and each output, both in the challenge's ground-truth
domain (gamma-encoded with 2.24, medium-frame units); model outputs are clipped at 0 first, as a 16-bit
submission would be.

Run folder (``out_dir``)::

    run.json  report.json  report.md
    <dataset>/<method>/<id>.exr                float32 LINEAR radiance = hdr ** 2.24 (medium exposure = 1)
    <dataset>/<method>/<id>.hdr                Radiance RGBE, the same linear values (~1 % precision)
    <dataset>/<method>/<id>.png                NTIRE submission: 16-bit, gamma-encoded hdr * alignratio
    <dataset>/<method>/<id>_alignratio.npy     ... and its align ratio (hdr = png / alignratio)
    <dataset>/<method>/<id>_preview.png        8-bit preview, the challenge's μ-law tone map

The ``.exr``/``.hdr`` files hold *linear* radiance because that is what every HDR viewer and tool assumes
of those formats; only the NTIRE PNG keeps the challenge's gamma-encoded domain. Outputs are written for
models only (baselines are cheap to recompute) and can be switched off with ``save_outputs=False`` (``--no-save-outputs``).

Output files are written by :mod:`eapnet.outputs`; datasets and scoring are :mod:`eapnet.evalsets`.
"""
from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

__all__ = ["evaluate", "compare_margins", "motion_markdown", "report_markdown"]

from eapnet.outputs import require_exr, write_outputs
from eapnet import count_maccs, count_params
from eapnet.baselines import ALL_BASELINES
from eapnet.data import SceneSource, as_sources
from eapnet.evalsets import score_output
from eapnet.inference import predict
from eapnet.runs import atomic_write_json, atomic_write_text, make_run_dir, record_run

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def _file_stem(sid: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._+-]", "_", sid).lstrip(".")
    return stem or "scene"


# --------------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------------


def _mean(values: Iterable[float]) -> float | None:
    values = list(values)
    return float(np.mean(values)) if values else None


def evaluate(models: Mapping[str, nn.Module], baselines: Sequence[str],
             datasets: Mapping[str, Sequence[SceneSource]], out_dir: str | os.PathLike, *, tile: int | None = None,
             overlap: int = 64, save_outputs: bool = True, amp: str | None = None,
             sources: Mapping[str, str] | None = None, run_args: dict | None = None,
             progress: bool = True, overwrite: bool = False) -> dict:
    """Score every method on every scene; write outputs, ``run.json``, ``report.json`` and ``report.md``.

    Args:
        models: ``{method name: model}`` with the challenge interface (eval mode; any device).
        baselines: names from :data:`eapnet.baselines.ALL_BASELINES`.
        datasets: ``{dataset name: scene sources}`` (:class:`eapnet.data.SceneSource`, ground truth required):
            lazy sources are loaded one at a time, so a large folder is never held in memory at once; an
            :class:`eapnet.data.Scene` is its own source.
        out_dir: run folder (created); outputs go to ``<dataset>/<method>/`` inside it.
        tile, overlap, amp: passed to :func:`eapnet.inference.predict` (tile None = whole frame).
        save_outputs: write each model output as .exr, .hdr, NTIRE png + alignratio and a preview.
        sources: optional ``{dataset: description}`` for the report.
        run_args: extra entries for ``run.json`` (the CLI passes its parsed arguments).

    Returns:
        The report dict: ``methods`` (kind; MAccs at 1900x1060 and params for models), ``datasets``
        (ids, source), ``results[dataset][method]`` = ``{"psnr_mu", "psnr_l"`` (means over scenes, dB),
        ``"seconds"`` (mean wall time per scene), ``"per_scene": {id: {"psnr_mu", "psnr_l"}}}``,
        ``margins`` (:func:`compare_margins`) and ``settings``.
    """

    baselines = list(baselines)
    names = list(models) + baselines
    for n in names + list(datasets):
        if not _SAFE.match(str(n)):
            raise ValueError(f"name {n!r} is not a safe folder name (letters, digits, . _ + -)")
    if len(set(names)) != len(names):
        raise ValueError(f"method names must be unique, got {names}")
    unknown = [b for b in baselines if b not in ALL_BASELINES]
    if unknown:
        raise ValueError(f"unknown baseline(s) {unknown}: choose from {sorted(ALL_BASELINES)}")
    if not names:
        raise ValueError("nothing to evaluate: no models and no baselines")
    if tile is not None and (tile < 16 or not 0 <= overlap < tile // 2):
        raise ValueError(f"tile must be >= 16 and overlap in [0, tile/2); got tile={tile}, overlap={overlap}")
    if save_outputs and models:
        require_exr()

    out = make_run_dir(out_dir, "eval", tool="eapnet-evaluate", overwrite=overwrite)
    settings = {"tile": tile, "overlap": overlap if tile is not None else None, "amp": amp,
                "save_outputs": save_outputs, "torch_threads": torch.get_num_threads(),
                "devices": {n: str(getattr(next(m.parameters(), None), "device", "cpu")) for n, m in models.items()}}
    record_run(out, {**(run_args or {}), "evaluate": {"models": list(models), "baselines": baselines,
                                                      "datasets": {d: len(s) for d, s in datasets.items()},
                                                      **settings}})

    methods: dict[str, dict] = {}
    for n, m in models.items():
        methods[n] = {"kind": "model", "maccs": count_maccs(m), "params": count_params(m)}
    for b in baselines:
        methods[b] = {"kind": "baseline", "doc": (ALL_BASELINES[b].__doc__ or "").strip().split("\n")[0]}

    results: dict[str, dict] = {d: {n: {"per_scene": {}, "seconds_total": 0.0} for n in names} for d in datasets}
    info: dict[str, dict] = {}
    total = sum(len(s) for s in datasets.values())
    bar = tqdm(total=total * len(names), unit="run", desc="evaluate", disable=not progress)
    for d, scenes in datasets.items():
        ids = []
        for source in as_sources(scenes, d):
            scene = source.load()
            sid, ldrs, evs, gt = scene.id, scene.ldrs, scene.evs, scene.gt
            if gt is None:
                raise ValueError(f"{d}/{sid} ({scene.origin}): scene has no ground truth, it cannot be scored")
            if sid in ids or _file_stem(sid) in map(_file_stem, ids):
                raise ValueError(f"{d}: scene id {sid!r} is not unique (as an output file name)")
            ids.append(sid)
            for n in names:
                bar.set_postfix_str(f"{d}/{sid} {n}", refresh=False)
                t0 = time.perf_counter()
                if n in models:
                    hdr = predict(models[n], ldrs, evs, tile=tile, overlap=overlap, amp=amp)
                    hdr = np.maximum(hdr, 0.0)  # a 16-bit submission cannot be negative either
                else:
                    hdr = ALL_BASELINES[n](ldrs, evs)
                dt = time.perf_counter() - t0
                r = results[d][n]
                r["per_scene"][sid] = score_output(gt, hdr, f"{d}/{n}/{sid}", scene.motion)
                r["seconds_total"] += dt
                if save_outputs and n in models:
                    write_outputs(out / d / n, _file_stem(sid), hdr, gt)
                bar.update(1)
        info[d] = {"scenes": len(ids), "ids": ids, "source": (sources or {}).get(d, "")}
    bar.close()

    for per_method in results.values():
        for r in per_method.values():
            per = r["per_scene"].values()
            k = max(len(r["per_scene"]), 1)
            r.update(psnr_mu=_mean(s["psnr_mu"] for s in per), psnr_l=_mean(s["psnr_l"] for s in per),
                     seconds=r.pop("seconds_total") / k)
            motion = [s["psnr_mu_motion"] for s in per if "psnr_mu_motion" in s]
            if motion:  # mean over the scenes that have moving regions
                r.update(psnr_mu_motion=_mean(motion), motion_scenes=len(motion))
            r["per_scene"] = r.pop("per_scene")  # keep the means first in report.json

    report = {"methods": methods, "datasets": info, "results": results, "settings": settings,
              "domain": "PSNR in dB between gt and output, both gamma-encoded (2.24) in medium-frame units "
                        "(official NTIRE PSNR-mu / PSNR-l)",
              "outputs": "<dataset>/<model>/<id>.exr|.hdr (linear = hdr**2.24), <id>.png + <id>_alignratio.npy "
                         "(NTIRE, gamma-encoded), <id>_preview.png (mu-law)" if save_outputs and models else None}
    report["margins"] = compare_margins(report)
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", report_markdown(report))
    return report


def compare_margins(report: dict, against: Iterable[str] | None = None) -> dict:
    """Each model's PSNR-μ margin over the best classical baseline, per dataset.

    ``against``: baseline names to compare with (default: every baseline in the report). For each model
    and dataset: ``{"psnr_mu", "best_baseline", "baseline_psnr_mu", "margin_db"`` (model minus best
    baseline, mean PSNR-μ over scenes, dB; > 0 means the model beats every baseline on average),
    ``"beats_all"``, ``"scenes_won"`` (scenes where the model beats every baseline's PSNR-μ on that
    scene), ``"scenes"``, ``"worst_scene"`` (id and per-scene margin over that scene's best baseline)``}``.
    Empty when there is no baseline to compare with.
    """
    kinds = {n: m["kind"] for n, m in report["methods"].items()}
    against = [n for n, k in kinds.items() if k == "baseline"] if against is None else list(against)
    missing = [b for b in against if kinds.get(b) != "baseline"]
    if missing:
        raise ValueError(f"not baselines of this report: {missing}")
    if not against:
        return {}
    out: dict[str, dict] = {}
    for m in (n for n, k in kinds.items() if k == "model"):
        out[m] = {}
        for d, res in report["results"].items():
            if res[m]["psnr_mu"] is None:
                continue
            best = max(against, key=lambda b: res[b]["psnr_mu"])
            per = {sid: s["psnr_mu"] - max(res[b]["per_scene"][sid]["psnr_mu"] for b in against)
                   for sid, s in res[m]["per_scene"].items()}
            worst = min(per, key=per.get)
            margin = res[m]["psnr_mu"] - res[best]["psnr_mu"]
            out[m][d] = {"psnr_mu": res[m]["psnr_mu"], "best_baseline": best,
                         "baseline_psnr_mu": res[best]["psnr_mu"], "margin_db": margin, "beats_all": margin > 0,
                         "scenes_won": sum(v > 0 for v in per.values()), "scenes": len(per),
                         "worst_scene": {"id": worst, "margin_db": per[worst]}}
    return out


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "–" if x is None else format(x, spec)


def motion_markdown(report: dict, base: str = "radiance_merge") -> list[str]:
    """Lines of the moving-regions table: PSNR-μ inside the synthetic motion masks per method, and each
    method's margin over ``base`` (the radiance merge: the per-pixel merge of unaligned frames, which ghosts
    where things moved). Empty when no dataset has motion masks."""
    ds = [d for d, res in report["results"].items() if any("psnr_mu_motion" in r for r in res.values())]
    if not ds:
        return []
    out = ["", ("De-ghosting: PSNR-μ (dB) inside the moving regions of the synthetic scenes (the generator's "
                "motion masks: where a moving object shows in some frame and the frames disagree; whole-image "
                "tone map, MSE over the masked pixels), mean over the scenes that have such regions"
                + (f"; margin over `{base}`, the merge of the unaligned frames" if base in report["methods"] else "")
                + "."), ""]
    head = "| method | " + " | ".join(f"{d} PSNR-μ (moving) | {d} whole frame" for d in ds) + " |"
    out += [head, "|---|" + "---:|" * (2 * len(ds))]
    for n in report["methods"]:
        cells = []
        for d in ds:
            r, b = report["results"][d][n], report["results"][d].get(base)
            mv = r.get("psnr_mu_motion")
            delta = f" ({mv - b['psnr_mu_motion']:+.2f})" if b and mv is not None and n != base else ""
            cells += [_fmt(mv) + delta, _fmt(r["psnr_mu"])]
        out.append(f"| {n} | " + " | ".join(cells) + " |")
    counts = {d: next((r.get("motion_scenes") for r in report["results"][d].values() if r.get("motion_scenes")), 0)
              for d in ds}
    out += ["", "Scenes with moving regions: " + ", ".join(f"{d} {c} of {report['datasets'][d]['scenes']}"
                                                         for d, c in counts.items()) + "."]
    return out


def report_markdown(report: dict) -> str:
    """``report.md``: the PSNR table (rows = methods, PSNR-μ / PSNR-l per dataset), model cost, margins."""
    ds = list(report["results"])
    out = ["# Evaluation", "",
           ("PSNR-μ / PSNR-l: official NTIRE metrics in dB, mean over the scenes of each dataset "
            "(gt and outputs gamma-encoded with 2.24)."), ""]
    for d in ds:
        i = report["datasets"][d]
        out.append(f"- `{d}`: {i['scenes']} scenes" + (f" ({i['source']})" if i["source"] else ""))
    head = "| method | GMAccs @1900x1060 | k params | " + " | ".join(f"{d} PSNR-μ | {d} PSNR-l" for d in ds) + " |"
    out += ["", head, "|---|" + "---:|" * (2 + 2 * len(ds))]
    for n, m in report["methods"].items():
        cost = [_fmt(m["maccs"] / 1e9), _fmt(m["params"] / 1e3)] if m["kind"] == "model" else ["–", "–"]
        cells = [f"{_fmt(report['results'][d][n]['psnr_mu'])} | {_fmt(report['results'][d][n]['psnr_l'])}"
                 for d in ds]
        label = n if m["kind"] == "model" else f"{n} (baseline)"
        out.append(f"| {label} | " + " | ".join(cost + cells) + " |")
    margins = report.get("margins") or {}
    if any(margins.values()):
        out += ["", ("Margin of each model over the best classical baseline (PSNR-μ, dB; positive = the model "
                     "beats every baseline on average):"), "",
                ("| model | dataset | model PSNR-μ | best baseline | baseline PSNR-μ | margin | scenes won | "
                 "worst scene (margin) |"), "|---|---|---:|---|---:|---:|---:|---|"]
        for m, per in margins.items():
            for d, v in per.items():
                out.append(f"| {m} | {d} | {_fmt(v['psnr_mu'])} | {v['best_baseline']} | "
                           f"{_fmt(v['baseline_psnr_mu'])} | {_fmt(v['margin_db'], '+.2f')} | "
                           f"{v['scenes_won']}/{v['scenes']} | {v['worst_scene']['id']} "
                           f"({_fmt(v['worst_scene']['margin_db'], '+.2f')}) |")
    out += motion_markdown(report)
    s = report["settings"]
    how = "whole frame" if s["tile"] is None else f"tiles of {s['tile']} px, overlap {s['overlap']} px"
    out += ["", f"Inference: {how}, amp {s['amp'] or 'off'}, {s['torch_threads']} torch threads."]
    if report.get("outputs"):
        out += ["", f"Outputs: {report['outputs']}."]
    return "\n".join(out) + "\n"
