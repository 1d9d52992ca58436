"""Parity harness: every exported artifact against the float model it came from, with thresholds that fail.

The library (:func:`run_parity`, :func:`check`, :data:`THRESHOLDS`, :func:`report_markdown`, ...); the command
line is :mod:`eapnet.export.check_parity` (``eapnet-parity``).

For each artifact (``.pte`` from ``eapnet.export.executorch_export``, ``.mlpackage`` from
``eapnet.export.coreml_export``):

1. **Execute it.** ``.pte`` in ExecuTorch's runtime (XNNPACK). ``.mlpackage`` with ``MLModel.predict`` on macOS;
   elsewhere with the NumPy MIL interpreter (``eapnet.export.mil_interp``), and the results say
   *reference-executed*: what the program computes, not what a phone's Core ML kernels return.
2. **Run the float model on the same inputs** (GPU when there is one, else CPU fp32) through the one
   inference path (``eapnet.inference.predict``). The float model is the export's source (a ``.pt``
   checkpoint or a shipped name); for an int8 program (``.pt2``) it is the float checkpoint recorded in the
   program's metadata (``compress/qat.py`` writes ``compressed.pt``); ``--model`` overrides both.
3. **Compare** on real NTIRE frames (``../shared/data/ntire_samples``: the crops with ground truth and the
   full-size triplet without), the shipped calibration set and held-out synthetic scenes. Artifacts take one
   fixed input size, so scenes are *packed*: scenes with equal exposure values are laid side by side on a
   canvas of the artifact's size, each with a ``gutter`` of replicated edge pixels (larger scenes are
   centre-cropped to the canvas). The float model sees the very same canvas, so artifact-vs-float numbers
   measure the artifact alone; scores against ground truth are of the cropped-out scenes (artifact and float
   side by side; near the gutters they can differ slightly from whole-scene evaluation). By default the
   scenes share one exposure triple (:func:`eapnet.export.canvas.load_scenes`), so that the small ones fill one canvas;
   ``--all-exposures`` takes each dataset's first scenes whatever their exposures.
4. **Judge** with per-precision :data:`THRESHOLDS`: per-scene PSNR-mu of artifact vs float output (for int8,
   on a scene with ground truth the floor is at most the float model's own PSNR-mu there + a margin, see
   :meth:`Threshold.floor`), worst-pixel max abs error (gamma-encoded HDR units), and the mean PSNR-mu lost
   against ground truth (float minus artifact, per dataset). Any breach fails the artifact; the command exits 1.
   A tile program (``--stitch``; the main job ships them) is also run tiled over the whole full-size frame,
   as an app runs it, and the stitched output checked against the float model run over the very same tiles
   (:func:`eapnet.inference.predict`): the difference is the artifact's alone, at the precision's thresholds,
   and the reference needs one tile's memory, not the whole frame's (the compressed 100 G model takes
   about 4.3 GB on a 1060x1900 frame in one piece).
6. **On the phone's instruction set** (``runners``, ``--runner native aarch64``): each ``.pte`` is also run by the
   project's C++ runner on the same inputs, on this machine and under QEMU for each aarch64 kernel family, and
   must agree with the Python runtime to float rounding (:mod:`eapnet.export.native_check`).
5. **Localise** a failure (``eapnet.export.localise``): the quantized eager model (the ``.pt2``, or post-training quantization redone on
   ``eapnet.calib``) is compared with the float model layer by layer (every conv, in execution order); the
   first layers whose relative error jumps are named. When the eager model is within budget and the int8
   ``.pte`` alone is not, the drift is in the artifact itself (lowering, runtime or a damaged file): the program
   is lowered again with every conv's int8 output as an extra output and compared with the eager program's
   (:func:`eapnet.export.localise.program_gaps`), naming the first conv where lowering departs; when the
   re-lowered program is faithful, the shipped file itself is the culprit (damaged or from another program).

Trust: every artifact's own content hash (``eapnet.export.backends.artifact_sha256``) is recorded at export and
checked when it is opened. When it is not the file's, the sidecar / metadata does not describe the file: a
``STAMP MISMATCH`` warning, and its recorded source is not used (the artifact fails unless ``--model`` names
the reference; its thresholds still follow the recorded precision). An export without a recorded hash gets a warning. A ``--model`` that is not the export's
recorded source (by sha256) gets a ``REFERENCE IS NOT THE EXPORT SOURCE`` warning; its verdict is computed and
reported as the verdict against that model ("vs --model, not its source" in the table).

The measured summary is written back into each artifact (``.mlpackage`` metadata ``parity``, the ``.pte``'s
sidecar ``.json``) unless ``write_back=False`` (``--no-write-back``): a stamp with the verdict, the artifact's
hash when measured, the reference used (path, sha256) and ``reference_is_export_source``, so that a verdict
against another model is never read as the source's. The command also writes ``parity.json``,
``parity.md`` and ``run.json`` (``--out DIR``); its exit codes: 0 all pass, 1 a threshold is exceeded (or an
artifact cannot be run), 2 bad arguments or inputs.

PSNR values are in dB, computed with the official scorer (``eapnet.metrics``); artifact-vs-float PSNR-mu is
capped at :data:`PSNR_CAP` (identical outputs would be +inf).
"""
from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from torch import nn
from tqdm import tqdm

from eapnet.inference import TILE_OVERLAP, predict, resolve_device, to_batch
from eapnet.export.backends import Artifact, open_artifact
from eapnet.data import Scene
from eapnet.export.canvas import DATASETS, Canvas, centre_crop, crops, load_scenes, pack
from eapnet.export.common import ProgramModule, load_source
from eapnet.export.localise import layer_errors, localise, program_gaps
from eapnet.export.manifest import manifest_path, set_parity
from eapnet.export.native import CPUS
from eapnet.export.native_check import host_cpu, runner_rows
from eapnet.compress.quantize import load_quantized, read_quantized_meta
from eapnet.checkpoint import SHIPPED, shipped_path
from eapnet.metrics import psnr_l, psnr_mu
from eapnet.runs import atomic_path, atomic_write_json, file_sha256
from eapnet.export.coreml_export import _w8a8_module, set_metadata
from eapnet.export.executorch_export import ptq_source

__all__ = ["PSNR_CAP", "THRESHOLDS", "Artifact", "Threshold", "check", "open_artifact", "report_markdown",
           "resolve_float", "run_parity"]

PSNR_CAP = 150.0
"""dB; artifact-vs-float PSNR-mu above this is reported as this (identical outputs give +inf)."""


@dataclass(frozen=True)
class Threshold:
    """What one precision may drift. All in dB except ``max_abs`` (gamma-encoded HDR units, the model's output
    domain; None = not checked, for precisions whose error scales with the pixel value)."""

    min_psnr_mu_vs_float: float   # worst scene: PSNR-mu of the artifact's output against the float output
    max_gt_drop: float            # per dataset: mean PSNR-mu(float, gt) - mean PSNR-mu(artifact, gt)
    max_abs: float | None         # worst pixel |artifact - float|
    # On a scene with ground truth the floor is at most the float model's own PSNR-mu there plus this margin:
    # the artifact must be this far closer to the float output than the float output is to the truth.
    scene_margin: float | None = None

    def floor(self, float_psnr_mu: float | None = None) -> float:
        """The PSNR-mu (dB) an artifact must reach against the float output on one scene, given the float
        model's PSNR-mu against that scene's ground truth (None: no ground truth)."""
        if self.scene_margin is None or float_psnr_mu is None:
            return self.min_psnr_mu_vs_float
        return min(self.min_psnr_mu_vs_float, float_psnr_mu + self.scene_margin)


THRESHOLDS: dict[str, Threshold] = {
    # Each floor leaves about 10 dB below what the shipped models' artifacts reach (figures: docs/export.md,
    # "Parity thresholds"); int8 may cost at most 0.5 dB against ground truth, the project's bar for a phone
    # model. Int8's error is absolute (per-tensor ranges set by bright scenes) and PSNR-mu lifts near-black
    # values ~600x, so on a scene with ground truth the int8 floor is at most the float model's own PSNR-mu
    # there + 6 dB: an artifact error 4x below the model's own in MSE, which costs at most ~1 dB vs GT on that
    # scene when uncorrelated (10 log10 1.25).
    "fp32": Threshold(min_psnr_mu_vs_float=100.0, max_gt_drop=0.01, max_abs=1e-4),
    "fp16": Threshold(min_psnr_mu_vs_float=55.0, max_gt_drop=0.05, max_abs=None),
    "int8w": Threshold(min_psnr_mu_vs_float=45.0, max_gt_drop=0.1, max_abs=None),
    "int8": Threshold(min_psnr_mu_vs_float=32.0, max_gt_drop=0.5, max_abs=None, scene_margin=6.0),
    "w8a8": Threshold(min_psnr_mu_vs_float=32.0, max_gt_drop=0.5, max_abs=None, scene_margin=6.0),
}



# ------------------------------------------------------------------------------------------ artifacts


def _source_of(artifact: Artifact) -> tuple[str, str | None]:
    """(source file name or path, its sha256) as recorded at export."""
    m = artifact.meta
    return str(m.get("source", "")), m.get("source_sha256")


def resolve_float(artifact: Artifact, override: str | None = None):
    """The float model to compare ``artifact`` with, as a ``eapnet.export.common.Source``.

    ``override`` (a shipped name or ``.pt``) wins. Otherwise the export's source is looked up as recorded,
    then beside the artifact and one folder up, then among the shipped models; its sha256 must match the one
    recorded at export. An int8 ``.pt2`` source leads on to the float checkpoint named in its metadata
    (``float``, relative to the ``.pt2``). An artifact whose stamp does not describe it (``stamp ==
    "mismatch"``, :func:`eapnet.export.backends.check_stamp`) has no trusted source: only ``override`` serves.
    Raises ``ValueError`` naming what is missing.
    """

    if override is not None:
        src = load_source(override)
        if src.precision != "fp32":
            raise ValueError(f"--model {override}: the reference must be a float model, not {src.precision}")
        return src
    return load_source(_export_float(artifact))


def _export_float(artifact: Artifact) -> Path:
    """The float checkpoint the export's recorded source leads to (see :func:`resolve_float`)."""

    if artifact.stamp == "mismatch":
        raise ValueError(f"{artifact.path.name}: its recorded artifact sha256 is not the file's, so its recorded "
                         f"source is not trusted; pass --model with the model this file was exported from")
    name, sha = _source_of(artifact)
    if not name:
        raise ValueError(f"{artifact.path}: no source recorded; pass --model")
    here = artifact.path.parent
    candidates = [Path(name), here / Path(name).name, here.parent / Path(name).name]
    candidates += [shipped_path(s) for s in SHIPPED]
    found = next((c for c in candidates if c.is_file() and (sha is None or file_sha256(c) == sha)), None)
    if found is None:
        raise ValueError(f"{artifact.path.name}: its source {name} (sha256 {str(sha)[:12]}...) is not found beside "
                         f"it, one folder up or among the shipped models; pass --model")
    if found.suffix == ".pt2":
        meta = read_quantized_meta(found)
        if not meta.get("float"):
            raise ValueError(f"{found} (the int8 source of {artifact.path.name}) records no float checkpoint; "
                             f"pass --model")
        if not isinstance(meta["float"], str) or Path(meta["float"]).name != meta["float"]:
            # written by eapnet.compress.pipeline as a file name beside the .pt2; a path would lead anywhere
            raise ValueError(f"{found} names float checkpoint {meta['float']!r}, not a file name beside it; "
                             f"pass --model")
        fp = found.parent / meta["float"]
        if not fp.is_file():
            raise ValueError(f"{found} names float checkpoint {meta['float']}, not found at {fp}; pass --model")
        return fp
    return found


def _reference(artifact: Artifact, src, override: str | None) -> tuple[bool, str | None]:
    """``(is the reference the export's own float model, a warning line when it is not)``. Without
    ``override`` the reference is the recorded source by construction; an override counts as it when its sha256
    is the recorded source's or that of the float checkpoint the recorded source leads to."""

    if override is None:
        return True, None
    name, sha = _source_of(artifact)
    if artifact.stamp == "mismatch":
        why = "the file is not the one its sidecar / metadata was written for, so it has no trusted source"
    elif sha == src.sha256:
        return True, None
    else:
        try:
            if file_sha256(_export_float(artifact)) == src.sha256:
                return True, None
            why = f"the export recorded {name or '?'} (sha256 {str(sha)[:12]}...)"
        except ValueError as e:
            why = f"the export's recorded source cannot be checked ({e})"
    return False, (f"REFERENCE IS NOT THE EXPORT SOURCE {artifact.path.name}: its verdict is against --model "
                   f"{override} (sha256 {src.sha256[:12]}...) only: {why}")


# ------------------------------------------------------------------------------------------ comparison


def _cap(v: float) -> float:
    return min(float(v), PSNR_CAP)


def _scene_row(scene: Scene, out: np.ndarray, ref: np.ndarray) -> dict:
    if not np.all(np.isfinite(out)):
        return {"dataset": scene.dataset, "id": scene.id, "error": "artifact output holds NaN/inf"}
    row = {"dataset": scene.dataset, "id": scene.id, "size": list(out.shape[:2]),
           "max_abs_vs_float": float(np.abs(out - ref).max()),
           "psnr_mu_vs_float": _cap(psnr_mu(ref, np.clip(out, 0, None)))}
    if scene.cropped_from:
        row["cropped_from"] = list(scene.cropped_from)
    if scene.gt is not None:
        out_c = np.clip(out, 0, None)
        row.update({"psnr_mu": psnr_mu(scene.gt, out_c), "psnr_l": psnr_l(scene.gt, out_c),
                    "float_psnr_mu": psnr_mu(scene.gt, ref), "float_psnr_l": psnr_l(scene.gt, ref)})
    return row


def _summary(rows: list[dict]) -> dict:
    """Per dataset: scene count, worst PSNR-mu vs float, worst max abs, mean GT scores and drop."""
    out = {}
    for name in dict.fromkeys(r["dataset"] for r in rows):
        rs = [r for r in rows if r["dataset"] == name and "error" not in r]
        d = {"scenes": len(rs), "psnr_mu_vs_float_min": min(r["psnr_mu_vs_float"] for r in rs),
             "psnr_mu_vs_float_mean": float(np.mean([r["psnr_mu_vs_float"] for r in rs])),
             "max_abs_vs_float": max(r["max_abs_vs_float"] for r in rs)} if rs else {"scenes": 0}
        gt = [r for r in rs if "psnr_mu" in r]
        if gt:
            for k in ("psnr_mu", "psnr_l", "float_psnr_mu", "float_psnr_l"):
                d[k] = float(np.mean([r[k] for r in gt]))
            d["gt_drop"] = d["float_psnr_mu"] - d["psnr_mu"]
        out[name] = d
    return out


def gt_margin(summary: dict, threshold: Threshold | None) -> float | None:
    """dB of the threshold's ground-truth budget (``max_gt_drop``) a :func:`_summary` leaves on its worst
    dataset; None without ground truth or threshold."""
    drops = [d["gt_drop"] for d in summary.values() if "gt_drop" in d]
    return None if threshold is None or not drops else threshold.max_gt_drop - max(drops)


def check(precision: str, rows: list[dict], threshold: Threshold | None = None) -> list[str]:
    """Every threshold breach of one artifact's scene rows, as sentences (empty = pass)."""
    t = threshold or THRESHOLDS.get(precision)
    if t is None:
        return [f"no threshold for precision {precision!r} (known: {sorted(THRESHOLDS)})"]
    fails = [f"{r['dataset']}/{r['id']}: {r['error']}" for r in rows if "error" in r]
    if not rows:
        fails.append("no scenes were compared")
    for name, d in _summary(rows).items():
        if not d["scenes"]:
            continue
        below = [r for r in rows if r["dataset"] == name and "error" not in r
                 and r["psnr_mu_vs_float"] < t.floor(r.get("float_psnr_mu"))]
        if below:
            worst = min(below, key=lambda r: r["psnr_mu_vs_float"] - t.floor(r.get("float_psnr_mu")))
            floor = t.floor(worst.get("float_psnr_mu"))
            why = (f" (the float model's own {worst['float_psnr_mu']:.2f} dB vs ground truth + {t.scene_margin:g})"
                   if floor < t.min_psnr_mu_vs_float else "")
            fails.append(f"{name}/{worst['id']}: PSNR-mu vs float {worst['psnr_mu_vs_float']:.2f} dB < "
                         f"{floor:.2f} dB{why}" + (f", and {len(below) - 1} more scenes" if len(below) > 1 else ""))
        if t.max_abs is not None and d["max_abs_vs_float"] > t.max_abs:
            fails.append(f"{name}: max abs error vs float {d['max_abs_vs_float']:.3g} > {t.max_abs:g}")
        if "gt_drop" in d and d["gt_drop"] > t.max_gt_drop:
            fails.append(f"{name}: mean PSNR-mu vs ground truth {d['psnr_mu']:.2f} dB, {d['gt_drop']:.3f} dB "
                         f"below the float model's {d['float_psnr_mu']:.2f} (budget {t.max_gt_drop:g} dB)")
    return fails


def _predict_canvases(model: nn.Module, canvases: Sequence[Canvas], desc: str, progress: bool) -> list[np.ndarray]:
    return [predict(model, c.ldrs, c.evs) for c in tqdm(canvases, desc=desc, disable=not progress, leave=False)]


# ------------------------------------------------------------------------------------------ localisation


def _eager_int8(artifact: Artifact, float_src) -> tuple[nn.Module | None, str]:
    """The quantized eager model behind an int8 artifact: its ``.pt2`` source, or PTQ redone on eapnet.calib."""

    name, _ = _source_of(artifact)
    for c in (Path(name), artifact.path.parent / Path(name).name, artifact.path.parent.parent / Path(name).name):
        if c.suffix == ".pt2" and c.is_file():
            return load_quantized(c)[0], f"int8 program {c.name}"
    if artifact.kind == "pte":
        return ptq_source(float_src).module, "PTQ redone (XNNPACK quantizer, eapnet.calib)"

    return _w8a8_module(float_src, None)[0], "PTQ redone (Core ML quantizer, eapnet.calib)"


_GAP_FLOOR = 0.2   # a .pte's conv outputs differ from its eager program's by fixed-point rounding that grows
                   # through the network (up to rel. error 0.14 in a faithful 150 G program): jumps above this only
_DIAGNOSE_SIDE = 512   # the eager int8 reference ops are slow: diagnose at most a 512 x 512 centre crop


def _worst_scene(scenes: Sequence[Scene], rows: list[dict], threshold: Threshold | None = None) -> Scene:
    """The scene on which the artifact is furthest below its floor (``threshold.floor`` of that scene; without
    a threshold, furthest from float; a scene that failed to run first; the smallest scene when nothing ran),
    centre-cropped to at most ``_DIAGNOSE_SIDE`` squared."""
    by_key = {(s.dataset, s.id): s for s in scenes}

    def below(r):
        floor = threshold.floor(r.get("float_psnr_mu")) if threshold else 0.0
        return r.get("psnr_mu_vs_float", 0.0) - floor

    ranked = sorted((r for r in rows if (r["dataset"], r["id"]) in by_key), key=lambda r: ("error" not in r, below(r)))
    scene = by_key[(ranked[0]["dataset"], ranked[0]["id"])] if ranked else \
        min(scenes, key=lambda s: (s.gt is None, s.ldrs.shape[1] * s.ldrs.shape[2]))
    return centre_crop(scene, (_DIAGNOSE_SIDE, _DIAGNOSE_SIDE))


def diagnose(artifact: Artifact, float_src, scene: Scene, threshold: Threshold, gutter: int = 16) -> dict:
    """Why an artifact failed, on ``scene`` (the artifact's worst, :func:`_worst_scene`) taken alone: the eager
    (PyTorch) program of the same precision vs float, and the artifact itself vs float, each on the scene
    without the other scenes of the packed canvas (the artifact on a canvas that holds only this scene);
    for int8 also the per-layer error (:func:`localise`).

    The verdict: the eager program already drifts (the model or its quantization), or only the artifact does
    (lowering, runtime or a damaged file), or neither does on the scene alone: then the failure came with the
    canvas, whose neighbouring scenes reach into a small scene through the network's receptive field."""

    x, e = to_batch(scene.ldrs, scene.evs)
    ref = predict(float_src.module, scene.ldrs, scene.evs)
    if artifact.precision in ("int8", "w8a8"):
        eager, how = _eager_int8(artifact, float_src)
    else:
        eager, how = float_src.module, "the float model itself (fp32/fp16/int8w programs have no eager twin)"
    row = _scene_row(scene, predict(eager, scene.ldrs, scene.evs), ref)
    (canvas,) = pack([scene], artifact.size, gutter)
    (art_out,), (art_ref,) = (_predict_canvases(m, [canvas], "diagnosis", False)
                              for m in (ProgramModule(artifact), float_src.module))
    (placed, art_crop), (_, ref_crop) = next(crops(canvas, art_out)), next(crops(canvas, art_ref))
    art_row = _scene_row(placed, art_crop, ref_crop)   # placed: the scene as it fits the artifact's size
    floor = threshold.floor(row.get("float_psnr_mu"))
    artifact_drifts = row["psnr_mu_vs_float"] >= floor and art_row["psnr_mu_vs_float"] < floor
    if row["psnr_mu_vs_float"] < floor:
        verdict = "the eager program already drifts: the error is in the model/quantization"
    elif artifact_drifts:
        verdict = ("the eager program is within budget and the artifact is not: the drift comes from the "
                   "artifact itself (lowering, runtime or a damaged file)")
    else:
        verdict = ("on the scene alone both the eager program and the artifact are within budget: the failure "
                   "comes with the packed canvas (its other scenes reach into this one through the receptive "
                   "field), so the error is the model's quantization in that context, not the artifact's")
    where = f"{scene.dataset}/{scene.id}" + (f" (centre {scene.ldrs.shape[1]}x{scene.ldrs.shape[2]})"
                                             if scene.cropped_from else "")
    d = {"scene": where, "eager": how, "eager_psnr_mu_vs_float": row["psnr_mu_vs_float"],
         "eager_max_abs_vs_float": row["max_abs_vs_float"],
         "artifact_alone_psnr_mu_vs_float": art_row["psnr_mu_vs_float"], "verdict": verdict}
    if artifact.precision in ("int8", "w8a8"):
        d["layers"] = localise(layer_errors(float_src.module, eager, x, e))
    if artifact_drifts and artifact.kind == "pte" and artifact.precision == "int8":
        try:   # where the .pte leaves its eager program; a help that must not lose the figures above
            rows, relowered = program_gaps(eager, x, e)
            a = d["artifact_layers"] = localise(rows, floor=_GAP_FLOOR)
            a["relowered_psnr_mu_vs_float"] = _scene_row(
                scene, relowered[0].permute(1, 2, 0).numpy(), ref)["psnr_mu_vs_float"]
            if a["relowered_psnr_mu_vs_float"] < floor:
                a["verdict"] = ("the program lowered again drifts on the scene alone too: lowering or the runtime "
                                "is the cause" + (f", first at `{a['first_jumps'][0]['layer']}`"
                                                  if a["first_jumps"] else ""))
            else:
                a["verdict"] = ("the program lowered again is within budget on the scene alone: the shipped file is "
                                "not what this program lowers to (a damaged file, or one exported from another "
                                "program or at another size)")
        except Exception as err:
            d["artifact_layers"] = {"error": f"{type(err).__name__}: {err}"}
    return d


# ------------------------------------------------------------------------------------------ the harness


def run_parity(artifacts: Sequence[str | os.PathLike], *, float_spec: str | None = None,
               datasets: Sequence[str] = DATASETS, limit: int | None = 8, gutter: int = 16,
               device: str = "auto", threads: int | None = None, write_back: bool = True,
               progress: bool = True, shared_exposures: bool = True, stitch: bool = False,
               tile_overlap: int = TILE_OVERLAP, runners: Sequence[str] | Mapping[str, Sequence[str]] = (),
               cpus: Sequence[str] = CPUS, keep_frames: str | os.PathLike | None = None,
               log=print) -> dict:
    """Check every artifact (see the module docstring); returns the report dict (``passed`` per artifact
    and overall). Float outputs are computed once per (float model, canvas size) and shared. ``stitch``: where
    an artifact is smaller than the full-size frame (``fullres``) and each side more than twice
    ``tile_overlap``, it is also run tiled over the whole frame (``tile_overlap`` pixels between tiles,
    :func:`eapnet.inference.predict`) and the stitched frame checked against the float model run over the
    same tiles, with the precision's thresholds; each artifact's ``gt_margin`` is the dB of its ground-truth
    budget left on its worst dataset (:func:`gt_margin`). ``runners``:
    also run every ``.pte`` through the native runner (``"native"``: this machine; ``"aarch64"``: each of
    ``cpus`` under QEMU) and fail one whose output differs from the Python runtime's beyond float rounding
    (:mod:`eapnet.export.native_check`); a mapping gives each artifact (by path as given) its own runners.
    ``keep_frames``: a folder where each stitched full-size output and its float reference are kept
    (:func:`save_frame`, float16 HDR), named in the artifact's ``stitched["frames"]``; what report pages show."""
    dev = resolve_device(device)
    scenes, skipped = load_scenes(datasets, limit, shared_exposures=shared_exposures)
    if not scenes:
        raise ValueError(f"no scenes to compare on (datasets {list(datasets)}: {skipped})")
    results, float_cache, verdicts = [], {}, []
    for spec in artifacts:
        t0 = time.time()
        entry = {"artifact": Path(spec).name, "path": str(spec)}
        try:
            art = open_artifact(spec, threads=threads)
            for w in art.warnings:
                log(f"WARNING {w}")
            entry.update(artifact_sha256=art.sha256, stamp=art.stamp, warnings=list(art.warnings))
            src = resolve_float(art, float_spec)
            is_source, w = _reference(art, src, float_spec)
        except Exception as e:   # a missing, damaged or unattributable artifact is a failure of that artifact
            if not isinstance(e, (FileNotFoundError, ValueError)):
                e = f"{Path(spec).name} cannot be opened ({type(e).__name__}: {e})"
            entry.update(passed=False, failures=[str(e)])
            results.append(entry)
            log(f"FAIL {Path(spec).name}: {e}")
            continue
        if w:
            log(f"WARNING {w}")
            entry["warnings"].append(w)
        threshold = THRESHOLDS.get(art.precision)
        canvases = pack(scenes, art.size, gutter)
        key = (src.sha256, art.size)
        if key not in float_cache:
            model = src.module.to(dev).eval()
            float_cache[key] = _predict_canvases(model, canvases, f"float {src.variant} on {dev.type}", progress)
            src.module.cpu()
        refs = float_cache[key]
        rows = []
        try:
            outs = _predict_canvases(ProgramModule(art), canvases, art.path.name, progress)
        except Exception as e:   # an artifact that cannot run is a failure, not a crash of the harness
            outs, run_error = None, f"execution failed: {type(e).__name__}: {e}"
        if outs is not None:
            for c, out, ref in zip(canvases, outs, refs, strict=True):
                for (s, o), (_, r) in zip(crops(c, out), crops(c, ref), strict=True):
                    rows.append(_scene_row(s, o, r))
        fails = check(art.precision, rows, threshold) if outs is not None else [run_error]
        stitched = None
        # a program too small for the overlap cannot tile a frame (the tiler needs overlap < half a tile)
        tiles = stitch and tile_overlap < min(art.size) // 2
        big = [sc for sc in scenes if tiles and sc.dataset == "fullres" and sc.ldrs.shape[1] >= art.size[0]
               and sc.ldrs.shape[2] >= art.size[1] and tuple(sc.ldrs.shape[1:3]) != tuple(art.size)]
        s_outs = []
        if outs is not None and big:
            s_rows, s_outs = _stitched_rows(art, src, big, tile_overlap, dev, float_cache, progress)
            stitched = {"tile": list(art.size), "overlap": tile_overlap, "reference": "float model, same tiles",
                        "summary": _summary(s_rows), "scenes": s_rows}
            if keep_frames is not None:
                stitched["frames"] = _keep_frames(Path(keep_frames), art, src, big, s_outs, tile_overlap,
                                                  float_cache)
            fails += [f"stitched {art.size[0]}x{art.size[1]} tiles (overlap {tile_overlap}): {f}"
                      for f in check(art.precision, s_rows, threshold)]
        machines = [{"runner": "python", "arch": platform.machine(), "cpu": host_cpu(), "executor": art.executor,
                     "passed": not fails, "max_abs_vs_reference": max(
                         (r["max_abs_vs_float"] for r in rows if "max_abs_vs_float" in r), default=None)}]
        its_runners = runners.get(str(spec), ()) if isinstance(runners, Mapping) else runners
        if outs is not None and its_runners and art.kind == "pte":
            rows_n, fails_n = runner_rows(art, canvases, outs, runners=its_runners, cpus=cpus,
                                          stitched=[(sc, o) for sc, o in zip(big, s_outs) if o is not None],
                                          tile_overlap=tile_overlap, threads=threads, log=log)
            machines += rows_n
            fails += fails_n
        entry.update({
            "kind": art.kind, "precision": art.precision, "size": list(art.size), "executor": art.executor,
            "variant": art.meta.get("variant"),
            "float": {"path": src.path, "sha256": src.sha256, "device": str(dev), "is_export_source": is_source},
            "export_source": dict(zip(("path", "sha256"), _source_of(art))),   # as recorded: see "stamp"
            "threshold": asdict(threshold) if threshold else None, "canvases": len(canvases),
            "summary": _summary(rows), "gt_margin": gt_margin(_summary(rows), threshold),
            "scenes": rows, "failures": fails, "passed": not fails,
            "machines": machines,
            "seconds": round(time.time() - t0, 1), **({"stitched": stitched} if stitched else {})})
        if fails and threshold is not None:
            try:
                entry["diagnosis"] = diagnose(art, src, _worst_scene(scenes, rows, threshold), threshold, gutter)
            except Exception as e:   # diagnosis is a help, never the reason the report is lost
                entry["diagnosis"] = {"error": f"{type(e).__name__}: {e}"}
        results.append(entry)
        log(f"{'PASS' if not fails else 'FAIL'} {art.path.name} ({art.executor}): "
            + ("; ".join(fails) if fails else _one_line(entry["summary"])))
        verdicts.append((art, entry))
    if write_back:   # only once every artifact has its verdict: an aborted run marks none of them
        for art, entry in verdicts:
            _write_back(art, entry)
    return {"passed": all(r["passed"] for r in results), "artifacts": results, "skipped_datasets": skipped,
            "datasets": list(datasets), "scenes_per_dataset": limit, "shared_exposures": shared_exposures,
            "gutter": gutter,
            "thresholds": {k: asdict(v) for k, v in THRESHOLDS.items()}}


def _stitched_rows(art: Artifact, src, scenes: Sequence[Scene], overlap: int, dev, float_cache: dict,
                   progress: bool) -> tuple[list[dict], list[np.ndarray | None]]:
    """Scene rows of ``art`` run tiled over each whole scene against the float model over the same tiles, and
    the stitched outputs (None where the artifact failed)."""
    rows, outs = [], []
    tile = tuple(art.size)
    for sc in tqdm(scenes, desc=f"{art.path.name} stitched", disable=not progress, leave=False):
        key = (src.sha256, tile, overlap, sc.dataset, sc.id)
        if key not in float_cache:
            float_cache[key] = predict(src.module.to(dev).eval(), sc.ldrs, sc.evs, tile=tile, overlap=overlap)
            src.module.cpu()
        try:
            out = predict(ProgramModule(art), sc.ldrs, sc.evs, tile=tile, overlap=overlap)
        except Exception as e:
            rows.append({"dataset": sc.dataset, "id": sc.id, "error": f"execution failed: {type(e).__name__}: {e}"})
            outs.append(None)
            continue
        rows.append(_scene_row(sc, out, float_cache[key]))
        outs.append(out)
    return rows, outs


FRAME_DTYPE = np.float16
"""Kept frames are HDR in the ground-truth domain as float16 (values clipped to its finite range, 65504): about
1e-3 relative precision (a frame stored and read back differs from itself by far less than any artifact does from
its float model), half of float32's bytes."""


def save_frame(path: Path, hdr: np.ndarray) -> None:
    """Write one ``(H, W, 3)`` HDR frame as a float16 ``.npy`` (atomically)."""
    if hdr.ndim != 3 or hdr.shape[2] != 3:
        raise ValueError(f"{path.name}: a frame is (H, W, 3), got {hdr.shape}")
    top = float(np.finfo(FRAME_DTYPE).max)
    with atomic_path(path) as tmp:
        np.save(tmp, np.clip(hdr, 0.0, top).astype(FRAME_DTYPE), allow_pickle=False)


MAX_FRAME_PIXELS = 4096 * 4096
"""A kept frame larger than this is refused before it is read (a 4K-square frame is 100 MB as float16)."""

_MAX_HEADER = 10_000   # bytes of a .npy header; numpy's own reader refuses longer ones too


def load_frame(path: str | os.PathLike) -> np.ndarray:
    """A frame written by :func:`save_frame`, as float32. The file is untrusted: its header is read and checked
    (``.npy`` version 1-3, at most 10 kB, float16, C order, ``(H, W, 3)`` with positive sides and at most
    :data:`MAX_FRAME_PIXELS` pixels, and the file holding exactly that many values) before any data is read;
    anything else is refused with a ValueError naming the file. Never unpickles."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such frame file")
    size = path.stat().st_size
    with open(path, "rb") as f:
        try:
            major, minor = np.lib.format.read_magic(f)
        except ValueError as e:
            raise ValueError(f"{path}: not a .npy frame ({e})") from None
        if (major, minor) not in ((1, 0), (2, 0), (3, 0)):
            raise ValueError(f"{path}: not a .npy frame (format version {major}.{minor})")
        width = 2 if major == 1 else 4
        length = int.from_bytes(f.read(width), "little")
        if length > _MAX_HEADER or f.tell() + length > size:
            raise ValueError(f"{path}: not a .npy frame (a {length}-byte header)")
        f.seek(f.tell() - width)
        try:
            read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(f)
        except (ValueError, SyntaxError) as e:
            raise ValueError(f"{path}: not a .npy frame ({e})") from None
        if dtype != FRAME_DTYPE or len(shape) != 3 or shape[2] != 3:
            raise ValueError(f"{path}: a kept frame is ({FRAME_DTYPE.__name__}, H x W x 3), "
                             f"got {dtype} {shape}")
        if fortran:
            raise ValueError(f"{path}: a kept frame is in C order, this one is in Fortran order")
        if not all(isinstance(d, int) and d > 0 for d in shape):
            raise ValueError(f"{path}: a kept frame has positive sides, got {shape}")
        count = shape[0] * shape[1] * 3
        if shape[0] * shape[1] > MAX_FRAME_PIXELS:
            raise ValueError(f"{path}: {shape[0]}x{shape[1]} is larger than {MAX_FRAME_PIXELS} pixels")
        if size - f.tell() != count * 2:
            raise ValueError(f"{path}: truncated or padded ({size - f.tell()} bytes of data for {count} values)")
        data = np.fromfile(f, dtype=FRAME_DTYPE, count=count)
    return data.reshape(shape).astype(np.float32)


def _keep_frames(folder: Path, art: Artifact, src, scenes: Sequence[Scene], outs: Sequence[np.ndarray | None],
                 overlap: int, float_cache: dict) -> list[dict]:
    """Save each stitched output and its float reference (once per float model, tile and scene) under
    ``folder``; returns ``[{"dataset", "id", "output", "float"}]`` with paths relative to ``folder``."""
    tile = tuple(art.size)
    kept = []
    for sc, out in zip(scenes, outs, strict=True):
        if out is None:
            continue
        scene = f"{sc.dataset}-{sc.id}"
        ref = folder / f"float-{src.sha256[:12]}-{tile[0]}x{tile[1]}-o{overlap}.{scene}.npy"
        if not ref.is_file():
            save_frame(ref, float_cache[(src.sha256, tile, overlap, sc.dataset, sc.id)])
        mine = folder / f"{art.path.name}.{art.sha256[:12]}.{scene}.npy"   # a re-exported file has its own
        save_frame(mine, out)
        kept.append({"dataset": sc.dataset, "id": sc.id, "output": mine.name, "float": ref.name})
    return kept


def _one_line(summary: dict) -> str:
    worst = min(d["psnr_mu_vs_float_min"] for d in summary.values() if d["scenes"])
    drops = ", ".join(f"{k} {d['gt_drop']:+.3f} dB" for k, d in summary.items() if "gt_drop" in d)
    return f"worst PSNR-mu vs float {worst:.2f} dB" + (f"; GT drop {drops}" if drops else "")


def _write_back(art: Artifact, entry: dict) -> None:
    """Record the measured parity in the artifact (``.mlpackage`` metadata / ``.pte`` sidecar), atomically.

    The stamp names what was measured: the artifact's own hash at check time (``artifact_sha256``, re-checked
    whenever the artifact is opened), the reference actually used (``reference``: path and sha256) and whether
    it is the export's own float model (``reference_is_export_source``). ``passed`` is the verdict against that
    reference: with ``reference_is_export_source`` false it says nothing about the recorded source."""

    record = {"passed": entry["passed"], "executor": entry["executor"], "measured": time.strftime("%Y-%m-%d"),
              "artifact_sha256": entry["artifact_sha256"],
              "reference": {"path": entry["float"]["path"], "sha256": entry["float"]["sha256"]},
              "reference_is_export_source": entry["float"]["is_export_source"],
              "summary": entry["summary"], "failures": entry["failures"], "machines": entry["machines"],
              **({"warnings": entry["warnings"]} if entry["warnings"] else {})}
    if art.kind == "mlpackage":
        set_metadata(art.path, parity=record)
    else:
        sidecar = art.path.with_suffix(".json")
        atomic_write_json(sidecar, {**json.loads(sidecar.read_text()), "parity": record})
    if manifest_path(art.path).is_file():   # the app-facing summary beside the artifact
        vals = [d for d in entry["summary"].values() if d.get("scenes")]
        set_parity(art.path, {
            **{k: record[k] for k in ("passed", "measured", "reference", "reference_is_export_source",
                                      "artifact_sha256", "machines")},
            "worst_psnr_mu_vs_float": min((d["psnr_mu_vs_float_min"] for d in vals), default=None),
            "gt_drop": {k: d["gt_drop"] for k, d in entry["summary"].items() if "gt_drop" in d},
            **({"notes": entry["failures"] + entry["warnings"]} if entry["failures"] or entry["warnings"] else {})})


# ------------------------------------------------------------------------------------------ report


def _f(v, spec=".2f") -> str:
    return "–" if v is None else format(v, spec)


def report_markdown(rep: dict) -> str:
    lines = ["# Parity of exported artifacts against the float model", "",
             f"Datasets: {', '.join(rep['datasets'])} (at most {rep['scenes_per_dataset']} scenes each, packed "
             f"with a {rep['gutter']}-pixel gutter)."]
    if rep["skipped_datasets"]:
        lines.append("Skipped: " + "; ".join(f"{k} ({v})" for k, v in rep["skipped_datasets"].items()) + ".")
    lines += ["", "PSNR in dB. *vs float*: the artifact's output scored against the float model's (worst scene); "
              "*GT*: mean PSNR-mu against ground truth, artifact / float.", ""]
    gt_sets = [d for d in rep["datasets"] if any(d in r.get("summary", {}) and "gt_drop" in r["summary"][d]
                                                for r in rep["artifacts"])]
    head = ["artifact", "executed by", "precision", "vs float (worst)", "max abs"]
    head += [f"GT {d} (drop)" for d in gt_sets] + ["verdict"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rep["artifacts"]:
        s = r.get("summary", {})
        vals = [d for d in s.values() if d.get("scenes")]
        cells = [r["artifact"], r.get("executor", "–"), r.get("precision", "–"),
                 _f(min((d["psnr_mu_vs_float_min"] for d in vals), default=None)),
                 _f(max((d["max_abs_vs_float"] for d in vals), default=None), ".2e")]
        for d in gt_sets:
            x = s.get(d, {})
            cells.append(f"{_f(x.get('psnr_mu'))} / {_f(x.get('float_psnr_mu'))} ({_f(x.get('gt_drop'), '+.3f')})"
                         if "gt_drop" in x else "–")
        verdict = "pass" if r["passed"] else "**FAIL**"
        if r.get("float", {}).get("is_export_source") is False:
            verdict += " (vs --model, not its source)"
        cells.append(verdict)
        lines.append("| " + " | ".join(cells) + " |")
    warned = [w for r in rep["artifacts"] for w in r.get("warnings", [])]   # each line names its artifact
    if warned:
        lines += ["", "Warnings:", ""] + [f"- **{w}**" for w in warned]
    tiled = [r for r in rep["artifacts"] if r.get("stitched")]
    if tiled:
        lines += ["", "Tile programs run tiled over whole scenes, as an app runs them; the stitched frame against the "
                      "float model over the same tiles (PSNR-mu, worst scene):", "",
                  "| artifact | tiles | overlap | scenes | vs float (worst) | max abs |", "|---|---|---:|---|---:|---:|"]
        for r in tiled:
            st = r["stitched"]
            vals = [d for d in st["summary"].values() if d.get("scenes")]
            lines.append(f"| {r['artifact']} | {st['tile'][0]}x{st['tile'][1]} | {st['overlap']} | "
                         + ", ".join(f"{k} {d['scenes']}" for k, d in st["summary"].items()) + " | "
                         + _f(min((d["psnr_mu_vs_float_min"] for d in vals), default=None)) + " | "
                         + _f(max((d["max_abs_vs_float"] for d in vals), default=None), ".2e") + " |")
    ran = [(r, m) for r in rep["artifacts"] for m in r.get("machines", []) if m["runner"] != "python"]
    if ran:
        lines += ["", "The same programs through the native runner (C++, `eapnet/export/runner`), against the Python "
                      "runtime's output on this machine (max abs difference over the canvases and stitched frames; "
                      "bound: float rounding):", "",
                  "| artifact | runner | CPU | max abs vs x86 | bound | seconds | verdict |",
                  "|---|---|---|---:|---:|---:|---|"]
        for r, m in ran:
            lines.append(f"| {r['artifact']} | {m['runner']} | {m['cpu']} | "
                         + (f"{m['max_abs_vs_x86']:.2e} | {m['bound']:.1e}" if "error" not in m else "– | –")
                         + f" | {m['seconds']} | " + ("pass" if m["passed"] else f"**FAIL** {m.get('error', '')}")
                         + " |")
        notes = sorted({m["note"] for _, m in ran if m.get("note")})
        lines += [""] + [f"- {n}" for n in notes] if notes else []
    lines += ["", "Thresholds (worst-scene PSNR-mu vs float ≥, mean GT drop ≤, max abs ≤):", ""]
    lines += [f"- {k}: {v['min_psnr_mu_vs_float']:g} dB"
              + (f" (on a scene with ground truth at most the float model's PSNR-mu there + {v['scene_margin']:g} dB)"
                 if v.get("scene_margin") is not None else "")
              + f", {v['max_gt_drop']:g} dB, {'–' if v['max_abs'] is None else format(v['max_abs'], 'g')}"
              for k, v in rep["thresholds"].items()]
    for r in rep["artifacts"]:
        if r["passed"]:
            continue
        lines += ["", f"## {r['artifact']}: failed", ""] + [f"- {f}" for f in r["failures"]]
        d = r.get("diagnosis")
        if d and "error" not in d:
            alone = (f", the artifact {_f(d['artifact_alone_psnr_mu_vs_float'])} dB"
                     if "artifact_alone_psnr_mu_vs_float" in d else "")
            lines += ["", f"Diagnosis on {d['scene']} alone: {d['eager']} scores {_f(d['eager_psnr_mu_vs_float'])} dB "
                          f"PSNR-mu vs float{alone}; {d['verdict']}."]
            for j in d.get("layers", {}).get("first_jumps", []):
                lines.append(f"- error jumps at `{j['layer']}`: relative error {j['rel_err']:.3g}"
                             + (f" ({j['x_previous_max']:.1f}x the largest before)" if j["x_previous_max"] else ""))
            a = d.get("artifact_layers", {})
            if "error" in a:
                lines.append(f"\nLocalisation inside the .pte failed: {a['error']}")
            elif a:
                lines += ["", f"Inside the .pte (the eager program lowered again with each conv's int8 output as a "
                              f"program output, {a['layers']} taps, run against the eager program; "
                              f"{_f(a['relowered_psnr_mu_vs_float'])} dB vs float): {a['verdict']}."]
                for j in a["first_jumps"] or ([a["worst"]] if a["worst"] else []):
                    steps = ("" if j["max_steps"] is None else
                             f", up to {j['max_steps']:.0f} quantization steps, {100 * j['off_share']:.2f} % of "
                             f"values more than one step apart")
                    lines.append(f"- {'departs' if 'x_previous_max' in j else 'largest gap'} at `{j['layer']}`: "
                                 f"relative error {j['rel_err']:.3g}{steps}")
        elif d:
            lines.append(f"\nDiagnosis failed: {d['error']}")
    return "\n".join(lines) + "\n"
