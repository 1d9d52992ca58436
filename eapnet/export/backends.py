"""The phone backends in one table: what each exports, from what, and how its files are run.

=========  =============  ==============  ==================  =======================================
backend    artifact keys  file            precisions shipped  exporter / opener
=========  =============  ==============  ==================  =======================================
xnnpack    ``pte-*``      ``.pte``        fp32, int8          ``eapnet.export.executorch_export``
coreml     ``coreml-*``   ``.mlpackage``  fp16, w8a8          ``eapnet.export.coreml_export``
=========  =============  ==============  ==================  =======================================

A backend's name is also its quantizer flavour (``eapnet.compress.quantize.QUANT_BACKENDS``): its int8 artifact is
made from an int8 program quantized for it (``compress/qat.py --backend``), else by post-training quantization
of the float model on ``eapnet.calib``. Adding a backend: a quantizer flavour in ``eapnet.compress.quantize``, an
exporter module with an export function ``(source, out_dir, *, precision, size) -> Path`` and an opener
``(path, *, threads) -> Artifact``, a row here and, for a new precision, a row of ``eapnet.export.parity.THRESHOLDS``.
"""
from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from eapnet.runs import file_sha256

__all__ = ["ARTIFACTS", "BACKENDS", "Artifact", "Backend", "artifact_backend", "artifact_sha256", "check_stamp",
           "open_artifact"]


@dataclass
class Artifact:
    """An exported file ready to run: ``artifact(ldrs (1, 3, 3, H, W), evs (1, 3)) -> hdr (1, 3, H, W)``
    (LDRs gamma-encoded in [0, 1], EVs in stops, output gamma-encoded HDR)."""

    path: Path
    kind: str                       # "pte" | "mlpackage"
    precision: str                  # fp32 | int8 (pte); fp32 | fp16 | int8w | w8a8 (mlpackage)
    size: tuple[int, int]           # (H, W) of the fixed input
    executor: str                   # what executes it, e.g. "reference-executed (eapnet.export.mil_interp)"
    meta: dict = field(default_factory=dict)
    run: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    sha256: str = ""                # artifact_sha256 of the file when opened
    stamp: str = "unchecked"        # check_stamp: "verified" | "unrecorded" | "mismatch" (meta is not this file's)
    warnings: list[str] = field(default_factory=list)   # check_stamp's lines

    def __call__(self, ldrs: torch.Tensor, evs: torch.Tensor) -> torch.Tensor:
        return self.run(ldrs, evs)


@dataclass(frozen=True)
class Backend:
    name: str                       # quantizer flavour and the word in file names
    key: str                        # prefix of its artifact keys (``pte-int8``)
    suffix: str                     # file suffix
    shipped: tuple[str, str]        # (float, int8) precisions the main job ships
    exporter: str                   # "module:function", (source, out_dir, *, precision, size) -> Path
    opener: str                     # "module:function", (path, *, threads) -> Artifact
    hasher: str = ""                # "module:function", (path) -> hex sha256 of the content; "" = the file's bytes

    def export(self, source, out_dir: str | os.PathLike, *, precision: str, size: tuple[int, int]) -> Path:
        return _function(self.exporter)(source, out_dir, precision=precision, size=size)

    def open(self, path: Path, *, threads: int | None = None) -> Artifact:
        return _function(self.opener)(path, threads=threads)


def _function(spec: str):
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)   # imported on use: each backend's stack is heavy


BACKENDS: dict[str, Backend] = {b.name: b for b in (
    Backend("xnnpack", "pte", ".pte", ("fp32", "int8"),
            "eapnet.export.executorch_export:export_pte", "eapnet.export.executorch_export:open_pte"),
    Backend("coreml", "coreml", ".mlpackage", ("fp16", "w8a8"),
            "eapnet.export.coreml_export:export_mlpackage", "eapnet.export.coreml_export:open_mlpackage",
            "eapnet.export.coreml_export:package_sha256"),
)}

ARTIFACTS: tuple[str, ...] = tuple(f"{b.key}-{p}" for b in BACKENDS.values() for p in b.shipped)
"""Keys of the artifacts the main job ships: ``pte-fp32``, ``pte-int8``, ``coreml-fp16``, ``coreml-w8a8``."""


def artifact_backend(key: str) -> tuple[Backend, str]:
    """``(backend, precision)`` of an artifact key of :data:`ARTIFACTS`."""
    for b in BACKENDS.values():
        for p in b.shipped:
            if key == f"{b.key}-{p}":
                return b, p
    raise ValueError(f"unknown artifact {key!r}; choose from {list(ARTIFACTS)}")


def artifact_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of an artifact's own content, the hash its export and parity stamps record: the ``hasher``
    of the backend its suffix names (``.pte``: the file's bytes; ``.mlpackage``:
    :func:`eapnet.export.coreml_export.package_sha256`, which leaves out the metadata the stamps live in)."""
    path = Path(path)
    backend = next((b for b in BACKENDS.values() if b.suffix == path.suffix), None)
    if backend is None or not backend.hasher:
        return file_sha256(path)
    return _function(backend.hasher)(path)


def check_stamp(path: str | os.PathLike, meta: dict, sha256: str | None = None) -> tuple[str, list[str]]:
    """``(state, warning lines)`` of the hashes that ``meta`` (sidecar / metadata) records for the artifact at
    ``path`` (``sha256``: its :func:`artifact_sha256`, computed when not given).

    ``"verified"``: the export's ``artifact_sha256`` is the file's. ``"unrecorded"``: none is recorded (an export
    from before artifacts were hashed): a warning, the claims are taken as they are. ``"mismatch"``: the file is
    not the one exported with this sidecar / metadata (replaced, or its weights changed since), so none of its
    claims (source, precision, parity) describe it. A parity stamp measured on another file adds a warning."""
    path = Path(path)
    sha = sha256 or artifact_sha256(path)
    recorded = meta.get("artifact_sha256")
    lines = []
    if recorded is None:
        state = "unrecorded"
        lines.append(f"{path.name}: no artifact sha256 recorded (exported before artifacts were hashed): its "
                     f"recorded source and parity cannot be checked against the file; export it again")
    elif recorded != sha:
        state = "mismatch"
        lines.append(f"STAMP MISMATCH {path.name}: its {'metadata' if path.is_dir() else 'sidecar'} records "
                     f"artifact sha256 {recorded[:12]}..., the file is {sha[:12]}...: the recorded source and parity "
                     f"do not describe this file")
    else:
        state = "verified"
    stamp = meta.get("parity")
    if isinstance(stamp, str):   # .mlpackage metadata holds JSON strings ("pending" before any parity run)
        try:
            stamp = json.loads(stamp)
        except ValueError:
            stamp = None
    if isinstance(stamp, dict) and stamp.get("artifact_sha256") not in (None, sha):
        lines.append(f"STALE PARITY {path.name}: its parity stamp ({stamp.get('measured', '?')}) was measured on "
                     f"another file (sha256 {stamp['artifact_sha256'][:12]}...): it says nothing about this one")
    return state, lines


def open_artifact(path: str | os.PathLike, *, threads: int | None = None) -> Artifact:
    """Open an exported file for execution with its backend (chosen by suffix), its stamp checked
    (:func:`check_stamp`: ``Artifact.sha256``, ``stamp``, ``warnings``).

    Raises ``FileNotFoundError`` for a missing path, ``ValueError`` for anything else than our artifacts
    (unknown suffix, no sidecar/metadata, an unloadable program)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no artifact at {path}")
    for b in BACKENDS.values():
        if path.suffix == b.suffix:
            art = b.open(path, threads=threads)
            art.sha256 = artifact_sha256(path)
            art.stamp, art.warnings = check_stamp(path, art.meta, art.sha256)
            return art
    raise ValueError(f"{path}: not an exported artifact (want one of "
                     f"{', '.join(b.suffix for b in BACKENDS.values())})")
