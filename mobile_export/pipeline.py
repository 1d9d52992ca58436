"""The phone artifacts of one compressed variant: export the four files ``compress/qat.py`` ships.

    from mobile_export.pipeline import export_variant
    files = export_variant("runs/c/compressed.pt", "runs/c/int8.pt2", "runs/c/export", size=(1060, 1900))

=================  ===================================  ==============================================
key                file                                 made from
=================  ===================================  ==============================================
``pte-fp32``       ``<variant>_xnnpack_fp32_HxW.pte``    the float checkpoint
``pte-int8``       ``<variant>_xnnpack_int8_HxW.pte``    the int8 program if quantized for XNNPACK (QAT),
                                                        else PTQ of the float model on ``calib_data``
``coreml-fp16``    ``<variant>_coreml_fp16_HxW.mlpackage`` the float checkpoint
``coreml-w8a8``    ``<variant>_coreml_w8a8_HxW.mlpackage`` the int8 program if quantized for Core ML (QAT),
                                                        else PTQ of the float model on ``calib_data``
=================  ===================================  ==============================================

So the quantizer flavour ``compress/qat.py --backend`` trained with gets its QAT weights, the other backend a
post-training quantization of the same float model; the parity harness (``mobile_export.parity``) then shows
whether that is enough. Every file is written atomically by its exporter.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from mobile_export.common import DEFAULT_SIZE

__all__ = ["ARTIFACTS", "export_variant"]

ARTIFACTS = ("pte-fp32", "pte-int8", "coreml-fp16", "coreml-w8a8")


def export_variant(float_ckpt: str | os.PathLike, int8_program: str | os.PathLike | None,
                   out_dir: str | os.PathLike, *, size: tuple[int, int] = DEFAULT_SIZE,
                   which: tuple[str, ...] = ARTIFACTS, log=print) -> tuple[dict[str, Path], dict[str, float]]:
    """Write the artifacts ``which`` (keys of :data:`ARTIFACTS`) of one variant into ``out_dir``.

    ``float_ckpt``: the variant's float ``.pt``; ``int8_program``: its ``.pt2`` from ``compress/qat.py`` (or
    None: both int8 artifacts by PTQ). ``size``: (H, W) of the fixed input in pixels. Returns ``({key: path},
    {key: seconds})``."""
    from mobile_export.common import load_source
    from mobile_export.coreml_export import export_mlpackage
    from mobile_export.executorch_export import export_pte

    unknown = sorted(set(which) - set(ARTIFACTS))
    if unknown:
        raise ValueError(f"unknown artifact(s) {unknown}; choose from {list(ARTIFACTS)}")
    fp = load_source(float_ckpt)
    q = load_source(int8_program) if int8_program is not None else None
    out_dir = Path(out_dir)
    jobs = {
        "pte-fp32": lambda: export_pte(fp, out_dir, size=size),
        "pte-int8": lambda: (export_pte(q, out_dir, size=size) if q is not None and q.quant_backend == "xnnpack"
                             else export_pte(fp, out_dir, size=size, precision="int8")),
        "coreml-fp16": lambda: export_mlpackage(fp, out_dir, precision="fp16", size=size),
        "coreml-w8a8": lambda: export_mlpackage(q if q is not None and q.quant_backend == "coreml" else fp,
                                                out_dir, precision="w8a8", size=size),
    }
    paths, seconds = {}, {}
    for key in (k for k in ARTIFACTS if k in which):
        t = time.time()
        paths[key] = jobs[key]()
        seconds[key] = round(time.time() - t, 1)
        log(f"exported {paths[key].name} in {seconds[key]:.0f} s")
    return paths, seconds
