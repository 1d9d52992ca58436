"""NTIRE 2021/2022 multi-frame HDR challenge file layout: read, validate, write.

Files of one sample ``ID`` in a folder::

    ID_short.png  ID_medium.png  ID_long.png   8-bit PNG, 3 channels stored BGR (OpenCV order)
    ID_exposures.npy                           3 exposure values in stops (EV), absolute, e.g. int64 [-3, -1, 1]
    ID_gt.png                                  optional 16-bit PNG, BGR
    ID_alignratio.npy                          with the gt: scalar, HDR = gt_png / alignratio

The stored HDR is *gamma-encoded* (linear = hdr ** 2.24) and aligned to the medium frame.

Two views of a sample:

* :class:`NtireSample` keeps the raw file content (uint8 frames, uint16 gt, exposures and align
  ratio arrays with their stored dtype) so that :func:`save_ntire_sample` reproduces the files
  bit-exactly (decoded pixels identical, ``.npy`` files byte-identical).
* :func:`read_ntire` returns the project's float convention: ``ldrs`` float32 ``(3, H, W, 3)``
  RGB in [0, 1]; ``evs`` float32 ``(3,)`` in stops relative to the medium frame (``evs[1] == 0``);
  ``gt`` float32 ``(H, W, 3)`` RGB, gamma-encoded HDR, >= 0, may exceed 1 (or ``None``); the low-level
  reader beneath :class:`NtireSource`, the scene source (:mod:`eapnet.data.scene`) whose ``load()`` gives a
  :class:`~eapnet.data.scene.Scene`.

Each rule is checked once: the files' sizes, exposures (:func:`eapnet.data.scene.check_exposures`) and align
ratio (:data:`ALIGN_RATIO_RANGE`) by :class:`NtireSample`, whether it was read or is about to be written.

All writes are atomic (temporary file in the same folder, then ``os.replace``), so an
interrupted writer never leaves a half-written PNG that a reader would take for a sample.
"""

from __future__ import annotations

import io
import math
import os
import re
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from eapnet.runs import atomic_write_bytes

from .errors import DataError, MissingFileError
from .scene import Scene, check_exposures

__all__ = [
    "ALIGN_RATIO_RANGE",
    "FRAME_NAMES",
    "NtireSample",
    "NtireSource",
    "load_ntire_sample",
    "save_ntire_sample",
    "read_ntire",
    "write_ntire",
    "write_ntire_hdr",
    "list_ntire_ids",
    "ntire_frame_size",
    "ntire_paths",
]

FRAME_NAMES = ("short", "medium", "long")
_U16_MAX = 2**16 - 1
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------------------------
# shared low-level helpers (also used by kalantari.py)
# --------------------------------------------------------------------------------------------


MAX_FRAME_SIDE = 16384
"""Largest side of a frame read, pixels: beyond any camera's, the same limit as the commands' ``--size``
(``eapnet.cli.MAX_SIDE``). Checked from the PNG header before decoding, which allocates the full image."""


def _depth_name(dtype: np.dtype) -> str:
    return {np.dtype(np.uint8): "8-bit", np.dtype(np.uint16): "16-bit"}.get(
        np.dtype(dtype), f"{np.dtype(dtype).name}"
    )


def _read_image(path: Path, expect_dtype: np.dtype | None, what: str) -> np.ndarray:
    """Decode an image file exactly as stored (no colour conversion, no EXIF rotation).

    ``expect_dtype`` (uint8/uint16) is enforced; ``None`` accepts float images (.hdr).
    The result has 3 channels in file (BGR) order.
    """
    if not path.is_file():
        raise MissingFileError(f"{path}: missing {what} file", path)
    # imdecode on bytes instead of imread: works for any path encoding and lets us
    # distinguish "missing" from "corrupt" cleanly.
    data = np.fromfile(str(path), dtype=np.uint8)
    if data[:8].tobytes() == _PNG_SIGNATURE and (damage := _png_damage(data)):
        raise DataError(f"{path}: corrupt PNG ({what}): {damage}", path)
    if data[:8].tobytes() == _PNG_SIGNATURE:   # IHDR is the first chunk (checked above): size before decoding
        width, height = struct.unpack_from(">II", data, 16)
        if max(width, height) > MAX_FRAME_SIDE or min(width, height) < 1:
            raise DataError(f"{path}: {what} claims {height}x{width} pixels (HxW); frames are 1 to "
                            f"{MAX_FRAME_SIDE} pixels a side (decoding it would need "
                            f"{height * width * 6 / 2**30:.1f} GiB)", path)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise DataError(f"{path}: unreadable or corrupt image ({what})", path)
    if path.suffix.lower() == ".png" and data[:8].tobytes() != _PNG_SIGNATURE:
        # OpenCV decodes by content: a JPEG named .png would pass here and fail elsewhere (PNG headers)
        raise DataError(f"{path}: {what} is not a PNG file (named .png, but its bytes are another format)", path)
    if expect_dtype is not None and img.dtype != np.dtype(expect_dtype):
        raise DataError(
            f"{path}: {what} is {_depth_name(img.dtype)}, expected {_depth_name(expect_dtype)}",
            path,
        )
    channels = 1 if img.ndim == 2 else img.shape[2]
    if channels != 3:
        raise DataError(f"{path}: {what} has {channels} channel(s), expected 3 (colour, no alpha)", path)
    return img


def _png_damage(data: np.ndarray) -> str | None:
    """What is wrong with the chunks of a PNG file's bytes ``data`` (signature already matched), or None: a
    chunk cut short, a CRC mismatch, IHDR not first, no IEND. Checked before decoding: on these libpng
    prints ``libpng error: ...`` on stderr itself, which OpenCV cannot silence."""
    buf, pos, n = memoryview(data), 8, data.size
    while pos + 8 <= n:
        length, kind = struct.unpack_from(">I4s", buf, pos)
        name, end = kind.decode("latin-1"), pos + 12 + length
        if end > n:
            return f"truncated: chunk {name} at byte {pos} needs {end} bytes, the file has {n}"
        if pos == 8 and kind != b"IHDR":
            return f"the first chunk is {name}, not IHDR"
        if zlib.crc32(buf[pos + 4:end - 4]) != struct.unpack_from(">I", buf, end - 4)[0]:
            return f"chunk {name} at byte {pos} fails its CRC (damaged bytes)"
        if kind == b"IEND":
            return None
        pos = end
    return f"truncated: no IEND chunk in its {n} bytes"


def _check_sizes(images: dict[Path, np.ndarray]) -> tuple[int, int]:
    """All images must share height and width; returns (H, W)."""
    items = list(images.items())
    ref_path, ref = items[0]
    for path, img in items[1:]:
        if img.shape[:2] != ref.shape[:2]:
            raise DataError(
                f"{path}: size {img.shape[0]}x{img.shape[1]} (HxW) differs from "
                f"{ref_path.name} size {ref.shape[0]}x{ref.shape[1]}",
                path,
            )
    return ref.shape[0], ref.shape[1]


ALIGN_RATIO_RANGE = (1e-2, 1e10)
"""Accepted align ratios (``gt = png / ratio``): a GT peak between 65535 / 1e10 and 6.6e6 in the
gamma-encoded domain. The real challenge crops have 6806 (peak 9.6)."""


def _align_ratio_value(ratio, name: str) -> float:
    """The align ratio (``gt = png / ratio``) of one sample as a float: one real number, finite, positive and in
    :data:`ALIGN_RATIO_RANGE`; DataError naming ``name`` (its file) otherwise."""
    ratio = np.asarray(ratio)
    if ratio.dtype.kind not in "iuf" or ratio.size != 1:
        raise DataError(f"{name}: align ratio must be one real number, got dtype {ratio.dtype} shape {ratio.shape}",
                        name)
    value = float(ratio.reshape(()))
    if not np.isfinite(value) or value <= 0:
        raise DataError(f"{name}: align ratio {value!r} is not a finite positive number", name)
    lo, hi = ALIGN_RATIO_RANGE
    if not lo <= value <= hi:
        raise DataError(f"{name}: align ratio {value:g} is outside [{lo:g}, {hi:g}] (it would put the ground "
                        f"truth's peak at {65535 / value:.3g})", name)
    return value


def _check_finite(arr: np.ndarray, source: str, what: str) -> None:
    if not np.all(np.isfinite(arr)):
        raise DataError(f"{source}: {what} contains NaN/Inf (non-finite values)", source)


def _atomic_write_bytes(path: Path, payload: bytes | None = None, array: np.ndarray | None = None) -> None:
    """Write ``payload`` (or ``np.save(array)``) to ``path`` atomically (eapnet.runs: temp file + rename).

    The temporary name starts with a dot, so the listing functions never pick it up."""
    if array is not None:
        buf = io.BytesIO()
        np.save(buf, array, allow_pickle=False)
        payload = buf.getvalue()
    atomic_write_bytes(path, payload)


def _atomic_write_image(path: Path, img: np.ndarray, ext: str) -> None:
    ok, buf = cv2.imencode(ext, img)
    if not ok:
        raise DataError(f"{path}: OpenCV could not encode the image as {ext}", path)
    _atomic_write_bytes(path, payload=buf.tobytes())


def _npy_header(path: Path, what: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """``(shape, dtype, data offset)`` from a ``.npy`` file's header alone (``numpy.lib.format``, versions 1.0
    and 2.0), reading no data; DataError naming the file for a file that is not one."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}")
            return tuple(shape), np.dtype(dtype), f.tell()
    except Exception as exc:  # numpy raises ValueError/EOFError/OSError for bad headers
        raise DataError(f"{path}: unreadable or corrupt .npy file ({what}): {exc}", path) from exc


def _exposures_header(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> None:
    if dtype.kind not in "iuf":
        raise DataError(f"{path}: exposures must be 3 finite real numbers, the header says dtype {dtype}", path)
    if shape != (3,):
        raise DataError(f"{path}: exposures must be 3 finite values (shape (3,)), the header says shape {shape}",
                        path)


def _align_ratio_header(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> None:
    if dtype.kind not in "iuf" or math.prod(shape) != 1:
        raise DataError(f"{path}: align ratio must be one real number, the header says dtype {dtype} shape {shape}",
                        path)


def _load_npy(path: Path, what: str, check) -> np.ndarray:
    """A small ``.npy`` file whose header is checked before its data is read: ``check(path, shape, dtype)``
    raises DataError for a shape or dtype the file must not have (an exposures header claiming 1e9 floats is
    refused having read about 100 bytes), and the file must hold as many bytes as its header promises."""
    if not path.is_file():
        raise MissingFileError(f"{path}: missing {what} file", path)
    shape, dtype, offset = _npy_header(path, what)
    check(path, shape, dtype)
    need, size = offset + math.prod(shape) * dtype.itemsize, path.stat().st_size
    if size < need:
        raise DataError(f"{path}: truncated .npy file ({what}): its header's {dtype} {shape} needs {need} bytes, "
                        f"the file has {size}", path)
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises ValueError/EOFError/OSError for bad files
        raise DataError(f"{path}: unreadable or corrupt .npy file ({what}): {exc}", path) from exc


# --------------------------------------------------------------------------------------------
# NTIRE sample
# --------------------------------------------------------------------------------------------


def ntire_paths(folder: str | os.PathLike, sample_id: str) -> dict[str, Path]:
    """File paths of one sample: keys ``short, medium, long, exposures, gt, alignratio``."""
    folder = Path(folder)
    paths = {name: folder / f"{sample_id}_{name}.png" for name in FRAME_NAMES}
    paths["exposures"] = folder / f"{sample_id}_exposures.npy"
    paths["gt"] = folder / f"{sample_id}_gt.png"
    paths["alignratio"] = folder / f"{sample_id}_alignratio.npy"
    return paths


def _frozen(arr: np.ndarray) -> np.ndarray:
    arr = np.array(arr, copy=True)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class NtireSample:
    """Raw content of one NTIRE sample, exactly as stored on disk.

    Attributes:
        sample_id: the file-name prefix, e.g. ``"0000"``.
        frames: 3 uint8 arrays ``(H, W, 3)`` in file (BGR) order: short, medium, long.
        exposures: the ``ID_exposures.npy`` array as stored (shape ``(3,)``, absolute EVs in
            stops, dtype kept, e.g. int64).
        gt_png: uint16 ``(H, W, 3)`` BGR ground-truth PNG pixels, or ``None``.
        align_ratio: the ``ID_alignratio.npy`` array as stored (0-d, usually float64), or
            ``None``; HDR = gt_png / align_ratio.
        folder: where the files are, or ``None``; only for the messages (which then name full paths).

    Checked on construction, whether read or about to be written: three uint8 frames of one size, the
    exposures (:func:`eapnet.data.scene.check_exposures`), a gt of the frames' size with its align ratio
    (one finite positive number in :data:`ALIGN_RATIO_RANGE`).

    Arrays are copied and made read-only so the dataclass is really frozen. Float views in the
    project convention: :attr:`ldrs`, :attr:`evs`, :attr:`gt`, or :meth:`to_arrays`.
    """

    sample_id: str
    frames: tuple[np.ndarray, np.ndarray, np.ndarray]
    exposures: np.ndarray
    gt_png: np.ndarray | None = None
    align_ratio: np.ndarray | None = None
    folder: Path | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        sid = str(self.sample_id)
        if not sid or "/" in sid or os.sep in sid or sid.startswith("."):
            raise DataError(f"invalid sample id {sid!r} (empty, path separator or leading dot)")
        object.__setattr__(self, "sample_id", sid)
        at = (lambda name: name) if self.folder is None else (lambda name: str(Path(self.folder) / name))
        names = [at(f"{sid}_{n}.png") for n in FRAME_NAMES]
        if len(self.frames) != 3:
            raise DataError(f"{sid}: expected 3 frames (short, medium, long), got {len(self.frames)}")
        frames = []
        for name, frame in zip(names, self.frames):
            frame = np.asarray(frame)
            if frame.dtype != np.uint8:
                raise DataError(f"{name}: frame is {_depth_name(frame.dtype)}, expected 8-bit (uint8)", name)
            if frame.ndim != 3 or frame.shape[2] != 3:
                raise DataError(f"{name}: frame shape {frame.shape}, expected (H, W, 3) with 3 channels", name)
            frames.append(_frozen(frame))
        _check_sizes({Path(n): f for n, f in zip(names, frames)})
        object.__setattr__(self, "frames", tuple(frames))
        object.__setattr__(self, "exposures", _frozen(check_exposures(self.exposures, at(f"{sid}_exposures.npy"))))

        if (self.gt_png is None) != (self.align_ratio is None):
            missing = at(f"{sid}_alignratio.npy" if self.align_ratio is None else f"{sid}_gt.png")
            raise MissingFileError(f"{missing}: missing (gt and align ratio must come together)", missing)
        if self.gt_png is not None:
            gt_name = at(f"{sid}_gt.png")
            gt = np.asarray(self.gt_png)
            if gt.dtype != np.uint16:
                raise DataError(f"{gt_name}: gt is {_depth_name(gt.dtype)}, expected 16-bit (uint16)", gt_name)
            if gt.ndim != 3 or gt.shape[2] != 3:
                raise DataError(f"{gt_name}: gt shape {gt.shape}, expected (H, W, 3) with 3 channels", gt_name)
            if gt.shape[:2] != frames[0].shape[:2]:
                raise DataError(
                    f"{gt_name}: gt size {gt.shape[0]}x{gt.shape[1]} (HxW) differs from frame size "
                    f"{frames[0].shape[0]}x{frames[0].shape[1]} ({names[0]})",
                    gt_name,
                )
            object.__setattr__(self, "gt_png", _frozen(gt))
            _align_ratio_value(self.align_ratio, at(f"{sid}_alignratio.npy"))
            object.__setattr__(self, "align_ratio", _frozen(np.asarray(self.align_ratio)))

    # ---- float views -------------------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, int]:
        """Frame size ``(H, W)``."""
        return self.frames[0].shape[:2]

    @property
    def has_gt(self) -> bool:
        return self.gt_png is not None

    @property
    def ldrs(self) -> np.ndarray:
        """float32 ``(3, H, W, 3)``: frames short/medium/long, RGB, ``uint8 / 255`` in [0, 1]."""
        stack = np.stack([f[..., ::-1] for f in self.frames])
        return stack.astype(np.float32) / np.float32(255.0)

    @property
    def evs(self) -> np.ndarray:
        """float32 ``(3,)`` exposures in stops relative to the medium frame (``evs[1] == 0``)."""
        exp = self.exposures.astype(np.float64)
        return (exp - exp[1]).astype(np.float32)

    @property
    def align_ratio_value(self) -> float | None:
        return None if self.align_ratio is None else float(self.align_ratio.reshape(()))

    @property
    def gt(self) -> np.ndarray | None:
        """float32 ``(H, W, 3)`` RGB gamma-encoded HDR (``png / align_ratio``, >= 0), or ``None``."""
        if self.gt_png is None:
            return None
        # float64 division then one rounding to float32: float32 * ratio re-rounds to the png
        # value exactly (relative error 6e-8 << 0.5 / 65535).
        hdr = self.gt_png[..., ::-1].astype(np.float64) / self.align_ratio_value
        return hdr.astype(np.float32)

    def to_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(ldrs, evs, gt_or_None)`` in the project convention (see module docstring)."""
        return self.ldrs, self.evs, self.gt

    # ---- construction from float arrays -------------------------------------------------------

    @classmethod
    def from_arrays(
        cls,
        sample_id: str,
        ldrs: np.ndarray,
        exposures,
        gt: np.ndarray | None = None,
        align_ratio: float | np.ndarray | None = None,
    ) -> "NtireSample":
        """Quantise float arrays into file content (inverse of :meth:`to_arrays`).

        Args:
            ldrs: ``(3, H, W, 3)`` RGB in [0, 1]; values outside by more than half an 8-bit
                step, or non-finite, are rejected; stored as ``round(clip(x, 0, 1) * 255)``.
            exposures: 3 exposure values in stops, saved as given (``np.asarray`` dtype kept);
                pass the absolute values to reproduce an original file.
            gt: ``(H, W, 3)`` RGB gamma-encoded HDR >= 0, or ``None``.
            align_ratio: ``None`` -> organisers' formula ``(2**16 - 1) / gt.max()``; otherwise
                used as given (pass the stored ratio to reproduce a file: crops of the real data
                carry the ratio of their full-size image, not of the crop).
        """
        sid = str(sample_id)
        ldrs = np.asarray(ldrs)
        if ldrs.ndim != 4 or ldrs.shape[0] != 3 or ldrs.shape[3] != 3:
            raise DataError(f"{sid}: ldrs shape {ldrs.shape}, expected (3, H, W, 3)")
        if ldrs.dtype.kind not in "f":
            raise DataError(f"{sid}: ldrs dtype {ldrs.dtype}, expected floats in [0, 1]")
        frames = []
        for name, ldr in zip(FRAME_NAMES, ldrs):
            fname = f"{sid}_{name}.png"
            _check_finite(ldr, fname, "ldr frame")
            lo, hi = float(ldr.min()), float(ldr.max())
            tol = 0.5 / 255
            if lo < -tol or hi > 1 + tol:
                raise DataError(f"{fname}: ldr values [{lo:.6g}, {hi:.6g}] out of range [0, 1]", fname)
            q = np.round(np.clip(ldr.astype(np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)
            frames.append(np.ascontiguousarray(q[..., ::-1]))

        exposures = np.asarray(exposures)
        gt_png = ratio_arr = None
        if gt is not None:
            gname = f"{sid}_gt.png"
            gt = np.asarray(gt)
            if gt.ndim != 3 or gt.shape[2] != 3:
                raise DataError(f"{gname}: gt shape {gt.shape}, expected (H, W, 3)", gname)
            if gt.dtype.kind != "f":
                raise DataError(f"{gname}: gt dtype {gt.dtype}, expected floats", gname)
            _check_finite(gt, gname, "gt")
            g = gt.astype(np.float64)
            if align_ratio is None:
                gmax = float(g.max())
                if gmax <= 0:
                    raise DataError(f"{gname}: gt is all zero/negative, cannot compute align ratio", gname)
                ratio_arr = np.array(np.float64(_U16_MAX) / np.float64(gmax))
            else:
                _align_ratio_value(align_ratio, f"{sid}_alignratio.npy")
                ratio_arr = np.asarray(align_ratio)
                ratio_arr = (ratio_arr if ratio_arr.dtype.kind == "f" else ratio_arr.astype(np.float64)).reshape(())
            scaled = g * float(ratio_arr)
            lo, hi = float(scaled.min()), float(scaled.max())
            if lo < -0.5 or hi > _U16_MAX + 0.5:
                raise DataError(
                    f"{gname}: gt * align ratio spans [{lo:.6g}, {hi:.6g}], out of 16-bit range "
                    f"[0, {_U16_MAX}] (negative gt or align ratio too large)",
                    gname,
                )
            png = np.round(np.clip(scaled, 0, _U16_MAX)).astype(np.uint16)
            gt_png = np.ascontiguousarray(png[..., ::-1])
        elif align_ratio is not None:
            raise DataError(f"{sid}: align_ratio given without gt")
        return cls(sid, tuple(frames), exposures, gt_png, ratio_arr)


def load_ntire_sample(folder: str | os.PathLike, sample_id: str) -> NtireSample:
    """Read and validate all files of one sample (raw content, see :class:`NtireSample`).

    Raises:
        MissingFileError: a frame or the exposures file is missing, or only one of gt /
            alignratio exists.
        DataError: corrupt image, wrong bit depth or channel count, sizes differ, bad
            exposures, bad align ratio (message names the file and the problem).
    """
    paths = ntire_paths(folder, sample_id)
    frames = [_read_image(paths[n], np.uint8, f"{n} LDR frame") for n in FRAME_NAMES]
    if all(np.array_equal(frames[0], f) for f in frames[1:]):
        raise DataError(f"{paths['short']}: the short, medium and long frames are identical: not an exposure "
                        "bracket (the same file three times?)", paths["short"])
    exposures = _load_npy(paths["exposures"], "exposures", _exposures_header)
    gt_png = ratio = None
    if paths["gt"].is_file() or paths["alignratio"].is_file():   # both, or the one missing is named
        gt_png = _read_image(paths["gt"], np.uint16, "ground truth")
        ratio = _load_npy(paths["alignratio"], "align ratio", _align_ratio_header)
    # sizes, exposures and the align ratio: checked by the sample, naming the files in `folder`
    return NtireSample(str(sample_id), tuple(frames), exposures, gt_png, ratio, folder=Path(folder))


def save_ntire_sample(folder: str | os.PathLike, sample: NtireSample) -> None:
    """Write a sample's files (creating ``folder``); each file is replaced atomically.

    A sample without gt writes no gt files (and leaves existing ones alone).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = ntire_paths(folder, sample.sample_id)
    for name, frame in zip(FRAME_NAMES, sample.frames):
        _atomic_write_image(paths[name], frame, ".png")
    _atomic_write_bytes(paths["exposures"], array=sample.exposures)
    if sample.gt_png is not None:
        _atomic_write_image(paths["gt"], sample.gt_png, ".png")
        _atomic_write_bytes(paths["alignratio"], array=sample.align_ratio)


def read_ntire(folder: str | os.PathLike, sample_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Read one NTIRE sample as ``(ldrs, evs, gt_or_None)``.

    Returns:
        ldrs: float32 ``(3, H, W, 3)``, frames short/medium/long, RGB, in [0, 1].
        evs: float32 ``(3,)``, stops relative to the medium frame (``evs[1] == 0``).
        gt: float32 ``(H, W, 3)`` RGB gamma-encoded HDR aligned to the medium frame
            (linear = gt ** 2.24), >= 0, may exceed 1; ``None`` without ``ID_gt.png``.
    """
    return load_ntire_sample(folder, sample_id).to_arrays()


@dataclass(frozen=True)
class NtireSource:
    """One NTIRE sample as a scene source (:class:`eapnet.data.scene.SceneSource`): ``size()`` from the PNG
    headers, ``has_gt()`` from the file names, ``load()`` reads it (:func:`read_ntire`). ``dataset``: the set
    its scene belongs to."""

    folder: Path
    id: str
    dataset: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "folder", Path(self.folder))
        object.__setattr__(self, "id", str(self.id))

    @property
    def origin(self) -> str:
        return f"ntire:{self.folder}/{self.id}"

    def size(self) -> tuple[int, int]:
        return ntire_frame_size(self.folder, self.id)

    def has_gt(self) -> bool:
        return ntire_paths(self.folder, self.id)["gt"].is_file()

    def load(self) -> Scene:
        ldrs, evs, gt = read_ntire(self.folder, self.id)
        return Scene(self.id, ldrs, evs, gt, origin=self.origin, dataset=self.dataset)


def write_ntire(
    folder: str | os.PathLike,
    sample_id: str,
    ldrs: np.ndarray,
    exposures,
    gt: np.ndarray | None = None,
    align_ratio: float | np.ndarray | None = None,
) -> NtireSample:
    """Write float arrays in the NTIRE layout (see :meth:`NtireSample.from_arrays`).

    ``exposures`` are written as given (the challenge stores absolute EVs). With the stored
    align ratio and exposures, arrays from :func:`read_ntire` reproduce the files bit-exactly.
    Returns the written :class:`NtireSample`.
    """
    sample = NtireSample.from_arrays(sample_id, ldrs, exposures, gt, align_ratio)
    save_ntire_sample(folder, sample)
    return sample


def write_ntire_hdr(folder: str | os.PathLike, name: str, hdr: np.ndarray) -> Path:
    """Write one HDR result in the organisers' submission format; returns the PNG path.

    Files: ``{name}.png``, 16-bit, 3 channels stored BGR, and ``{name}_alignratio.npy``, a 0-d float64
    ``align_ratio = (2**16 - 1) / hdr.max()``, with ``png = round(hdr * align_ratio)`` -- the organisers'
    ``imwrite_uint16_png`` formula, so reading back with the gt formula (``png / align_ratio``) gives
    ``hdr`` to within half a 16-bit step (``0.5 / align_ratio = hdr.max() / 131070``).

    Args:
        folder: output folder (created if missing); both files are replaced atomically.
        name: file-name stem (a scene id); no path separators, not empty, no leading dot.
        hdr: ``(H, W, 3)`` RGB floats in the challenge's ground-truth domain (gamma-encoded, >= 0).

    Raises:
        DataError: bad name, shape or dtype, NaN/inf, negative values, or an all-zero image (no align
            ratio exists); the message names the PNG file.
    """
    name = str(name)
    if not name or "/" in name or os.sep in name or name.startswith("."):
        raise DataError(f"invalid result name {name!r} (empty, path separator or leading dot)")
    folder = Path(folder)
    png_path, ratio_path = folder / f"{name}.png", folder / f"{name}_alignratio.npy"
    hdr = np.asarray(hdr)
    if hdr.ndim != 3 or hdr.shape[2] != 3:
        raise DataError(f"{png_path}: HDR shape {hdr.shape}, expected (H, W, 3)", png_path)
    if hdr.dtype.kind != "f":
        raise DataError(f"{png_path}: HDR dtype {hdr.dtype}, expected floats", png_path)
    _check_finite(hdr, str(png_path), "HDR")
    h = hdr.astype(np.float64)
    lo, hi = float(h.min()), float(h.max())
    if lo < 0:
        raise DataError(f"{png_path}: HDR has negative values (min {lo:.6g}); clip to >= 0 first", png_path)
    if hi <= 0:
        raise DataError(f"{png_path}: HDR is all zero, cannot compute an align ratio", png_path)
    ratio = np.array(np.float64(_U16_MAX) / np.float64(hi))
    png = np.round(np.clip(h * float(ratio), 0, _U16_MAX)).astype(np.uint16)
    folder.mkdir(parents=True, exist_ok=True)
    _atomic_write_image(png_path, np.ascontiguousarray(png[..., ::-1]), ".png")
    _atomic_write_bytes(ratio_path, array=ratio)
    return png_path


_ID_RE = re.compile(r"^(?P<id>[^.].*)_(?P<kind>short|medium|long|exposures)\.(?P<ext>png|npy)$")


def _scan_ids(folder: str | os.PathLike) -> dict[str, set[str]]:
    """``{id: kinds present}`` for every NTIRE-named file in ``folder`` (names only; hidden files ignored)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingFileError(f"{folder}: missing NTIRE folder (not a directory)", folder)
    found: dict[str, set[str]] = {}
    for entry in os.scandir(folder):
        m = _ID_RE.match(entry.name)
        if m is None or not entry.is_file():
            continue
        if (m["kind"] == "exposures") != (m["ext"] == "npy"):
            continue
        found.setdefault(m["id"], set()).add(m["kind"])
    return found


def list_ntire_ids(folder: str | os.PathLike) -> list[str]:
    """Sorted ids in ``folder`` with a complete LDR triplet and an exposures file.

    Only file names are checked (no decoding); hidden files (e.g. temporaries) are ignored. Samples with
    some but not all of these files are left out here: :func:`incomplete_ntire_ids` names them.
    """
    need = {*FRAME_NAMES, "exposures"}
    return sorted(i for i, kinds in _scan_ids(folder).items() if kinds >= need)


def incomplete_ntire_ids(folder: str | os.PathLike) -> dict[str, list[str]]:
    """``{id: [missing file names]}`` for samples in ``folder`` with some but not all of the three frames and
    the exposures file (a copy interrupted half-way, a deleted frame)."""
    need = (*FRAME_NAMES, "exposures")
    return {i: [f"{i}_{k}.{'npy' if k == 'exposures' else 'png'}" for k in need if k not in kinds]
            for i, kinds in sorted(_scan_ids(folder).items()) if not kinds >= set(need)}


def _png_header(path: Path) -> tuple[int, int, int, int]:
    """(height, width, bit_depth, colour_type) from a PNG's IHDR chunk, without decoding."""
    if not path.is_file():
        raise MissingFileError(f"{path}: missing LDR frame file", path)
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) < 26 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise DataError(f"{path}: not a PNG file (corrupt or wrong format)", path)
    width, height, depth, colour = struct.unpack(">IIBB", head[16:26])
    return height, width, depth, colour


def ntire_frame_size(folder: str | os.PathLike, sample_id: str) -> tuple[int, int]:
    """Frame size ``(H, W)`` of a sample from the PNG headers only (fast, no pixel decoding).

    Checks that the three frames are 8-bit RGB PNGs of one size.
    """
    paths = ntire_paths(folder, sample_id)
    sizes = {}
    for name in FRAME_NAMES:
        h, w, depth, colour = _png_header(paths[name])
        if depth != 8:
            raise DataError(f"{paths[name]}: {name} LDR frame is {depth}-bit, expected 8-bit", paths[name])
        if colour != 2:  # 2 = truecolour RGB without alpha
            raise DataError(
                f"{paths[name]}: {name} LDR frame has PNG colour type {colour}, expected 2 (3 channels)",
                paths[name],
            )
        sizes[paths[name]] = np.empty((h, w, 0))
    return _check_sizes(sizes)
