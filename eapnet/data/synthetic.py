"""Synthetic multi-frame HDR scenes: LDR exposure triplets with HDR ground truth.

Training and calibration data for EAPNet in the NTIRE 2021/2022 multi-frame HDR conventions.
Nothing is downloaded: scenes are built from photographs shipped inside installed packages
(scikit-image's ``skimage/data`` folder, matplotlib's ``grace_hopper.jpg``) or procedurally.

Pipeline of one scene (all randomness from ``np.random.default_rng(seed)``):

1. **Radiance.** A linear background canvas (a linearised photo crop, ~70 %, or a procedural
   composition of textured shapes) in units where 0.18 is mid-grey, extended to a real dynamic
   range (10^3..10^5): near-clipped photo regions re-expanded, a bright window / sky /
   light pool (x10..x100), small light sources with glow (x100..x1000), specular highlights
   (x20..x200), deep cast shadows (x0.01..x0.1), smooth non-uniform illumination.
   **Low-key scenes** (``low_key_fraction``, 35 %; decided by a second stream of the scene's
   seed, so bright scenes do not depend on it) replace this step with night / stage lighting:
   the canvas is lit by dim coloured spill, an uneven fill and pools of saturated gel light
   (magenta / violet / blue / red most often; in half of them one gel family lights the whole
   frame, leaving a colour channel almost empty, as in the real concert crops of the
   challenge), unlit black silhouettes / drapes (x0.002..0.05), additive haze beams and 2..8
   coloured stage lights (x100..x1000) with glow; moving objects take the light where they
   stand. A low-key meter then puts a drawn 18..40 % of the medium frame's values below 8-bit
   0.05 (more when the frame misses a channel, at most half), keeps the brightest lit tenth at
   most at a drawn 0.1..1 and, like the bright meter, protects the short frame's highlights.
2. **Motion.** Camera shake: a small homography per non-reference frame (a few pixels of
   translation, a fraction of a degree of rotation, tiny zoom/perspective); the medium frame is
   the reference (identity). Independently moving foreground objects (photo cut-outs or
   textured procedural shapes with anti-aliased masks) translate/rotate/scale between frames,
   occluding and disoccluding the background.
3. **Sensor** (EAPNet Eq. 1 / NTIRE 2021 data model):
   ``I_i = min(Phi * t_i / g + I0 + n, I_max)`` with ``t_i = 2**ev_i``. The scene is normalised
   by an auto-exposure step so that ``Phi * t_medium / g`` *is* the medium frame's linear
   signal (full scale ``I_max = 1``); the gain ``g`` (ISO) then only sets the noise:
   Poisson-Gaussian noise in its heteroscedastic Gaussian form, ``var = a*s + b`` with ``a``
   (shot) proportional to the gain and ``b`` (read) growing with it (the real challenge crops:
   white shot noise, ``a ~ 2e-3``, negligible read noise). Because the short frame
   collects ``2**ev`` times less signal, it is the noisiest once normalised. ``I0`` is a small
   uncorrected black-level offset. Then the camera response ``x ** (1/2.24)``, 8-bit
   quantisation and the camera's white level (most scenes clip at code 248 like the real
   challenge frames, the others at a code drawn in 240..255).
4. **Ground truth.** ``gt = (Phi * t_medium / g) ** (1/2.24)``: noise-free, unclipped, in the
   medium frame's geometry. So, for unsaturated, well-exposed pixels without motion,
   ``ldr_i ** 2.24 / 2**evs[i] ~= gt ** 2.24`` (and medium LDR ~= gt where unsaturated), which
   is the relation the real challenge data satisfies.

Output conventions (see :func:`generate_scene`): ``ldrs`` float32 ``(3, H, W, 3)`` short /
medium / long RGB in [0, 1] and exactly ``k/255``; ``evs`` float32 ``(3,)`` stops relative to
the medium frame (``evs[1] == 0``); ``gt`` float32 ``(H, W, 3)`` gamma-encoded HDR >= 0 (may
exceed 1, maxima ~1..10).

Determinism: the same ``(seed, height, width, config)`` gives bit-identical arrays across calls
and processes (only ``default_rng(seed)``, NumPy and OpenCV's per-pixel deterministic resize /
warp / blur / polygon fill). The set of available source photos is part of the input: a
different scikit-image install with other files would give other scenes.

CLI::

    python -m eapnet.data.synthetic --out DIR --num N --seed S --size HxW
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

__all__ = [
    "GAMMA",
    "TRAIN_SEED",
    "HELDOUT_SEED",
    "SyntheticConfig",
    "generate_scene",
    "generate_scene_with_info",
    "scene_seed",
    "main",
]

from eapnet.cli import Parser, command
from eapnet.metrics import DEFAULT_GAMMA as GAMMA  # noqa: E402  (one definition)
"""Camera response / gt encoding exponent of the challenge: ``encoded = linear ** (1/GAMMA)``."""

TRAIN_SEED = 0
"""Default base seed of training data."""

HELDOUT_SEED = 10_000_019
"""Base seed reserved for held-out evaluation; never a default for training."""

_MID_GREY = 0.18  # linear radiance unit of the canvas before auto-exposure
_PROCEDURAL_MAX_SIDE = 2048  # procedural backgrounds are drawn at most this large, then enlarged
_TEXTURE_MAX_SIDE = 1024

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
# configuration
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticConfig:
    """Distribution of synthetic scenes. All ranges are ``(low, high)``, drawn per scene.

    Units: radiance factors are relative to mid-grey of the base image; motion is a fraction of
    the short image side (so the look does not depend on resolution); noise parameters refer to
    the linear sensor signal normalised to full scale 1.

    ``height`` / ``width`` are only the default frame size of the CLI; :func:`generate_scene`
    takes the size explicitly.
    """

    height: int = 256
    width: int = 256

    # --- exposures ---
    ev_choices: tuple[float, ...] = (1.0, 1.5, 2.0, 2.5, 3.0)
    """EV spacings (stops) from the medium frame used when not NTIRE-like."""
    ntire_ev_prob: float = 0.7
    """Probability of the challenge's spacing ``[-2, 0, +2]``."""
    asymmetric_ev_prob: float = 0.3
    """Given a non-NTIRE spacing: probability that short and long spacings differ."""
    median_target_range: tuple[float, float] = (0.1, 0.22)
    """Auto-exposure: linear median luminance of the medium frame (0.1..0.22 -> 8-bit ~92..130)."""
    max_clipped_fraction: float = 0.2
    """Auto-exposure lowers the exposure until at most this fraction of the medium frame clips."""
    short_clipped_fraction: float = 0.005
    """... and until at most this fraction of the short frame clips (light-source cores only),
    so that highlights are recoverable from the short frame as in the challenge data."""
    max_protect_stops: float = 3.0
    """... but highlight protection darkens the medium frame by at most this many stops below
    the median target."""
    veiling_glare_range: tuple[float, float] = (3e-4, 3e-3)
    """Lens veiling glare: a uniform floor, fraction of the mean scene radiance (limits the
    usable dynamic range to ~10^3..10^5 like a real lens)."""
    exposure_bias_prob: float = 0.35
    exposure_bias_stops: tuple[float, float] = (-1.0, 1.0)
    tone_bias_prob: float = 0.3
    tone_gamma_range: tuple[float, float] = (0.8, 1.25)
    """Contrast of the base image around mid-grey (``0.18 * (x/0.18) ** gamma``)."""
    wb_tint_sigma: float = 0.05
    """Std of the log gain of R and B (G fixed) for a slight white-balance tint."""

    # --- sensor (linear signal, full scale 1) ---
    iso_range: tuple[float, float] = (100.0, 3200.0)
    """Sensor gain as ISO, log-uniform; gain ``g = iso / 100``."""
    shot_noise_range: tuple[float, float] = (4e-5, 2e-4)
    """Shot-noise variance per unit signal at ISO 100 (``a = value * g``). The real challenge
    crops show pure shot noise with ``a ~ 2e-3`` (white, per frame); (4e-5, 2e-4) puts that in
    the upper part of the range (it was at the very top of the former (2e-5, 8e-5))."""
    read_noise_range: tuple[float, float] = (1e-4, 5e-4)
    """Read-noise std at ISO 100 (``sqrt(b) = value * g ** 0.75``)."""
    challenge_white_prob: float = 0.6
    """Share of scenes whose LDR frames clip at 8-bit code 248, the white level of every real
    challenge frame (crops and the full-size triplet: their top code, held by 3-40 % of the
    pixels of bright frames). A network trained only on frames that clip at 255 reads a 248
    plateau as valid signal and under-estimates every clipped highlight."""
    white_level_range: tuple[int, int] = (240, 255)
    """The other scenes' white level: an 8-bit code drawn uniformly in this range (inclusive),
    so that a plateau at any code near the top reads as clipped."""
    black_level_range: tuple[float, float] = (0.0, 3e-4)
    """Uncorrected black-level offset ``I0`` (linear, full scale 1)."""
    noise_channel_corr_range: tuple[float, float] = (0.0, 0.5)
    """Share of noise variance common to R, G, B (demosaicing correlates channels)."""

    # --- scene content ---
    photo_fraction: float = 0.7
    """Fraction of scenes whose background is a real photograph (else procedural)."""
    bright_region_range: tuple[float, float] = (10.0, 100.0)
    light_intensity_range: tuple[float, float] = (100.0, 1000.0)
    specular_range: tuple[float, float] = (20.0, 200.0)
    shadow_range: tuple[float, float] = (0.01, 0.1)
    illumination_stops: tuple[float, float] = (0.5, 2.0)
    """Peak-to-peak of the smooth illumination field over the canvas, in stops."""

    # --- low-key (night / stage / dim interior) scenes ---
    low_key_fraction: float = 0.35
    """Fraction of scenes rendered low-key (decided by the scene's own seed): saturated coloured
    stage lighting (magenta / violet / blue / red gels, often an almost empty channel), haze beams,
    deep unlit areas and strong coloured light sources, exposed so that a large share of the medium
    frame is nearly black (like the real challenge crops). ``0``: the scenes of the bright-only
    generator, unchanged."""
    low_key_dark_range: tuple[float, float] = (0.18, 0.4)
    """Low-key meter: share of the medium frame's noise-free values (pixels x channels) placed
    below 8-bit 0.05, drawn per scene. Highlight protection, and frames lit without one colour
    channel (a third of the values near 0 already), end up darker: measured over scenes, the
    share of medium values < 0.05 is ~0.21..0.45 (10th..90th percentile), median ~0.33 (the
    real crops: 0.33); the meter never makes more than half of the noise-free values black
    unless the clipping limit forces it."""

    # --- camera shake ---
    camera_shake: bool = True
    """``False``: all frames share the medium geometry (content of the scene is unchanged)."""
    camera_shake_prob: float = 0.85
    shake_translation: float = 0.015
    """Max translation per axis, fraction of the short side (256 px -> ~4 px)."""
    shake_rotation_deg: float = 0.5
    shake_scale: float = 0.006
    shake_perspective: float = 0.003

    # --- moving objects ---
    object_motion: bool = True
    """``False``: objects keep the medium pose in all frames (content unchanged)."""
    objects_prob: float = 0.9
    num_objects_range: tuple[int, int] = (1, 3)
    object_size_range: tuple[float, float] = (0.15, 0.4)
    """Object extent, fraction of the short side."""
    object_motion_range: tuple[float, float] = (0.01, 0.05)
    """Displacement between consecutive frames, fraction of the short side."""
    object_rotation_deg: float = 6.0
    object_scale_change: float = 0.04

    # --- crowds: many small movers (hands, heads, dancers), like the challenge's stage frames ---
    crowd_prob_low_key: float = 0.5
    """Probability that a low-key scene holds a crowd (drawn from the scene's own crowd stream, so
    the rest of the scene is the same with or without it)."""
    crowd_prob_bright: float = 0.15
    crowd_count_range: tuple[int, int] = (8, 40)
    crowd_size_range: tuple[float, float] = (0.03, 0.1)
    """Mover extent, fraction of the short side."""
    crowd_motion_range: tuple[float, float] = (0.15, 0.8)
    """Displacement between consecutive frames, as a fraction of the mover's own size: hands and
    heads move by much of their size between exposures."""

    # --- motion mask (exported in the scene info, used to score de-ghosting) ---
    motion_threshold: float = 0.03
    """A pixel moved when a noise-free short or long frame, brought to the medium exposure, differs
    from the medium frame by more than this in the gamma-encoded ground-truth domain (any channel)."""
    motion_dilate_px: int = 2

    def __post_init__(self) -> None:
        if self.height < 16 or self.width < 16:
            raise ValueError(f"frame size must be >= 16x16, got {self.height}x{self.width}")
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, tuple) and len(v) == 2 and f.name != "ev_choices" and v[0] > v[1]:
                raise ValueError(f"{f.name}: low > high in {v}")
        if not self.ev_choices or min(self.ev_choices) <= 0:
            raise ValueError(f"ev_choices must be positive spacings in stops, got {self.ev_choices}")
        for name in ("ntire_ev_prob", "asymmetric_ev_prob", "exposure_bias_prob", "tone_bias_prob",
                     "camera_shake_prob", "photo_fraction", "objects_prob", "max_clipped_fraction",
                     "short_clipped_fraction", "low_key_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")
        for name in ("crowd_prob_low_key", "crowd_prob_bright"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")
        if self.crowd_count_range[0] < 0 or self.motion_threshold <= 0 or self.motion_dilate_px < 0:
            raise ValueError("crowd_count_range must be >= 0, motion_threshold > 0, motion_dilate_px >= 0")
        if not 0.0 <= self.low_key_dark_range[0] <= self.low_key_dark_range[1] < 1.0:
            raise ValueError(f"low_key_dark_range must lie in [0, 1), got {self.low_key_dark_range}")
        if self.num_objects_range[0] < 0:
            raise ValueError("num_objects_range must be >= 0")
        if not (0.0 <= self.challenge_white_prob <= 1.0 and 128 <= self.white_level_range[0] <= self.white_level_range[1] <= 255):
            raise ValueError(f"challenge_white_prob must lie in [0, 1] and white_level_range within [128, 255], got "
                             f"{self.challenge_white_prob}, {self.white_level_range}")


_DEFAULT_CONFIG = SyntheticConfig()


# ------------------------------------------------------------------------------------------
# source photographs (shipped locally; decoded once per process)
# ------------------------------------------------------------------------------------------


def _source_path(name: str) -> str:
    if name == "grace_hopper.jpg":
        import matplotlib.cbook

        return str(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    import skimage

    return os.path.join(os.path.dirname(skimage.__file__), "data", name)


@functools.lru_cache(maxsize=None)
def _load_source(name: str) -> np.ndarray | None:
    """uint8 ``(h, w, 3)`` sRGB (``(h, w)`` for the silhouette mask), read-only; None if absent."""
    path = _source_path(name)
    if not os.path.isfile(path):
        return None
    import skimage.io  # local file read only: never the pooch fetchers of skimage.data

    img = np.asarray(skimage.io.imread(path))
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


# ------------------------------------------------------------------------------------------
# textures and backgrounds
# ------------------------------------------------------------------------------------------


def _texture(rng: np.random.Generator, h: int, w: int, photos: tuple[str, ...],
             textures: tuple[str, ...]) -> np.ndarray:
    """Linear texture ``(h, w, 3)`` with mean luminance ~1 (photo crop, tinted texture,
    fractal noise, stripes or checker)."""
    kind = rng.choice(["photo", "texture", "noise", "stripes", "checker"], p=[0.3, 0.3, 0.2, 0.12, 0.08])
    if max(h, w) > _TEXTURE_MAX_SIDE:  # large: draw at a capped size and enlarge
        f = _TEXTURE_MAX_SIDE / max(h, w)
        t = _texture_kind(rng, str(kind), max(4, round(h * f)), max(4, round(w * f)), photos, textures)
        return _resize(t, w, h)
    return _texture_kind(rng, str(kind), h, w, photos, textures)


def _texture_kind(rng: np.random.Generator, kind: str, h: int, w: int, photos, textures) -> np.ndarray:
    if kind == "photo" and photos:
        t = _crop(rng, _load_source(photos[int(rng.integers(len(photos)))]), h, w, zoom=(0.2, 0.8))
    elif kind == "texture" and textures:
        name = textures[int(rng.integers(len(textures)))]
        t = _crop(rng, _load_source(name), h, w, zoom=(0.2, 0.9), flip_v=True)
        t = t * _random_colour(rng, 0.6)
    elif kind in ("stripes", "checker"):
        period = rng.uniform(4, 24) * max(1.0, min(h, w) / 128)
        ang = rng.uniform(0, np.pi)
        yy = np.arange(h, dtype=np.float32)[:, None]
        xx = np.arange(w, dtype=np.float32)[None, :]
        u = (xx * np.float32(np.cos(ang)) + yy * np.float32(np.sin(ang))) / np.float32(period)
        if kind == "stripes":
            a = 0.5 + 0.5 * np.sin(2 * np.pi * u)
        else:
            v = (-xx * np.float32(np.sin(ang)) + yy * np.float32(np.cos(ang))) / np.float32(period)
            a = ((np.floor(u) + np.floor(v)) % 2).astype(np.float32)
        c1, c2 = _random_colour(rng), _random_colour(rng) * rng.uniform(0.05, 0.6)
        t = a[..., None] * c1 + (1 - a[..., None]) * c2
    else:
        f = _smooth_field(rng, h, w, rng.uniform(3, 20), octaves=3)
        t = np.exp2(rng.uniform(0.5, 1.5) * f)[..., None] * _random_colour(rng)
    t = t.astype(np.float32)
    return t / max(float(_lum(t[::4, ::4]).mean()), 1e-4)


def _photo_background(rng: np.random.Generator, h: int, w: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Linearised photo crop and a mask of its near-clipped pixels (candidates for expansion)."""
    img = _crop(rng, _load_source(name), h, w, zoom=(0.5, 1.0))
    # luminance, not the max channel: saturated skin/red paint is colour, not blown highlight
    ind = np.clip((_lum(img) - 0.7) / 0.2, 0.0, 1.0)  # sRGB grey ~0.86..0.96 -> 0..1
    # Only broad near-white areas (sky, lamps, white surfaces) were clipped by the camera;
    # isolated bright pixels (skin sheen, JPEG ringing) must not turn into speckles.
    nb = _blur_lowres(ind, 0.01 * min(h, w))
    clip = ind * np.clip((nb - 0.25) / 0.35, 0.0, 1.0)
    return img, _blur_lowres(clip, 0.002 * min(h, w))


def _procedural_background(rng: np.random.Generator, h: int, w: int, photos, textures) -> np.ndarray:
    """Gradient + fractal illumination + 5..14 textured shapes, mean luminance ~0.2."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ang = rng.uniform(0, 2 * np.pi)
    u = xx * np.float32(math.cos(ang)) + yy * np.float32(math.sin(ang))  # (np.cos would give float64)
    u = (u - u.min()) / max(float(u.max() - u.min()), 1.0)
    c1 = _random_colour(rng) * rng.uniform(0.1, 0.6)
    c2 = _random_colour(rng) * rng.uniform(0.1, 0.6)
    img = (1 - u)[..., None] * c1 + u[..., None] * c2
    img *= np.exp2(0.4 * _smooth_field(rng, h, w, rng.uniform(2, 8), octaves=3))[..., None]
    s = min(h, w)
    for _ in range(int(rng.integers(5, 15))):
        rx, ry = s * rng.uniform(0.05, 0.35), s * rng.uniform(0.05, 0.35)
        cx, cy = rng.uniform(-0.1, 1.1) * w, rng.uniform(-0.1, 1.1) * h
        shape = rng.choice(["poly", "blob", "rect", "band"])
        if shape == "poly":
            poly = _random_polygon(rng, cx, cy, rx, ry)
        elif shape == "blob":
            poly = _blob_polygon(rng, cx, cy, rx, ry)
        elif shape == "rect":
            a = rng.uniform(0, np.pi)
            c, sn = np.cos(a), np.sin(a)
            corners = np.array([[-rx, -ry], [rx, -ry], [rx, ry], [-rx, ry]])
            poly = np.stack([cx + corners[:, 0] * c - corners[:, 1] * sn, cy + corners[:, 0] * sn + corners[:, 1] * c], 1)
        else:  # a band across the canvas (floor, wall, stripe)
            a = rng.uniform(0, np.pi)
            d = np.array([np.cos(a), np.sin(a)]) * 2 * max(h, w)
            nrm = np.array([-np.sin(a), np.cos(a)]) * ry * 0.5
            c = np.array([cx, cy])
            poly = np.stack([c - d - nrm, c + d - nrm, c + d + nrm, c - d + nrm])
        x0 = int(max(0, np.floor(poly[:, 0].min()))); x1 = int(min(w, np.ceil(poly[:, 0].max()) + 1))
        y0 = int(max(0, np.floor(poly[:, 1].min()))); y1 = int(min(h, np.ceil(poly[:, 1].max()) + 1))
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        m = _poly_mask(y1 - y0, x1 - x0, [poly - [x0, y0]])[..., None]
        tex = _texture(rng, y1 - y0, x1 - x0, photos, textures) * np.float32(rng.uniform(0.03, 0.6))
        # a linear shading ramp across the shape reads as 3-D lighting
        g = np.linspace(-1, 1, x1 - x0, dtype=np.float32)[None, :, None] * np.float32(rng.uniform(-1, 1))
        tex *= np.exp2(g)
        sub = img[y0:y1, x0:x1]
        sub += m * (tex - sub)
    return img


# ------------------------------------------------------------------------------------------
# dynamic-range extension (operates in place on a linear canvas; values relative to mid-grey)
# ------------------------------------------------------------------------------------------


def _add_light(img: np.ndarray, cx: float, cy: float, r: float, aspect: float, angle: float,
               intensity: float, colour: np.ndarray, glow_frac: float, glow_r: float,
               hot_falloff: float = 0.6, emitters: np.ndarray | None = None) -> None:
    """Emissive blob (anti-aliased core of radius ``r`` px, elongated by ``aspect``, centre
    ``intensity`` falling by ``hot_falloff`` towards its rim) that hides what is behind it,
    plus a ``(1 + (d/glow_r)^2)^-1.5`` glow tapered to zero at 8 ``glow_r``."""
    h, w = img.shape[:2]
    colour = np.asarray(colour, np.float32)
    # glow: smooth, so computed on a grid of at most ~96x96 and enlarged
    R = glow_r * 8.0
    x0, x1 = int(max(0, math.floor(cx - R))), int(min(w, math.ceil(cx + R) + 1))
    y0, y1 = int(max(0, math.floor(cy - R))), int(min(h, math.ceil(cy + R) + 1))
    if x1 > x0 and y1 > y0:
        step = max(1, int(math.ceil(2 * R / 96)))
        gy = np.arange(y0, y1, step, dtype=np.float32)[:, None] - np.float32(cy)
        gx = np.arange(x0, x1, step, dtype=np.float32)[None, :] - np.float32(cx)
        rr2 = gx * gx + gy * gy
        q = 1.0 / (1.0 + rr2 / np.float32(glow_r * glow_r))
        taper = np.clip(1.0 - rr2 / np.float32(R * R), 0.0, 1.0) ** 2  # no visible window edge
        glow = (np.float32(glow_frac * intensity) * q * np.sqrt(q) * taper).astype(np.float32)
        if step > 1:  # sample positions are exact; enlarge keeping them (align corners)
            gh, gw = glow.shape
            M = np.array([[1.0 / step, 0, 0], [0, 1.0 / step, 0]], np.float64)
            glow = cv2.warpAffine(glow, M, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REPLICATE)
        img[y0:y1, x0:x1] += glow[..., None] * colour
    # core at full resolution
    Rc = r * max(aspect, 1.0) + 2
    x0, x1 = int(max(0, math.floor(cx - Rc))), int(min(w, math.ceil(cx + Rc) + 1))
    y0, y1 = int(max(0, math.floor(cy - Rc))), int(min(h, math.ceil(cy + Rc) + 1))
    if x1 <= x0 or y1 <= y0:
        return
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx)
    ca, sa = np.float32(math.cos(angle)), np.float32(math.sin(angle))
    u, v = (dx * ca + dy * sa) / np.float32(aspect), -dx * sa + dy * ca
    d = np.sqrt(u * u + v * v)
    core = np.clip(np.float32(r + 0.5) - d, 0.0, 1.0)  # pixel-coverage AA
    hot = 1.0 - np.float32(hot_falloff) * np.clip(d / np.float32(max(r, 0.5)), 0.0, 1.0) ** 2
    sub = img[y0:y1, x0:x1]
    sub *= (1.0 - core)[..., None]
    sub += (np.float32(intensity) * core * hot)[..., None] * colour
    if emitters is not None:
        emitters[y0:y1, x0:x1] |= core > 0


def _add_glints(img, rng, n, s, max_size, intensity_range, colour) -> None:
    """``n`` specular glints on the brightest twentieth of the image; ``colour()`` is drawn per glint, last
    (the order of rng draws is part of the scene's seed contract)."""
    if not n:
        return
    lum = _lum(img[::4, ::4])
    cand = np.argsort(lum, axis=None)[-max(1, lum.size // 20):]
    for idx in rng.choice(cand, size=n):
        yi, xi = np.unravel_index(idx, lum.shape)
        _add_specular(img, xi * 4 + rng.uniform(0, 4), yi * 4 + rng.uniform(0, 4),
                      max(0.6, s * _loguniform(rng, 0.002, max_size)),
                      _loguniform(rng, *intensity_range) * _MID_GREY, colour())


def _add_specular(img: np.ndarray, cx: float, cy: float, sigma: float, intensity: float, colour) -> None:
    h, w = img.shape[:2]
    R = 4 * sigma + 1
    x0, x1 = int(max(0, cx - R)), int(min(w, cx + R + 1))
    y0, y1 = int(max(0, cy - R)), int(min(h, cy + R + 1))
    if x1 <= x0 or y1 <= y0:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    spot = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma * sigma))
    img[y0:y1, x0:x1] += (np.float32(intensity) * spot)[..., None] * colour


_LAMP_COLOURS = np.array([[1.0, 0.72, 0.42], [1.0, 0.85, 0.65], [1.0, 1.0, 1.0], [0.8, 0.9, 1.0]], np.float32)


def _sky(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Linear sky: zenith-to-horizon gradient with fractal clouds, mean luminance ~1."""
    t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    zenith = np.array([0.25, 0.45, 1.0], np.float32) * rng.uniform(0.5, 1.0)
    horizon = np.array([0.95, 0.95, 1.0], np.float32)
    if rng.random() < 0.3:  # dusk
        horizon = np.array([1.0, 0.65, 0.35], np.float32)
    sky = zenith * (1 - t) + horizon * t
    clouds = np.clip(_smooth_field(rng, h, w, rng.uniform(3, 10), octaves=4) * 0.6 + rng.uniform(-0.8, 0.3), 0, 1.5)
    sky = sky * (1 - 0.6 * np.minimum(clouds, 1))[..., None] + (clouds * 1.2)[..., None]
    return sky / max(float(_lum(sky[::4, ::4]).mean()), 1e-4)


def _extend_dynamic_range(rng: np.random.Generator, img: np.ndarray, cfg: SyntheticConfig,
                          clip_mask: np.ndarray | None, photos: tuple[str, ...]) -> dict[str, Any]:
    """Turn an LDR-like linear canvas (mid-grey 0.18) into an HDR scene, in place.

    ``info["emitters"]`` is a bool map of light-source cores (the exposure meter ignores them).
    """
    h, w = img.shape[:2]
    s = min(h, w)
    emitters = np.zeros((h, w), bool)
    info: dict[str, Any] = {"emitters": emitters}

    # Near-clipped regions of a photo were brighter than the photo could record.
    if clip_mask is not None:
        gain = _loguniform(rng, 2.0, 16.0)
        img *= (1.0 + (gain - 1.0) * clip_mask)[..., None]

    # Smooth non-uniform illumination (light fall-off across the room).
    stops = rng.uniform(*cfg.illumination_stops)
    f = _smooth_field(rng, h, w, rng.uniform(1.0, 3.0))
    f = (f - f.min()) / max(float(f.max() - f.min()), 1e-6) - 0.5
    img *= np.exp2(stops * f)[..., None]

    # Deep cast shadows (x0.01..x0.1) with soft penumbra.
    n_shadows = int(rng.choice([0, 1, 2, 3], p=[0.15, 0.45, 0.3, 0.1]))
    for _ in range(n_shadows):
        cx, cy = rng.uniform(0, 1) * w, rng.uniform(0.3, 1.1) * h
        if rng.random() < 0.5:
            poly = _random_polygon(rng, cx, cy, s * rng.uniform(0.15, 0.45), s * rng.uniform(0.15, 0.45))
        else:
            poly = _blob_polygon(rng, cx, cy, s * rng.uniform(0.12, 0.4), s * rng.uniform(0.12, 0.4))
        m = _soft_mask((h, w), [poly], sigma_px=s * rng.uniform(0.003, 0.03))
        k = _loguniform(rng, *cfg.shadow_range)
        img *= (1.0 - (1.0 - k) * m)[..., None]
    info["shadows"] = n_shadows

    # One bright region (x10..x100): a window, a sky replacing the top, a backlit zone (the
    # photo's own content brightened towards one border: keeps real texture) or a light pool.
    kinds = ["window", "sky", "zone", "pool", "none"]
    p_kind = [0.3, 0.05, 0.3, 0.25, 0.1] if clip_mask is not None else [0.3, 0.3, 0.1, 0.2, 0.1]
    kind = rng.choice(kinds, p=p_kind)
    factor = _loguniform(rng, *cfg.bright_region_range)
    info["bright_region"] = str(kind)
    if kind == "window":
        ww, wh = s * rng.uniform(0.25, 0.6), s * rng.uniform(0.25, 0.6)
        cx, cy = rng.uniform(0.15, 0.85) * w, rng.uniform(0.1, 0.6) * h
        skew = rng.uniform(-0.08, 0.08, size=(4, 2)) * [ww, wh]
        quad = np.array([[-ww, -wh], [ww, -wh], [ww, wh], [-ww, wh]]) / 2 + skew + [cx, cy]
        x0 = int(max(0, np.floor(quad[:, 0].min()))); x1 = int(min(w, np.ceil(quad[:, 0].max()) + 1))
        y0 = int(max(0, np.floor(quad[:, 1].min()))); y1 = int(min(h, np.ceil(quad[:, 1].max()) + 1))
        if x1 - x0 >= 4 and y1 - y0 >= 4:
            bh, bw = y1 - y0, x1 - x0
            if photos and rng.random() < 0.5:  # a view outside
                view = _crop(rng, _load_source(photos[int(rng.integers(len(photos)))]), bh, bw, zoom=(0.3, 0.9))
                view = view / max(float(_lum(view[::2, ::2]).mean()), 1e-3)
            else:
                view = _sky(rng, bh, bw)
            view *= np.exp2(np.linspace(rng.uniform(-1, 0), rng.uniform(0, 1), bh, dtype=np.float32))[:, None, None]
            m = _poly_mask(bh, bw, [quad - [x0, y0]])
            bar = max(1.0, s * rng.uniform(0.006, 0.02))  # mullions: dark bars crossing the window
            if rng.random() < 0.7:
                mx = int(np.clip((quad[:, 0].mean() - x0), 0, bw - 1))
                my = int(np.clip((quad[:, 1].mean() - y0), 0, bh - 1))
                b0 = int(bar // 2); b1 = int(math.ceil(bar / 2))
                m[:, max(0, mx - b0): mx + b1] = 0
                m[max(0, my - b0): my + b1, :] = 0
            m = m[..., None]
            sub = img[y0:y1, x0:x1]
            sub += m * (np.float32(factor * _MID_GREY) * view - sub)
    elif kind == "sky":
        horizon = rng.uniform(0.2, 0.5) * h
        xs = np.linspace(-0.1 * w, 1.1 * w, 24)
        ys = horizon + _smooth_field(rng, 1, 24, 4)[0] * rng.uniform(0.0, 0.12) * h
        poly = np.concatenate([np.stack([xs, ys], 1), [[1.1 * w, -0.1 * h], [-0.1 * w, -0.1 * h]]])
        m = _soft_mask((h, w), [poly], sigma_px=rng.uniform(0.5, 3.0) * s / 256)
        sky = _sky(rng, h, w) * np.float32(factor * _MID_GREY)
        img += m[..., None] * (sky - img)
        if rng.random() < 0.4:  # the sun, low in the sky
            _add_light(img, rng.uniform(0.1, 0.9) * w, rng.uniform(0.2, 0.9) * horizon,
                       s * rng.uniform(0.01, 0.025), 1.0, 0.0,
                       _loguniform(rng, *cfg.light_intensity_range) * _MID_GREY * 2,
                       np.array([1.0, 0.95, 0.85], np.float32), rng.uniform(0.02, 0.08), s * rng.uniform(0.03, 0.08),
                       emitters=emitters)
            info["sun"] = True
    elif kind == "zone":
        side = int(rng.choice(4, p=[0.55, 0.15, 0.15, 0.15]))  # top, left, right, bottom
        H_, W_ = (h, w) if side in (0, 3) else (w, h)  # work as if the zone were at the top
        depth = rng.uniform(0.2, 0.5) * H_
        xs = np.linspace(-0.1 * W_, 1.1 * W_, 24)
        ys = depth + _smooth_field(rng, 1, 24, 4)[0] * rng.uniform(0.0, 0.1) * H_
        poly = np.concatenate([np.stack([xs, ys], 1), [[1.1 * W_, -0.1 * H_], [-0.1 * W_, -0.1 * H_]]])
        if side == 3:
            poly[:, 1] = h - poly[:, 1]
        elif side in (1, 2):
            poly = poly[:, ::-1].copy()
            if side == 2:
                poly[:, 0] = w - poly[:, 0]
        m = _soft_mask((h, w), [poly], sigma_px=s * rng.uniform(0.005, 0.05))
        # brightest at the border, ~4x darker at the zone's edge: a smooth gradient
        ramp = {0: np.linspace(0, 1, h)[:, None], 3: np.linspace(1, 0, h)[:, None],
                1: np.linspace(0, 1, w)[None, :], 2: np.linspace(1, 0, w)[None, :]}[side]
        lim = depth / H_
        grad = np.exp2(-2.0 * np.clip(ramp / lim, 0, 1)).astype(np.float32)
        img *= (1.0 + (np.float32(factor) * grad - 1.0) * m)[..., None]
    elif kind == "pool":
        cx, cy = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h
        poly = _blob_polygon(rng, cx, cy, s * rng.uniform(0.12, 0.35), s * rng.uniform(0.12, 0.35), rough=0.15)
        m = _soft_mask((h, w), [poly], sigma_px=s * rng.uniform(0.01, 0.06))
        img *= (1.0 + (factor - 1.0) * m)[..., None]

    # Light sources (x100..x1000): lamps, LEDs, tube lights.
    n_lights = int(rng.choice([0, 1, 2, 3, 4, 6], p=[0.2, 0.3, 0.2, 0.15, 0.1, 0.05]))
    for _ in range(n_lights):
        r = s * _loguniform(rng, 0.004, 0.03)
        aspect = 1.0 if rng.random() < 0.7 else rng.uniform(2, 8)
        colour = _LAMP_COLOURS[int(rng.integers(len(_LAMP_COLOURS)))] * np.exp(
            rng.normal(0, 0.05, 3)).astype(np.float32)
        _add_light(img, rng.uniform(0.03, 0.97) * w, rng.uniform(0.03, 0.8) * h, r, aspect,
                   rng.uniform(0, np.pi), _loguniform(rng, *cfg.light_intensity_range) * _MID_GREY, colour,
                   rng.uniform(0.005, 0.05), r * rng.uniform(1.5, 5.0), rng.uniform(0.3, 0.9), emitters)
    info["lights"] = n_lights

    # Specular highlights on the brighter (sunlit, glossy) parts.
    n_spec = int(rng.integers(0, 7))
    _add_glints(img, rng, n_spec, s, 0.01, cfg.specular_range, lambda: np.array([1.0, 0.97, 0.92], np.float32))
    info["speculars"] = n_spec
    return info


# ------------------------------------------------------------------------------------------
# low-key scenes: night / stage / dim interior lighting
# ------------------------------------------------------------------------------------------

# Theatre gels (linear RGB, max channel 1) and how often each leads a scene. Stage light is
# mostly magenta / violet / blue / red: one or two channels (nearly) empty over the whole frame.
_GEL_NAMES = ("magenta", "violet", "blue", "azure", "red", "amber", "rose", "teal", "tungsten")
_GELS = np.array([[1.0, 0.0, 0.8], [0.5, 0.0, 1.0], [0.06, 0.08, 1.0], [0.0, 0.35, 1.0], [1.0, 0.02, 0.01],
                  [1.0, 0.3, 0.0], [1.0, 0.0, 0.3], [0.0, 1.0, 0.55], [1.0, 0.72, 0.42]], np.float32)
_GEL_P = np.array([0.22, 0.16, 0.16, 0.07, 0.14, 0.08, 0.08, 0.03, 0.06])
_LOW_KEY_DARK = 0.05**GAMMA
"""Linear signal of 8-bit 0.05 (~13/255): the low-key meter's 'nearly black' level."""
_LOW_KEY_STREAM = 0x10CE
_CROWD_STREAM = 0xC70D
_WHITE_STREAM = 0x3417
"""Second seed word of the generator that decides whether a scene is low-key (the scene's main
stream, and so every bright scene, is the same as without low-key scenes)."""


def _gel(rng: np.random.Generator, index: int, leak: float) -> np.ndarray:
    """Gel ``index`` with a jittered hue; its weak channels pass at least ``leak``."""
    c = _GELS[index] * np.exp(rng.normal(0.0, 0.12, 3))
    c = np.maximum(c / c.max(), leak)
    return (c / c.max()).astype(np.float32)


def _grid(h: int, w: int, max_side: int) -> tuple[int, int, np.ndarray, np.ndarray]:
    """Size ``(gh, gw)`` of a grid of at most ``max_side`` px over an ``(h, w)`` canvas and the
    canvas coordinates of its pixel centres (``y`` column, ``x`` row, float32)."""
    f = min(1.0, max_side / max(h, w))
    gh, gw = max(8, round(h * f)), max(8, round(w * f))
    yy = ((np.arange(gh, dtype=np.float32) + 0.5) * np.float32(h / gh) - 0.5)[:, None]
    xx = ((np.arange(gw, dtype=np.float32) + 0.5) * np.float32(w / gw) - 0.5)[None, :]
    return gh, gw, yy, xx


def _low_key_lighting(rng: np.random.Generator, img: np.ndarray, cfg: SyntheticConfig,
                      clip_mask: np.ndarray | None, margin: int = 0) -> dict[str, Any]:
    """Relight a linear canvas (mid-grey 0.18 = reflectance under unit light) as a dim stage /
    night scene, in place.

    Light = dim coloured spill + an uneven coloured fill + 1..4 pools of gel light (hard or soft
    edged); unlit black areas (audience silhouettes, drapes) x0.002..0.05; additive haze beams;
    2..8 coloured stage lights (x100..x1000 mid-grey, glow in the haze) and glints. Absolute
    level does not matter: the low-key meter of :func:`generate_scene_with_info` exposes it.

    ``margin``: border of the canvas outside the medium frame (the lamps are placed in view).
    ``info["emitters"]``: light-source cores; ``info["illum"]``: the low-resolution light map
    ``(lh, lw, 3)`` and ``info["illum_scale"]`` its size / canvas size (to light moving objects).
    """
    h, w = img.shape[:2]
    s = min(h, w)
    emitters = np.zeros((h, w), bool)
    if clip_mask is not None:  # white shirts, lamps and signs of the photo stay bright
        img *= (1.0 + (_loguniform(rng, 2.0, 16.0) - 1.0) * clip_mask)[..., None]

    # --- illumination, smooth: on a grid of at most 160 px, enlarged ---
    lh, lw, yy, xx = _grid(h, w, 160)
    # palette: one gel family (half the scenes: the whole frame misses a channel, like the real
    # magenta concert crops) or a lead gel with two others
    gels = [int(rng.choice(len(_GELS), p=_GEL_P))]
    mono = rng.random() < 0.5
    gels += [gels[0]] * 2 if mono else [int(rng.choice(len(_GELS), p=_GEL_P)), int(rng.integers(len(_GELS)))]
    leak = _loguniform(rng, 1e-5, 1e-2)  # narrow-band LEDs / dense gels pass (almost) nothing else
    palette = [_gel(rng, i, leak if mono else _loguniform(rng, 1e-5, 1e-2)) for i in gels]
    lead = palette[0]
    spill = _loguniform(rng, 3e-4, 1e-2)
    illum = np.empty((lh, lw, 3), np.float32)
    illum[...] = spill * (0.8 * lead + 0.2 * palette[1])
    fill = _loguniform(rng, 0.01, 0.3) * np.exp2(1.5 * _smooth_field(rng, lh, lw, rng.uniform(1.0, 3.0)))
    illum += fill[..., None] * lead
    n_pools = int(rng.integers(1, 5))
    for j in range(n_pools):
        follow_spot = not mono and rng.random() < 0.15
        col = np.array([1.0, 0.9, 0.8], np.float32) if follow_spot else palette[j % 3]
        cx, cy = rng.uniform(0.0, 1.0) * w, rng.uniform(0.15, 1.0) * h
        rx = s * rng.uniform(0.12, 0.5)
        ry = rx * rng.uniform(0.4, 1.0)
        a = rng.uniform(0, np.pi)
        ca, sa = np.float32(math.cos(a)), np.float32(math.sin(a))
        u, v = ((xx - cx) * ca + (yy - cy) * sa) / np.float32(rx), (-(xx - cx) * sa + (yy - cy) * ca) / np.float32(ry)
        pool = np.exp(-((u * u + v * v) ** np.float32(rng.uniform(1.0, 4.0))))  # hardness of the edge
        illum += (np.float32(_loguniform(rng, 0.3, 3.0)) * pool)[..., None] * col
    img *= _resize(illum, w, h)

    # --- unlit black areas: audience / performer silhouettes at the bottom, drapes, equipment ---
    polys = []
    if rng.random() < 0.6:
        for _ in range(int(rng.integers(3, 9))):
            r = s * rng.uniform(0.06, 0.2)
            polys.append(_blob_polygon(rng, rng.uniform(-0.05, 1.05) * w, rng.uniform(0.8, 1.1) * h,
                                       r, r * rng.uniform(1.0, 2.0), rough=0.25))
    for _ in range(int(rng.choice([0, 1, 2, 3], p=[0.3, 0.35, 0.25, 0.1]))):
        cx, cy = rng.uniform(0, 1) * w, rng.uniform(0, 1) * h
        polys.append(_random_polygon(rng, cx, cy, s * rng.uniform(0.08, 0.3), s * rng.uniform(0.08, 0.4)))
    if polys:
        m = _soft_mask((h, w), polys, sigma_px=s * rng.uniform(0.002, 0.01))
        img *= (1.0 - (1.0 - _loguniform(rng, 0.002, 0.05)) * m)[..., None]

    # --- haze beams from stage lights (additive, coloured, widening, fading) ---
    n_beams = int(rng.choice([0, 1, 2, 3, 4], p=[0.25, 0.3, 0.2, 0.15, 0.1]))
    sources = []
    if n_beams:  # on a grid of at most 256 px; beams at least ~2 grid px wide
        bh, bw, yy, xx = _grid(h, w, 256)
        beams = np.zeros((bh, bw, 3), np.float32)
        haze = np.exp2(0.6 * _smooth_field(rng, bh, bw, rng.uniform(2.0, 6.0), octaves=2))
        for _ in range(n_beams):
            sx, sy = rng.uniform(-0.1, 1.1) * w, rng.uniform(-0.3, 0.35) * h
            tx, ty = rng.uniform(0.0, 1.0) * w, rng.uniform(0.4, 1.2) * h
            n = math.hypot(tx - sx, ty - sy) + 1e-6
            dx, dy = np.float32((tx - sx) / n), np.float32((ty - sy) / n)
            t = (xx - sx) * dx + (yy - sy) * dy  # along the beam
            d = (xx - sx) * dy - (yy - sy) * dx  # across
            w0 = max(s * rng.uniform(0.005, 0.03), 2.0 * w / bw)
            width = np.float32(w0) + np.maximum(t, 0) * np.float32(math.tan(math.radians(rng.uniform(1.5, 10.0))))
            prof = np.exp(-2.0 * (d / width) ** 2) * np.float32(w0) / width  # flux spreads over the width
            prof *= np.clip(t / np.float32(2 * w0) + 0.5, 0, 1) * np.exp(-np.maximum(t, 0) / np.float32(s * rng.uniform(0.7, 3.0)))
            beams += (np.float32(_loguniform(rng, 3.0, 60.0) * _MID_GREY) * prof * haze)[..., None] * palette[int(rng.integers(3))]
            sources.append((sx, sy))
        img += _resize(beams, w, h)

    # --- stage lights: par cans on a truss (a row) or scattered; LEDs ---
    n_lights = int(rng.integers(2, 9))
    fh, fw = h - 2 * margin, w - 2 * margin  # the medium frame, in canvas coordinates from `margin`
    row = rng.random() < 0.5
    y_row, x0_row, x1_row = rng.uniform(0.03, 0.3) * fh, rng.uniform(-0.1, 0.3) * fw, rng.uniform(0.7, 1.1) * fw
    for j in range(n_lights):
        if j < len(sources) and margin < sources[j][0] < w - margin and margin < sources[j][1]:
            cx, cy = sources[j]  # the lamp of a beam, when in view
        elif row:
            cx, cy = margin + x0_row + (x1_row - x0_row) * (j + 0.5) / n_lights, margin + y_row + rng.normal(0, 0.01) * fh
        else:
            cx, cy = margin + rng.uniform(0.02, 0.98) * fw, margin + rng.uniform(0.02, 0.9) * fh
        r = s * _loguniform(rng, 0.003, 0.02)
        col = palette[int(rng.integers(3))]
        if not mono:  # some lamps are paler than the gels (in a one-family frame a channel stays empty)
            col = col + np.float32(rng.uniform(0.0, 0.5)) * (1.0 - col)
        _add_light(img, cx, cy, r, 1.0 if rng.random() < 0.8 else rng.uniform(1.5, 4.0), rng.uniform(0, np.pi),
                   _loguniform(rng, *cfg.light_intensity_range) * _MID_GREY, col,
                   rng.uniform(0.01, 0.08), r * rng.uniform(2.0, 8.0), rng.uniform(0.3, 0.9), emitters)

    # --- glints on the lit parts ---
    n_spec = int(rng.integers(0, 5))
    _add_glints(img, rng, n_spec, s, 0.008, cfg.specular_range, lambda: palette[int(rng.integers(3))])
    return {"emitters": emitters, "illum": illum, "illum_scale": (lh / h, lw / w), "bright_region": "stage",
            "lights": n_lights, "beams": n_beams, "pools": n_pools, "speculars": n_spec,
            "shadows": len(polys), "gels": [_GEL_NAMES[i] for i in gels]}


# ------------------------------------------------------------------------------------------
# moving objects and geometry
# ------------------------------------------------------------------------------------------


@dataclass
class _Sprite:
    premult: np.ndarray  # (sh, sw, 3) radiance * alpha, linear
    alpha: np.ndarray  # (sh, sw) in [0, 1]
    poses: list[np.ndarray]  # 3x3 sprite -> medium-frame coords, per frame


def _make_sprite(rng: np.random.Generator, s: int, cfg: SyntheticConfig, photos, textures,
                 size_range: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    size = s * rng.uniform(*(size_range or cfg.object_size_range))
    sw = max(6, int(size * rng.uniform(0.7, 1.4)))
    sh = max(6, int(size * rng.uniform(0.7, 1.4)))
    shape = rng.choice(["blob", "ellipse", "poly", "rounded", "silhouette"], p=[0.3, 0.22, 0.22, 0.16, 0.1])
    if shape == "silhouette" and _load_source(_SILHOUETTE) is not None:
        sil = _load_source(_SILHOUETTE)
        if rng.random() < 0.5:
            sil = sil[:, ::-1]
        sh = max(6, int(sw * sil.shape[0] / sil.shape[1]))
        alpha = cv2.resize(sil, (sw, sh), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    else:
        cx, cy, rx, ry = sw / 2, sh / 2, sw / 2 - 1, sh / 2 - 1
        if shape == "ellipse":
            t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
            poly = np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1)
        elif shape == "poly":
            poly = _random_polygon(rng, cx, cy, rx, ry)
        elif shape == "rounded":
            t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
            c, sn = np.cos(t), np.sin(t)
            poly = np.stack([cx + rx * np.sign(c) * np.abs(c) ** 0.4, cy + ry * np.sign(sn) * np.abs(sn) ** 0.4], 1)
        else:
            poly = _blob_polygon(rng, cx, cy, rx * 0.8, ry * 0.8, rough=0.35)
        alpha = _poly_mask(sh, sw, [poly])
    tex = _texture(rng, sh, sw, photos, textures) * np.float32(_MID_GREY * _loguniform(rng, 0.3, 3.0))
    # shading across the object reads as a lit 3-D surface
    ang = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:sh, 0:sw].astype(np.float32)
    ramp = ((xx / sw - 0.5) * math.cos(ang) + (yy / sh - 0.5) * math.sin(ang)) * np.float32(rng.uniform(0, 2))
    tex *= np.exp2(ramp)[..., None]
    emissive = rng.random() < 0.1  # a lit screen / lamp shade moving through the scene
    if emissive:
        tex *= np.float32(_loguniform(rng, 10, 60))
    for _ in range(int(rng.integers(0, 3))):  # glossy spots move with the object
        _add_specular(tex, rng.uniform(0.2, 0.8) * sw, rng.uniform(0.2, 0.8) * sh,
                      max(0.6, s * _loguniform(rng, 0.002, 0.008)),
                      _loguniform(rng, *cfg.specular_range) * _MID_GREY, np.array([1.0, 0.98, 0.95], np.float32))
    return np.ascontiguousarray(tex * alpha[..., None], dtype=np.float32), alpha


def _affine(cx: float, cy: float, angle: float, scale: float, ox: float, oy: float) -> np.ndarray:
    """3x3: move point (ox, oy) to (cx, cy), rotating by ``angle`` rad and scaling about it."""
    c, sn = math.cos(angle) * scale, math.sin(angle) * scale
    return np.array([[c, -sn, cx - c * ox + sn * oy], [sn, c, cy - sn * ox - c * oy], [0, 0, 1]], np.float64)


def _draw_shake(rng: np.random.Generator, cfg: SyntheticConfig, h: int, w: int, active: bool) -> np.ndarray:
    """Homography (medium-frame coords -> this frame's coords) about the image centre."""
    s = min(h, w)
    amp = rng.uniform(0.2, 1.0)  # per-scene/frame strength: some shots are almost steady
    t = np.clip(rng.normal(0, 0.5, 2), -1, 1) * cfg.shake_translation * s * amp
    rot = math.radians(rng.uniform(-1, 1) * cfg.shake_rotation_deg * amp)
    sc = 1.0 + rng.uniform(-1, 1) * cfg.shake_scale * amp
    p = rng.uniform(-1, 1, 2) * cfg.shake_perspective * amp / (s / 2)
    if not active:
        return np.eye(3)
    cx, cy = (w - 1) / 2, (h - 1) / 2
    A = _affine(cx + t[0], cy + t[1], rot, sc, cx, cy)
    P = np.array([[1, 0, 0], [0, 1, 0], [p[0], p[1], 1]], np.float64)
    Tc, Tci = np.eye(3), np.eye(3)
    Tc[:2, 2], Tci[:2, 2] = [cx, cy], [-cx, -cy]
    return A @ (Tc @ P @ Tci)


def _shake_margin(cfg: SyntheticConfig, h: int, w: int) -> int:
    """Canvas border so that shaken frames never sample outside the rendered background."""
    s = min(h, w)
    half_diag = 0.5 * math.hypot(h, w)
    m = cfg.shake_translation * s + half_diag * (math.radians(cfg.shake_rotation_deg) + cfg.shake_scale
                                                  + 2 * cfg.shake_perspective * half_diag / (s / 2))
    return int(math.ceil(m)) + 4


def _composite(out: np.ndarray, sp: _Sprite, M: np.ndarray, coverage: np.ndarray | None = None) -> None:
    """Warp a premultiplied sprite by homography ``M`` and composite it over ``out`` in place; raise
    ``coverage`` (``(H, W)``, optional) to the sprite's warped alpha."""
    h, w = out.shape[:2]
    sh, sw = sp.alpha.shape
    corners = np.array([[0, 0, 1], [sw, 0, 1], [sw, sh, 1], [0, sh, 1]], np.float64).T
    pc = M @ corners
    pc = pc[:2] / pc[2]
    x0, x1 = int(max(0, math.floor(pc[0].min()) - 1)), int(min(w, math.ceil(pc[0].max()) + 2))
    y0, y1 = int(max(0, math.floor(pc[1].min()) - 1)), int(min(h, math.ceil(pc[1].max()) + 2))
    if x1 <= x0 or y1 <= y0:
        return
    T = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], np.float64) @ M
    kw = dict(flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    a = cv2.warpPerspective(sp.alpha, T, (x1 - x0, y1 - y0), **kw)
    p = cv2.warpPerspective(sp.premult, T, (x1 - x0, y1 - y0), **kw)
    sub = out[y0:y1, x0:x1]
    sub *= (1.0 - a)[..., None]
    sub += p
    if coverage is not None:
        np.maximum(coverage[y0:y1, x0:x1], a, out=coverage[y0:y1, x0:x1])


def _render(canvas: np.ndarray, margin: int, h: int, w: int, cam: np.ndarray, sprites: list[_Sprite],
            frame: int, coverage: np.ndarray | None = None) -> np.ndarray:
    """Linear radiance of one frame: background and objects seen through camera pose ``cam``
    (``coverage``: optional ``(H, W)`` map raised to the objects' alpha in this frame)."""
    if np.array_equal(cam, np.eye(3)):
        out = canvas[margin: margin + h, margin: margin + w].copy()
    else:
        to_medium = np.array([[1, 0, -margin], [0, 1, -margin], [0, 0, 1]], np.float64)
        out = cv2.warpPerspective(canvas, cam @ to_medium, (w, h), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REFLECT_101)
    for sp in sprites:
        _composite(out, sp, cam @ sp.poses[frame], coverage)
    return out


# ------------------------------------------------------------------------------------------
# sensor
# ------------------------------------------------------------------------------------------


def _draw_evs(rng: np.random.Generator, cfg: SyntheticConfig) -> np.ndarray:
    u = rng.random()
    a, b = cfg.ev_choices[int(rng.integers(len(cfg.ev_choices)))], cfg.ev_choices[int(rng.integers(len(cfg.ev_choices)))]
    asym = rng.random() < cfg.asymmetric_ev_prob
    if u < cfg.ntire_ev_prob:
        lo = hi = 2.0
    else:
        lo, hi = a, (b if asym else a)
    return np.array([-lo, 0.0, hi], np.float32)


@functools.lru_cache(maxsize=1)
def _normal_table() -> np.ndarray:
    """65536 standard-normal quantiles (tails cut at +-4.3 sigma), rescaled to unit variance."""
    from statistics import NormalDist

    inv = NormalDist().inv_cdf
    t = np.array([inv((i + 0.5) / 65536.0) for i in range(65536)], np.float64)
    t = (t / t.std()).astype(np.float32)
    t.setflags(write=False)
    return t


def _std_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard-normal float32 noise by inverse-CDF lookup of random 16-bit words: ~3x faster
    than ``rng.standard_normal`` and just as deterministic."""
    n = int(np.prod(shape))
    idx = np.frombuffer(rng.bytes(2 * n), dtype="<u2")
    return np.take(_normal_table(), idx).reshape(shape)


def _expose(radiance: np.ndarray, t: np.float32, rng: np.random.Generator, shot: float, read: float,
            black: float, corr: float, white: int, out: np.ndarray) -> np.ndarray:
    """Eq. 1 for exposure ``t`` on the medium-normalised radiance ``(H, W, 3)``, then the CRF
    and 8-bit quantisation, written into ``out``.

    Signal ``s = radiance * t``; ``I = min(s + I0 + n, 1)`` with ``n ~ N(0, shot * s + read**2)``
    (Gaussian form of Poisson-Gaussian noise, a ``corr`` share of the variance common to the
    three channels); ``out = min(round(255 * clip(I, 0, 1) ** (1/2.24)), white) / 255`` (float32):
    the camera's white level ``white`` is an 8-bit code.
    """
    signal = radiance * t
    sd = signal * np.float32(shot)
    sd += np.float32(read * read)
    np.sqrt(sd, out=sd)
    z = out
    z[...] = _std_normal(rng, signal.shape)
    z *= np.float32(math.sqrt(1.0 - corr))
    z += _std_normal(rng, signal.shape[:2])[..., None] * np.float32(math.sqrt(corr))
    z *= sd
    z += signal
    z += np.float32(black)
    # I_max = 1; the raw value cannot be negative either. The floor is 1e-30 rather than 0 only
    # because cv2.pow is ~10x slower on exact zeros; 1e-30 ** (1/2.24) still rounds to code 0.
    np.clip(z, 1e-30, 1.0, out=z)
    cv2.pow(z, 1.0 / GAMMA, z)
    z *= np.float32(255.0)
    np.rint(z, out=z)
    np.minimum(z, np.float32(white), out=z)
    z /= np.float32(255.0)  # exactly float32(k) / 255, as a PNG reader would produce
    return z


# ------------------------------------------------------------------------------------------
# public API
# ------------------------------------------------------------------------------------------


def _add_crowd(sprites: list, rng: np.random.Generator, cfg: SyntheticConfig, h: int, w: int, low_key: bool,
               photos, textures, lighting) -> int:
    """Append a crowd of small movers (own random stream); returns how many. ``lighting`` is
    ``(illum, fy, fx, margin)`` of a low-key scene (movers take the stage light where they stand)."""
    if rng.random() >= (cfg.crowd_prob_low_key if low_key else cfg.crowd_prob_bright) or not cfg.object_motion:
        return 0
    s = min(h, w)
    n = int(rng.integers(cfg.crowd_count_range[0], cfg.crowd_count_range[1] + 1))
    # a crowd gathers: centre and spread of the group, movers placed around it
    gx, gy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.3, 0.8) * h
    sx, sy = rng.uniform(0.15, 0.4) * w, rng.uniform(0.1, 0.3) * h
    for _ in range(n):
        premult, alpha = _make_sprite(rng, s, cfg, photos, textures, cfg.crowd_size_range)
        sh, sw = alpha.shape
        cx = float(np.clip(rng.normal(gx, sx), 0, w - 1))
        cy = float(np.clip(rng.normal(gy, sy), 0, h - 1))
        if lighting is not None:
            illum, fy, fx, margin = lighting
            iy = min(illum.shape[0] - 1, max(0, int((cy + margin) * fy)))
            ix = min(illum.shape[1] - 1, max(0, int((cx + margin) * fx)))
            premult = premult * illum[iy, ix]
        d = rng.uniform(*cfg.crowd_motion_range) * max(sh, sw)
        # each mover takes its own path: short and long poses on either side, not on one line
        offs = [rng.normal(0, 1, 2) * d, np.zeros(2), rng.normal(0, 1, 2) * d]
        ang = rng.uniform(-0.5, 0.5)
        turn = [math.radians(rng.uniform(-20, 20)), 0.0, math.radians(rng.uniform(-20, 20))]
        poses = [_affine(cx + o[0], cy + o[1], ang + t, 1.0, sw / 2, sh / 2) for o, t in zip(offs, turn)]
        sprites.append(_Sprite(premult, alpha, poses))
    return n


def _motion_mask(radiance: list[np.ndarray], gt: np.ndarray, coverage: np.ndarray,
                 cfg: SyntheticConfig) -> np.ndarray:
    """``(H, W)`` bool, the regions a merge can ghost in: where some frame shows a moving object
    (``coverage`` > 0.05) and a noise-free short or long frame (medium exposure, gamma-encoded) differs
    from the ground truth by more than ``cfg.motion_threshold``, dilated by ``cfg.motion_dilate_px``.
    Camera shake alone (a few pixels of misregistration, everywhere) does not count."""
    moved = np.zeros(gt.shape[:2], bool)
    for i in (0, 2):
        other = cv2.pow(np.maximum(radiance[i], np.float32(0.0)), 1.0 / GAMMA)
        moved |= (np.abs(other - gt) > cfg.motion_threshold).any(axis=2)
    moved &= coverage > 0.05
    if cfg.motion_dilate_px and moved.any():
        k = 2 * cfg.motion_dilate_px + 1
        moved = cv2.dilate(moved.astype(np.uint8), np.ones((k, k), np.uint8)).astype(bool)
    return moved


def scene_seed(seed: int, index: int) -> int:
    """Seed of scene ``index`` of a dataset with base ``seed`` (hash-free, stable everywhere)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(2, np.uint32).astype(np.uint64)
               @ np.array([1, 2**32], np.uint64))


def generate_scene_with_info(seed: int, height: int = 256, width: int = 256,
                             config: SyntheticConfig | None = None
                             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Like :func:`generate_scene`, plus a dict describing the scene (kind, source photo, ISO,
    noise, motion, dynamic range ``p99.9/p0.1`` of the linear gt, ``low_key`` (bool), ...;
    low-key scenes add ``gels``, ``beams``, ``pools`` and the meter's ``dark_target``)."""
    cfg = config or _DEFAULT_CONFIG
    h, w = int(height), int(width)
    if h < 16 or w < 16:
        raise ValueError(f"frame size must be >= 16x16, got {h}x{w}")
    rng = np.random.default_rng(seed)
    # low-key or not: from a second stream of the same seed, so that the main stream (and every
    # bright scene) does not depend on low_key_fraction
    low_key = bool(np.random.default_rng([int(seed), _LOW_KEY_STREAM]).random() < cfg.low_key_fraction)
    s = min(h, w)
    photos = _available(_PHOTOS)
    textures = _available(_TEXTURES)

    # --- exposure and sensor parameters ---
    evs = _draw_evs(rng, cfg)
    iso = _loguniform(rng, *cfg.iso_range)
    g = iso / 100.0
    shot = _loguniform(rng, *cfg.shot_noise_range) * g
    read = _loguniform(rng, *cfg.read_noise_range) * g**0.75
    black = rng.uniform(*cfg.black_level_range)
    corr = rng.uniform(*cfg.noise_channel_corr_range)
    # own stream: the white level leaves every other draw of the scene as it was
    wrng = np.random.default_rng([int(seed), _WHITE_STREAM])
    white = 248 if wrng.random() < cfg.challenge_white_prob else int(wrng.integers(cfg.white_level_range[0],
                                                                                     cfg.white_level_range[1] + 1))
    wb = np.exp(np.array([rng.normal(0, cfg.wb_tint_sigma), 0.0, rng.normal(0, cfg.wb_tint_sigma)])).astype(np.float32)
    median_target = rng.uniform(*cfg.median_target_range)
    bias = rng.uniform(*cfg.exposure_bias_stops) if rng.random() < cfg.exposure_bias_prob else 0.0
    tone_gamma = rng.uniform(*cfg.tone_gamma_range) if rng.random() < cfg.tone_bias_prob else 1.0

    # --- camera shake (random draws happen even when disabled: content stays the same) ---
    shaking = (rng.random() < cfg.camera_shake_prob) and cfg.camera_shake
    cams = [_draw_shake(rng, cfg, h, w, shaking), np.eye(3), _draw_shake(rng, cfg, h, w, shaking)]
    margin = _shake_margin(cfg, h, w)
    hp, wp = h + 2 * margin, w + 2 * margin

    # --- background radiance ---
    is_photo = bool(photos) and rng.random() < cfg.photo_fraction
    clip_mask, source = None, "procedural"
    if is_photo:
        source = photos[int(rng.integers(len(photos)))]
        canvas, clip_mask = _photo_background(rng, hp, wp, source)
        lum = _lum(canvas[::4, ::4])
        canvas *= np.float32(_MID_GREY / max(float(np.median(lum)), 1e-3))
    else:
        f = min(1.0, _PROCEDURAL_MAX_SIDE / max(hp, wp))  # large frames: draw smaller, enlarge (like photos)
        canvas = _procedural_background(rng, max(16, round(hp * f)), max(16, round(wp * f)), photos, textures)
        canvas = _resize(canvas, wp, hp)
        canvas *= np.float32(_MID_GREY / max(float(np.median(_lum(canvas[::4, ::4]))), 1e-4))
    if tone_gamma != 1.0:
        canvas = (_MID_GREY * (np.maximum(canvas, 0) / _MID_GREY) ** np.float32(tone_gamma)).astype(np.float32)
    canvas = np.ascontiguousarray(canvas, dtype=np.float32)  # float32 end to end (speed, output dtype)
    others = tuple(p for p in photos if p != source)
    if low_key:
        info = _low_key_lighting(rng, canvas, cfg, clip_mask, margin)
        illum, (fy, fx) = info.pop("illum"), info.pop("illum_scale")
    else:
        info = _extend_dynamic_range(rng, canvas, cfg, clip_mask, others or photos)
    emitters = info.pop("emitters")[margin: margin + h, margin: margin + w]

    # --- moving objects ---
    sprites: list[_Sprite] = []
    n_obj = int(rng.integers(cfg.num_objects_range[0], cfg.num_objects_range[1] + 1)) \
        if rng.random() < cfg.objects_prob else 0
    for _ in range(n_obj):
        premult, alpha = _make_sprite(rng, s, cfg, others or photos, textures)
        sh, sw = alpha.shape
        cx, cy = rng.uniform(0.05, 0.95) * w, rng.uniform(0.1, 0.95) * h
        if low_key:  # lit by the stage light where it stands (medium pose)
            iy = min(illum.shape[0] - 1, max(0, int((cy + margin) * fy)))
            ix = min(illum.shape[1] - 1, max(0, int((cx + margin) * fx)))
            premult = premult * illum[iy, ix]
        ang = rng.uniform(-0.5, 0.5)
        d = rng.uniform(*cfg.object_motion_range) * s
        heading = rng.uniform(0, 2 * np.pi)
        v = np.array([math.cos(heading), math.sin(heading)]) * d
        jitter = rng.normal(0, 0.15, size=(2, 2)) * d  # not perfectly uniform motion
        dang = math.radians(rng.uniform(-1, 1) * cfg.object_rotation_deg)
        dsc = rng.uniform(-1, 1) * cfg.object_scale_change
        poses = []
        for step in (-1, 0, 1):  # short, medium (reference pose), long
            if not cfg.object_motion or step == 0:
                poses.append(_affine(cx, cy, ang, 1.0, sw / 2, sh / 2))
                continue
            off = step * v + jitter[0 if step < 0 else 1]
            poses.append(_affine(cx + off[0], cy + off[1], ang + step * dang, 1.0 + step * dsc, sw / 2, sh / 2))
        sprites.append(_Sprite(premult, alpha, poses))
    n_crowd = _add_crowd(sprites, np.random.default_rng([int(seed), _CROWD_STREAM]), cfg, h, w, low_key,
                         others or photos, textures, (illum, fy, fx, margin) if low_key else None)

    # --- render, veiling glare, auto-expose, white balance ---
    coverage = np.zeros((h, w), np.float32)  # where any frame shows a moving object (motion mask)
    radiance = [_render(canvas, margin, h, w, cams[i], sprites, i, coverage) for i in range(3)]
    glare = np.float32(_loguniform(rng, *cfg.veiling_glare_range) * float(_lum(radiance[1][::4, ::4]).mean()))
    if low_key:  # glare is scattered scene light: under coloured light it has the light's colour
        glare = (glare * radiance[1][::4, ::4].reshape(-1, 3).mean(axis=0)
                 / max(float(_lum(radiance[1][::4, ::4]).mean()), 1e-12)).astype(np.float32)
    st = max(1, int(math.sqrt(h * w / 65536)))  # meter on ~64k samples
    sub = (radiance[1][::st, ::st] + glare) * wb
    lum, peak = _lum(sub), _chmax(sub)
    k_median = median_target / max(float(np.median(lum)), 1e-6)
    # a highlight-protecting meter: limited clipping in the medium and (almost) none in the short
    # frame, light-source cores excepted (they may clip, as in real brackets)
    k_medium = 1.0 / max(float(np.quantile(peak, 1.0 - cfg.max_clipped_fraction)), 1e-6)
    peak_scene = peak[~emitters[::st, ::st]]
    if peak_scene.size < 16:
        peak_scene = peak.ravel()
    k_short = 0.97 * 2.0 ** -float(evs[0]) / max(float(np.quantile(peak_scene, 1.0 - cfg.short_clipped_fraction)), 1e-6)
    if low_key:
        # low-key meter: a drawn share of the medium frame's values (pixels x channels) nearly
        # black, but the brightest lit tenth of the frame at most at a drawn level (a frame
        # missing a colour channel already has a third of its values black) and at most half
        # of the values black; limited clipping; highlight protection may darken by
        # max_protect_stops more
        dark = rng.uniform(*cfg.low_key_dark_range)
        lit = _loguniform(rng, 0.1, 1.0)
        q_dark, q_half = (float(v) for v in np.quantile(sub, [dark, max(dark, 0.5)]))
        k = min(_LOW_KEY_DARK / max(q_dark, 1e-12), lit / max(float(np.quantile(peak_scene, 0.9)), 1e-12), k_medium)
        k = max(k, min(_LOW_KEY_DARK / max(q_half, 1e-12), k_medium))
        k = min(k, max(k_short, k * 2.0**-cfg.max_protect_stops))
        bias = 0.0
    else:
        k = min(k_median * 2.0**bias, k_medium * 2.0 ** max(bias, 0.0), k_short)
        # ... but never more than max_protect_stops below the mid-tone exposure: a big lamp or a
        # x100 sky may clip in the short frame rather than leave the whole bracket black
        k = max(k, k_median * 2.0 ** (bias - cfg.max_protect_stops))
    scale = (wb * np.float32(k)).astype(np.float32)
    for r in radiance:
        r += glare
        r *= scale

    # --- sensor and camera response ---
    ldrs = np.empty((3, h, w, 3), np.float32)
    for i in range(3):
        _expose(radiance[i], np.float32(2.0 ** float(evs[i])), rng, shot, read, black, corr, white, out=ldrs[i])
    gt = cv2.pow(np.maximum(radiance[1], np.float32(0.0)), 1.0 / GAMMA)
    moved = _motion_mask(radiance, gt, coverage, cfg)

    lin = _chmax(radiance[1][::st, ::st])
    lo, hi = np.quantile(lin, [0.001, 0.999])
    info.update(
        kind="photo" if is_photo else "procedural", source=source, seed=int(seed), evs=evs.tolist(),
        iso=iso, shot_noise=shot, read_noise=read, black_level=black, white_level=white / 255.0, exposure_scale=k,
        exposure_bias=bias, tone_gamma=tone_gamma, wb=wb.tolist(), camera_shake=bool(shaking),
        num_objects=n_obj, crowd=n_crowd, dynamic_range=float(hi / max(lo, 1e-9)), low_key=low_key,
        motion_mask=moved, motion_share=float(moved.mean()),
    )
    if low_key:
        info["dark_target"] = dark
    return ldrs, evs, gt, info


def generate_scene(seed: int, height: int = 256, width: int = 256,
                   config: SyntheticConfig | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One synthetic scene, deterministic in ``(seed, height, width, config)``.

    Returns:
        ldrs: float32 ``(3, H, W, 3)``, frames short / medium / long, RGB, 8-bit quantised
            (values exactly ``k/255``) in [0, 1].
        evs: float32 ``(3,)``, exposure in stops relative to the medium frame (``evs[1] == 0``),
            mostly ``[-2, 0, 2]``.
        gt: float32 ``(H, W, 3)``, gamma-encoded HDR (``linear = gt ** 2.24``), >= 0, may exceed
            1, aligned to the medium frame; medium LDR ~= gt where unsaturated.
    """
    ldrs, evs, gt, _ = generate_scene_with_info(seed, height, width, config)
    return ldrs, evs, gt


class SceneSource:
    """A lazy synthetic scene: ``source()`` gives ``(ldrs, evs, gt)`` of :func:`generate_scene`;
    :meth:`motion_mask` gives its ``(H, W)`` bool motion mask (from the same generation when the scene
    was already loaded)."""

    def __init__(self, seed: int, height: int, width: int, config: SyntheticConfig | None = None):
        self.seed, self.height, self.width, self.config = int(seed), int(height), int(width), config
        self._mask: np.ndarray | None = None

    def __call__(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ldrs, evs, gt, info = generate_scene_with_info(self.seed, self.height, self.width, self.config)
        self._mask = info["motion_mask"]
        return ldrs, evs, gt

    def motion_mask(self) -> np.ndarray:
        if self._mask is None:
            self()
        return self._mask


# ------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------



@command
def main(argv: list[str] | None = None) -> int:
    """Write ``--num`` scenes in the NTIRE layout (``syn{seed}_{i:05d}_short.png`` ...)."""
    from eapnet.cli import size_arg

    p = Parser(prog="python -m eapnet.data.synthetic", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--num", type=int, required=True, help="number of scenes")
    p.add_argument("--seed", type=int, default=TRAIN_SEED, help=f"base seed (held-out: {HELDOUT_SEED})")
    p.add_argument("--size", type=size_arg, default=None, help="HxW, e.g. 1060x1900 (default 256x256)")
    p.add_argument("--start", type=int, default=0, help="first scene index (to resume or shard)")
    args = p.parse_args(argv)
    if args.num < 0:
        p.error("--num must be >= 0")

    from eapnet.data.ntire import write_ntire  # lazy: the NumPy generator does not need it

    h, w = args.size or (_DEFAULT_CONFIG.height, _DEFAULT_CONFIG.width)
    t0 = time.perf_counter()
    for i in range(args.start, args.start + args.num):
        ldrs, evs, gt = generate_scene(scene_seed(args.seed, i), h, w)
        write_ntire(args.out, f"syn{args.seed}_{i:05d}", ldrs, evs, gt=gt)
    print(f"wrote {args.num} scenes {h}x{w} to {args.out} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
