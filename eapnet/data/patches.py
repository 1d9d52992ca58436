"""Training patches, dihedral augmentation and torch datasets over NTIRE / Kalantari folders.

Scenes come from scene sources (:class:`eapnet.data.scene.SceneSource`: ``id``, ``origin``, a cheap ``size()``
and ``has_gt()``, ``load() -> Scene``): :class:`~eapnet.data.ntire.NtireSource`,
:class:`~eapnet.data.kalantari.KalantariSource`, :class:`~eapnet.data.synthetic.SyntheticSource`, or a
:class:`~eapnet.data.scene.Scene` already in memory. :func:`scene_sources_from_folder` lists a folder's.

Torch samples
-------------
``{"ldrs": (3, 3, h, w) [frame, channel, row, col], "evs": (3,), "gt": (3, h, w), "id": str}``,
all float32 (``gt`` left out for scenes without ground truth in the full-scene datasets).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .errors import DataError, MissingFileError
from .kalantari import KalantariSource, list_kalantari_scenes
from .ntire import NtireSource, incomplete_ntire_ids, list_ntire_ids
from .scene import Scene, SceneSource, as_sources

__all__ = [
    "patch_grid",
    "augment",
    "NUM_AUGMENTATIONS",
    "scene_to_tensors",
    "PatchDataset",
    "scene_sources_from_folder",
]

NUM_AUGMENTATIONS = 8


# --------------------------------------------------------------------------------------------
# patch grid
# --------------------------------------------------------------------------------------------


def _starts(n: int, patch: int, stride: int) -> list[int]:
    starts = list(range(0, n - patch + 1, stride))
    if starts[-1] != n - patch:
        starts.append(n - patch)  # flush with the border so the last rows/cols are not lost
    return starts


def patch_grid(height: int, width: int, patch: int = 256, stride: int = 128) -> list[tuple[int, int]]:
    """Top-left corners ``(top, left)`` of ``patch x patch`` crops covering an image, row-major.

    Regular grid with step ``stride`` plus a final row/column flush with the bottom/right
    border (that last patch overlaps its neighbour more than ``patch - stride``).

    Raises:
        ValueError: image smaller than the patch, ``patch``/``stride`` not positive, or
            ``stride > patch`` (would leave pixels uncovered).
    """
    height, width, patch, stride = int(height), int(width), int(patch), int(stride)
    if patch <= 0 or stride <= 0:
        raise ValueError(f"patch ({patch}) and stride ({stride}) must be positive")
    if stride > patch:
        raise ValueError(f"stride {stride} > patch {patch} would leave pixels uncovered")
    if height < patch or width < patch:
        raise ValueError(f"image {height}x{width} (HxW) is smaller than the {patch}x{patch} patch")
    return [(t, l) for t in _starts(height, patch, stride) for l in _starts(width, patch, stride)]


# --------------------------------------------------------------------------------------------
# dihedral augmentation
# --------------------------------------------------------------------------------------------


def _check_k(k: int) -> tuple[int, bool]:
    k = int(k)
    if not 0 <= k < NUM_AUGMENTATIONS:
        raise ValueError(f"augmentation index k={k} not in 0..7")
    return k % 4, k >= 4


def _forward(x: torch.Tensor, k: int) -> torch.Tensor:
    rot, flip = _check_k(k)
    if flip:
        x = torch.flip(x, dims=(-1,))
    return torch.rot90(x, rot, dims=(-2, -1)) if rot else x


def augment(
    ldrs: torch.Tensor, gt: torch.Tensor | None, k: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Apply dihedral transform ``k`` (0..7) to the last two (spatial) dims of ldrs and gt.

    ``k % 4`` = number of counter-clockwise 90-degree rotations, ``k >= 4`` = mirror left-right
    first; ``k == 0`` is the identity. Works on ``ldrs (3, 3, h, w)`` and ``gt (3, h, w)`` (or
    any tensors with spatial dims last); frames/channels are never reordered. ``gt`` may be
    ``None``. Non-square inputs swap h and w for odd rotations.
    """
    return _forward(ldrs, k), (None if gt is None else _forward(gt, k))


# --------------------------------------------------------------------------------------------
# scenes -> tensors
# --------------------------------------------------------------------------------------------


def scene_to_tensors(
    ldrs: np.ndarray, evs: np.ndarray, gt: np.ndarray | None = None, sample_id: str | None = None
) -> dict[str, Any]:
    """NumPy scene (or crop) -> torch sample dict (ldrs ``(3,3,H,W)``, evs ``(3,)``, gt ``(3,H,W)``).

    ``gt`` and ``id`` keys are present only when given.
    """
    out: dict[str, Any] = {
        "ldrs": torch.from_numpy(np.ascontiguousarray(np.asarray(ldrs, np.float32).transpose(0, 3, 1, 2))),
        "evs": torch.from_numpy(np.array(evs, dtype=np.float32)),
    }
    if gt is not None:
        out["gt"] = torch.from_numpy(np.ascontiguousarray(np.asarray(gt, np.float32).transpose(2, 0, 1)))
    if sample_id is not None:
        out["id"] = str(sample_id)
    return out


# --------------------------------------------------------------------------------------------
# datasets
# --------------------------------------------------------------------------------------------


class PatchDataset(Dataset):
    """Every ``patch x patch`` crop (grid of :func:`patch_grid`) of every scene, as torch samples.

    Args:
        scenes: scene sources (see module docstring); every scene needs a gt.
        patch, stride: crop size and grid step in pixels (paper: 256 / 128).
        augment: apply a dihedral transform (:func:`augment`) chosen deterministically from
            ``(seed, epoch, index)``; call :meth:`set_epoch` each epoch to vary it.
        seed: non-negative int.
        max_cached_scenes: scenes are loaded lazily and kept per process (so once per
            DataLoader worker); ``None`` keeps all of them, an int keeps that many (LRU). Full
            NTIRE scenes are ~100 MB each as float32, so bound this for large folders.

    Sizes come from each source's ``size()`` (PNG headers, one tif's header: no scene is loaded to index);
    a scene is loaded on first use.

    Index order is scene-major, then the patch grid row-major. Sample ``"id"`` is
    ``"<scene>@<top>,<left>"``. With DataLoader workers call :meth:`set_epoch` before creating
    the epoch's iterator (with ``persistent_workers=True`` workers keep their own copy).
    """

    def __init__(
        self,
        scenes: Sequence[SceneSource],
        patch: int = 256,
        stride: int = 128,
        augment: bool = True,
        seed: int = 0,
        max_cached_scenes: int | None = None,
    ):
        self.scenes = as_sources(scenes, "PatchDataset")
        if not self.scenes:
            raise ValueError("PatchDataset needs at least one scene source")
        if int(seed) < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        if max_cached_scenes is not None and int(max_cached_scenes) < 1:
            raise ValueError(f"max_cached_scenes must be >= 1 or None, got {max_cached_scenes}")
        self.patch, self.stride = int(patch), int(stride)
        patch_grid(self.patch, self.patch, self.patch, self.stride)  # bad patch/stride: fail before any scene
        self.augment, self.seed, self.epoch = bool(augment), int(seed), 0
        self.max_cached_scenes = max_cached_scenes
        self.names = [s.id for s in self.scenes]
        self._cache: OrderedDict[int, Scene] = OrderedDict()
        self.grids: list[list[tuple[int, int]]] = []
        for source in self.scenes:
            size = source.size()
            try:
                self.grids.append(patch_grid(size[0], size[1], self.patch, self.stride))
            except ValueError as exc:
                raise DataError(f"scene {source.id} ({source.origin}): {exc}") from exc
        self._offsets = np.cumsum([0] + [len(g) for g in self.grids])

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __getstate__(self) -> dict:
        # Spawned workers must not receive the parent's cached arrays through pickle.
        state = self.__dict__.copy()
        state["_cache"] = OrderedDict()
        return state

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream for ``epoch`` (deterministic given seed, epoch, index)."""
        self.epoch = int(epoch)

    def locate(self, index: int) -> tuple[int, int, int]:
        """``index`` -> ``(scene_index, top, left)``."""
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for {n} patches")
        scene = int(np.searchsorted(self._offsets, index, side="right")) - 1
        top, left = self.grids[scene][index - int(self._offsets[scene])]
        return scene, top, left

    def augmentation_for(self, index: int) -> int:
        """Dihedral transform index 0..7 used for ``index`` in the current epoch (0 if disabled)."""
        if not self.augment:
            return 0
        rng = np.random.default_rng([self.seed, self.epoch, int(index) % max(len(self), 1)])
        return int(rng.integers(NUM_AUGMENTATIONS))

    def _scene(self, i: int) -> Scene:
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        scene = self.scenes[i].load()
        if scene.gt is None:
            raise DataError(f"scene {scene.id} ({scene.origin}): no ground truth, PatchDataset needs gt for training")
        expected = self.grids[i][-1][0] + self.patch, self.grids[i][-1][1] + self.patch
        if scene.size() != expected:
            raise DataError(f"scene {scene.id} ({scene.origin}): size {scene.size()} changed since indexing "
                            f"({expected})")
        self._cache[i] = scene
        if self.max_cached_scenes is not None:
            while len(self._cache) > int(self.max_cached_scenes):
                self._cache.popitem(last=False)
        return scene

    def __getitem__(self, index: int) -> dict[str, Any]:
        scene_index, top, left = self.locate(int(index))
        scene = self._scene(scene_index)
        p = self.patch
        sample = scene_to_tensors(
            scene.ldrs[:, top : top + p, left : left + p],
            scene.evs,
            scene.gt[top : top + p, left : left + p],
            f"{self.names[scene_index]}@{top},{left}",
        )
        k = self.augmentation_for(int(index) % len(self))
        if k:
            # contiguous so that default_collate / pinned memory see plain layouts
            sample["ldrs"], sample["gt"] = (t.contiguous() for t in augment(sample["ldrs"], sample["gt"], k))
        return sample


def scene_sources_from_folder(path: str | os.PathLike, dataset: str = "") -> list[NtireSource] | list[KalantariSource]:
    """The scene sources of every scene under ``path``, in id (folder name) order; ``dataset`` names the set
    their scenes belong to.

    Detects the layout: NTIRE files directly in ``path``; Kalantari scene sub-folders (or
    ``path`` itself being one Kalantari scene, i.e. holding ``exposure.txt``).

    Raises:
        MissingFileError: ``path`` is not a directory.
        DataError: neither layout found, or both present.
    """
    path = Path(path)
    if not path.is_dir():
        raise MissingFileError(f"{path}: missing dataset folder (not a directory)", path)
    ntire_ids = list_ntire_ids(path)
    broken = incomplete_ntire_ids(path)
    if broken:
        sid, missing = next(iter(broken.items()))
        more = f" (and {len(broken) - 1} more incomplete sample(s))" if len(broken) > 1 else ""
        raise MissingFileError(f"{path / sid}: incomplete NTIRE sample, missing {', '.join(missing)}{more}; "
                               "complete it or remove its files", path / missing[0])
    if (path / "exposure.txt").is_file():
        kalantari = [path]
    else:
        kalantari = list_kalantari_scenes(path)
    if ntire_ids and kalantari:
        raise DataError(
            f"{path}: ambiguous layout, holds both NTIRE samples ({len(ntire_ids)}) and "
            f"Kalantari scenes ({len(kalantari)})",
            path,
        )
    if ntire_ids:
        return [NtireSource(path, sid, dataset) for sid in ntire_ids]
    if kalantari:
        return [KalantariSource(scene, dataset) for scene in kalantari]
    raise DataError(
        f"{path}: unrecognised layout, neither NTIRE files (ID_short.png, ID_medium.png, ID_long.png, "
        f"ID_exposures.npy) nor Kalantari scene sub-folders (3 .tif + exposure.txt)",
        path,
    )
