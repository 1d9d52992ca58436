"""Block ablation: what each part of a trained EAPNet adds, measured by turning it off (no retraining).

The command line is :mod:`eapnet.ablate` (``eapnet-ablate``).

Ablations, each applied to a copy of the model:

- ``pdub<i> -> identity``: progressive block ``i`` returns its input (its residual branch is dropped); its
  output still feeds the global fusion, as the block's input would;
- ``all PDUBs -> identity``: every block at once;
- ``attention bypassed``: every attention gate is 1 (the frame's features pass unchanged);
- ``alignment bypassed``: every alignment returns the frame's features unchanged;
- ``residual off``: the network's whole correction dropped, i.e. the radiance-merge base alone.

Scores: PSNR-μ on the held-out synthetic set (whole frame and inside the moving regions) and on the real
crops, through the one inference path. A block worth keeping costs PSNR when removed; a block whose removal
costs nothing is dead weight that compression will remove for free. The same table goes into the model card.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

from torch import nn
from tqdm import tqdm

from eapnet.data import SceneSource
from eapnet.evalsets import score
from eapnet.model import EAPNet


class _Passthrough(nn.Module):
    """Stands in for an attention or alignment module: ``(f, ref) -> f``."""

    def forward(self, f, ref):
        return f


class _ZeroResidual(nn.Module):
    """Stands in for ``EAPNet.residual``'s output conv: a zero correction of the right shape."""

    def forward(self, x):
        return x.new_zeros(x.shape[0], 3, x.shape[2], x.shape[3])


def block_identity(model: EAPNet, indices: Sequence[int]) -> EAPNet:
    """A copy of ``model`` whose progressive blocks ``indices`` return their input."""
    m = copy.deepcopy(model)
    for i in indices:
        if not 0 <= i < len(m.blocks):
            raise ValueError(f"block {i} does not exist: the model has {len(m.blocks)} blocks")
        m.blocks[i] = nn.Identity()
    return m


def bypass(model: EAPNet, what: str) -> EAPNet:
    """A copy of ``model`` with every ``"attention"`` or ``"alignment"`` module passing features through."""
    m = copy.deepcopy(model)
    if what not in ("attention", "alignment"):
        raise ValueError(f"can bypass attention or alignment, not {what!r}")
    groups = getattr(m, what)
    if groups is None:
        raise ValueError(f"the model has no {what} modules (config align={m.config.align!r})")
    for per_frame in groups:
        for s in range(len(per_frame)):
            per_frame[s] = _Passthrough()
    return m


def residual_off(model: EAPNet) -> EAPNet:
    """A copy of ``model`` whose learned correction is zero: its base (radiance merge or reference) alone."""
    m = copy.deepcopy(model)
    m.out = _ZeroResidual()
    return m


def ablations(model: EAPNet) -> dict[str, Callable[[], EAPNet]]:
    """``{label: builder}`` of every ablation that applies to ``model`` (see the module docstring)."""
    out: dict[str, Callable[[], EAPNet]] = {"full model": lambda: model}
    if model.config.block == "pdub":
        n = len(model.blocks)
        for i in range(n):
            out[f"pdub{i} -> identity"] = lambda i=i: block_identity(model, [i])
        out["all PDUBs -> identity"] = lambda: block_identity(model, range(n))
    out["attention bypassed"] = lambda: bypass(model, "attention")
    if model.alignment is not None:
        out["alignment bypassed"] = lambda: bypass(model, "alignment")
    out["residual off (base only)"] = lambda: residual_off(model)
    return out


def ablation_table(model: EAPNet, datasets: dict[str, Sequence[SceneSource]], progress: bool = False) -> dict:
    """Score every ablation on ``datasets`` (``{name: [eapnet.data.Scene]}``, materialised: each scene is scored
    once per ablation).

    Returns ``{"rows": [{"ablation", "<dataset>": {"psnr_mu", "psnr_mu_motion"?}}], "datasets": [...]}``;
    PSNR-μ in dB, means over scenes (``psnr_mu_motion`` over the scenes that have moving regions)."""
    rows = []
    todo = ablations(model)
    bar = tqdm(total=len(todo) * len(datasets), desc="ablate", disable=not progress)
    for label, build in todo.items():
        m = build().eval()
        row: dict = {"ablation": label}
        for d, scenes in datasets.items():
            means = score(m, scenes, dataset=f"{d}/{label}")
            row[d] = {k: means[k] for k in ("psnr_mu", "psnr_mu_motion") if k in means}
            bar.update(1)
        rows.append(row)
    bar.close()
    return {"rows": rows, "datasets": list(datasets)}


def table_markdown(result: dict) -> list[str]:
    """Markdown lines: PSNR-μ per ablation and dataset, with the change against the full model."""
    ds = result["datasets"]
    cols = []
    for d in ds:
        cols.append((d, "psnr_mu", f"{d} PSNR-μ"))
        if any("psnr_mu_motion" in r[d] for r in result["rows"]):
            cols.append((d, "psnr_mu_motion", f"{d} PSNR-μ (moving)"))
    full = result["rows"][0]
    lines = ["| ablation | " + " | ".join(c[2] for c in cols) + " |", "|---|" + "---:|" * len(cols)]
    for r in result["rows"]:
        cells = []
        for d, k, _ in cols:
            v = r[d].get(k)
            if v is None:
                cells.append("–")
            elif r is full:
                cells.append(f"{v:.2f}")
            else:
                cells.append(f"{v:.2f} ({v - full[d][k]:+.2f})")
        lines.append(f"| {r['ablation']} | " + " | ".join(cells) + " |")
    return lines
