"""Render ``docs/synthetic_examples.png``: example synthetic scenes from ``eapnet.data.synthetic``.

Rows: 5 scenes of the training stream (``TRAIN_SEED``): 3 photo-based and 1 procedural bright
scene, then 1 low-key (night / stage) scene with a crowd of small movers;
columns: short, medium, long LDR frames, the gt tone-mapped with the challenge's mu-law
(``linear = gt**2.24``, normalised by its 99th percentile, ``log(1 + 5000 tanh(x)) / log(5001)``) and
the scene's motion mask (red) over the gt.

    python scripts/make_synthetic_figure.py [--out docs/synthetic_examples.png] [--size 160x240]

Scenes are generated at the displayed size (no resampling). Sensor noise makes 8-bit PNGs of
photos large, so the figure is stored with 6 bits per channel (``--bits``) to stay well under
1 MB. Deterministic; the PNG is written atomically (temporary file, then ``os.replace``).
"""

from __future__ import annotations

import os
import sys

import numpy as np

from eapnet.cli import Parser
from eapnet.data.synthetic import GAMMA, TRAIN_SEED, generate_scene_with_info, scene_seed
from eapnet.runs import atomic_path

MU = 5000.0


def mu_tonemap(gt: np.ndarray) -> np.ndarray:
    """Challenge mu-law tone map of gamma-encoded HDR ``gt`` -> [0, 1] for display."""
    lin = np.maximum(gt.astype(np.float64), 0.0) ** GAMMA
    norm = max(float(np.percentile(lin, 99)), 1e-8)
    return (np.log1p(MU * np.tanh(lin / norm)) / np.log1p(MU)).astype(np.float32)


def pick_scenes(height: int, width: int, n_photo: int = 3, n_proc: int = 1, n_low_key: int = 1,
                max_tries: int = 200):
    """First scenes of the training stream: ``n_photo`` bright photo scenes with distinct source
    photos, ``n_proc`` bright procedural ones and ``n_low_key`` low-key photo scenes lit like the
    real concert crops: magenta / violet / blue lead gel, 25..45 % of the medium frame's values
    below 0.05 (the crops: ~33 %), and a crowd; at least one object each, so motion is shown."""
    photo, proc, low, seen = [], [], [], set()
    for i in range(max_tries):
        ldrs, evs, gt, info = generate_scene_with_info(scene_seed(TRAIN_SEED, i), height, width)
        if info["num_objects"] == 0:
            continue
        if info["low_key"]:
            if (len(low) < n_low_key and info["kind"] == "photo" and info["gels"][0] in ("magenta", "violet", "blue")
                    and 0.25 <= (ldrs[1] < 0.05).mean() <= 0.45 and info["crowd"] > 0):
                low.append((i, ldrs, evs, gt, info))
        elif info["kind"] == "photo" and len(photo) < n_photo and info["source"] not in seen:
            seen.add(info["source"])
            photo.append((i, ldrs, evs, gt, info))
        elif info["kind"] == "procedural" and len(proc) < n_proc:
            proc.append((i, ldrs, evs, gt, info))
        if len(photo) == n_photo and len(proc) == n_proc and len(low) == n_low_key:
            break
    return photo + proc + low


def main(argv: list[str] | None = None) -> int:
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    ap = Parser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(root, "docs", "synthetic_examples.png"))
    ap.add_argument("--size", default="160x240", help="HxW of each generated scene")
    ap.add_argument("--bits", type=int, default=6, choices=range(4, 9), help="stored bits per channel")
    args = ap.parse_args(argv)
    h, w = (int(v) for v in args.size.lower().split("x"))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenes = pick_scenes(h, w)
    cols = ["short", "medium", "long", "gt (mu-law tone-mapped)", "motion mask"]
    dpi = 100
    fig, axes = plt.subplots(len(scenes), 5, figsize=(5 * w / dpi * 1.02, len(scenes) * h / dpi * 1.16), dpi=dpi)
    for r, (i, ldrs, evs, gt, info) in enumerate(scenes):
        sat = [(ldrs[k].max(axis=-1) >= 1.0).mean() for k in range(3)]
        for c in range(5):
            ax = axes[r, c]
            img = ldrs[c] if c < 3 else mu_tonemap(gt)
            if c == 4:
                img = 0.5 * img
                img[info["motion_mask"]] = 0.5 * img[info["motion_mask"]] + np.array([0.5, 0.0, 0.0])
            ax.imshow(np.clip(img, 0, 1), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c < 3:
                dark = f"  <0.05 {100 * (ldrs[c] < 0.05).mean():.0f}%" if info["low_key"] else ""
                ax.set_title(f"{cols[c]}  EV {evs[c]:+g}  sat {100 * sat[c]:.1f}%{dark}", fontsize=8, pad=2)
            elif c == 3:
                ax.set_title(f"gt mu-law, DR 10^{np.log10(info['dynamic_range']):.1f}, max {gt.max():.1f}",
                             fontsize=8, pad=2)
            else:
                ax.set_title(f"motion mask ({100 * info['motion_share']:.0f}% of pixels)", fontsize=8, pad=2)
        src = info["source"].rsplit(".", 1)[0]
        if info["low_key"]:
            src = f"low-key {info['gels'][0]}: {src}"
        crowd = f", crowd of {info['crowd']}" if info["crowd"] else ""
        axes[r, 0].set_ylabel(f"#{i} {src}\nISO {info['iso']:.0f}, {info['num_objects']} obj{crowd}"
                              f"{', shake' if info['camera_shake'] else ''}", fontsize=8)
    fig.subplots_adjust(left=0.04, right=0.995, top=0.97, bottom=0.005, wspace=0.02, hspace=0.14)

    out = os.path.abspath(args.out)
    try:
        fig.canvas.draw()
        rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3]
        step = 2 ** (8 - args.bits)
        rgb = np.minimum(np.round(rgb / step) * step, 255).astype(np.uint8)
        from PIL import Image  # matplotlib depends on Pillow

        with atomic_path(out) as tmp:
            Image.fromarray(rgb).save(tmp, format="PNG", optimize=True)
    finally:
        plt.close(fig)
    print(f"wrote {out} ({os.path.getsize(out) / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
