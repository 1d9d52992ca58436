"""Kalantari & Ramamoorthi (SIGGRAPH 2017) dynamic-scene HDR dataset, read into NTIRE conventions.

Layout: one folder per scene::

    scene/
        <a>.tif <b>.tif <c>.tif   three 16-bit LDR frames; sorted by file name = short, medium, long;
                                  3 channels stored BGR (as OpenCV reads them)
        exposure.txt              one EV in stops per line, e.g. "-2\\n0\\n2" or absolute "0\\n2\\n4"
        HDRImg.hdr                Radiance RGBE, *linear* radiance in the units of the exposure whose
                                  EV in exposure.txt is 0: ``ldr_i ** 2.2 / 2 ** ev_i ~= HDR``

:func:`read_kalantari` returns the project convention (same as :func:`eapnet.data.ntire.read_ntire`);
:class:`KalantariSource` is the scene source over it (:mod:`eapnet.data.scene`):

* ``ldrs`` float32 ``(3, H, W, 3)`` RGB = tif / 65535, in [0, 1];
* ``evs`` float32 ``(3,)`` stops relative to the medium frame (``evs[1] == 0``);
* ``gt`` float32 ``(H, W, 3)`` RGB in the NTIRE ground-truth domain: the linear HDR is first
  aligned to the medium frame (``hdr * 2 ** ev_medium``, ``ev_medium`` as written in
  exposure.txt) and then gamma-encoded with ``** (1 / 2.24)``.

Gamma: Kalantari's LDRs were made with gamma 2.2 (``ldr ** 2.2`` is linear), whereas the NTIRE
ground-truth domain and its metrics use 2.24. We leave the LDR pixels untouched (re-encoding
would re-quantise them and they are real camera output) and encode only the gt with 2.24, so that
the NTIRE metrics, which linearise with 2.24, see exactly Kalantari's linear radiance. A consequence:
in unsaturated regions ``gt ~= ldr_medium ** (2.2 / 2.24)`` rather than ``gt ~= ldr_medium`` (a 1.8 %
exponent mismatch); a model fusing frames with ``ldr ** 2.24 / 2 ** ev`` is off by that much on
this dataset, which fine-tuning absorbs.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eapnet.metrics import DEFAULT_GAMMA as NTIRE_GT_GAMMA  # (one definition)

from .errors import DataError, MissingFileError
from .ntire import _check_finite, _check_sizes, _read_image
from .scene import Scene, check_exposures

__all__ = [
    "KALANTARI_LDR_GAMMA",
    "NTIRE_GT_GAMMA",
    "KalantariSource",
    "read_kalantari",
    "list_kalantari_scenes",
    "kalantari_tif_paths",
]

KALANTARI_LDR_GAMMA = 2.2
_U16_MAX = 2**16 - 1


def kalantari_tif_paths(scene_folder: str | os.PathLike) -> list[Path]:
    """The three LDR ``.tif``/``.tiff`` files of a scene, sorted by name (short, medium, long)."""
    scene = Path(scene_folder)
    if not scene.is_dir():
        raise MissingFileError(f"{scene}: missing Kalantari scene folder (not a directory)", scene)
    tifs = sorted(
        p for p in scene.iterdir()
        if p.suffix.lower() in (".tif", ".tiff") and not p.name.startswith(".") and p.is_file()
    )
    if len(tifs) != 3:
        names = ", ".join(p.name for p in tifs) or "none"
        raise (MissingFileError if len(tifs) < 3 else DataError)(
            f"{scene}: expected 3 LDR .tif files (short, medium, long), found {len(tifs)} ({names}); "
            f"missing or extra tif",
            scene,
        )
    return tifs


def _tif_size(path: Path) -> tuple[int, int]:
    """``(height, width)`` of a TIFF file from its first image directory (the header), without decoding."""
    if not path.is_file():
        raise MissingFileError(f"{path}: missing LDR tif", path)
    with open(path, "rb") as f:
        head = f.read(8)
        order = {b"II*\0": "<", b"MM\0*": ">"}.get(head[:4])
        if len(head) < 8 or order is None:
            raise DataError(f"{path}: not a TIFF file (corrupt or wrong format)", path)
        f.seek(struct.unpack(order + "I", head[4:])[0])
        count = f.read(2)
        entries = f.read(12 * struct.unpack(order + "H", count)[0]) if len(count) == 2 else b""
    tags = {}
    for i in range(len(entries) // 12):
        tag, kind, _, value = struct.unpack_from(order + "HHI4s", entries, 12 * i)
        if tag in (256, 257):   # ImageWidth, ImageLength: SHORT (3) or LONG (4)
            tags[tag] = struct.unpack_from(order + ("H" if kind == 3 else "I"), value)[0]
    if len(tags) != 2:
        raise DataError(f"{path}: corrupt TIFF header (no image width and height in its first directory)", path)
    return tags[257], tags[256]


def _read_exposure_txt(path: Path) -> np.ndarray:
    if not path.is_file():
        raise MissingFileError(f"{path}: missing exposure file (exposure.txt)", path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: unreadable exposure file: {exc}", path) from exc
    tokens = text.split()
    try:
        values = np.array([float(t) for t in tokens], dtype=np.float64)
    except ValueError as exc:
        raise DataError(f"{path}: malformed exposure file, expected 3 numbers (EV per line): {exc}", path) from exc
    if values.size != 3:
        raise DataError(f"{path}: malformed exposure file, expected 3 numbers, found {values.size}", path)
    return check_exposures(values, str(path))


def read_kalantari(scene_folder: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Read one Kalantari scene as ``(ldrs, evs, gt_or_None)`` in NTIRE conventions.

    See the module docstring for units and the gamma 2.2 vs 2.24 handling. ``gt`` is ``None``
    when the scene has no ``HDRImg.hdr``.

    Raises:
        MissingFileError: fewer than 3 tifs, no exposure.txt.
        DataError: tif not 16-bit / not 3 channels / corrupt, frame sizes differ, exposure.txt
            malformed, HDR unreadable, non-finite, negative, or of another size.
    """
    scene = Path(scene_folder)
    tifs = kalantari_tif_paths(scene)
    frames = {p: _read_image(p, np.uint16, "16-bit LDR tif") for p in tifs}
    _check_sizes(frames)
    ev_abs = _read_exposure_txt(scene / "exposure.txt")

    ldrs = np.stack([f[..., ::-1] for f in frames.values()]).astype(np.float32) / np.float32(_U16_MAX)
    evs = (ev_abs - ev_abs[1]).astype(np.float32)

    gt = None
    hdr_path = scene / "HDRImg.hdr"
    if hdr_path.exists():
        hdr = _read_image(hdr_path, None, "HDR image")
        if hdr.dtype.kind != "f":
            raise DataError(f"{hdr_path}: HDR image decoded as {hdr.dtype}, expected float (Radiance RGBE)", hdr_path)
        _check_sizes({tifs[0]: next(iter(frames.values())), hdr_path: hdr})
        _check_finite(hdr, str(hdr_path), "HDR image")
        if float(hdr.min()) < 0:
            raise DataError(f"{hdr_path}: HDR image has negative radiance ({float(hdr.min()):.6g})", hdr_path)
        # HDR is in units of the EV-0 exposure; scale to the medium frame, then NTIRE gamma.
        linear = hdr[..., ::-1].astype(np.float64) * 2.0 ** ev_abs[1]
        gt = np.power(linear, 1.0 / NTIRE_GT_GAMMA).astype(np.float32)
    return ldrs, evs, gt


def list_kalantari_scenes(root: str | os.PathLike) -> list[Path]:
    """Sorted scene folders directly under ``root`` (sub-folders containing ``exposure.txt``).

    The official archive nests sets (``Training/001``, ``Test/PAPER/...``): pass the folder
    that directly holds the scenes.
    """
    root = Path(root)
    if not root.is_dir():
        raise MissingFileError(f"{root}: missing Kalantari root folder (not a directory)", root)
    return sorted(
        p for p in root.iterdir()
        if p.is_dir() and not p.name.startswith(".") and (p / "exposure.txt").is_file()
    )


@dataclass(frozen=True)
class KalantariSource:
    """One Kalantari scene folder as a scene source (:class:`eapnet.data.scene.SceneSource`): id = the folder's
    name, ``size()`` from the first tif's header, ``has_gt()`` from ``HDRImg.hdr`` being there, ``load()`` reads
    it (:func:`read_kalantari`). ``dataset``: the set its scene belongs to."""

    folder: Path
    dataset: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "folder", Path(self.folder))

    @property
    def id(self) -> str:
        return self.folder.name

    @property
    def origin(self) -> str:
        return f"kalantari:{self.folder}"

    def size(self) -> tuple[int, int]:
        return _tif_size(kalantari_tif_paths(self.folder)[0])

    def has_gt(self) -> bool:
        return (self.folder / "HDRImg.hdr").is_file()

    def load(self) -> Scene:
        ldrs, evs, gt = read_kalantari(self.folder)
        return Scene(self.id, ldrs, evs, gt, origin=self.origin, dataset=self.dataset)
