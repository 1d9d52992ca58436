"""Output files of a model: linear OpenEXR / Radiance HDR, the NTIRE submission PNG + align ratio, μ-law previews.

    from eapnet.outputs import write_outputs, tonemap_preview
    write_outputs("runs/x/outputs", "0000", hdr, gt)     # hdr (H, W, 3) in the GT domain

The ``.exr``/``.hdr`` files hold *linear* radiance (``hdr ** 2.24``, medium exposure = 1) because that is
what every HDR viewer and tool assumes of those formats; only the NTIRE PNG keeps the challenge's
gamma-encoded domain.

OpenEXR: OpenCV ships its EXR codec disabled unless ``OPENCV_IO_ENABLE_OPENEXR`` is set when the codec is
first used (it caches the answer then). This module sets it with ``os.environ.setdefault`` before importing
cv2; :func:`require_exr` raises a clear error if EXR writing is still unavailable.
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")  # before cv2 is used for EXR anywhere (see docstring)

from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from eapnet.data import DataError, write_ntire_hdr  # noqa: E402
from eapnet.metrics import DEFAULT_GAMMA as GAMMA  # noqa: E402
from eapnet.metrics import tanh_norm_mu_tonemap  # noqa: E402
from eapnet.runs import atomic_write_bytes  # noqa: E402

__all__ = ["tonemap_preview", "require_exr", "write_outputs"]

_exr_ok: bool | None = None


def tonemap(hdr: np.ndarray, norm_ref: np.ndarray | None = None) -> np.ndarray:
    """The challenge's tone map of ``hdr`` (GT domain, negative values clipped) in [0, 1], float64: linearise
    (``** 2.24``), ``tanh(lin / p99)``, μ-law (μ = 5000), ``p99`` the 99th percentile of ``norm_ref ** 2.24`` or
    of ``hdr``'s own; what PSNR-μ compares, so errors in it are what PSNR-μ measures."""
    lin = np.clip(hdr, 0, None).astype(np.float64) ** GAMMA
    ref = lin if norm_ref is None else np.clip(norm_ref, 0, None).astype(np.float64) ** GAMMA
    norm = max(float(np.percentile(ref, 99)), 1e-8)
    return tanh_norm_mu_tonemap(lin, norm)


def tonemap_preview(hdr: np.ndarray, norm_ref: np.ndarray | None = None) -> np.ndarray:
    """8-bit RGB preview ``(H, W, 3)`` uint8 with the challenge's tone map: linearise (``** 2.24``),
    ``tanh(lin / p99)``, μ-law (μ = 5000). ``hdr`` is in the GT domain (negative values are clipped).
    ``p99`` is the 99th percentile of ``norm_ref ** 2.24`` (pass the ground truth so that every method's
    preview of a scene shares one exposure, exactly as PSNR-μ sees them) or of ``hdr`` itself."""
    return np.round(np.clip(tonemap(hdr, norm_ref), 0, 1) * 255).astype(np.uint8)


def require_exr() -> None:
    """Raise ``RuntimeError`` unless OpenCV can write OpenEXR files (probed once, then cached)."""
    global _exr_ok
    if _exr_ok is None:
        try:
            ok, _ = cv2.imencode(".exr", np.zeros((1, 1, 3), np.float32))
        except cv2.error:
            ok = False
        _exr_ok = bool(ok)
    if not _exr_ok:
        raise RuntimeError(
            "OpenCV cannot write OpenEXR files: its EXR codec is disabled. Set OPENCV_IO_ENABLE_OPENEXR=1 "
            f"(now {os.environ.get('OPENCV_IO_ENABLE_OPENEXR')!r}) before anything in the process first uses "
            "an EXR file (OpenCV caches the setting then), or evaluate with --no-save-outputs.")


def _encode(path: Path, img: np.ndarray, params: Sequence[int] = ()) -> None:
    ok, buf = cv2.imencode(path.suffix, img, list(params))
    if not ok:
        raise RuntimeError(f"{path}: OpenCV could not encode the image as {path.suffix}")
    atomic_write_bytes(path, buf.tobytes())


def write_outputs(folder: str | os.PathLike, name: str, hdr: np.ndarray,
                  gt: np.ndarray | None = None) -> dict[str, Path]:
    """Write one result in every format (see the module docstring); returns ``{kind: path}``.

    ``hdr``: ``(H, W, 3)`` RGB, GT domain (gamma-encoded, >= 0). ``gt`` (optional, same domain) sets the
    preview's normaliser. Kinds: ``exr``, ``hdr`` (linear ``hdr ** 2.24``), ``ntire_png``,
    ``alignratio`` and ``preview``; an all-zero ``hdr`` has no align ratio, so no NTIRE files."""
    require_exr()
    folder = Path(folder)
    hdr = np.asarray(hdr, dtype=np.float32)
    lin_bgr = np.ascontiguousarray((hdr.astype(np.float64) ** GAMMA).astype(np.float32)[..., ::-1])
    paths = {"exr": folder / f"{name}.exr", "hdr": folder / f"{name}.hdr",
             "preview": folder / f"{name}_preview.png"}
    _encode(paths["exr"], lin_bgr, [cv2.IMWRITE_EXR_TYPE, cv2.IMWRITE_EXR_TYPE_FLOAT])
    _encode(paths["hdr"], lin_bgr)
    try:
        paths["ntire_png"] = write_ntire_hdr(folder, name, hdr)
        paths["alignratio"] = folder / f"{name}_alignratio.npy"
    except DataError:
        if float(np.max(hdr)) > 0:
            raise
    _encode(paths["preview"], np.ascontiguousarray(tonemap_preview(hdr, gt)[..., ::-1]))
    return paths
