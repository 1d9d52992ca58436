"""Side-by-side preview of the real full-size challenge frame: medium LDR / radiance merge / the model's own
base where it has another (the consistent merge) / model.

The command line is :mod:`eapnet.preview` (``eapnet-preview``).

The frame (``SHARED_SAMPLES/fullres_no_gt/0000``, 1900x1060, a crowd under stage lights) has no ground
truth, so this is for the eye: where people moved between the exposures the base (a per-pixel merge of
unaligned frames) shows coloured ghosts, and a model that de-ghosts removes them. The top row shows the
whole frame (downscaled), the bottom row a 1:1 crop (``--crop y0:y1,x0:x1``, default: the crowd below the
stage). All panels share one tone map: the challenge's μ-law with tanh normalised by the 99th percentile of
the base's linear radiance, so brightness differences are real.

The frame's ghosts are mostly lights, not motion: in its crowd the long frame is over a stop brighter than
the medium one on 10 % of the area, heads lit yellow in the long frame and blue in the medium one.
:func:`light_ghosts` measures how much of that a merge keeps (printed by the command, recorded in the model
cards).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from eapnet.metrics import DEFAULT_GAMMA as GAMMA
from eapnet.baselines import consistent_merge, radiance_merge
from eapnet.data import SHARED_SAMPLES, NtireSource
from eapnet.inference import predict
from eapnet.outputs import tonemap_preview
from eapnet.runs import atomic_write_bytes

DEFAULT_CROP = (600, 900, 760, 1240)  # y0, y1, x0, x1 in a 1060x1900 (HxW) frame: hands and heads below the stage


def parse_crop(text: str) -> tuple[int, int, int, int]:
    """``"y0:y1,x0:x1"`` -> ``(y0, y1, x0, x1)``; raises ``ValueError`` with the accepted form."""
    try:
        ys, xs = text.split(",")
        y0, y1 = (int(v) for v in ys.split(":"))
        x0, x1 = (int(v) for v in xs.split(":"))
    except ValueError:
        raise ValueError(f"crop {text!r}: expected y0:y1,x0:x1 in pixels, e.g. 600:900,760:1240") from None
    if not (0 <= y0 < y1 and 0 <= x0 < x1):
        raise ValueError(f"crop {text!r}: need 0 <= y0 < y1 and 0 <= x0 < x1")
    return y0, y1, x0, x1


def light_ghosts(hdr: np.ndarray, ldrs: np.ndarray, evs: np.ndarray, *, lit_stops: float = 1.0,
                 sigma: float = 3.0) -> float:
    """Stops by which ``hdr`` (gamma-encoded, ``(H, W, 3)``, in the medium frame's geometry) departs from the
    medium frame where the long frame is lit by a light the medium frame lacks, beyond its departure
    elsewhere. 0: the lit regions follow the medium frame (the reference) like the rest of the frame; a
    ghost departs either way (the long frame's light leaking in, or dark blotches where the model rejects
    it unevenly).

    Luminance in linear units, blurred by ``sigma`` px so that noise averages out. Lit: the long frame, brought
    to the medium exposure, is ``lit_stops`` brighter than the medium frame beyond the frame's median ratio,
    and the medium frame is unclipped. Reference: pixels whose ratio is within 0.3 stop of the median and
    whose medium brightness lies in the lit pixels' 10..90th percentile. With ``d`` the log2 ratio of ``hdr``
    to the medium frame, centred on its median over the reference pixels: mean ``|d|`` over the lit pixels
    minus mean ``|d|`` over the reference pixels (nan without lit pixels)."""
    def lum(x):
        return cv2.GaussianBlur(np.ascontiguousarray((np.maximum(x, 0.0) ** GAMMA).mean(axis=-1), np.float32),
                                (0, 0), sigma)

    medium = lum(ldrs[1])
    ratio = np.log2((lum(ldrs[2]) / 2.0 ** float(evs[2] - evs[1]) + 1e-4) / (medium + 1e-4))
    unclipped = ldrs[1].max(axis=-1) < 0.9
    lit = (ratio - np.median(ratio) > lit_stops) & unclipped
    if not lit.any():
        return float("nan")
    lo, hi = np.percentile(medium[lit], [10, 90])
    ref = (np.abs(ratio - np.median(ratio)) < 0.3) & (medium >= lo) & (medium <= hi) & unclipped
    d = np.log2((lum(hdr) + 1e-4) / (medium + 1e-4))
    d -= np.median(d[ref])
    return float(np.abs(d[lit]).mean() - np.abs(d[ref]).mean())


def preview_panels(model, ldrs: np.ndarray, evs: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """``{"medium", "base", ["own_base",] "model"}`` 8-bit RGB ``(H, W, 3)`` images of one scene, sharing one
    tone map, and :func:`light_ghosts` of each merge and the model (stops). ``base`` is the radiance merge (the
    unaligned merge whose ghosts the preview is about); ``own_base`` the model's own base image where its config
    names another (``base="consistent"``: :func:`eapnet.baselines.consistent_merge`)."""

    base = radiance_merge(ldrs, evs)
    images = {"medium": np.clip(ldrs[1], 0, 1), "base": base}
    if getattr(getattr(model, "config", None), "base", "merge") == "consistent":
        images["own_base"] = consistent_merge(ldrs, evs)
    images["model"] = np.maximum(predict(model, ldrs, evs), 0.0)
    panels = {k: tonemap_preview(v, base) for k, v in images.items()}
    return panels, {k: light_ghosts(v, ldrs, evs) for k, v in images.items() if k != "medium"}


def compose(panels: dict[str, np.ndarray], crop: tuple[int, int, int, int], width: int = 640,
            label: str = "model") -> np.ndarray:
    """Top row: the panels downscaled to ``width``; bottom row: the ``crop`` of each at 1:1 (then scaled to
    the same width). Captions are drawn in the image. Returns 8-bit RGB."""
    y0, y1, x0, x1 = crop
    names = {"medium": "medium frame", "base": "radiance merge" + ("" if "own_base" in panels else " (base)"),
             "own_base": "consistent merge (its base)", "model": label}
    top, bottom = [], []
    for key, img in panels.items():
        H, W = img.shape[:2]
        if y1 > H or x1 > W:
            raise ValueError(f"crop {y0}:{y1},{x0}:{x1} (y0:y1,x0:x1) lies outside the {H}x{W} (HxW) frame")
        small = cv2.resize(img, (width, round(H * width / W)), interpolation=cv2.INTER_AREA)
        cut = img[y0:y1, x0:x1]
        cut = cv2.resize(cut, (width, round(cut.shape[0] * width / cut.shape[1])), interpolation=cv2.INTER_NEAREST)
        for im, text in ((small, names[key]), (cut, f"{names[key]}, crop")):
            cv2.putText(im, text, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 4, cv2.LINE_AA)
            cv2.putText(im, text, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 1, cv2.LINE_AA)
        # the crop's outline on the overview
        s = width / W
        cv2.rectangle(small, (round(x0 * s), round(y0 * s)), (round(x1 * s), round(y1 * s)), (255, 255, 0), 1)
        top.append(small)
        bottom.append(cut)
    gap = lambda h: np.full((h, 4, 3), 255, np.uint8)  # noqa: E731
    row = lambda ims: np.concatenate(sum(([im, gap(im.shape[0])] for im in ims), [])[:-1], 1)  # noqa: E731
    return np.concatenate([row(top), np.full((4, row(top).shape[1], 3), 255, np.uint8), row(bottom)], 0)


def render(model, out: Path, crop=DEFAULT_CROP, folder: Path | None = None, sample: str = "0000",
           label: str = "model") -> tuple[Path, dict[str, float]]:
    """Render the preview of ``folder/sample`` (default: the shared full-size frame) to ``out`` (PNG); returns
    the path and :func:`light_ghosts` of each panel but the medium frame (stops; see :func:`preview_panels`)."""
    folder = Path(folder) if folder is not None else SHARED_SAMPLES / "fullres_no_gt"
    scene = NtireSource(folder, sample).load()
    panels, ghosts = preview_panels(model, scene.ldrs, scene.evs)
    img = compose(panels, crop, label=label)
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(img[..., ::-1]))
    if not ok:
        raise RuntimeError(f"{out}: could not encode the preview")
    atomic_write_bytes(out, buf.tobytes())
    return out, ghosts
