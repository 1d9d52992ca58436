"""Configuration of the synthetic scene generator: :class:`SyntheticConfig` (the frozen, validated
distribution of scenes) and its default, the base seeds of training and held-out data, the camera
response exponent ``GAMMA``, constants shared by several parts (the canvas's mid-grey, size caps of
procedural content, the low-key meter's 'nearly black' level) and the second seed words of the
scene's independent streams (low-key decision, crowd, white level, changing lights)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from eapnet.metrics import DEFAULT_GAMMA as GAMMA  # one definition
"""Camera response / gt encoding exponent of the challenge: ``encoded = linear ** (1/GAMMA)``."""

TRAIN_SEED = 0
"""Default base seed of training data."""

HELDOUT_SEED = 10_000_019
"""Base seed reserved for held-out evaluation; never a default for training."""

_MID_GREY = 0.18  # linear radiance unit of the canvas before auto-exposure
_PROCEDURAL_MAX_SIDE = 2048  # procedural backgrounds are drawn at most this large, then enlarged
_TEXTURE_MAX_SIDE = 1024


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
    """Share of scenes whose LDR frames clip at 8-bit code 248 (about 62 % in all: 248 is also one of the
    codes of ``white_level_range``), the white level of every real
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
    """``False``: every frame shows the medium frame's content (objects keep the medium pose, no crowd
    moves, no light changes between exposures)."""
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

    # --- lights that change between exposures (stage lights sweeping over a crowd, flashes) ---
    light_change_prob_low_key: float = 0.35
    """Probability, per short and per long frame of a low-key scene, that the light on part of the scene
    differs from the medium frame's (own seed stream). The real full-size stage frame shows it: in its
    crowd 10 % of the area is over a stop brighter in the long frame than in the medium one (1 % darker),
    heads lit yellow in the long frame and blue in the medium one (red 2-3 stops brighter, blue 1-2 stops
    darker)."""
    light_change_prob_bright: float = 0.05
    light_change_stops: tuple[float, float] = (1.0, 4.0)
    """Peak change of a changed light, in stops, log-uniform."""
    light_change_kinds: tuple[float, float, float] = (0.45, 0.2, 0.35)
    """Shares of the changed pools of light: on in that frame only (brighter in the gel's channels), on in
    the medium frame only (darker), another colour (brighter in some channels, darker in others)."""
    light_change_count_range: tuple[int, int] = (1, 3)
    light_change_size_range: tuple[float, float] = (0.08, 0.35)
    """Radius of a changed light's pool, fraction of the short side."""
    light_change_on_objects: float = 0.0
    """Probability, per changed frame, that its changed light falls only on the moving objects and crowd
    standing in the pools (their alpha in that frame), not on the background behind them: heads lit by a
    sweeping light in one exposure, as in the real stage frame. 0 draws nothing (the scenes stay as they were)."""

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
        for name in ("crowd_prob_low_key", "crowd_prob_bright", "light_change_prob_low_key",
                     "light_change_prob_bright", "light_change_on_objects"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")
        if len(self.light_change_kinds) != 3 or min(self.light_change_kinds) < 0 or \
                abs(sum(self.light_change_kinds) - 1.0) > 1e-6:
            raise ValueError(f"light_change_kinds: three shares >= 0 that sum to 1, got {self.light_change_kinds}")
        if self.light_change_stops[0] < 0 or self.light_change_count_range[0] < 1 or self.light_change_size_range[0] <= 0:
            raise ValueError("light_change_stops must be >= 0, light_change_count_range >= 1 and "
                             "light_change_size_range > 0")
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

PRESETS: dict[str, SyntheticConfig] = {
    "default": _DEFAULT_CONFIG,
    # the stage frame's light ghosts, more often and as strong as there: in its crowd crop, over the pixels where
    # the long frame is lit, it is 28x / 24x / 0.6x the medium frame (EV-aligned, linear) in R / G / B
    "stage": SyntheticConfig(low_key_fraction=0.5, light_change_prob_low_key=0.6, light_change_stops=(1.0, 6.0),
                             light_change_on_objects=0.5),
}
"""Named generator configs: training picks one with ``--data synthetic:<name>``; evaluation sets and the
calibration set always use ``default``."""


# ------------------------------------------------------------------------------------------
# low-key meter level and seed streams
# ------------------------------------------------------------------------------------------

_LOW_KEY_DARK = 0.05**GAMMA
"""Linear signal of 8-bit 0.05 (~13/255): the low-key meter's 'nearly black' level."""
_LOW_KEY_STREAM = 0x10CE
"""Second seed word of the generator that decides whether a scene is low-key (the scene's main
stream, and so every bright scene, is the same as without low-key scenes)."""
_CROWD_STREAM = 0xC70D
"""... of the crowd of small movers (the rest of the scene is the same with or without it)."""
_WHITE_STREAM = 0x3417
"""... of the camera's white level (drawing it changes no other draw of the scene)."""
_LIGHT_STREAM = 0x11C4
"""... of the lights that change between exposures."""
