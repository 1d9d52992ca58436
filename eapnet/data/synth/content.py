"""Scene content of the synthetic generator, on a linear canvas where 0.18 is mid-grey: textures
(photo crops, tinted textures, noise, stripes, checkers), photo and procedural backgrounds, the
dynamic-range extension of bright scenes (re-expanded clipped areas, illumination, cast shadows,
a window / sky / backlit zone / light pool, light sources with glow, specular glints) and the
low-key relighting of night / stage scenes (theatre gels, light pools, unlit silhouettes, haze
beams, coloured stage lights)."""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

from eapnet.data.synth.config import _MID_GREY, _TEXTURE_MAX_SIDE, SyntheticConfig
from eapnet.data.synth.sources import (
    _blob_polygon,
    _blur_lowres,
    _crop,
    _load_source,
    _loguniform,
    _lum,
    _poly_mask,
    _random_colour,
    _random_polygon,
    _resize,
    _smooth_field,
    _soft_mask,
)

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
