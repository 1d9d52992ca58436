"""The step every backend shares: load a model -> eval -> ``torch.export`` at a fixed input size.

ExecuTorch and Core ML differ only in how they lower the program this module hands them. Sources:

- ``"standard"`` / ``"lightweight"``: the shipped float models (``eapnet.load_model``);
- a ``.pt`` checkpoint written by this project (a trained or ``compress/qat.py``-compressed float model);
- a ``.pt2`` int8 program written by ``compress/qat.py`` (``eapnet.compress.quantize.save_quantized``).

Inputs of every exported program: ``ldrs`` ``(1, 3, 3, H, W)`` float32 gamma-encoded LDR frames in [0, 1]
(short, medium, long) and ``evs`` ``(1, 3)`` float32 exposure values in stops relative to the medium frame.
Output ``hdr`` ``(1, 3, H, W)``: HDR in the challenge's ground-truth domain (gamma-encoded with 2.24, medium-
frame units, >= 0). The size is fixed (default 1060x1900, the challenge's frames): dynamic shapes push
Core ML off the Neural Engine, and the padding to a multiple of 8 then happens inside the program.

Two input/output conventions (``io``), one network:

- ``"float"`` (research): as above, the model's own call signature.
- ``"app"`` (:class:`AppIO`): what a capture pipeline hands over. ``frames`` ``(3, H, W, 3)`` uint8, the short,
  medium and long frame as interleaved 8-bit RGB rows (the layout a decoder or camera buffer gives), and
  ``evs`` ``(3,)`` float32 stops relative to the medium frame; output ``hdr`` ``(H, W, 3)`` float32,
  interleaved RGB in the same domain as above. The conversion ``code / 255`` and the layout change happen
  inside the program, so the app copies bytes and nothing else.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from eapnet.checkpoint import SHIPPED, load_model, shipped_path
from eapnet.cli import parse_size  # noqa: F401  (re-exported: the exporters' size type)
from eapnet.compress.quantize import load_quantized
from eapnet.inference import example_inputs
from eapnet.macs import FRAME_SIZE, count_maccs, count_params
from eapnet.runs import file_sha256

__all__ = ["APP_IO", "DEFAULT_SIZE", "IO", "AppIO", "ProgramModule", "app_example_inputs", "with_io", "Source", "load_source", "example_inputs", "export_fixed", "artifact_name",
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
    float_groups: tuple[str, ...] = ()   # an int8 source's layer groups kept in float (mixed-precision fallback)
    fallback: dict | None = None   # the fallback search's record, where this process ran it


def load_source(spec: str | os.PathLike) -> Source:
    """Load ``"standard"``, ``"lightweight"``, a project ``.pt`` checkpoint or a ``compress/qat.py`` ``.pt2``."""
    if str(spec).endswith(".pt2"):
        module, meta = load_quantized(spec)
        cfg = meta.get("config", {})
        return Source(module.eval(), "int8", cfg.get("name", Path(spec).stem), str(spec), file_sha256(spec),
                      cfg, meta.get("maccs"), meta.get("params"), meta.get("backend"),
                      tuple(meta.get("float_groups", ())))
    path = shipped_path(str(spec)) if str(spec) in SHIPPED else Path(spec)
    model = load_model(spec).float().eval()
    cfg = model.config.to_dict() if hasattr(model, "config") else {}
    return Source(model, "fp32", cfg.get("name", Path(path).stem), str(path), file_sha256(path), cfg,
                  count_maccs(model), count_params(model))


IO = ("float", "app")
"""Input/output conventions of an exported program (module docstring)."""
APP_IO = "app"


class AppIO(nn.Module):
    """``model`` behind the app convention: ``(frames (3, H, W, 3) uint8, evs (3,) float32) -> hdr (H, W, 3)``
    float32 (module docstring). ``model`` takes ``(ldrs (1, 3, 3, H, W) in [0, 1], evs (1, 3))``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor, evs: torch.Tensor) -> torch.Tensor:
        ldrs = (frames.to(torch.float32) * (1.0 / 255.0)).permute(0, 3, 1, 2).unsqueeze(0)
        return self.model(ldrs, evs.reshape(1, 3))[0].permute(1, 2, 0)


def app_example_inputs(size: tuple[int, int] = (64, 64), seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic inputs of an app program: ``frames`` ``(3, H, W, 3)`` uint8 codes of
    :func:`example_inputs`'s frames and ``evs`` ``(3,)`` = [-2, 0, 2]."""
    ldrs, evs = example_inputs(size, seed=seed)
    frames = (ldrs[0] * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    return frames, evs[0]


def with_io(module: nn.Module, io: str) -> nn.Module:
    """``module`` as a program of convention ``io`` (:data:`IO`); ValueError naming ``io`` otherwise."""
    if io not in IO:
        raise ValueError(f"io must be one of {IO}, got {io!r}")
    return AppIO(module) if io == APP_IO else module


def export_fixed(module: nn.Module, size: tuple[int, int] = DEFAULT_SIZE,
                 io: str = "float") -> torch.export.ExportedProgram:
    """``torch.export`` of ``module`` (eval) at batch 1 and a fixed ``size`` = (H, W), in convention ``io``."""
    if isinstance(module, nn.Module):
        module.eval()
    program = with_io(module, io).eval()
    inputs = app_example_inputs(size) if io == APP_IO else example_inputs(size)
    with torch.no_grad():
        return torch.export.export(program, inputs, strict=False)


def artifact_name(variant: str, backend: str, precision: str, size: tuple[int, int], ext: str,
                  io: str = "float") -> str:
    """File name that says what is inside: ``<variant>_<backend>_<precision>_<H>x<W>.<ext>``; an ``io="app"``
    program's variant gets the suffix ``_app`` (``<variant>_app_<backend>_...``)."""
    if io not in IO:
        raise ValueError(f"io must be one of {IO}, got {io!r}")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in variant) + ("_app" if io == APP_IO else "")
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
