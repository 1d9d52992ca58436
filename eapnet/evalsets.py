"""The evaluation sets and the one scoring function, shared by training, evaluation, compression, export parity
and the ablation tool.

A scene is a :class:`Scene` ``(id, ldrs, evs, gt, motion)``:

- ``ldrs`` float32 ``(3, H, W, 3)``: short / medium / long LDR frames, gamma-encoded, RGB, in [0, 1];
- ``evs`` float32 ``(3,)``: stops relative to the medium frame;
- ``gt`` float32 ``(H, W, 3)``: HDR in the challenge's ground-truth domain (gamma-encoded with 2.24,
  medium-frame units, >= 0), or ``None`` (the full-size frame has none);
- ``motion`` bool ``(H, W)`` or ``None``: where the frames disagree because something moved (synthetic
  scenes only; :func:`eapnet.data.synthetic.generate_scene_with_info`).

Sets (lazy lists of ``(id, source)`` until :func:`materialise`):

- :func:`heldout_synthetic`: ``n`` scenes of ``size``^2 from ``HELDOUT_SEED`` (never trained on);
- :func:`real_crops`: the real NTIRE crops with ground truth in ``SHARED_SAMPLES/crops256`` (when present);
- :func:`folder_scenes`: any NTIRE or Kalantari folder;
- :func:`calibration`: the shipped calibration set (``calib_data``), or another calibration folder.

:func:`score` runs a model through the one inference path (:func:`eapnet.inference.predict`) and returns
mean official PSNR-μ / PSNR-l (dB), PSNR-μ inside moving regions where a scene has a motion mask, and
PSNR-μ against a teacher's output when one is given.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

CALIBRATION_SCENES = 16
"""Calibration scenes used for sensitivity probes, PTQ and QAT observers (of the shipped 32)."""
HELDOUT_SIZE = 256
"""Side in pixels of the held-out synthetic scenes in every report."""


class Scene(NamedTuple):
    id: str
    ldrs: np.ndarray
    evs: np.ndarray
    gt: np.ndarray | None
    motion: np.ndarray | None = None


# ------------------------------------------------------------------------------------------------ sets


def heldout_synthetic(n: int, size: int = HELDOUT_SIZE) -> list[tuple[str, Any]]:
    """The held-out synthetic set: ``n`` lazy scenes ``size`` x ``size``, ids ``0000``...; scene ``i`` is
    ``generate_scene(scene_seed(HELDOUT_SEED, i), size, size)`` (the seed training never uses). Each source
    also knows its motion mask, so scores include moving regions."""
    from eapnet.data.synthetic import HELDOUT_SEED, SceneSource, scene_seed

    if n < 0 or size < 16:
        raise ValueError(f"need n >= 0 scenes of size >= 16, got n={n}, size={size}")
    return [(f"{i:04d}", SceneSource(scene_seed(HELDOUT_SEED, i), size, size)) for i in range(n)]


def real_crops(folder: str | os.PathLike | None = None) -> list[tuple[str, Any]]:
    """The real NTIRE crops with ground truth (default ``SHARED_SAMPLES/crops256``), lazily; ``[]`` when the
    folder is absent."""
    from eapnet.data import SHARED_SAMPLES

    folder = Path(folder) if folder is not None else SHARED_SAMPLES / "crops256"
    return folder_scenes(folder)[0] if folder.is_dir() else []


def folder_scenes(folder: str | os.PathLike) -> tuple[list[tuple[str, Any]], list[str]]:
    """``(scenes_with_gt, ids_without_gt)`` of an NTIRE or Kalantari folder; scenes are lazy readers.

    Raises ``DataError``/``MissingFileError`` (``eapnet.data``) for a missing folder or unknown layout."""
    from eapnet.data import read_ntire, scene_sources_from_folder
    from eapnet.data.ntire import ntire_paths
    from eapnet.data.patches import _source_name

    scenes, no_gt = [], []
    for i, src in enumerate(scene_sources_from_folder(folder)):
        sid = _source_name(src, i)
        # NTIRE scenes may lack ID_gt.png; Kalantari scenes always carry HDRImg.hdr (their reader needs it)
        if getattr(src, "func", None) is read_ntire and not ntire_paths(*src.args)["gt"].is_file():
            no_gt.append(sid)
        else:
            scenes.append((sid, src))
    return scenes, no_gt


def calibration(folder: str | os.PathLike | None = None, limit: int | None = CALIBRATION_SCENES) -> list[Scene]:
    """The first ``limit`` scenes of a calibration folder (default: the shipped ``calib_data/default``)."""
    from calib_data import DEFAULT, load_calibration

    return [Scene(sid, l, e, g) for sid, l, e, g in load_calibration(Path(folder) if folder else DEFAULT, limit)]


def calibration_batches(folder: str | os.PathLike | None = None, limit: int | None = CALIBRATION_SCENES
                        ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """:func:`calibration` as the ``(ldrs, evs)`` batches of 4 that calibration and range equalisation take."""
    return [(ldrs, evs) for ldrs, evs, _ in as_batches(calibration(folder, limit))]


def load(item: Sequence, dataset: str = "scenes") -> Scene:
    """One scene from ``(id, source)`` (lazy), ``(id, ldrs, evs, gt)`` or a :class:`Scene`; validated.
    A source with a ``motion_mask()`` method (synthetic scenes) gives the motion mask too."""
    from eapnet.data import load_scene

    if isinstance(item, Scene):
        return item
    if len(item) == 2:
        sid, source = item
        ldrs, evs, gt = load_scene(source, f"{dataset}/{sid}")
        motion = source.motion_mask() if hasattr(source, "motion_mask") else None
        return Scene(str(sid), ldrs, evs, gt, motion)
    if len(item) in (4, 5):
        ldrs, evs, gt = load_scene(tuple(item[1:4]), f"{dataset}/{item[0]}")
        return Scene(str(item[0]), ldrs, evs, gt, item[4] if len(item) == 5 else None)
    raise ValueError(f"{dataset}: scenes must be (id, source) or (id, ldrs, evs, gt[, motion]), "
                     f"got {len(item)} items")


def materialise(items: Iterable, dataset: str = "scenes") -> list[Scene]:
    """Load lazy scenes once (for repeated scoring)."""
    return [load(item, dataset) for item in items]


def standard_sets(heldout: int, size: int = HELDOUT_SIZE, real: bool = True) -> dict[str, list[Scene]]:
    """``{"heldout_synthetic": ..., "real_crops": ...}`` materialised; a set that is empty (``heldout`` 0, no
    real crops on this machine) is left out."""
    sets = {"heldout_synthetic": materialise(heldout_synthetic(heldout, size), "heldout_synthetic") if heldout
            else [], "real_crops": materialise(real_crops(), "real_crops") if real else []}
    return {k: v for k, v in sets.items() if v}


def as_batches(scenes: Sequence[Scene], batch: int = 4) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``(ldrs, evs, gt)`` tensor batches ``(B, 3, 3, H, W)``, ``(B, 3)``, ``(B, 3, H, W)`` of up to ``batch``
    scenes; scenes of different sizes go into batches of their own."""
    from eapnet.data import scene_to_tensors

    out, i = [], 0
    while i < len(scenes):
        chunk = [scenes[i]]
        while len(chunk) < batch and i + len(chunk) < len(scenes) \
                and scenes[i + len(chunk)].ldrs.shape == chunk[0].ldrs.shape:
            chunk.append(scenes[i + len(chunk)])
        tensors = [scene_to_tensors(s.ldrs, s.evs, s.gt) for s in chunk]
        out.append(tuple(torch.stack([t[k] for t in tensors]) for k in ("ldrs", "evs", "gt")))
        i += len(chunk)
    return out


# --------------------------------------------------------------------------------------------- scoring


def score_output(gt: np.ndarray, hdr: np.ndarray, where: str, motion: np.ndarray | None = None) -> dict[str, float]:
    """PSNR-μ and PSNR-l (official, dB) of one output ``hdr`` against ``gt`` (both GT domain, ``hdr`` >= 0);
    with a non-empty motion mask also ``psnr_mu_motion``. ``where`` names the scene in errors."""
    from eapnet.metrics import psnr_l, psnr_mu, psnr_mu_masked

    if not np.all(np.isfinite(hdr)):
        raise ValueError(f"{where}: output contains NaN/inf")
    out = {"psnr_mu": psnr_mu(gt, hdr), "psnr_l": psnr_l(gt, hdr)}
    if motion is not None and motion.any():
        out["psnr_mu_motion"] = psnr_mu_masked(gt, hdr, motion)
    return out


def mean_scores(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over the scenes that have it (``psnr_mu_motion``: scenes with moving regions,
    counted in ``motion_scenes``)."""
    keys = [k for k in ("psnr_mu", "psnr_l", "psnr_mu_motion", "psnr_mu_vs_teacher") if any(k in r for r in rows)]
    out = {k: float(np.mean([r[k] for r in rows if k in r])) for k in keys}
    if "psnr_mu_motion" in out:
        out["motion_scenes"] = sum("psnr_mu_motion" in r for r in rows)
    return out


class TeacherOutputs:
    """A teacher's clipped whole-frame outputs per ``(dataset, scene id)``, computed on first use and kept, so
    that scoring several students against one teacher runs the teacher once per scene."""

    def __init__(self, model: nn.Module):
        self.model = model
        self._memo: dict[tuple[str, str], np.ndarray] = {}

    def __call__(self, dataset: str, scene: Scene) -> np.ndarray:
        from eapnet.inference import predict

        key = (dataset, scene.id)
        if key not in self._memo:
            self._memo[key] = np.maximum(predict(self.model, scene.ldrs, scene.evs), 0.0)
        return self._memo[key]


@torch.no_grad()
def score(model: nn.Module, scenes: Iterable, *, teacher: nn.Module | TeacherOutputs | None = None,
          amp: str | None = None, tile: int | None = None, overlap: int = 64,
          dataset: str = "scenes") -> dict[str, float]:
    """Mean scores of ``model`` over ``scenes`` (lazy or materialised), through the one inference path; outputs
    are clipped at 0 first, as a 16-bit submission would be. With ``teacher`` (a model, or the
    :class:`TeacherOutputs` shared by several calls): also ``psnr_mu_vs_teacher`` (PSNR-μ of the output
    against the teacher's output)."""
    from eapnet.inference import predict
    from eapnet.metrics import psnr_mu

    if teacher is not None and not isinstance(teacher, TeacherOutputs):
        teacher = TeacherOutputs(teacher)
    rows = []
    for item in scenes:
        s = load(item, dataset)
        hdr = np.maximum(predict(model, s.ldrs, s.evs, tile=tile, overlap=overlap, amp=amp), 0.0)
        row = score_output(s.gt, hdr, f"{dataset}/{s.id}", s.motion)
        if teacher is not None:
            row["psnr_mu_vs_teacher"] = psnr_mu(teacher(dataset, s), hdr)
        rows.append(row)
    if not rows:
        raise ValueError(f"{dataset}: no scenes to score")
    return mean_scores(rows)
