"""The project's one scene type, :class:`Scene`, and what a scene source is, :class:`SceneSource`.

A scene is one exposure bracket with its ground truth, in the project's convention:

- ``ldrs`` float32 ``(3, H, W, 3)``: the short, medium and long LDR frames, RGB, gamma-encoded, in [0, 1];
- ``evs`` float32 ``(3,)``: exposures in stops relative to the medium frame (``evs[1] == 0``), strictly
  increasing, the short and long ones within :data:`EV_SPAN` stops of the medium one;
- ``gt`` float32 ``(H, W, 3)`` or ``None``: HDR in the challenge's ground-truth domain (gamma-encoded with
  2.24, medium-frame units, >= 0, may exceed 1);
- ``motion`` bool ``(H, W)`` or ``None``: where the frames disagree because something moved (synthetic scenes);
- ``origin``: where it came from (``ntire:<folder>/<id>``, ``kalantari:<folder>``, ``synthetic:<seed>@<h>x<w>``,
  ``calib:<folder>/<id>``, ``array``); ``dataset``: the set it belongs to (``""`` when none);
  ``cropped_from``: the ``(H, W)`` of the scene it was cropped from (:meth:`Scene.crop`), else ``None``.

Every scene is validated once, when it is made (:meth:`Scene.__post_init__`): a malformed one raises
:class:`eapnet.data.errors.DataError` with one line naming it. :func:`check_exposures` is the one exposure rule;
the NTIRE file layer (:class:`eapnet.data.ntire.NtireSample`) applies it to the values it reads and writes, so
that a broken file is named by its path.

A *scene source* is anything with ``id``, ``origin``, a cheap ``size()`` (``(H, W)`` without decoding the
frames), a cheap ``has_gt()`` and ``load() -> Scene``: :class:`eapnet.data.ntire.NtireSource`,
:class:`eapnet.data.kalantari.KalantariSource`, :class:`eapnet.data.synthetic.SyntheticSource`, and a
:class:`Scene` itself (already in memory: ``load()`` returns it).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from .errors import DataError

__all__ = ["EV_SPAN", "Scene", "SceneSource", "as_sources", "check_exposures"]

EV_SPAN = 10.0
"""Largest offset in stops of the short or long frame from the medium one that a scene may have. Phone and
challenge brackets span 2-3 stops per side; 10 already means a 1000x exposure ratio. Beyond it, values
come from a broken file (e.g. +-300 EV, whose 2**EV scaling overflows float32 to inf)."""


def check_exposures(exposures, source: str) -> np.ndarray:
    """The exposure rule: 3 finite real values (stops), strictly increasing short < medium < long, offsets from
    the medium frame within :data:`EV_SPAN`. Returns ``exposures`` as an array; DataError naming ``source``
    otherwise. Absolute and relative values pass or fail alike."""
    exposures = np.asarray(exposures)
    if exposures.dtype.kind not in "iuf":
        raise DataError(
            f"{source}: exposures must be 3 finite real numbers, got dtype {exposures.dtype}", source
        )
    if exposures.shape != (3,):
        raise DataError(
            f"{source}: exposures must be 3 finite values (shape (3,)), got shape {exposures.shape}",
            source,
        )
    if not np.all(np.isfinite(exposures)):
        raise DataError(f"{source}: exposures contain NaN/Inf (non-finite): {exposures.tolist()}", source)
    if not (exposures[0] < exposures[1] < exposures[2]):
        # Frame names say short/medium/long: unordered EVs mean mislabelled frames, equal ones no bracket.
        raise DataError(
            f"{source}: exposures {exposures.tolist()} are not strictly increasing short < medium < long "
            "(an exposure bracket needs three different exposures)", source
        )
    span = np.abs(exposures.astype(np.float64) - float(exposures[1])).max()
    if span > EV_SPAN:
        raise DataError(
            f"{source}: exposures {exposures.tolist()} put a frame {span:g} stops from the medium one; "
            f"at most {EV_SPAN:g} is physically plausible", source
        )
    return exposures


def _float_image(value, shape_ok, expected: str, what: str, where: str) -> np.ndarray:
    """``value`` as a contiguous float32 array of finite values (no copy when it already is one)."""
    arr = np.asarray(value)
    if arr.dtype.kind != "f":
        raise DataError(f"{where}: {what} dtype {arr.dtype}, expected floats")
    if not shape_ok(arr.shape):
        raise DataError(f"{where}: {what} shape {arr.shape}, expected {expected}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _value_range(arr: np.ndarray, what: str, where: str) -> tuple[float, float]:
    """``(min, max)`` of ``arr``; DataError if it holds NaN or inf (both propagate into the min or max)."""
    lo, hi = float(arr.min()), float(arr.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise DataError(f"{where}: {what} contains NaN/Inf (non-finite values)")
    return lo, hi


@dataclass(frozen=True, eq=False, repr=False)
class Scene:
    """One validated scene (see the module docstring). Arrays are stored as contiguous float32 (bool for
    ``motion``), not copied when they already are; the fields cannot be reassigned. A scene is its own source:
    :meth:`size`, :meth:`has_gt` and :meth:`load` (itself)."""

    id: str
    ldrs: np.ndarray
    evs: np.ndarray
    gt: np.ndarray | None
    motion: np.ndarray | None = None
    origin: str = "array"
    dataset: str = ""
    cropped_from: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        put = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731  (frozen)
        sid, origin = str(self.id), str(self.origin)
        where = f"scene {sid!r} ({origin or '?'})"
        if not sid:
            raise DataError(f"{where}: empty scene id")
        if not origin:
            raise DataError(f"{where}: empty origin (say where the scene came from, e.g. 'array')")
        put("id", sid)
        put("origin", origin)
        put("dataset", str(self.dataset))

        ldrs = _float_image(self.ldrs, lambda s: len(s) == 4 and s[0] == 3 and s[3] == 3 and min(s) > 0,
                            "(3, H, W, 3)", "ldrs", where)
        lo, hi = _value_range(ldrs, "ldrs", where)
        if lo < 0 or hi > 1:
            raise DataError(f"{where}: ldrs values [{lo:.6g}, {hi:.6g}] out of range [0, 1]")
        put("ldrs", ldrs)

        evs = check_exposures(self.evs, where)
        if evs[1] != 0:
            raise DataError(f"{where}: evs {evs.tolist()} are not relative to the medium frame (evs[1] must be 0)")
        put("evs", np.ascontiguousarray(evs, dtype=np.float32))

        frame = ldrs.shape[1:3]
        if self.gt is not None:
            gt = _float_image(self.gt, lambda s: len(s) == 3 and s[2] == 3, "(H, W, 3)", "gt", where)
            if gt.shape[:2] != frame:
                raise DataError(f"{where}: gt shape {gt.shape} differs from the frame shape {frame + (3,)}")
            lo, _ = _value_range(gt, "gt", where)
            if lo < 0:
                raise DataError(f"{where}: gt has negative values (min {lo:.6g}); HDR is >= 0")
            put("gt", gt)
        if self.motion is not None:
            motion = np.asarray(self.motion)
            if motion.dtype != np.bool_ or motion.shape != frame:
                raise DataError(f"{where}: motion mask {motion.dtype} {motion.shape}, expected bool {frame}")
            put("motion", np.ascontiguousarray(motion))
        if self.cropped_from is not None:
            full = tuple(int(v) for v in self.cropped_from)
            if len(full) != 2 or full[0] < frame[0] or full[1] < frame[1]:
                raise DataError(f"{where}: cropped_from {self.cropped_from!r} is not an (H, W) at least the "
                                f"frame's {frame}")
            put("cropped_from", full)

    def __repr__(self) -> str:
        h, w = self.size()
        extra = "".join(f", {k}={v!r}" for k, v in (("dataset", self.dataset), ("cropped_from", self.cropped_from))
                        if v)
        return (f"Scene(id={self.id!r}, {h}x{w}, origin={self.origin!r}, gt={self.gt is not None}, "
                f"motion={self.motion is not None}{extra})")

    # ---- a scene is its own source -------------------------------------------------------------------------

    def size(self) -> tuple[int, int]:
        """Frame size ``(H, W)``."""
        return int(self.ldrs.shape[1]), int(self.ldrs.shape[2])

    def has_gt(self) -> bool:
        return self.gt is not None

    def load(self) -> Scene:
        return self

    # ---- derived scenes ------------------------------------------------------------------------------------

    def crop(self, top: int, left: int, height: int, width: int) -> Scene:
        """The ``height x width`` part at ``(top, left)`` (a copy); ``cropped_from`` records the size of the
        uncropped scene. The whole frame gives the scene itself."""
        H, W = self.size()
        top, left, height, width = int(top), int(left), int(height), int(width)
        if not (0 <= top and 0 <= left and height > 0 and width > 0 and top + height <= H and left + width <= W):
            raise ValueError(f"scene {self.id!r} ({self.origin}): crop {height}x{width} at ({top}, {left}) is not "
                             f"inside its {H}x{W} frame")
        if (top, left, height, width) == (0, 0, H, W):
            return self
        rows, cols = slice(top, top + height), slice(left, left + width)
        return dataclasses.replace(
            self, ldrs=self.ldrs[:, rows, cols], gt=None if self.gt is None else self.gt[rows, cols],
            motion=None if self.motion is None else self.motion[rows, cols], cropped_from=self.cropped_from or (H, W))


@runtime_checkable
class SceneSource(Protocol):
    """A scene that can be loaded: ``id`` and ``origin`` as its :class:`Scene` will have them, ``size()`` (frame
    ``(H, W)``) and ``has_gt()`` without decoding the frames, ``load()`` the validated :class:`Scene`."""

    @property
    def id(self) -> str: ...

    @property
    def origin(self) -> str: ...

    def size(self) -> tuple[int, int]: ...

    def has_gt(self) -> bool: ...

    def load(self) -> Scene: ...


def as_sources(items: Iterable, what: str = "scenes") -> list[SceneSource]:
    """``items`` as a list of scene sources; TypeError naming the first item that is not one (a tuple of arrays
    is not: make it a :class:`Scene`)."""
    out = list(items)
    for i, item in enumerate(out):
        if not isinstance(item, SceneSource):
            raise TypeError(f"{what}: item {i} is a {type(item).__name__}, not a scene source (eapnet.data.Scene, "
                            "NtireSource, KalantariSource, SyntheticSource or any object with id, origin, size(), "
                            "has_gt() and load())")
    return out
