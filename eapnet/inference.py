"""The one inference path: NumPy scene in, NumPy HDR out, whole-frame or tiled.

Used by validation during training, evaluation, compression reports, export checks and parity.

- Inputs: ``ldrs`` ``(3, H, W, 3)`` gamma-encoded LDR frames in [0, 1] (short, medium, long; RGB) and
  ``evs`` ``(3,)`` stops relative to the medium frame (``eapnet.data`` conventions).
- Output: ``(H, W, 3)`` float32 HDR in the challenge's ground-truth domain (gamma-encoded, >= 0).

Whole-frame inference lets the model pad to its multiple and crop back (the paper pads 1900x1060 to
1920x1080). Tiled inference runs overlapping tiles of one fixed size (what a phone program exported at the
tile size takes) and blends them (:func:`_ramp`), for frames that do not fit in memory: exact for a model
whose receptive-field radius is at most a quarter of the overlap, and for EAPNet (receptive field wider
than a tile, strided levels) equal to whole-frame inference up to a measured seam error (tests).
"""
from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
from torch import nn

from eapnet.cpu import cpu_channels_last
from eapnet.data.scene import check_exposures
from eapnet.memory import config_of, estimate_peak_bytes, require_memory


def resolve_device(name: str) -> torch.device:
    """The one reading of a ``--device`` value: ``auto`` -> CUDA when available, else CPU; ``cpu``, ``cuda`` or
    ``cuda:N``. ValueError naming the value for anything else, or for CUDA on a machine without it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name != "cpu" and not (name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit())):
        raise ValueError(f"device {name!r}: must be auto, cpu, cuda or cuda:N")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name}: CUDA is not available on this machine")
    return torch.device(name)


def example_inputs(size: tuple[int, int] = (64, 64), batch: int = 1, seed: int = 0,
                   device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic model inputs for tracing and export: ``ldrs`` ``(batch, 3, 3, H, W)`` uniform in [0, 1]
    (own generator: the global RNG is untouched) and ``evs`` ``(batch, 3)`` = the challenge's [-2, 0, 2]."""
    g = torch.Generator().manual_seed(seed)
    ldrs = torch.rand(batch, 3, 3, *size, generator=g)
    return ldrs.to(device), torch.tensor([[-2.0, 0.0, 2.0]] * batch, device=device)


def check_scene(ldrs: np.ndarray, evs: np.ndarray) -> None:
    """ValueError naming the problem where a scene is not what the model can use: ``ldrs`` not floats in
    [0, 1] (8-bit values must be divided by 255 first), NaN/inf anywhere, or exposures the readers would
    refuse (``eapnet.data.scene.check_exposures``: strictly increasing, within ``EV_SPAN`` stops)."""
    if ldrs.dtype.kind != "f":
        raise ValueError(f"ldrs must be floats in [0, 1], got dtype {ldrs.dtype}"
                         + (" (8-bit codes: divide by 255)" if ldrs.dtype == np.uint8 else ""))
    if not np.isfinite(ldrs).all():
        raise ValueError("ldrs contain NaN/inf values")
    lo, hi = float(ldrs.min()), float(ldrs.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValueError(f"ldrs must be in [0, 1], got values in [{lo:.4g}, {hi:.4g}]"
                         + (" (8-bit codes? divide by 255)" if hi > 2 else ""))
    check_exposures(evs, "evs")


def frame_size(ldrs) -> tuple[int, int]:
    """``(H, W)`` of a scene's ``ldrs`` ``(3, H, W, 3)`` from its shape alone (no copy); ValueError naming
    ``ldrs`` for another shape or an empty (0-pixel) frame."""
    shape = np.shape(ldrs)
    if len(shape) != 4 or shape[0] != 3 or shape[-1] != 3:
        raise ValueError(f"ldrs must be (3 frames, H, W, 3 channels), got {shape}")
    if min(shape[1:3]) < 1:
        raise ValueError(f"ldrs: the frame is {shape[1]}x{shape[2]} pixels (HxW); need at least 1x1")
    return int(shape[1]), int(shape[2])


def to_batch(ldrs: np.ndarray, evs: np.ndarray, device: str | torch.device = "cpu"):
    """NumPy scene -> model inputs ``(1, 3, 3, H, W)`` and ``(1, 3)`` float32 tensors on ``device``;
    the scene is checked first (:func:`check_scene`)."""
    if torch.is_tensor(ldrs) or torch.is_tensor(evs):
        raise TypeError("to_batch takes NumPy arrays (3, H, W, 3) and (3,); call the model for tensors")
    ldrs = np.asarray(ldrs)
    frame_size(ldrs)
    evs = np.asarray(evs, dtype=np.float64).reshape(-1)
    if evs.shape != (3,):
        raise ValueError(f"evs must hold 3 exposure values, got shape {evs.shape}")
    check_scene(ldrs, evs)
    evs = evs.astype(np.float32)
    x = torch.from_numpy(np.ascontiguousarray(ldrs.transpose(0, 3, 1, 2), dtype=np.float32))[None]
    return x.to(device), torch.from_numpy(evs)[None].to(device)


AMP = (None, "off", "bf16", "fp16")
"""``amp`` values of :func:`predict`: None / "off" (fp32), or autocast to bf16 / fp16 (CUDA only)."""


def _autocast(device: torch.device, amp: str | None):
    if amp in (None, "off") or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


TILE_OVERLAP = 64
"""Default pixels shared by neighbouring tiles in tiled inference."""
MIN_TILE = 16
"""Smallest tile side in pixels (the least any size argument takes: ``eapnet.cli.parse_size``)."""


def _pixels(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def tile_size(tile) -> tuple[int, int] | None:
    """``tile`` as ``(H, W)`` pixels: None (whole frame), ``N`` (square) or a pair ``(H, W)`` of integers, each
    at least :data:`MIN_TILE`; ValueError naming ``tile`` for anything else (16.5, ``(16,)``, ``"512"``)."""
    if tile is None:
        return None
    sides = (tile, tile) if _pixels(tile) else tuple(tile) if isinstance(tile, (tuple, list)) else None
    if sides is None or len(sides) != 2 or not all(_pixels(v) for v in sides):
        raise ValueError(f"tile must be an integer N or a pair (H, W) of integers, in pixels; got {tile!r}")
    if min(sides) < MIN_TILE:
        raise ValueError(f"tile must be at least {MIN_TILE} pixels, got {sides[0]}x{sides[1]}")
    return int(sides[0]), int(sides[1])


def plan_tile(frame: tuple[int, int], max_tile: int, overlap: int = TILE_OVERLAP, multiple: int = 8) -> tuple[int, int]:
    """The tile ``(h, w)`` for ``frame`` ``(H, W)``: per side the fewest tiles of at most ``max_tile`` pixels
    that cover it with ``overlap`` pixels shared, each as small as that count allows (rounded up to
    ``multiple``, EAPNet's padding multiple, so no tile pads), and never larger than the frame."""
    sides = []
    for n in frame:
        if n <= max_tile:
            sides.append(n)
            continue
        count = math.ceil((n - overlap) / (max_tile - overlap))
        side = math.ceil((n + (count - 1) * overlap) / count)
        sides.append(min(n, multiple * math.ceil(side / multiple)))
    return sides[0], sides[1]


SHIP_MAX_TILE = 680
"""Largest tile side in pixels of the phone programs the main job ships (:func:`ship_tile`): for the 1060x1900
challenge frame, 2 x 3 tiles of 568x680. Through the native runner the int8 program in those tiles needs about a
fifth of the whole-frame program's memory for about 1.2x its time (``reports/bench-native``), and the job that
exports and checks it stays within 4 GB (``reports/main-job``)."""


def ship_tile(frame: tuple[int, int]) -> tuple[int, int]:
    """Program size ``(H, W)`` the main job ships for frames of ``frame`` ``(H, W)``: the fewest tiles of at most
    :data:`SHIP_MAX_TILE` pixels a side (:func:`plan_tile`); the frame itself when it is no larger."""
    return plan_tile(frame, SHIP_MAX_TILE, TILE_OVERLAP)


@torch.inference_mode()
def predict(model: nn.Module, ldrs: np.ndarray, evs: np.ndarray, *, tile: int | tuple[int, int] | None = None,
            overlap: int = TILE_OVERLAP, amp: str | None = None, allow_large: bool = False) -> np.ndarray:
    """HDR for one scene (see module docstring).

    ``tile``: tile size in pixels, ``N`` (square) or ``(H, W)`` (None = whole frame); every tile has exactly
    that size when the frame is at least that large, so a program exported at the tile size (a phone artifact)
    runs every tile. A tile as large as the frame on a side is clamped to the frame there (a tile covering the
    whole frame runs it whole, and needs the whole frame's memory): a dataset of mixed sizes takes one tile
    setting. ``overlap``: pixels shared by neighbouring tiles (an integer in [0, tile/2)). ``amp``: one of
    :data:`AMP` (autocast on CUDA only). Arguments are checked (ValueError naming the argument) before anything
    runs, then the memory the run needs: for an EAPNet (``eapnet.memory.estimate_peak_bytes``: the whole frame,
    or one tile plus the frame's buffers) a run that exceeds the machine's RAM (GPU memory on CUDA) is refused
    with the figures (:class:`eapnet.memory.MemoryBudgetError`, a ValueError) unless ``allow_large``."""
    tile = tile_size(tile)
    if not _pixels(overlap) or overlap < 0:
        raise ValueError(f"overlap must be an integer number of pixels >= 0, got {overlap!r}")
    if amp not in AMP:
        raise ValueError(f"amp must be one of {AMP}, got {amp!r}")
    H, W = frame_size(ldrs)
    device = _device_of(model)
    whole = tile is None or (tile[0] >= H and tile[1] >= W)
    if not whole and not overlap < min(tile) // 2:
        raise ValueError(f"overlap must be in [0, tile/2) = [0, {min(tile) // 2}), got {overlap}")
    config = config_of(model)
    if config is not None and not allow_large:
        p = next(model.parameters(), None)
        half = (amp in ("bf16", "fp16") and device.type == "cuda") or (p is not None and p.element_size() == 2)
        need = estimate_peak_bytes(config, H, W, tile=None if whole else tile, half=half)
        doing = "whole-frame inference" if whole else f"tiled inference ({tile[0]}x{tile[1]} tiles)"
        hint = "pass tile=N to run it in tiles" if whole else "pass a smaller tile"
        require_memory(need, f"frame {H}x{W}", doing, f"{hint}, or allow_large=True to try anyway", device,
                       limit="total")   # inside evaluation and parity: only what can never fit
    x, e = to_batch(ldrs, evs, device)
    with _autocast(device, amp), cpu_channels_last(model):
        if whole:
            y = model(x, e).float()
        else:
            y = _tiled(model, x, e, tile, overlap)
    return y[0].permute(1, 2, 0).cpu().numpy().astype(np.float32, copy=False)


def _starts(n: int, tile: int, overlap: int) -> list[int]:
    if tile >= n:
        return [0]
    step = tile - overlap
    starts = list(range(0, n - tile, step)) + [n - tile]
    return sorted(set(starts))


def _ramp(n: int, overlap: int, first: bool, last: bool) -> torch.Tensor:
    """1-D blending weights of one tile: at an edge shared with a neighbour, zero over the outer quarter of the
    overlap (pixels whose receptive field leaves the tile), then a linear ramp over its middle half; flat 1 at
    image borders. A model whose receptive-field radius is at most ``overlap // 4`` is stitched exactly."""
    w = torch.ones(n)
    o = min(overlap, n // 2)
    m = o // 4
    r = o - 2 * m
    if o > 0:
        edge = torch.cat([torch.zeros(m), (torch.arange(r, dtype=torch.float32) + 0.5) / r])
        if not first:
            w[:m + r] = edge
        if not last:
            w[n - m - r:] = edge.flip(0)
    return w


def _tiled(model: nn.Module, x: torch.Tensor, e: torch.Tensor, tile: tuple[int, int], overlap: int) -> torch.Tensor:
    H, W = x.shape[-2:]
    out = torch.zeros(x.shape[0], 3, H, W, device=x.device)
    norm = torch.zeros(1, 1, H, W, device=x.device)
    ys, xs = _starts(H, tile[0], overlap), _starts(W, tile[1], overlap)
    th, tw = min(tile[0], H), min(tile[1], W)
    for i, t in enumerate(ys):
        wy = _ramp(th, overlap, i == 0, i == len(ys) - 1)
        for j, l in enumerate(xs):
            wx = _ramp(tw, overlap, j == 0, j == len(xs) - 1)
            w = (wy[:, None] * wx[None, :]).to(x.device)[None, None]
            y = model(x[..., t:t + th, l:l + tw], e).float()
            out[..., t:t + th, l:l + tw] += y * w
            norm[..., t:t + th, l:l + tw] += w
    return out / norm
