"""How sure a difference between two models is: paired bootstrap confidence intervals over scenes.

Two models scored on the same scenes give paired figures (PSNR-μ in dB per scene); their difference varies more
from scene to scene than between the models, so a mean difference of 0.1-0.3 dB over 4 or 16 scenes can be
noise. :func:`paired_bootstrap` resamples the scenes with replacement (the same draw for both models) and
reports the mean difference with a percentile interval; :func:`resolved` says whether that interval excludes
zero. Deterministic for a given ``seed``.

    from eapnet.stats import paired_bootstrap
    d = paired_bootstrap(student_db, teacher_db)      # Interval(mean=-0.41, lo=-0.58, hi=-0.25, n=16, ...)
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["Interval", "change_vs", "interval_text", "paired_bootstrap", "resolved"]

RESAMPLES = 10_000
"""Bootstrap resamples per interval: the percentile limits move by about 0.01 dB between seeds at 16 scenes."""


@dataclass(frozen=True)
class Interval:
    """Mean of ``a - b`` over ``n`` paired scenes and its ``level`` percentile bootstrap interval [lo, hi]
    (units of the inputs, dB for PSNR)."""

    mean: float
    lo: float
    hi: float
    n: int
    level: float

    def to_dict(self) -> dict:
        return asdict(self)


def paired_bootstrap(a: Sequence[float], b: Sequence[float], *, level: float = 0.95, resamples: int = RESAMPLES,
                     seed: int = 0) -> Interval:
    """Mean of ``a[i] - b[i]`` with its percentile bootstrap interval (scenes resampled with replacement).
    ``a`` and ``b``: one finite figure per scene, in the same scene order. One scene gives a zero-width
    interval at its difference (nothing to resample). ValueError for unequal lengths, no scenes,
    non-finite figures, ``level`` outside (0, 1) or fewer than 100 resamples."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"paired figures need two 1-D sequences of one length, got shapes {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("paired figures: no scenes")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("paired figures: NaN or inf among them")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if resamples < 100:
        raise ValueError(f"resamples must be at least 100, got {resamples}")
    d = a - b
    idx = np.random.default_rng(seed).integers(0, d.size, size=(resamples, d.size))
    means = d[idx].mean(axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return Interval(float(d.mean()), float(lo), float(hi), int(d.size), float(level))


def resolved(interval: Interval | dict) -> bool:
    """True when the interval excludes zero: the sign of the difference is resolved at its level."""
    lo, hi = (interval.lo, interval.hi) if isinstance(interval, Interval) else (interval["lo"], interval["hi"])
    return lo > 0 or hi < 0


def change_vs(scores: dict, reference: dict | None, metric: str = "psnr_mu") -> dict | None:
    """The change of a model's ``metric`` against a reference model's on one dataset, paired over its scenes:
    :func:`paired_bootstrap` as a dict, plus ``resolved``. ``scores``/``reference``: one dataset's scores as
    ``eapnet.evalsets.score(..., per_scene=True)`` returns them (``{"per_scene": {scene id: {metric: ...}}}``).
    None where either holds no per-scene figures or they are not of the same scenes."""
    mine, theirs = scores.get("per_scene"), (reference or {}).get("per_scene")
    if not mine or not theirs or list(mine) != list(theirs):
        return None
    d = paired_bootstrap([v[metric] for v in mine.values()], [v[metric] for v in theirs.values()])
    return {**d.to_dict(), "resolved": resolved(d)}


def interval_text(d: dict | None, bold: tuple[str, str] = ("**", "**")) -> str:
    """``-0.47 [-0.61, -0.33]`` for a :func:`change_vs` dict, between ``bold`` marks (Markdown's by default,
    ``("<b>", "</b>")`` for HTML) when it is resolved; ``–`` for none."""
    if not d:
        return "–"
    text = f"{d['mean']:+.2f} [{d['lo']:+.2f}, {d['hi']:+.2f}]"
    return f"{bold[0]}{text}{bold[1]}" if d["resolved"] else text
