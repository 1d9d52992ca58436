"""The step every backend shares: load a model -> eval -> ``torch.export`` at a fixed input size.

ExecuTorch and Core ML differ only in how they lower the program this module hands them. Sources:

- ``"standard"`` / ``"lightweight"``: the shipped float models (``eapnet.load_model``);
- a ``.pt`` checkpoint written by this project (a trained or ``compress/qat.py``-compressed float model);
- a ``.pt2`` int8 program written by ``compress/qat.py`` (``compress.quantize.save_quantized``).

Inputs of every exported program: ``ldrs`` ``(1, 3, 3, H, W)`` float32 gamma-encoded LDR frames in [0, 1]
(short, medium, long) and ``evs`` ``(1, 3)`` float32 exposure values in stops relative to the medium frame.
Output ``hdr`` ``(1, 3, H, W)``: HDR in the challenge's ground-truth domain (gamma-encoded with 2.24, medium-
frame units, >= 0). The size is fixed (default 1060x1900, the challenge's frames): dynamic shapes push
Core ML off the Neural Engine, and the padding to a multiple of 8 then happens inside the program.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from eapnet.cli import parse_size  # noqa: F401  (re-exported: the exporters' size type)
from eapnet.inference import example_inputs
from eapnet.macs import FRAME_SIZE
from eapnet.runs import file_sha256

__all__ = ["DEFAULT_SIZE", "ProgramModule", "Source", "load_source", "example_inputs", "export_fixed", "artifact_name",
           "file_sha256", "parse_size"]

DEFAULT_SIZE = FRAME_SIZE
"""(H, W) of exported programs unless ``--size`` says otherwise: one NTIRE frame."""


@dataclass
class Source:
    """A model ready for export. ``module(ldrs, evs) -> hdr`` (see the module docstring)."""

    module: nn.Module
    precision: str                 # "fp32" (float model) or "int8" (PT2E-converted program)
    variant: str                   # config name, e.g. "standard" or "standard-100G"
    path: str                      # the file it came from
    sha256: str                    # of that file
    config: dict = field(default_factory=dict)
    maccs: int | None = None       # NTIRE 2022 MAccs at 1060x1900
    params: int | None = None
    quant_backend: str | None = None  # the quantizer flavour of an int8 source ("xnnpack" / "coreml")


def load_source(spec: str | os.PathLike) -> Source:
    """Load ``"standard"``, ``"lightweight"``, a project ``.pt`` checkpoint or a ``compress/qat.py`` ``.pt2``."""
    from eapnet.checkpoint import SHIPPED, load_model, shipped_path
    from eapnet.macs import count_maccs, count_params

    if str(spec).endswith(".pt2"):
        from compress.quantize import load_quantized

        module, meta = load_quantized(spec)
        cfg = meta.get("config", {})
        return Source(module.eval(), "int8", cfg.get("name", Path(spec).stem), str(spec), file_sha256(spec),
                      cfg, meta.get("maccs"), meta.get("params"), meta.get("backend"))
    path = shipped_path(str(spec)) if str(spec) in SHIPPED else Path(spec)
    model = load_model(spec).float().eval()
    cfg = model.config.to_dict() if hasattr(model, "config") else {}
    return Source(model, "fp32", cfg.get("name", Path(path).stem), str(path), file_sha256(path), cfg,
                  count_maccs(model), count_params(model))


def export_fixed(module: nn.Module, size: tuple[int, int] = DEFAULT_SIZE) -> torch.export.ExportedProgram:
    """``torch.export`` of ``module`` (eval) at batch 1 and a fixed ``size`` = (H, W)."""
    if isinstance(module, nn.Module):
        module.eval()
    with torch.no_grad():
        return torch.export.export(module, example_inputs(size), strict=False)


def artifact_name(variant: str, backend: str, precision: str, size: tuple[int, int], ext: str) -> str:
    """File name that says what is inside: ``<variant>_<backend>_<precision>_<H>x<W>.<ext>``."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in variant)
    return f"{safe}_{backend}_{precision}_{size[0]}x{size[1]}.{ext}"


class ProgramModule(nn.Module):
    """A loaded program (``fn(ldrs, evs) -> hdr``: a ``.pte`` runner, an ``.mlpackage`` executor) behind the
    float model's call signature, so both go through the one inference path (``eapnet.inference.predict``,
    whole-frame or tiled)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, ldrs: torch.Tensor, evs: torch.Tensor) -> torch.Tensor:
        return self.fn(ldrs, evs)
