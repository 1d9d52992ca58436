"""Motion of the synthetic scenes: moving objects as premultiplied sprites (photo / texture
cut-outs with anti-aliased masks, posed per frame), crowds of small movers from their own seed
stream, camera shake as a small homography per non-reference frame, compositing and rendering of
one frame's linear radiance, and the motion mask (where a merge can ghost)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from eapnet.data.synth.config import _MID_GREY, GAMMA, SyntheticConfig
from eapnet.data.synth.content import _GEL_P, _GELS, _add_specular, _gel, _grid, _texture
from eapnet.data.synth.sources import (
    _SILHOUETTE,
    _blob_polygon,
    _load_source,
    _loguniform,
    _poly_mask,
    _random_polygon,
)

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


def _light_changes(rng: np.random.Generator, cfg: SyntheticConfig, h: int, w: int, low_key: bool,
                   objects: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[list[np.ndarray | None], list[float]]:
    """Lights that differ between exposures, from the scene's own light stream: for the short and the long
    frame, ``None`` (same light as the medium frame) or an ``(h, w, 3)`` float32 factor on that frame's
    linear radiance: 1..3 soft pools of light, each on in that frame only (up to ``2**stops`` brighter in a
    gel's or warm white's channels), on in the medium frame only (as much darker) or of another colour
    (brighter in some channels, darker in others); pools that overlap add in stops. With probability
    ``cfg.light_change_on_objects`` a frame's change lights only ``objects`` (the ``(h, w)`` alpha of the
    moving objects in the short and in the long frame). Also the peak change per frame in stops (0 = unchanged)."""
    p = (cfg.light_change_prob_low_key if low_key else cfg.light_change_prob_bright) if cfg.object_motion else 0.0
    s = min(h, w)

    def colour():
        return (np.array([1.0, 0.9, 0.75], np.float32) if rng.random() < 0.3
                else _gel(rng, int(rng.choice(len(_GELS), p=_GEL_P)), 0.05))

    fields, stops = [], []
    for k in range(2):
        if rng.random() >= p:
            fields.append(None)
            stops.append(0.0)
            continue
        gh, gw, yy, xx = _grid(h, w, 192)
        f = gw / w
        xx, yy = xx * np.float32(f), yy * np.float32(gh / h)   # grid pixel units
        st = float(np.log2(_loguniform(rng, 2.0 ** cfg.light_change_stops[0], 2.0 ** cfg.light_change_stops[1])))
        change = np.zeros((gh, gw, 3), np.float32)     # stops
        for _ in range(int(rng.integers(cfg.light_change_count_range[0], cfg.light_change_count_range[1] + 1))):
            r = rng.uniform(*cfg.light_change_size_range) * s * f
            cx, cy = rng.uniform(0.0, 1.0) * gw, rng.uniform(0.0, 1.0) * gh
            ang, aspect = rng.uniform(0, np.pi), rng.uniform(0.5, 1.0)
            c, sn = math.cos(ang), math.sin(ang)
            u = ((xx - cx) * c + (yy - cy) * sn) / r
            v = (-(xx - cx) * sn + (yy - cy) * c) / (r * aspect)
            edge = rng.uniform(0.15, 0.8)   # hard-edged spot .. soft wash
            spot = np.clip((1.0 - np.sqrt(u * u + v * v)) / edge, 0.0, 1.0)
            spot = spot * spot * (3.0 - 2.0 * spot)
            kind = int(rng.choice(3, p=cfg.light_change_kinds))
            direction = colour() if kind == 0 else -colour() if kind == 1 else colour() - colour()
            direction = direction / max(float(np.abs(direction).max()), 0.25)
            change += spot[..., None] * direction.astype(np.float32)
        np.clip(change, -1.0, 1.0, out=change)
        field = cv2.resize(np.exp2(np.float32(st) * change), (w, h), interpolation=cv2.INTER_LINEAR)
        # drawn only when asked for, so that the default scenes keep their random streams
        if cfg.light_change_on_objects > 0 and objects is not None and rng.random() < cfg.light_change_on_objects:
            field = np.exp2(np.log2(field) * objects[k][..., None]).astype(np.float32)
        fields.append(field)
        stops.append(round(st * float(np.abs(change).max()), 4))
    return fields, stops


def _motion_mask(radiance: list[np.ndarray], gt: np.ndarray, coverage: np.ndarray,
                 cfg: SyntheticConfig) -> np.ndarray:
    """``(H, W)`` bool, the regions a merge can ghost in: where some frame shows a moving object or a
    changed light (``coverage`` > 0.05) and a noise-free short or long frame (medium exposure, gamma-encoded) differs
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
