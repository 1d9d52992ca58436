"""Scenes of the parity harness and the canvases they are packed on.

Artifacts take one fixed input size, so parity packs scenes: scenes with equal exposure values lie side by side
on a canvas of the artifact's size (:func:`pack`), each in a gutter of its own replicated edge pixels; larger
scenes are centre-cropped. :func:`load_scenes` reads the datasets (:data:`DATASETS`) through
``eapnet.evalsets`` as :class:`eapnet.data.Scene` (its ``dataset`` one of :data:`DATASETS`, ``cropped_from`` set
by :func:`centre_crop`). LDRs are gamma-encoded in [0, 1], ground truth is gamma-encoded HDR (the model's output
domain).
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eapnet import evalsets
from eapnet.data import SHARED_SAMPLES, NtireSource, Scene, list_ntire_ids

__all__ = ["DATASETS", "Canvas", "centre_crop", "crops", "load_scenes", "pack"]

DATASETS = ("real", "fullres", "calib", "heldout")
"""``real``: NTIRE crops with ground truth; ``fullres``: the full-size NTIRE triplet (no ground truth);
``calib``: ``eapnet/calib/default``; ``heldout``: held-out synthetic scenes, 256x256. A loaded scene's
``dataset`` is one of these names."""


def load_scenes(datasets: Sequence[str] = DATASETS, limit: int | None = 8, *,
                samples: str | os.PathLike | None = None, calib: str | os.PathLike | None = None,
                shared_exposures: bool = True) -> tuple[list[Scene], dict[str, str]]:
    """``(scenes, skipped)``: at most ``limit`` scenes of each dataset (``None`` = all), each
    :class:`eapnet.data.Scene` with ``dataset`` set to its name in :data:`DATASETS`; ``skipped`` maps a dataset
    that is absent on this machine (no ``../shared`` beside the checkout) to the reason.

    ``shared_exposures``: each dataset contributes its first ``limit`` scenes whose exposure values equal the
    most common triple of the first dataset that has scenes (the NTIRE frames' [-2, 0, 2]), so that the small
    scenes share one canvas: every other triple costs a full-size canvas of its own per artifact, for one
    scene (with the defaults at 1060x1900: 2 canvases per artifact instead of 4). The exposures are a runtime input of every
    artifact, exercised by any triple. A dataset with no such scene contributes its first ``limit``."""
    unknown = sorted(set(datasets) - set(DATASETS))
    if unknown:
        raise ValueError(f"unknown dataset(s) {unknown}; choose from {list(DATASETS)}")
    samples = Path(samples) if samples is not None else SHARED_SAMPLES
    wide = None if limit is None or not shared_exposures else 4 * limit   # candidates to choose from
    scenes, skipped, ref = [], {}, None
    for name in datasets:
        if name == "real":
            folder = samples / "crops256"
            cands = evalsets.real_crops(folder)[:wide or limit] if folder.is_dir() else []
        elif name == "fullres":
            folder = samples / "fullres_no_gt"
            cands = [NtireSource(folder, sid) for sid in list_ntire_ids(folder)[:wide or limit]] if folder.is_dir() \
                else []
        elif name == "calib":
            folder = Path(calib) if calib is not None else None
            cands = evalsets.calibration(folder, wide or limit)
        else:
            folder = None
            cands = evalsets.heldout_synthetic(wide or (16 if limit is None else limit), evalsets.HELDOUT_SIZE)

        if shared_exposures and ref is None and cands:   # the most common triple of the first dataset
            cands = evalsets.materialise(cands)
            triples = [_triple(s) for s in cands]
            ref = max(triples, key=triples.count)
        items, seen = [], []
        for c in cands:
            s = c.load()
            seen.append(s)
            if not shared_exposures or _triple(s) == ref:
                items.append(s)
            if limit is not None and len(items) == limit:
                break
        items = items or seen[:limit]
        if not items:
            skipped[name] = f"{folder} not found" if folder is not None and not folder.is_dir() else "no scenes"
        scenes += [dataclasses.replace(s, dataset=name) for s in items]
    return scenes, skipped


def _triple(scene: Scene) -> tuple[float, float, float]:
    return tuple(scene.evs.tolist())


@dataclass
class Canvas:
    ldrs: np.ndarray                                   # (3, H, W, 3)
    evs: np.ndarray                                    # (3,)
    places: list[tuple[Scene, int, int]]               # (scene, y, x) of its top-left corner


def centre_crop(scene: Scene, size: tuple[int, int]) -> Scene:
    """The centre of ``scene`` that fits ``size`` = (H, W) (the scene itself when it fits; ``cropped_from`` says
    the size it had)."""
    h, w = scene.size()
    H, W = min(h, size[0]), min(w, size[1])
    return scene.crop((h - H) // 2, (w - W) // 2, H, W)


def pack(scenes: Sequence[Scene], size: tuple[int, int], gutter: int = 16) -> list[Canvas]:
    """Lay scenes with equal exposure values side by side on canvases of ``size`` = (H, W).

    Each scene sits in a cell with ``gutter`` pixels of its own edge replicated around it (so a neighbour's
    content is at least ``gutter`` pixels away); free canvas area is black. Rows are filled left to right,
    tallest scenes first. A scene that does not fit with its gutter is centre-cropped to the canvas and gets a
    canvas of its own."""
    H, W = size
    if gutter < 0:
        raise ValueError(f"gutter must be >= 0 pixels, got {gutter}")
    groups: dict[tuple[float, ...], list[Scene]] = {}
    for s in scenes:
        groups.setdefault(tuple(np.round(s.evs, 4).tolist()), []).append(s)
    canvases = []
    for evs, group in groups.items():
        evs = np.asarray(evs, np.float32)
        alone = [s for s in group if s.ldrs.shape[1] + 2 * gutter > H or s.ldrs.shape[2] + 2 * gutter > W]
        for s in alone:
            s = centre_crop(s, size)
            canvases.append(_draw([(s, 0, 0)], size, evs, 0))
        rest = sorted((s for s in group if s not in alone), key=lambda s: -s.ldrs.shape[1])
        places, y, x, row_h = [], 0, 0, 0
        for s in rest:
            ch, cw = s.ldrs.shape[1] + 2 * gutter, s.ldrs.shape[2] + 2 * gutter
            if x + cw > W:                       # next row
                y, x, row_h = y + row_h, 0, 0
            if y + ch > H:                       # next canvas
                canvases.append(_draw(places, size, evs, gutter))
                places, y, x, row_h = [], 0, 0, 0
            places.append((s, y + gutter, x + gutter))
            x, row_h = x + cw, max(row_h, ch)
        if places:
            canvases.append(_draw(places, size, evs, gutter))
    return canvases


def _draw(places, size, evs, gutter) -> Canvas:
    H, W = size
    ldrs = np.zeros((3, H, W, 3), np.float32)
    for s, y, x in places:
        h, w = s.ldrs.shape[1:3]
        cell = np.pad(s.ldrs, ((0, 0), (gutter, gutter), (gutter, gutter), (0, 0)), mode="edge")
        y0, x0 = y - gutter, x - gutter
        ldrs[:, y0:y0 + h + 2 * gutter, x0:x0 + w + 2 * gutter] = cell[:, :H - y0, :W - x0]
    return Canvas(ldrs, evs, list(places))


def crops(canvas: Canvas, out: np.ndarray):
    """``(scene, its part of out)`` for every scene placed on ``canvas``; ``out`` is ``(H, W, C)`` of the canvas."""
    for s, y, x in canvas.places:
        h, w = s.ldrs.shape[1:3]
        yield s, out[y:y + h, x:x + w]
