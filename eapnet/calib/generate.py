"""Calibration sets: exposure triplets with ground truth in the NTIRE file layout, built and installed.

The command line is :mod:`eapnet.calib.build` (``eapnet-calib``).

A calibration set is a folder of ``ID_short/medium/long.png``, ``ID_exposures.npy``, ``ID_gt.png`` and
``ID_alignratio.npy`` (ids ``0000``, ``0001``, ...), read with the project's one loader
(:func:`eapnet.data.read_ntire`), plus ``manifest.json``: where every scene came from, the sha256 of every
file, the exact command that rebuilds the folder (:func:`rebuild_command`), and package versions.

    from eapnet.calib.generate import build_set
    build_set(Path("/tmp/calib"), "synthetic", n=8, size=128)     # or a folder in the NTIRE / Kalantari layout

Two sources:

* ``synthetic`` -- scenes of the synthetic generator from the seed stream ``scene_seed(CALIB_SEED, i)``,
  never the training (``TRAIN_SEED``) or held-out (``HELDOUT_SEED``) stream. Scenes are taken in stream
  order into a fixed cycle of categories (:data:`CATEGORY_CYCLE`): ``photo`` (a real photograph under
  its own bright light), ``procedural`` (drawn shapes and textures, bright) and ``low_key`` (night /
  stage light over either background). A set of ``n`` scenes is a prefix of every larger set
  (:func:`build_synthetic`).
* a folder in the NTIRE or Kalantari layout -- deterministic random ``size x size`` crops of its scenes
  with ground truth, ``n`` in all, spread evenly over those scenes (crop ``j`` comes from scene
  ``floor(j * S / n)`` of ``S``, at an offset drawn from ``default_rng([seed, j])``; :func:`build_from_folder`).

:func:`build_set` builds in a temporary folder next to ``out`` and renames it into place, replacing what is
there (the command line checks first that it is itself a calibration set).
"""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from eapnet.calib import MANIFEST, file_sha256
from eapnet.data import DataError, scene_sources_from_folder, write_ntire
from eapnet.data.synthetic import generate_scene_with_info, scene_seed
from eapnet.runs import _umask, atomic_write_json, package_versions

__all__ = ["CALIB_SEED", "CATEGORY_CYCLE", "build_from_folder", "build_set", "build_synthetic", "rebuild_command"]

CALIB_SEED = 20_000_003
"""Base seed of calibration scenes (``scene_seed(CALIB_SEED, i)``); differs from ``TRAIN_SEED`` (0) and
``HELDOUT_SEED`` (10_000_019), so calibration never sees a training or held-out scene."""

CATEGORY_CYCLE = ("photo", "procedural", "low_key", "procedural", "low_key", "photo", "procedural", "low_key")
"""Category of synthetic slot ``j`` is ``CATEGORY_CYCLE[j % 8]``: per 8 scenes 2 photo, 3 procedural, 3 low-key."""

MANIFEST_VERSION = 1
ROOT = Path(__file__).resolve().parents[2]  # repository root: paths in the manifest are relative to it
_MAX_SCAN = 1000  # stream scenes scanned per slot at most before giving up on a category


def sample_id(index: int) -> str:
    return f"{index:04d}"


def scene_category(info: dict[str, Any]) -> str:
    """``low_key`` for night / stage scenes, else ``photo`` or ``procedural`` by background."""
    if info["low_key"]:
        return "low_key"
    return "photo" if info["kind"] == "photo" else "procedural"


# --------------------------------------------------------------------------------------------
# builders (write into an existing folder; return the manifest's per-scene records)
# --------------------------------------------------------------------------------------------


def build_synthetic(folder: Path, n: int, size: int, seed: int = CALIB_SEED, progress: bool = True
                    ) -> list[dict[str, Any]]:
    """Write ``n`` synthetic scenes of ``size x size`` into ``folder``; slot ``j`` is the next unused
    scene of ``scene_seed(seed, i)`` (``i = 0, 1, ...``) of category ``CATEGORY_CYCLE[j % 8]``."""
    pending: dict[str, deque[int]] = {c: deque() for c in set(CATEGORY_CYCLE)}  # scanned, not yet used
    next_index, records = 0, []
    for j in tqdm(range(n), desc="calib (synthetic)", unit="scene", disable=not progress):
        want = CATEGORY_CYCLE[j % len(CATEGORY_CYCLE)]
        if pending[want]:
            i = pending[want].popleft()
            ldrs, evs, gt, info = generate_scene_with_info(scene_seed(seed, i), size, size)
        else:
            for _ in range(_MAX_SCAN):
                i, next_index = next_index, next_index + 1
                ldrs, evs, gt, info = generate_scene_with_info(scene_seed(seed, i), size, size)
                if scene_category(info) == want:
                    break
                pending[scene_category(info)].append(i)  # regenerated when its turn comes (saves memory)
            else:
                raise RuntimeError(f"no {want!r} scene among {_MAX_SCAN} generator scenes (are the photos "
                                   f"shipped by scikit-image installed?)")
        write_ntire(folder, sample_id(j), ldrs, evs, gt=gt)
        records.append({"id": sample_id(j), "category": want, "stream_index": i, "scene_seed": info["seed"],
                        "kind": info["kind"], "photo": info["source"], "low_key": info["low_key"],
                        "evs": info["evs"], "white_level_code": round(info["white_level"] * 255),
                        "light_change_stops": info["light_change_stops"]})
    return records


def build_from_folder(folder: Path, source: Path, n: int, size: int, seed: int = CALIB_SEED,
                      progress: bool = True) -> list[dict[str, Any]]:
    """Write ``n`` crops of ``size x size`` of the scenes with ground truth under ``source`` (NTIRE or
    Kalantari layout) into ``folder``; crop ``j`` is from scene ``floor(j * S / n)``."""
    sources = scene_sources_from_folder(source)
    with_gt = [s for s in sources if s.has_gt()]
    if not with_gt:
        raise DataError(f"{source}: none of its {len(sources)} scenes has ground truth (ID_gt.png or HDRImg.hdr); "
                        f"a calibration set needs it", source)
    records, scene = [], None
    for j in tqdm(range(n), desc="calib (crops)", unit="crop", disable=not progress):
        src = with_gt[j * len(with_gt) // n]
        if scene is None or scene.origin != src.origin:  # crops of one scene are consecutive: each is read once
            scene = src.load()
        h, w = scene.size()
        if h < size or w < size:
            raise DataError(f"{source}: scene {scene.id} is {h}x{w}, smaller than --size {size}", source)
        rng = np.random.default_rng([seed, j])
        y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
        crop = scene.crop(y, x, size, size)
        write_ntire(folder, sample_id(j), crop.ldrs, crop.evs, gt=crop.gt)
        records.append({"id": sample_id(j), "source_scene": scene.id, "crop_yx": [y, x], "evs": scene.evs.tolist()})
    return records


# --------------------------------------------------------------------------------------------
# a whole set: manifest, then renamed into place
# --------------------------------------------------------------------------------------------


def _shown(path: Path) -> str:
    """``path`` relative to the repository root when inside it (the manifest's command runs from there)."""
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def rebuild_command(out: Path, source: str | Path, n: int, size: int, seed: int) -> str:
    """The ``python -m eapnet.calib.build`` command that rebuilds ``out`` (paths relative to the repository root
    when inside it), as the manifest records it."""
    source = source if source == "synthetic" else _shown(Path(source))
    return shlex.join(["python", "-m", "eapnet.calib.build", "--out", _shown(out), "--data", source,
                       "--n", str(n), "--size", str(size), "--seed", str(seed), "--force"])


def build_set(out: Path, source: str | Path = "synthetic", n: int = 32, size: int = 128, seed: int = CALIB_SEED,
              progress: bool = True) -> None:
    """Build a calibration set of ``n`` scenes of ``size x size`` at ``out`` from ``source`` (``"synthetic"`` or
    a folder in the NTIRE or Kalantari layout; ``seed``: the synthetic stream's base seed, or the crop offsets'
    seed), with its manifest. The set is written to a temporary folder next to ``out``, then renamed into place,
    replacing an existing ``out``: check first that it may go. Nothing is left behind on an error
    (``DataError`` for an unusable source folder)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        if source == "synthetic":
            scenes = build_synthetic(tmp, n, size, seed, progress=progress)
        else:
            scenes = build_from_folder(tmp, Path(source), n, size, seed, progress=progress)
        files = {f.name: file_sha256(f) for f in sorted(tmp.iterdir()) if f.is_file()}
        atomic_write_json(tmp / MANIFEST, {
            "manifest_version": MANIFEST_VERSION,
            "source": source if source == "synthetic" else _shown(Path(source)),
            "n": n,
            "size": size,
            "seed": seed,
            "layout": "NTIRE: ID_short/medium/long.png, ID_exposures.npy (stops, medium = 0), ID_gt.png + "
                      "ID_alignratio.npy (gamma-encoded HDR = png / alignratio); read with eapnet.data.read_ntire",
            "command": rebuild_command(out, source, n, size, seed),
            "scenes": scenes,
            "files": files,
            "versions": package_versions(),
        })
        _install(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _install(tmp: Path, out: Path) -> None:
    """Rename the finished ``tmp`` folder to ``out``, replacing an existing ``out`` (checked by the caller)."""
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    if not out.exists():
        os.replace(tmp, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.replace(out, old / out.name)
    os.replace(tmp, out)
    shutil.rmtree(old)
