"""Calibration data for compression (sensitivity, PTQ, QAT) and the export parity harness.

``DEFAULT`` is the shipped set: 32 synthetic scenes of 128x128 in the NTIRE layout, built by
``python -m eapnet.calib.build`` (see eapnet/calib/README.md and eapnet/calib/generate.py)::

    from eapnet.calib import load_calibration, verify
    verify()                                   # sha256 of every file against manifest.json
    for scene in load_calibration(limit=8):    # eapnet.data.Scene, with ground truth
        ...  # scene.ldrs (3, H, W, 3) float32 [0, 1]; scene.evs (3,) stops, medium = 0; scene.gt (H, W, 3)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from eapnet.data import DataError, MissingFileError, Scene, list_ntire_ids, read_ntire
from eapnet.runs import file_sha256

__all__ = ["DEFAULT", "MANIFEST", "file_sha256", "load_calibration", "verify"]

DEFAULT = Path(__file__).parent / "default"
MANIFEST = "manifest.json"
_REBUILD = "python -m eapnet.calib.build --out FOLDER"


def load_calibration(folder: str | os.PathLike = DEFAULT, limit: int | None = None) -> list[Scene]:
    """The scenes of a calibration folder, in id order, as :class:`eapnet.data.Scene` (origin
    ``calib:<folder>/<id>``, dataset ``calib``), every one with ground truth. ``limit``: only the first
    ``limit`` scenes.

    Raises:
        MissingFileError: ``folder`` does not exist.
        DataError: no scenes in it, a scene without ground truth, or a malformed file (named).
    """
    folder = Path(folder)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 or None, got {limit}")
    if not folder.is_dir():
        raise MissingFileError(f"{folder}: calibration folder missing; build one with "
                               f"{_REBUILD.replace('FOLDER', str(folder))}", folder)
    ids = list_ntire_ids(folder)[:limit]
    if not ids:
        raise DataError(f"{folder}: no calibration scenes (ID_short/medium/long.png + ID_exposures.npy); build "
                        f"them with {_REBUILD.replace('FOLDER', str(folder))}", folder)
    out = []
    for sid in ids:
        ldrs, evs, gt = read_ntire(folder, sid)
        if gt is None:
            raise DataError(f"{folder / (sid + '_gt.png')}: missing; a calibration scene needs ground truth", folder)
        out.append(Scene(sid, ldrs, evs, gt, origin=f"calib:{folder}/{sid}", dataset="calib"))
    return out


def verify(folder: str | os.PathLike = DEFAULT) -> int:
    """Check every file of ``folder`` against the sha256 in its ``manifest.json``; returns the file count.

    Raises:
        MissingFileError: no manifest, or a file it lists is missing.
        DataError: the first file (in manifest order) whose sha256 differs, or a file the manifest
            does not list (it would change what :func:`load_calibration` returns).
    """
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise MissingFileError(f"{path}: missing calibration manifest", path)
    manifest = json.loads(path.read_text())
    files = manifest["files"]
    rebuild = manifest.get("command", _REBUILD.replace("FOLDER", str(folder)))
    for name, expected in files.items():
        f = folder / name
        if not f.is_file():
            raise MissingFileError(f"{f}: missing (listed in {MANIFEST}); rebuild with: {rebuild}", f)
        actual = file_sha256(f)
        if actual != expected:
            raise DataError(f"{f}: sha256 {actual[:16]}... differs from {MANIFEST}'s {expected[:16]}... "
                            f"(changed or corrupt); rebuild with: {rebuild}", f)
    extra = sorted(f.name for f in folder.iterdir() if f.name not in files and f.name != MANIFEST)
    if extra:
        raise DataError(f"{folder / extra[0]}: not listed in {MANIFEST} ({len(extra)} unlisted file(s))", folder)
    return len(files)
