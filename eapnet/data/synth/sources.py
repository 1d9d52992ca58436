"""Source material and small numeric helpers of the synthetic scene generator: the photographs
and textures shipped inside installed packages (scikit-image's ``skimage/data``, matplotlib's
``grace_hopper.jpg``; never downloaded), decoded once per process, the sRGB-to-linear lookup table,
and the helpers every part uses: log-uniform draws, radiance-preserving resize, smooth random
fields, random colours, channel max / luminance, random linearised crops, anti-aliased polygon
masks, low-resolution blurs and random polygons / blobs."""

from __future__ import annotations

import functools
import math
import os

import cv2
import matplotlib.cbook
import numpy as np
import skimage
import skimage.io

# Colour photographs usable as backgrounds and object cut-outs (files shipped by the packages).
_PHOTOS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "grace_hopper.jpg",
)
# Extra texture sources for procedural shapes and objects (grey ones get tinted).
_TEXTURES = ("brick.png", "grass.png", "gravel.png", "ihc.png", "hubble_deep_field.jpg", "camera.png")
_SILHOUETTE = "horse.png"


# ------------------------------------------------------------------------------------------
# source photographs (shipped locally; decoded once per process)
# ------------------------------------------------------------------------------------------


def _source_path(name: str) -> str:
    if name == "grace_hopper.jpg":
        return str(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    return os.path.join(os.path.dirname(skimage.__file__), "data", name)


@functools.lru_cache(maxsize=None)
def _load_source(name: str) -> np.ndarray | None:
    """uint8 ``(h, w, 3)`` sRGB (``(h, w)`` for the silhouette mask), read-only; None if absent."""
    path = _source_path(name)
    if not os.path.isfile(path):
        return None
    img = np.asarray(skimage.io.imread(path))  # a local file: never the pooch fetchers of skimage.data
    if name == _SILHOUETTE:  # black horse on white -> mask 255 inside
        grey = img[..., :3].mean(axis=2) if img.ndim == 3 else img
        out = np.where(grey < 128, 255, 0).astype(np.uint8)
        ys, xs = np.nonzero(out)
        out = out[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1]
    else:
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        out = np.ascontiguousarray(img[..., :3].astype(np.uint8))
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=None)
def _available(names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(n for n in names if _load_source(n) is not None)


def _srgb_lut() -> np.ndarray:
    x = np.arange(256, dtype=np.float64) / 255.0
    lin = np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)
    return lin.astype(np.float32)


_SRGB_TO_LINEAR = _srgb_lut()


# ------------------------------------------------------------------------------------------
# small helpers
# ------------------------------------------------------------------------------------------


def _loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    """Resize keeping float radiance >= 0 (area when shrinking, cubic when enlarging)."""
    if img.shape[1] == w and img.shape[0] == h:
        return img
    shrink = img.shape[1] > w and img.shape[0] > h
    out = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    return np.maximum(out, 0.0, out=out) if out.dtype.kind == "f" else out


def _smooth_field(rng: np.random.Generator, h: int, w: int, cells: float, octaves: int = 1) -> np.ndarray:
    """Smooth random field ``(h, w)`` float32 with unit std; ``cells`` = features along the long side."""
    acc = np.zeros((h, w), np.float32)
    long_side = max(h, w)
    for o in range(octaves):
        c = cells * 2**o
        ch = max(2, int(round(c * h / long_side)) + 2)
        cw = max(2, int(round(c * w / long_side)) + 2)
        small = rng.standard_normal((ch, cw), dtype=np.float32)
        acc += cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC) * (0.55**o)
    return acc / max(float(acc.std()), 1e-6)


def _random_colour(rng: np.random.Generator, sat_max: float = 0.7) -> np.ndarray:
    """Linear RGB colour with max channel 1 (random hue, moderate saturation)."""
    hue = rng.uniform(0, 6)
    sat = rng.uniform(0, sat_max)
    k = np.array([5.0, 3.0, 1.0]) + hue
    rgb = 1.0 - sat * np.clip(np.minimum(k % 6, 4 - k % 6), 0, 1)
    return (rgb**2.2 / (rgb**2.2).max()).astype(np.float32)


def _chmax(img: np.ndarray) -> np.ndarray:
    """Max over the RGB axis (``ndarray.max(axis=2)`` is ~10x slower on a length-3 axis)."""
    return np.maximum(np.maximum(img[..., 0], img[..., 1]), img[..., 2])


def _lum(img: np.ndarray) -> np.ndarray:
    return img @ np.array([0.2126, 0.7152, 0.0722], np.float32)


def _crop(rng: np.random.Generator, src: np.ndarray, h: int, w: int, zoom=(0.45, 1.0),
          flip_v: bool = False) -> np.ndarray:
    """Random crop of a uint8 source with aspect ``w/h``, random zoom and flips, linearised,
    resized to ``(h, w, 3)`` float32 (linear, 1 = source white)."""
    sh, sw = src.shape[:2]
    aspect = w / h
    ch, cw = (sh, sh * aspect) if sw / sh > aspect else (sw / aspect, sw)
    z = rng.uniform(*zoom)
    ch, cw = max(4, int(ch * z)), max(4, int(cw * z))
    y0 = int(rng.integers(0, sh - ch + 1))
    x0 = int(rng.integers(0, sw - cw + 1))
    fh, fv = rng.random() < 0.5, flip_v and rng.random() < 0.5
    patch = src[y0: y0 + ch, x0: x0 + cw]
    if fh:
        patch = patch[:, ::-1]
    if fv:
        patch = patch[::-1]
    patch = np.ascontiguousarray(patch)
    if ch > h and cw > w:  # shrinking: area-average the 8-bit data first (cheap), then linearise
        return _SRGB_TO_LINEAR[cv2.resize(patch, (w, h), interpolation=cv2.INTER_AREA)]
    return _resize(_SRGB_TO_LINEAR[patch], w, h)  # enlarging: interpolate linear floats (no banding)


def _poly_mask(h: int, w: int, polys: list[np.ndarray], scale: float = 1.0) -> np.ndarray:
    """Anti-aliased filled polygon mask float32 in [0, 1] (union of the polygons); polygons in
    (x, y) pixel coords."""
    m = np.zeros((h, w), np.uint8)
    for p in polys:  # one at a time: fillPoly fills several contours even-odd (overlaps = holes)
        cv2.fillPoly(m, [np.round(np.asarray(p, np.float64) * scale * 16).astype(np.int32)], 255,
                     lineType=cv2.LINE_AA, shift=4)
    return m.astype(np.float32) * (1.0 / 255.0)


def _soft_mask(shape: tuple[int, int], polys: list[np.ndarray], sigma_px: float) -> np.ndarray:
    """Polygon mask with a Gaussian edge of ``sigma_px``, rendered at low resolution for speed."""
    h, w = shape
    f = min(1.0, 160.0 / min(h, w))
    lh, lw = max(8, int(round(h * f))), max(8, int(round(w * f)))
    m = _poly_mask(lh, lw, polys, scale=lw / w)
    s = sigma_px * lw / w
    if s > 0.3:
        m = cv2.GaussianBlur(m, (0, 0), s, borderType=cv2.BORDER_REPLICATE)
    return np.clip(cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)


def _blur_lowres(m: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian blur of a 2-D float32 map, done at reduced resolution when ``sigma_px`` is large."""
    if sigma_px < 0.5:
        return m
    h, w = m.shape
    f = min(1.0, 2.0 / sigma_px)  # keep >= ~2 low-res pixels per sigma
    if f < 1.0:
        lw, lh = max(4, round(w * f)), max(4, round(h * f))
        small = cv2.resize(m, (lw, lh), interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(small, (0, 0), sigma_px * lw / w, borderType=cv2.BORDER_REPLICATE)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    return cv2.GaussianBlur(m, (0, 0), sigma_px, borderType=cv2.BORDER_REPLICATE)


def _blob_polygon(rng: np.random.Generator, cx: float, cy: float, rx: float, ry: float,
                  n: int = 48, rough: float = 0.3) -> np.ndarray:
    """Closed organic blob: radius modulated by a few low-frequency harmonics."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = np.ones(n)
    for k in range(2, 6):
        r += rough / k * rng.uniform(-1, 1) * np.cos(k * t + rng.uniform(0, 2 * np.pi))
    rot = rng.uniform(0, np.pi)
    x, y = rx * r * np.cos(t), ry * r * np.sin(t)
    return np.stack([cx + x * np.cos(rot) - y * np.sin(rot), cy + x * np.sin(rot) + y * np.cos(rot)], 1)


def _random_polygon(rng: np.random.Generator, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    n = int(rng.integers(3, 9))
    t = np.sort(rng.uniform(0, 2 * np.pi, n))
    r = rng.uniform(0.55, 1.0, n)
    return np.stack([cx + rx * r * np.cos(t), cy + ry * r * np.sin(t)], 1)
