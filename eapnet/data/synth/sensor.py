"""Sensor of the synthetic scenes (EAPNet Eq. 1 / NTIRE 2021 data model): the exposure spacings of
a triplet, a fast deterministic standard-normal generator (inverse-CDF table of 16-bit words) and
the exposure of one frame: Poisson-Gaussian noise in Gaussian form with channel correlation, the
black-level offset, clipping, the camera response ``x ** (1/GAMMA)``, 8-bit quantisation and the
camera's white level."""

from __future__ import annotations

import functools
import math
from statistics import NormalDist

import cv2
import numpy as np

from eapnet.data.synth.config import GAMMA, SyntheticConfig

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
