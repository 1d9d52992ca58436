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
   occluding and disoccluding the background; crowds of small movers (hands, heads). Lights that
   change between exposures (own seed stream; 35 % of the short and of the long frames of low-key
   scenes, 5 % of bright ones): pools of light up to 2..16x brighter, darker or of another colour in
   that frame than in the medium one, as stage lights sweeping over a crowd; the ground truth keeps the
   medium frame's light.
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
exceed 1, maxima ~1..10). :class:`SyntheticSource` is one scene as a lazy scene source
(:mod:`eapnet.data.scene`), its :class:`~eapnet.data.scene.Scene` carrying the motion mask.

Determinism: the same ``(seed, height, width, config)`` gives bit-identical arrays across calls
and processes (only ``default_rng(seed)``, NumPy and OpenCV's per-pixel deterministic resize /
warp / blur / polygon fill). The set of available source photos is part of the input: a
different scikit-image install with other files would give other scenes.

The parts live in ``eapnet/data/synth/`` (:mod:`eapnet.data.synth`: config, sources, content,
motion, sensor); this module assembles them into scenes and keeps the public API. Scenes are written to an NTIRE folder by
:mod:`eapnet.synthesize` (``eapnet-synthetic``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

__all__ = [
    "GAMMA",
    "TRAIN_SEED",
    "HELDOUT_SEED",
    "PRESETS",
    "SyntheticConfig",
    "SyntheticSource",
    "generate_scene",
    "generate_scene_with_info",
    "scene_seed",
]

from eapnet.data.synth.config import (
    _CROWD_STREAM,
    _DEFAULT_CONFIG,
    PRESETS,
    _LIGHT_STREAM,
    _LOW_KEY_DARK,
    _LOW_KEY_STREAM,
    _MID_GREY,
    _PROCEDURAL_MAX_SIDE,
    _WHITE_STREAM,
    GAMMA,
    HELDOUT_SEED,
    TRAIN_SEED,
    SyntheticConfig,
)
from eapnet.data.synth.content import (
    _extend_dynamic_range,
    _low_key_lighting,
    _photo_background,
    _procedural_background,
)
from eapnet.data.synth.motion import (
    _add_crowd,
    _affine,
    _draw_shake,
    _light_changes,
    _make_sprite,
    _motion_mask,
    _render,
    _shake_margin,
    _Sprite,
)
from eapnet.data.synth.sensor import _draw_evs, _expose
from eapnet.data.scene import Scene
from eapnet.data.synth.sources import (
    _PHOTOS,
    _TEXTURES,
    _available,
    _chmax,
    _loguniform,
    _lum,
    _resize,
)

# ------------------------------------------------------------------------------------------
# public API
# ------------------------------------------------------------------------------------------


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
    alphas = [np.zeros((h, w), np.float32) for _ in range(3)]   # the moving objects in each frame
    radiance = [_render(canvas, margin, h, w, cams[i], sprites, i, alphas[i]) for i in range(3)]
    coverage = np.maximum(np.maximum(alphas[0], alphas[1]), alphas[2])  # ... and where a light changed (below)
    changed, light_stops = _light_changes(np.random.default_rng([int(seed), _LIGHT_STREAM]), cfg, h, w, low_key,
                                          (alphas[0], alphas[2]))
    for i, field in zip((0, 2), changed):
        if field is not None:   # the gt keeps the medium frame's light
            radiance[i] *= field
            np.maximum(coverage, np.abs(np.log2(field)).max(axis=2), out=coverage)
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
    # 0.97 is linear full scale less a margin; a white level below 255 clips some of these protected
    # highlights too (at code 248, linear 0.94): measured over 40 scenes, 0.91 % of short-frame pixels clip
    # (0.79 % with every frame clipping at 255), as real brackets do
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
        num_objects=n_obj, crowd=n_crowd, light_change_stops=light_stops, dynamic_range=float(hi / max(lo, 1e-9)), low_key=low_key,
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


@dataclass(frozen=True)
class SyntheticSource:
    """One synthetic scene as a scene source (:class:`eapnet.data.scene.SceneSource`): ``load()`` generates it
    (:func:`generate_scene_with_info`) with its motion mask as ``Scene.motion``; ``size()`` is known. ``id``
    defaults to the seed; ``dataset``: the set its scene belongs to."""

    seed: int
    height: int
    width: int
    config: SyntheticConfig | None = None
    id: str = ""
    dataset: str = ""

    def __post_init__(self) -> None:
        for name in ("seed", "height", "width"):
            object.__setattr__(self, name, int(getattr(self, name)))
        object.__setattr__(self, "id", str(self.id) or str(self.seed))

    @property
    def origin(self) -> str:
        return f"synthetic:{self.seed}@{self.height}x{self.width}"

    def size(self) -> tuple[int, int]:
        return self.height, self.width

    def has_gt(self) -> bool:
        return True

    def load(self) -> Scene:
        ldrs, evs, gt, info = generate_scene_with_info(self.seed, self.height, self.width, self.config)
        return Scene(self.id, ldrs, evs, gt, info["motion_mask"], origin=self.origin, dataset=self.dataset)
