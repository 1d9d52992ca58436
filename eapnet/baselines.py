"""Classical multi-exposure HDR baselines in the project's NumPy interface, for evaluation reports.

Every baseline is ``f(ldrs, evs) -> hdr``:

- ``ldrs``: float ``(3, H, W, 3)`` short / medium / long LDR frames, RGB, gamma-encoded, in [0, 1]
  (``eapnet.data`` conventions). OpenCV's merges take 8-bit images, so frames are quantised to
  ``round(255 * x)`` (lossless for NTIRE and synthetic data, which are 8-bit already).
- ``evs``: ``(3,)`` exposure values in stops relative to the medium frame (``evs[1] == 0``).
- ``hdr``: float32 ``(H, W, 3)`` RGB in the challenge's ground-truth domain: gamma-encoded with 2.24
  (linear = ``hdr ** 2.24``), in the units of the medium frame (so ``hdr ~= medium`` where the medium
  frame is well exposed), finite and ``>= 0`` (the official PSNR-μ cannot take negative values).

No baseline sees the ground truth: every constant below is either the challenge's known camera
response (``ldr = linear ** (1/2.24)``, true for NTIRE and the synthetic generator; Kalantari's LDRs
use 2.2, a 1.8 % exponent mismatch) or fitted on the input frames themselves. None of them aligns the
frames: camera shake and moving objects ghost, which is what the learned models are meant to beat.

Registry: :data:`BASELINES` holds the reliable ones (the evaluation default); :data:`ALL_BASELINES`
adds :func:`debevec_calibrated`, which estimates the response from the three frames and is unreliable
on small crops (measured: -inf/NaN response entries and PSNR-μ 5-10 dB below :func:`debevec` on some
real 256x256 crops), so it is opt-in.
"""
from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import torch

__all__ = [
    "GAMMA",
    "WELL_EXPOSED",
    "reference_frame",
    "debevec",
    "debevec_calibrated",
    "mertens",
    "radiance_merge",
    "known_response",
    "BASELINES",
    "ALL_BASELINES",
]

from eapnet.metrics import DEFAULT_GAMMA as GAMMA  # noqa: E402  (one definition)
from eapnet.model import consistent_merge as _consistent_merge  # noqa: E402
from eapnet.model import radiance_merge as _radiance_merge  # noqa: E402
"""The challenge's camera response exponent: linear = encoded ** GAMMA."""

WELL_EXPOSED = (0.1, 0.9)
"""Open interval of medium-frame values (all three channels) trusted for scale fits."""

Baseline = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _check(ldrs, evs) -> tuple[np.ndarray, np.ndarray]:
    ldrs = np.asarray(ldrs)
    if ldrs.ndim != 4 or ldrs.shape[0] != 3 or ldrs.shape[-1] != 3:
        raise ValueError(f"ldrs must be (3 frames, H, W, 3 channels), got shape {ldrs.shape}")
    if ldrs.dtype.kind != "f":
        raise ValueError(f"ldrs must be floats in [0, 1], got dtype {ldrs.dtype}")
    if not np.all(np.isfinite(ldrs)):
        raise ValueError("ldrs contain NaN/inf")
    evs = np.asarray(evs, dtype=np.float64).reshape(-1)
    if evs.shape != (3,) or not np.all(np.isfinite(evs)):
        raise ValueError(f"evs must be 3 finite exposure values in stops, got {evs.tolist()}")
    return ldrs, evs


def _to_uint8_bgr(ldrs: np.ndarray) -> list[np.ndarray]:
    """The frames as OpenCV wants them: 8-bit, BGR, contiguous."""
    q = np.round(np.clip(ldrs, 0.0, 1.0) * 255.0).astype(np.uint8)
    return [np.ascontiguousarray(f[..., ::-1]) for f in q]


def _times(evs: np.ndarray) -> np.ndarray:
    """Exposure times relative to the medium frame (medium = 1), as OpenCV's merges take them."""
    return (2.0 ** (evs - evs[1])).astype(np.float32)


def _finish(linear_bgr: np.ndarray) -> np.ndarray:
    """Linear BGR radiance (medium units) -> GT domain: RGB, finite, >= 0, gamma-encoded, float32."""
    lin = np.nan_to_num(np.asarray(linear_bgr, dtype=np.float64)[..., ::-1], nan=0.0, posinf=0.0, neginf=0.0)
    return (np.clip(lin, 0.0, None) ** (1.0 / GAMMA)).astype(np.float32)


def _fit_scale(linear: np.ndarray, medium: np.ndarray) -> float:
    """One global factor ``s`` with ``s * linear ~= medium ** 2.24`` on the medium frame's well-exposed
    pixels (all channels in :data:`WELL_EXPOSED`): the median of the per-value ratios. 1.0 if no such
    pixel exists (e.g. a black or fully clipped frame)."""
    lo, hi = WELL_EXPOSED
    mask = ((medium > lo) & (medium < hi)).all(axis=-1)
    num = medium[mask].astype(np.float64) ** GAMMA
    den = np.asarray(linear)[mask].astype(np.float64)
    ok = np.isfinite(den) & (den > 0)
    if not ok.any():
        return 1.0
    return float(np.median(num[ok] / den[ok]))


def known_response(gamma: float = GAMMA) -> np.ndarray:
    """The challenge's camera response in OpenCV's ``MergeDebevec`` form: ``(256, 1, 3)`` float32 with
    ``response[k] = (k / 255) ** gamma``, the linear exposure ``irradiance * time`` that produced pixel
    value ``k``. The merge computes ``exp(sum_i w_i * (log response[z_i] - log t_i) / sum_i w_i)``, i.e.
    it divides the response by the exposure time. ``response[0]`` is set to half a code value
    (``(0.5 / 255) ** gamma``) instead of 0: ``log 0 = -inf`` would zero every pixel with a black channel in
    any frame, since OpenCV's hat weights give value 0 a small non-zero weight."""
    k = np.arange(256, dtype=np.float64)
    r = (k / 255.0) ** gamma
    r[0] = (0.5 / 255.0) ** gamma
    return np.ascontiguousarray(np.repeat(r.astype(np.float32)[:, None, None], 3, axis=2))


def reference_frame(ldrs, evs) -> np.ndarray:
    """The medium LDR frame itself (GT domain where it is not clipped; clipped highlights stay at the frame's white level)."""
    ldrs, _ = _check(ldrs, evs)
    return np.clip(ldrs[1], 0.0, None).astype(np.float32, copy=True)


def debevec(ldrs, evs) -> np.ndarray:
    """Debevec & Malik radiance merge (``cv2.createMergeDebevec``) with the known 2.24 response.

    OpenCV's hat weights are averaged over the three channels, so a pixel clipped in one channel still
    trusts that channel; pixels clipped in every frame come out as a weighted geometric mean of
    ``1 / t_i`` (below the truth). The merged radiance is linear in medium-frame units (time 1), so
    the GT domain is ``radiance ** (1/2.24)``.
    """
    ldrs, evs = _check(ldrs, evs)
    rad = cv2.createMergeDebevec().process(_to_uint8_bgr(ldrs), times=_times(evs), response=known_response())
    return _finish(rad)


def debevec_calibrated(ldrs, evs) -> np.ndarray:
    """Debevec merge with the response estimated from the frames (``cv2.createCalibrateDebevec``, 70 grid
    samples, smoothness 10 -- OpenCV's defaults), then one global scale fitted so that the medium
    frame's well-exposed pixels match ``medium ** 2.24`` (the calibrated response is only known up to a
    factor). Non-finite radiance (zero or infinite response entries) becomes 0. Not in
    :data:`BASELINES`: unreliable on small crops (see the module docstring)."""
    ldrs, evs = _check(ldrs, evs)
    imgs, times = _to_uint8_bgr(ldrs), _times(evs)
    with np.errstate(all="ignore"):
        response = cv2.createCalibrateDebevec().process(imgs, times=times)
        rad = cv2.createMergeDebevec().process(imgs, times=times, response=response).astype(np.float64)
        rad = np.nan_to_num(rad, nan=0.0, posinf=0.0, neginf=0.0)
        rad *= _fit_scale(rad[..., ::-1], ldrs[1])
    return _finish(rad)


def mertens(ldrs, evs) -> np.ndarray:
    """Mertens exposure fusion (``cv2.createMergeMertens``; contrast, saturation and well-exposedness
    weights, Laplacian-pyramid blend), brought to the GT domain.

    The fused image is display-referred, ~[0, 1]. It is treated as gamma-encoded: linearised
    (``** 2.24``), scaled by one global factor fitted on the medium frame's well-exposed pixels (median of
    ``medium ** 2.24 / fused_linear``), and re-encoded (``** (1/2.24)``). Fusion compresses the dynamic
    range, so highlights stay far below the true radiance: this is a display method, scored as HDR.
    ``evs`` is not used by the fusion (only validated).
    """
    ldrs, _ = _check(ldrs, evs)
    fused = cv2.createMergeMertens().process(_to_uint8_bgr(ldrs))
    lin = np.clip(np.nan_to_num(fused.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0), 0.0, None) ** GAMMA
    lin *= _fit_scale(lin[..., ::-1], ldrs[1])
    return _finish(lin)


def _torch_merge(merge, ldrs, evs) -> np.ndarray:
    ldrs, evs = _check(ldrs, evs)
    x = torch.from_numpy(np.ascontiguousarray(ldrs.transpose(0, 3, 1, 2), dtype=np.float32))[None]
    e = torch.from_numpy(np.asarray(evs, np.float32).reshape(1, 3))
    with torch.no_grad():
        y = merge(x, e)[0]
    return np.ascontiguousarray(y.permute(1, 2, 0).numpy(), dtype=np.float32)


def radiance_merge(ldrs, evs) -> np.ndarray:
    """The base EAPNet adds its residual to (``eapnet.model.radiance_merge``: Debevec's log-domain weighted
    mean with the known response, in float32 torch): what the network starts from, so the margin over it
    is what the learned layers add (de-ghosting in moving regions above all)."""
    return _torch_merge(_radiance_merge, ldrs, evs)


def consistent_merge(ldrs, evs) -> np.ndarray:
    """The radiance merge with the short and long frames down-weighted where their local mean departs from
    the medium frame beyond noise (``eapnet.model.consistent_merge``, the ``base="consistent"`` base): a
    classical de-ghosting merge."""
    return _torch_merge(_consistent_merge, ldrs, evs)


BASELINES: dict[str, Baseline] = {
    "reference_frame": reference_frame,
    "debevec": debevec,
    "mertens": mertens,
    "radiance_merge": radiance_merge,
    "consistent_merge": consistent_merge,
}
"""The reliable baselines, the evaluation default."""

ALL_BASELINES: dict[str, Baseline] = {**BASELINES, "debevec_calibrated": debevec_calibrated}
"""Every baseline a user may name (``--baselines``)."""
