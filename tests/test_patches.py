"""Patch grid, dihedral augmentation, PatchDataset and the folder datasets."""

from __future__ import annotations

import itertools
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from eapnet.data import SHARED_SAMPLES
from eapnet.data.errors import DataError, MissingFileError
from eapnet.data.kalantari import KalantariSource
from eapnet.data.ntire import NtireSource, read_ntire, write_ntire
from eapnet.data.scene import Scene
from eapnet.data.patches import (
    PatchDataset,
    augment,
    patch_grid,
    scene_sources_from_folder,
)

SAMPLES = SHARED_SAMPLES


def augment_inverse(x: torch.Tensor, k: int) -> torch.Tensor:
    """Undo ``augment`` transform ``k`` (rotate back, then un-mirror) on one tensor."""
    x = torch.rot90(x, -(k % 4), dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if k >= 4 else x
CROPS = SAMPLES / "crops256"
needs_crops = pytest.mark.skipif(not CROPS.is_dir(), reason=f"real NTIRE crops not found at {CROPS}")


def scene(h: int, w: int, seed: int = 0, gt: bool = True, sid: str | None = None) -> Scene:
    rng = np.random.default_rng(seed)
    ldrs = rng.random((3, h, w, 3), dtype=np.float32)
    evs = np.array([-2, 0, 2], np.float32)
    return Scene(sid or f"s{seed}", ldrs, evs, rng.random((h, w, 3), dtype=np.float32) * 4 if gt else None)


class Counted:
    """A scene source that counts its loads."""

    def __init__(self, scene: Scene, calls: list):
        self.scene, self.calls = scene, calls
        self.id, self.origin = scene.id, scene.origin

    def size(self):
        return self.scene.size()

    def has_gt(self):
        return True

    def load(self):
        self.calls.append(self.id)
        return self.scene


def kalantari_scene(folder: Path, h: int = 10, w: int = 12) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a.tif", "b.tif", "c.tif"):
        cv2.imwrite(str(folder / name), (rng.random((h, w, 3)) * 65535).astype(np.uint16))
    (folder / "exposure.txt").write_text("-2\n0\n2\n")
    cv2.imwrite(str(folder / "HDRImg.hdr"), rng.random((h, w, 3)).astype(np.float32))


# ------------------------------------------------------------------------------------------
# patch grid
# ------------------------------------------------------------------------------------------


def test_grid_counts():
    assert patch_grid(256, 256) == [(0, 0)]
    grid = patch_grid(512, 384)  # rows 0,128,256 x cols 0,128
    assert grid == [(t, l) for t in (0, 128, 256) for l in (0, 128)]
    assert len(patch_grid(1060, 1900)) == 8 * 14  # NTIRE full size: 7+1 rows, 13+1 cols
    assert patch_grid(300, 256) == [(0, 0), (44, 0)]  # last patch flush with the bottom


@pytest.mark.parametrize("h,w,p,s", [(256, 256, 256, 128), (300, 257, 256, 128), (1060, 1900, 256, 128),
                                     (37, 50, 16, 16), (20, 33, 7, 3)])
def test_grid_covers_every_pixel(h, w, p, s):
    grid = patch_grid(h, w, p, s)
    assert len(set(grid)) == len(grid)
    covered = np.zeros((h, w), bool)
    for t, l in grid:
        assert 0 <= t <= h - p and 0 <= l <= w - p
        covered[t : t + p, l : l + p] = True
    assert covered.all()
    assert grid == sorted(grid)


def test_grid_errors():
    with pytest.raises(ValueError, match="smaller"):
        patch_grid(255, 300)
    with pytest.raises(ValueError, match="smaller"):
        patch_grid(300, 100, patch=128)
    with pytest.raises(ValueError, match="uncovered"):
        patch_grid(512, 512, patch=64, stride=65)
    with pytest.raises(ValueError, match="positive"):
        patch_grid(512, 512, patch=64, stride=0)


# ------------------------------------------------------------------------------------------
# augmentation
# ------------------------------------------------------------------------------------------


def marked(h=5, w=5):
    """ldrs whose frames differ by a constant (frame i = base + 10 i); gt = base channels."""
    base = torch.arange(3 * h * w, dtype=torch.float32).reshape(3, h, w)
    ldrs = torch.stack([base + 10 * i for i in range(3)])
    return ldrs, base.clone()


def dihedral_numpy(img2d: np.ndarray) -> list[np.ndarray]:
    return [np.rot90(f, r) for f in (img2d, np.fliplr(img2d)) for r in range(4)]


def test_augment_is_the_dihedral_group():
    ldrs, gt = marked()
    outs = [augment(ldrs, gt, k) for k in range(8)]
    # all 8 distinct
    for (a, _), (b, _) in itertools.combinations(outs, 2):
        assert not torch.equal(a, b)
    # the set equals the 8 dihedral images computed independently with numpy
    ours = sorted(o[0][0, 0].numpy().tobytes() for o in outs)
    ref = sorted(np.ascontiguousarray(x).tobytes() for x in dihedral_numpy(gt[0].numpy()))
    assert ours == ref
    assert torch.equal(outs[0][0], ldrs) and torch.equal(outs[0][1], gt)  # k=0 identity


@pytest.mark.parametrize("k", range(8))
def test_augment_keeps_frames_and_matches_gt(k):
    ldrs, gt = marked()
    a_ldrs, a_gt = augment(ldrs, gt, k)
    for i in range(3):  # frame order unchanged: frame i is still base + 10 i
        assert torch.equal(a_ldrs[i] - a_ldrs[0], torch.full_like(a_gt, 10.0 * i))
    assert torch.equal(a_ldrs[0], a_gt)  # same geometric transform on frames and gt
    assert torch.equal(augment_inverse(a_ldrs, k), ldrs)
    assert torch.equal(augment_inverse(a_gt, k), gt)


def test_augment_non_square_and_errors():
    ldrs, gt = torch.zeros(3, 3, 4, 6), torch.zeros(3, 4, 6)
    assert augment(ldrs, gt, 1)[0].shape == (3, 3, 6, 4)
    assert augment(ldrs, None, 4)[1] is None
    with pytest.raises(ValueError, match="k=8"):
        augment(ldrs, gt, 8)


# ------------------------------------------------------------------------------------------
# PatchDataset
# ------------------------------------------------------------------------------------------


def test_patch_dataset_content_without_augmentation():
    scenes = [scene(40, 48, 0), scene(32, 32, 1)]
    ds = PatchDataset(scenes, patch=16, stride=8, augment=False)
    assert len(ds) == len(patch_grid(40, 48, 16, 8)) + len(patch_grid(32, 32, 16, 8)) == 4 * 5 + 3 * 3
    last = ds[len(ds) - 1]
    assert last["id"] == "s1@16,16"
    for index in (0, 7, 19, 20, len(ds) - 1):
        s, t, l = ds.locate(index)
        ldrs, evs, gt = scenes[s].ldrs, scenes[s].evs, scenes[s].gt
        item = ds[index]
        assert item["ldrs"].shape == (3, 3, 16, 16) and item["gt"].shape == (3, 16, 16)
        assert item["ldrs"].dtype == item["gt"].dtype == item["evs"].dtype == torch.float32
        np.testing.assert_array_equal(item["ldrs"].numpy(), ldrs[:, t : t + 16, l : l + 16].transpose(0, 3, 1, 2))
        np.testing.assert_array_equal(item["gt"].numpy(), gt[t : t + 16, l : l + 16].transpose(2, 0, 1))
        np.testing.assert_array_equal(item["evs"].numpy(), evs)
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_patch_dataset_augmentation_deterministic():
    scenes = [scene(48, 48, 0)]
    a = PatchDataset(scenes, patch=16, stride=8, seed=3)
    b = PatchDataset(scenes, patch=16, stride=8, seed=3)
    c = PatchDataset(scenes, patch=16, stride=8, seed=4)
    ks = [a.augmentation_for(i) for i in range(len(a))]
    assert ks == [b.augmentation_for(i) for i in range(len(b))]
    assert ks != [c.augmentation_for(i) for i in range(len(c))]
    assert set(ks) == set(range(8))  # 25 patches: every transform used
    for i in (0, 5, 24):
        x, y = a[i], b[i]
        assert torch.equal(x["ldrs"], y["ldrs"]) and torch.equal(x["gt"], y["gt"])
        assert torch.equal(x["ldrs"], a[i]["ldrs"])  # same (seed, epoch, index): same patch
    # the returned patch is the un-augmented crop under transform k
    plain = PatchDataset(scenes, patch=16, stride=8, augment=False)
    for i in range(len(a)):
        k = ks[i]
        assert torch.equal(augment_inverse(a[i]["ldrs"], k), plain[i]["ldrs"])
        assert torch.equal(augment_inverse(a[i]["gt"], k), plain[i]["gt"])
    a.set_epoch(1)
    ks1 = [a.augmentation_for(i) for i in range(len(a))]
    assert ks1 != ks
    b.set_epoch(1)
    assert ks1 == [b.augmentation_for(i) for i in range(len(b))]


def test_patch_dataset_lazy_cache_and_pickle():
    calls = []
    ds = PatchDataset([Counted(scene(32, 32, 0), calls)], patch=16, stride=8, augment=False)
    assert calls == []  # indexing asks the source's size() and loads nothing
    for i in range(len(ds)):
        ds[i]
    assert calls == ["s0"]  # then loaded once and cached
    in_memory = PatchDataset([scene(64, 64, 0)], patch=16, stride=8)  # a Scene is its own source
    in_memory[0]
    clone = pickle.loads(pickle.dumps(in_memory))
    assert len(clone._cache) == 0 and torch.equal(clone[3]["ldrs"], in_memory[3]["ldrs"])


def test_patch_dataset_lru_bound():
    calls = []
    sources = [Counted(scene(16, 16, i), calls) for i in range(3)]
    ds = PatchDataset(sources, patch=16, stride=16, augment=False, max_cached_scenes=1)
    ds[0], ds[0], ds[1], ds[0]
    assert calls == ["s0", "s1", "s0"] and len(ds._cache) == 1


def test_patch_dataset_errors():
    with pytest.raises(DataError, match="scene b .*array.*smaller"):
        PatchDataset([scene(32, 32, sid="a"), scene(8, 32, sid="b")], patch=16, stride=8)
    with pytest.raises(ValueError, match="uncovered"):
        PatchDataset([scene(32, 32)], patch=16)  # default stride 128 > patch 16
    ds = PatchDataset([scene(16, 16, gt=False)], patch=16, stride=16)
    with pytest.raises(DataError, match="no ground truth"):
        ds[0]
    with pytest.raises(ValueError):
        PatchDataset([], patch=16)
    s = scene(16, 16)
    with pytest.raises(TypeError, match="PatchDataset: item 1 is a tuple, not a scene source"):
        PatchDataset([s, (s.ldrs, s.evs, s.gt)], patch=16, stride=16)  # the old (ldrs, evs, gt) shape is gone


@needs_crops
def test_patch_dataset_on_real_crops():
    sources = scene_sources_from_folder(CROPS)
    assert [s.id for s in sources] == ["0000", "0001", "0002", "0003"]
    ds = PatchDataset(sources, patch=128, stride=64, augment=False)
    assert len(ds) == 4 * 9
    item = ds[9 + 4]  # scene 0001, grid position (64, 64)
    assert item["id"] == "0001@64,64"
    ldrs, evs, gt = read_ntire(CROPS, "0001")
    np.testing.assert_array_equal(item["ldrs"].numpy(), ldrs[:, 64:192, 64:192].transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(item["gt"].numpy(), gt[64:192, 64:192].transpose(2, 0, 1))
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["ldrs"].shape == (4, 3, 3, 128, 128) and batch["evs"].shape == (4, 3)
    assert batch["gt"].shape == (4, 3, 128, 128) and len(batch["id"]) == 4


# ------------------------------------------------------------------------------------------
# folder datasets and layout detection
# ------------------------------------------------------------------------------------------


def test_scene_sources_detect_layout(tmp_path):
    nt = tmp_path / "nt"
    s = scene(8, 9)
    write_ntire(nt, "b", s.ldrs, [-3, -1, 1], s.gt)
    write_ntire(nt, "a", s.ldrs, [-3, -1, 1], s.gt)
    srcs = scene_sources_from_folder(nt)
    assert srcs == [NtireSource(nt, "a"), NtireSource(nt, "b")]
    assert [s.origin for s in srcs] == [f"ntire:{nt}/a", f"ntire:{nt}/b"]

    ka = tmp_path / "ka"
    kalantari_scene(ka / "s1")
    kalantari_scene(ka / "s2")
    srcs = scene_sources_from_folder(ka, dataset="mine")
    assert srcs == [KalantariSource(ka / "s1", "mine"), KalantariSource(ka / "s2", "mine")]
    assert [s.id for s in srcs] == ["s1", "s2"] and srcs[0].load().dataset == "mine"
    one = scene_sources_from_folder(ka / "s1")  # a single scene folder
    assert len(one) == 1 and one[0].load().ldrs.shape == (3, 10, 12, 3)
    ds = PatchDataset(srcs, patch=8, stride=4)  # Kalantari sources through the patch dataset
    assert len(ds) == 2 * (2 * 2) and ds[0]["id"] == "s1@0,0"

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "x.png").write_bytes(b"")
    with pytest.raises(DataError, match="neither NTIRE.*nor Kalantari") as e:
        scene_sources_from_folder(empty)
    assert "empty" in str(e.value)
    with pytest.raises(MissingFileError, match="missing"):
        scene_sources_from_folder(tmp_path / "nope")
    kalantari_scene(nt / "s3")  # both layouts in one folder
    with pytest.raises(DataError, match="ambiguous"):
        scene_sources_from_folder(nt)
