"""The evaluation sets and the one scoring function, shared by training, evaluation, compression, export parity
and the ablation tool.

A scene is an :class:`eapnet.data.Scene` (``id``, ``ldrs``, ``evs``, ``gt``, ``motion``, ``origin``, ...; its
fields and their checks are in :mod:`eapnet.data.scene`). Sets are lists of scene sources
(:class:`eapnet.data.SceneSource`: lazy until :func:`materialise`; a ``Scene`` is its own source):

- :func:`heldout_synthetic`: ``n`` scenes of ``size``^2 from ``HELDOUT_SEED`` (never trained on), each with its
  motion mask;
- :func:`real_crops`: the real NTIRE crops with ground truth in ``SHARED_SAMPLES/crops256`` (when present);
- :func:`folder_scenes`: any NTIRE or Kalantari folder;
- :func:`calibration`: the shipped calibration set (``eapnet.calib``), or another calibration folder.

:func:`score` runs a model through the one inference path (:func:`eapnet.inference.predict`) and returns
mean official PSNR-μ / PSNR-l (dB), PSNR-μ inside moving regions where a scene has a motion mask, and
PSNR-μ against a teacher's output when one is given.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from eapnet.calib import DEFAULT, load_calibration
from eapnet.data import SHARED_SAMPLES, Scene, SceneSource, as_sources, scene_sources_from_folder, scene_to_tensors
from eapnet.data.synthetic import HELDOUT_SEED, SyntheticSource, scene_seed
from eapnet.inference import predict
from eapnet.metrics import psnr_l, psnr_mu, psnr_mu_masked

CALIBRATION_SCENES = 16
"""Calibration scenes used for sensitivity probes, PTQ and QAT observers (of the shipped 32)."""
HELDOUT_SIZE = 256
"""Side in pixels of the held-out synthetic scenes in every report."""


# ------------------------------------------------------------------------------------------------ sets


def heldout_synthetic(n: int, size: int = HELDOUT_SIZE) -> list[SyntheticSource]:
    """The held-out synthetic set: ``n`` lazy scenes ``size`` x ``size``, ids ``0000``...; scene ``i`` is
    ``generate_scene(scene_seed(HELDOUT_SEED, i), size, size)`` (the seed training never uses), with its motion
    mask, so scores include moving regions."""
    if n < 0 or size < 16:
        raise ValueError(f"need n >= 0 scenes of size >= 16, got n={n}, size={size}")
    return [SyntheticSource(scene_seed(HELDOUT_SEED, i), size, size, id=f"{i:04d}", dataset="heldout_synthetic")
            for i in range(n)]


def real_crops(folder: str | os.PathLike | None = None) -> list[SceneSource]:
    """The real NTIRE crops with ground truth (default ``SHARED_SAMPLES/crops256``), lazily; ``[]`` when the
    folder is absent."""
    folder = Path(folder) if folder is not None else SHARED_SAMPLES / "crops256"
    return folder_scenes(folder, "real_crops")[0] if folder.is_dir() else []


def folder_scenes(folder: str | os.PathLike, dataset: str = "") -> tuple[list[SceneSource], list[str]]:
    """``(sources_with_gt, ids_without_gt)`` of an NTIRE or Kalantari folder (from file names: nothing is read);
    ``dataset`` names the set their scenes belong to.

    Raises ``DataError``/``MissingFileError`` (``eapnet.data``) for a missing folder or unknown layout."""
    with_gt, without = [], []
    for s in scene_sources_from_folder(folder, dataset):
        if s.has_gt():
            with_gt.append(s)
        else:
            without.append(s.id)
    return with_gt, without


def calibration(folder: str | os.PathLike | None = None, limit: int | None = CALIBRATION_SCENES) -> list[Scene]:
    """The first ``limit`` scenes of a calibration folder (default: the shipped ``eapnet/calib/default``)."""
    return load_calibration(Path(folder) if folder else DEFAULT, limit)


def calibration_batches(folder: str | os.PathLike | None = None, limit: int | None = CALIBRATION_SCENES
                        ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """:func:`calibration` as the ``(ldrs, evs)`` batches of 4 that calibration and range equalisation take."""
    return [(ldrs, evs) for ldrs, evs, _ in as_batches(calibration(folder, limit))]


def materialise(sources: Iterable[SceneSource]) -> list[Scene]:
    """Load lazy scenes once (for repeated scoring); a :class:`Scene` stays itself."""
    return [s.load() for s in as_sources(sources)]


def standard_sets(heldout: int, size: int = HELDOUT_SIZE, real: bool = True) -> dict[str, list[Scene]]:
    """``{"heldout_synthetic": ..., "real_crops": ...}`` materialised; a set that is empty (``heldout`` 0, no
    real crops on this machine) is left out."""
    sets = {"heldout_synthetic": materialise(heldout_synthetic(heldout, size)) if heldout else [],
            "real_crops": materialise(real_crops()) if real else []}
    return {k: v for k, v in sets.items() if v}


def as_batches(scenes: Sequence[Scene], batch: int = 4) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``(ldrs, evs, gt)`` tensor batches ``(B, 3, 3, H, W)``, ``(B, 3)``, ``(B, 3, H, W)`` of up to ``batch``
    scenes (with ground truth); scenes of different sizes go into batches of their own."""
    out, i = [], 0
    while i < len(scenes):
        chunk = [scenes[i]]
        while len(chunk) < batch and i + len(chunk) < len(scenes) \
                and scenes[i + len(chunk)].size() == chunk[0].size():
            chunk.append(scenes[i + len(chunk)])
        tensors = [scene_to_tensors(s.ldrs, s.evs, s.gt) for s in chunk]
        out.append(tuple(torch.stack([t[k] for t in tensors]) for k in ("ldrs", "evs", "gt")))
        i += len(chunk)
    return out


# --------------------------------------------------------------------------------------------- scoring


def score_output(gt: np.ndarray, hdr: np.ndarray, where: str, motion: np.ndarray | None = None) -> dict[str, float]:
    """PSNR-μ and PSNR-l (official, dB) of one output ``hdr`` against ``gt`` (both GT domain, ``hdr`` >= 0);
    with a non-empty motion mask also ``psnr_mu_motion``. ``where`` names the scene in errors."""
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
        key = (dataset, scene.id)
        if key not in self._memo:
            self._memo[key] = np.maximum(predict(self.model, scene.ldrs, scene.evs), 0.0)
        return self._memo[key]


@torch.no_grad()
def score(model: nn.Module, scenes: Iterable[SceneSource], *, teacher: nn.Module | TeacherOutputs | None = None,
          amp: str | None = None, tile: int | None = None, overlap: int = 64,
          dataset: str = "scenes", per_scene: bool = False) -> dict:
    """Mean scores of ``model`` over ``scenes`` (sources or scenes), through the one inference path; outputs
    are clipped at 0 first, as a 16-bit submission would be. With ``teacher`` (a model, or the
    :class:`TeacherOutputs` shared by several calls): also ``psnr_mu_vs_teacher`` (PSNR-μ of the output
    against the teacher's output). ``per_scene``: also ``per_scene``, ``{scene id: {metric: dB}}`` in scene
    order, for paired comparisons of two models on the same scenes (``eapnet.stats``)."""
    if teacher is not None and not isinstance(teacher, TeacherOutputs):
        teacher = TeacherOutputs(teacher)
    rows, ids = [], []
    for source in as_sources(scenes, dataset):
        s = source.load()
        if s.gt is None:
            raise ValueError(f"{dataset}/{s.id} ({s.origin}): scene has no ground truth, it cannot be scored")
        hdr = np.maximum(predict(model, s.ldrs, s.evs, tile=tile, overlap=overlap, amp=amp), 0.0)
        row = score_output(s.gt, hdr, f"{dataset}/{s.id}", s.motion)
        if teacher is not None:
            row["psnr_mu_vs_teacher"] = psnr_mu(teacher(dataset, s), hdr)
        rows.append(row)
        ids.append(s.id)
    if not rows:
        raise ValueError(f"{dataset}: no scenes to score")
    means = mean_scores(rows)
    return {**means, "per_scene": dict(zip(ids, rows, strict=True))} if per_scene else means
