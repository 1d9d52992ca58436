"""Core ML export: EAPNet -> ``.mlpackage`` (ML Program, iOS 17+), at a fixed input size.

The library (:func:`export_mlpackage`, :func:`to_mlmodel`, :func:`read_metadata`, :func:`set_metadata`,
:func:`open_mlpackage`); the command line is :mod:`eapnet.export.export_coreml` (``eapnet-export-coreml``).

The shared step (``eapnet.export.common``: load -> eval -> ``torch.export`` at a fixed size) hands this module
an ``ExportedProgram``; ``run_decompositions({})`` brings it to the ATen op set coremltools 9.0 reads, and
``ct.convert`` lowers it to an ML Program. Precisions (``PRECISIONS``):

- ``fp16``: float16 compute and weights (``compute_precision=FLOAT16``): what the Neural Engine runs.
- ``int8w``: the fp16 program with every conv and transposed-conv weight stored as int8, symmetric, per output
  channel (``coremltools.optimize.coreml.linear_quantize_weights``, ``linear_symmetric``, no size threshold);
  weights are dequantized at load, compute stays fp16. About half the fp16 package size.
- ``w8a8``: int8 weights and int8/uint8 activations (quantize/dequantize pairs around every conv). From an int8
  ``.pt2`` made with the Core ML quantizer flavour (``compress/qat.py --backend coreml``), its Q/DQ program is
  converted as is; from a float model, post-training quantization with the same quantizer
  (``eapnet.compress.quantize.prepare_ptq(model, "coreml", ...)``, range-equalised first: ``eapnet.compress.equalise``) on
  scenes of ``eapnet.calib`` first. Why not
  ``coremltools.optimize.coreml.linear_quantize_activations``: in coremltools 9.0 it calibrates by running the
  Core ML model (``MLModel.predict`` on intermediate outputs), which exists only on macOS; the PT2E route works
  on any machine and leaves a PyTorch int8 model to check the package against.
- ``fp32``: float32 compute, a reference for debugging the conversion (not a deployment target).

Interface of a package, by input/output convention (``io``, ``eapnet.export.common.IO``; the manifest's tables,
``eapnet.export.manifest.interface``, are the reference):

- ``"float"``: inputs ``ldrs`` (1, 3, 3, H, W) float32 gamma-encoded LDR frames in [0, 1] (short, medium, long)
  and ``evs`` (1, 3) float32 stops relative to the medium frame; output ``hdr`` (1, 3, H, W) float32,
  gamma-encoded HDR (medium-frame units, >= 0).
- ``"app"``: three RGB images ``short``, ``medium``, ``long`` (``ct.ImageType``, H x W, scale 1/255 inside the
  program) and ``evs`` (3,) float32; output ``hdr`` (H, W, 3) float32, interleaved RGB, same domain. Images
  because an app's frames are 8-bit RGB and Core ML takes no uint8 tensors (multi-arrays are fp16, fp32, fp64,
  int32, int8 only from iOS 26): a multi-array would make the app convert every byte to fp16/fp32 itself, an
  image takes the camera's or decoder's CVPixelBuffer (32BGRA / 32ARGB) as it is, and Core ML converts it to
  RGB planes. Checked: coremltools 9.0 converts it from ``torch.export`` (the image arrives in ``main`` as a
  (1, 3, H, W) float32 tensor of codes, followed by the scale ``mul``), and ``eapnet.export.mil_interp``
  executes it (tiny model, fp16, 32x48: max 1.2e-3, mean 1.9e-4 against the float model on the same codes).
  Artifact names carry ``_app`` after the variant.

Outputs stay float32 at every precision (an fp16 program casts inside): one output type for every app and both
backends. Metadata (``user_defined_metadata``): variant, io, maccs (NTIRE 2022 MAccs at 1060x1900), params,
source file and its sha256, precision, size, ``artifact_sha256`` (the package's own content hash, metadata left out:
``eapnet.export.backends.artifact_sha256``) and ``parity`` ("pending" until the parity harness writes it with
:func:`set_metadata`). Packages are written atomically: built beside the target, then renamed into place, and
``X.manifest.json`` beside each (``eapnet.export.manifest``).

Core ML prediction needs macOS; ``eapnet.export.mil_interp`` reference-executes a package anywhere.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import stat
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from eapnet.evalsets import CALIBRATION_SCENES, calibration_batches
from eapnet.runs import atomic_write_bytes, file_sha256

from eapnet.export.common import (
    APP_IO,
    DEFAULT_SIZE,
    IO,
    Source,
    app_example_inputs,
    artifact_name,
    export_fixed,
    load_source,
    parse_size,
)
from eapnet.compress.quantize import Padded, convert, prepare_ptq
from eapnet.export.backends import Artifact
from eapnet.export.manifest import build_manifest, interface, write_manifest
from eapnet.export.mil_interp import load_program

__all__ = [
    "DEPLOYMENT_TARGET",
    "IMAGE_INPUTS",
    "PRECISIONS",
    "ImageAppIO",
    "coreml_runtime",
    "export_mlpackage",
    "open_mlpackage",
    "package_name",
    "read_metadata",
    "set_metadata",
    "to_mlmodel",
]

PRECISIONS = ("fp16", "int8w", "w8a8", "fp32")
"""Calibration scenes (of ``eapnet.calib``'s 32) for w8a8 post-training quantization of a float model."""
MACCS_AT = "1060x1900"   # the resolution of Source.maccs (NTIRE 2022 convention)
PARITY_PENDING = "pending"
DEPLOYMENT_TARGET = "iOS17"
"""``minimum_deployment_target`` asked of the converter (a ``coremltools.target`` name)."""
IMAGE_INPUTS = ("short", "medium", "long")
"""Names of the three image inputs of an app package, in bracket order."""


# ------------------------------------------------------------------------------------------ conversion


class ImageAppIO(torch.nn.Module):
    """``model`` behind the Core ML app convention: ``(short, medium, long (1, 3, H, W) in [0, 1], evs (3,))
    -> hdr (H, W, 3)``. Each image is what Core ML makes of an 8-bit RGB image after the ImageType's scale
    1/255 (codes / 255); ``model`` takes ``(ldrs (1, 3, 3, H, W), evs (1, 3))``."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, short, medium, long, evs):
        ldrs = torch.stack([short, medium, long], dim=1)
        return self.model(ldrs, evs.reshape(1, 3))[0].permute(1, 2, 0)


def _export(module: torch.nn.Module, size: tuple[int, int], io: str) -> torch.export.ExportedProgram:
    if io != APP_IO:
        return export_fixed(module, size)
    module.eval()
    frames, evs = app_example_inputs(size)
    images = tuple((f.permute(2, 0, 1)[None].float() / 255).contiguous() for f in frames)   # (1, 3, H, W) each
    with torch.no_grad():
        return torch.export.export(ImageAppIO(module).eval(), (*images, evs), strict=False)


def _coreml_program(module: torch.nn.Module, size: tuple[int, int], io: str = "float") -> torch.export.ExportedProgram:
    """The fixed-size export in convention ``io``, decomposed to the ATen ops coremltools 9.0 reads."""
    ep = _export(module, size, io).run_decompositions({})
    # An identity crop (H, W already multiples of the model's padding) exports as aten.alias, which coremltools
    # 9.0 has no converter for; its functional twin alias_copy is a registered no-op.
    changed = False
    for node in ep.graph.nodes:
        if node.op == "call_function" and node.target is torch.ops.aten.alias.default:
            node.target = torch.ops.aten.alias_copy.default
            changed = True
    if changed:
        ep.graph_module.recompile()
    return ep


def _convert(program: torch.export.ExportedProgram, size: tuple[int, int], compute_precision, io: str = "float"):
    import coremltools as ct

    h, w = size
    # Fresh input types on every call: ct.convert mutates the ones it is given.
    if io == APP_IO:
        inputs = [ct.ImageType(name=n, shape=(1, 3, h, w), scale=1 / 255, color_layout=ct.colorlayout.RGB)
                  for n in IMAGE_INPUTS]
        inputs.append(ct.TensorType(name="evs", shape=(3,), dtype=np.float32))
    else:
        inputs = [ct.TensorType(name="ldrs", shape=(1, 3, 3, h, w), dtype=np.float32),
                  ct.TensorType(name="evs", shape=(1, 3), dtype=np.float32)]
    outputs = [ct.TensorType(name="hdr", dtype=np.float32)]
    return ct.convert(program, inputs=inputs, outputs=outputs, convert_to="mlprogram",
                      minimum_deployment_target=getattr(ct.target, DEPLOYMENT_TARGET),
                      compute_precision=compute_precision, skip_model_load=True)


def _int8_weights(mlmodel):
    """Every conv / transposed-conv weight as int8 (symmetric, per output channel); compute unchanged."""
    import coremltools.optimize.coreml as cto

    # weight_threshold=0: also the small depthwise kernels (coremltools' default 2048 would keep them fp16).
    # Biases (rank 1) are never quantized by coremltools.
    op = cto.OpLinearQuantizerConfig(mode="linear_symmetric", weight_threshold=0)
    return cto.linear_quantize_weights(mlmodel, cto.OptimizationConfig(global_config=op))


def _calibration_batches(calib) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``calib``: None (``CALIBRATION_SCENES`` scenes of ``eapnet.calib``), a scene count, or ``(ldrs, evs)``
    batches."""
    if calib is None or isinstance(calib, int):
        n = CALIBRATION_SCENES if calib is None else calib
        if n < 1:
            raise ValueError(f"need at least one calibration scene, got {n}")
        return calibration_batches(limit=n)
    batches = list(calib)
    if not batches:
        raise ValueError("calib holds no batches")
    return batches


def _w8a8_module(src: Source, calib) -> tuple[torch.nn.Module, str]:
    """The PT2E Q/DQ int8 model to convert, and a line on where it came from."""
    if src.precision == "int8":
        if src.quant_backend != "coreml":
            raise ValueError(f"{src.path} was quantized with the {src.quant_backend!r} quantizer flavour; Core ML "
                             f"w8a8 needs the Core ML one (compress/qat.py --backend coreml), or a float source")
        return src.module, "PT2E int8 program (Core ML quantizer)"

    batches = _calibration_batches(calib)
    where = "scenes of eapnet/calib/default" if calib is None or isinstance(calib, int) else "batches"
    quantized = convert(prepare_ptq(src.module, "coreml", batches))
    return Padded(quantized), (f"PT2E post-training quantization (Core ML quantizer: min/max weights, histogram "
                               f"activations) on {len(batches)} {where}")


def to_mlmodel(source: Source, precision: str = "fp16", size: tuple[int, int] = DEFAULT_SIZE, calib=None,
               io: str = "float"):
    """The converted ``ct.models.MLModel`` of ``source`` in convention ``io`` (metadata set, nothing written);
    see the module doc."""
    import coremltools as ct

    _check(source, precision, size, io)
    notes = {}
    if precision == "w8a8":
        module, notes["quantization"] = _w8a8_module(source, calib)
        mlmodel = _convert(_coreml_program(module, size, io), size, ct.precision.FLOAT16, io)
    else:
        fp = ct.precision.FLOAT32 if precision == "fp32" else ct.precision.FLOAT16
        mlmodel = _convert(_coreml_program(source.module, size, io), size, fp, io)
        if precision == "int8w":
            mlmodel = _int8_weights(mlmodel)
            notes["quantization"] = "int8 weights (linear_symmetric, per channel), fp16 compute"
    h, w = size
    meta = {
        "variant": source.variant,
        "io": io,
        "maccs": "unknown" if source.maccs is None else str(int(source.maccs)),
        "maccs_at": MACCS_AT,
        "params": "unknown" if source.params is None else str(int(source.params)),
        "source": Path(source.path).name,
        "source_sha256": source.sha256,
        "source_precision": source.precision,
        "precision": precision,
        "size": f"{h}x{w}",
        "parity": PARITY_PENDING,
        **notes,
    }
    mlmodel.user_defined_metadata.update(meta)
    mlmodel.short_description = (f"EAPNet {source.variant}, {precision}, {h}x{w}, {io} I/O: three exposures -> HDR "
                                 f"(gamma 2.24, medium-frame units); see the .manifest.json beside it")
    inputs, output = interface(io, size, "coreml")
    for entry in inputs:
        mlmodel.input_description[entry["name"]] = _describe(entry)
    mlmodel.output_description["hdr"] = _describe(output) + f"; {output['domain']['units']}"
    return mlmodel


def _describe(entry: dict) -> str:
    """One line of a manifest input/output entry for Xcode's model view."""
    rng = f" in [{entry['range'][0]:g}, {entry['range'][1]:g}]" if "range" in entry else ""
    return f"{entry['dtype']} {tuple(entry['shape'])} ({entry['layout']}){rng}: {entry['meaning']}"


def _check(source: Source, precision: str, size, io: str = "float") -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if io not in IO:
        raise ValueError(f"io must be one of {IO}, got {io!r}")
    if source.precision == "int8" and precision != "w8a8":
        raise ValueError(f"{source.path} is an int8 program: it converts to w8a8 only, not {precision}")
    if (len(size) != 2 or not all(isinstance(v, int | np.integer) for v in size) or min(size) < 16):
        raise ValueError(f"size must be (H, W) in pixels, each at least 16, got {size!r}")


def package_name(variant: str, precision: str, size: tuple[int, int], io: str = "float") -> str:
    """``<variant>[_app]_coreml_<precision>_<H>x<W>.mlpackage`` (``eapnet.export.common.artifact_name``: an
    app-convention program's variant carries ``_app``, as on the ExecuTorch side)."""
    return artifact_name(variant, "coreml", precision, size, "mlpackage", io)


def coreml_runtime(path: str | os.PathLike, precision: str) -> dict:
    """The manifest's ``runtime`` of the package at ``path``: the coremltools that converted it, the oldest OS
    its spec version runs on (the converter may raise it above :data:`DEPLOYMENT_TARGET` for an op), and the
    compute units to load it with (``all``, which lets Core ML use the Neural Engine, for the fp16-compute
    precisions; the Neural Engine runs no fp32, so ``cpuAndGPU`` for fp32)."""
    import coremltools as ct
    from coremltools.proto import Model_pb2

    spec = Model_pb2.Model()
    spec.ParseFromString(_spec_file(path).read_bytes())
    try:
        target = ct.target(spec.specificationVersion).name
    except ValueError:
        target = f"specification version {spec.specificationVersion}"
    return {"coremltools": ct.__version__, "minimum_deployment_target": target,
            "specification_version": int(spec.specificationVersion),
            "compute_units": "cpuAndGPU" if precision == "fp32" else "all",
            "compute_precision": "fp32" if precision == "fp32" else "fp16"}


def export_mlpackage(source: Source | str | os.PathLike, out_dir: str | os.PathLike, *, precision: str = "fp16",
                     size: tuple[int, int] | str = DEFAULT_SIZE, calib=None, io: str = "float") -> Path:
    """Convert ``source`` and write ``out_dir/`` :func:`package_name` and its ``.manifest.json``; returns the
    package's path.

    ``source``: a :class:`~eapnet.export.common.Source`, or anything ``load_source`` takes ("standard",
    "lightweight", a ``.pt`` checkpoint, a ``.pt2`` int8 program). ``precision``: one of ``PRECISIONS`` (an int8
    source converts to ``w8a8`` only, and only if made with the Core ML quantizer). ``size``: (H, W) or "HxW".
    ``calib`` (w8a8 from a float source): None for ``CALIBRATION_SCENES`` scenes of ``eapnet.calib``, a scene count,
    or a list of ``(ldrs (B, 3, 3, H, W), evs (B, 3))`` batches. ``io``: ``"float"`` or ``"app"`` (module doc).

    Atomic: the package is built in a temporary folder beside the target and renamed over it; a failure leaves
    neither a partial package nor the temporary folder (an existing package of that name stays as it was). The
    manifest is written (atomically) once the package is in place.
    """
    src = source if isinstance(source, Source) else load_source(source)
    size = parse_size(size) if isinstance(size, str) else tuple(size)
    mlmodel = to_mlmodel(src, precision, size, calib, io)
    path = Path(out_dir) / package_name(src.variant, precision, size, io)
    _save_atomic(mlmodel, path)
    write_manifest(path, build_manifest(path, backend="coreml", precision=precision, io=io, size=size, source=src,
                                        runtime=coreml_runtime(path, precision)))
    return path


def _save_atomic(mlmodel, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        staged = tmp / path.name
        mlmodel.save(str(staged))
        set_metadata(staged, artifact_sha256=package_sha256(staged))   # metadata is outside the hash
        if path.exists():
            # An .mlpackage is a folder: os.replace cannot overwrite a non-empty one. Move the old one aside
            # (same folder, a rename) and put it back if the second rename fails.
            os.replace(path, tmp / "previous")
            try:
                os.replace(staged, path)
            except OSError:
                os.replace(tmp / "previous", path)
                raise
        else:
            os.replace(staged, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------------------------------ metadata


MAX_PACKAGE_BYTES = 4 << 30
"""Largest ``.mlpackage`` read (4 GiB of files; a standard EAPNet package is about 1 MB)."""


def _check_package_files(path: Path) -> None:
    """``ValueError`` unless every entry below the package is a plain file or folder, none a link or device, and
    together at most :data:`MAX_PACKAGE_BYTES`: a package from someone else must not lead a reader to files
    outside it (a weight file linked to ``/etc/shadow``) or into an endless read (one linked to ``/dev/zero``)."""
    total = 0
    for root, dirs, files in os.walk(path, followlinks=False):
        for name in dirs + files:
            entry = Path(root) / name
            st = entry.lstat()
            if entry.is_symlink() or not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                raise ValueError(f"{path}: refused: {entry.relative_to(path)} is a link or special file, not a "
                                 "plain file of the package")
            total += st.st_size if stat.S_ISREG(st.st_mode) else 0
    if total > MAX_PACKAGE_BYTES:
        raise ValueError(f"{path}: refused: {total / 2**30:.1f} GiB of files, more than the "
                         f"{MAX_PACKAGE_BYTES >> 30} GiB an EAPNet package can need")


def _spec_file(path: str | os.PathLike) -> Path:
    """The protobuf spec file inside an ``.mlpackage`` (its manifest's root model)."""
    path = Path(path)
    if not (path / "Manifest.json").is_file():
        raise FileNotFoundError(f"{path} is not an .mlpackage (no Manifest.json)")
    _check_package_files(path)
    from coremltools.libmodelpackage import ModelPackage

    return Path(ModelPackage(str(path)).getRootModel().path())


def package_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of an ``.mlpackage``'s content: its spec without ``description.metadata``, serialized
    deterministically, then every file under the spec's ``weights/`` folder (relative path and sha256 of its
    bytes, in path order). Metadata is left out because the export and parity stamps live there
    (:func:`set_metadata` rewrites only ``description.metadata.userDefined``); the program, its inputs and
    outputs and its weights are in."""
    from coremltools.proto import Model_pb2

    spec_path = _spec_file(path)
    spec = Model_pb2.Model()
    spec.ParseFromString(spec_path.read_bytes())
    spec.description.ClearField("metadata")
    h = hashlib.sha256(spec.SerializeToString(deterministic=True))
    weights = spec_path.parent / "weights"
    for f in sorted(p for p in weights.rglob("*") if p.is_file()):
        h.update(f"\0{f.relative_to(weights).as_posix()}\0{file_sha256(f)}".encode())
    return h.hexdigest()


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The package's ``user_defined_metadata`` (string -> string)."""
    from coremltools.proto import Model_pb2

    spec = Model_pb2.Model()
    spec.ParseFromString(_spec_file(path).read_bytes())
    return dict(spec.description.metadata.userDefined)


def set_metadata(path: str | os.PathLike, **kv) -> dict[str, str]:
    """Set entries of the package's ``user_defined_metadata``; returns the whole map.

    Strings are stored as they are, other values as JSON (``set_metadata(p, parity=json_dict)``), ``None``
    removes the key. Only the package's spec file is rewritten (temporary file + rename: atomic); the weights
    are not touched.
    """
    from coremltools.proto import Model_pb2

    spec_path = _spec_file(path)
    spec = Model_pb2.Model()
    spec.ParseFromString(spec_path.read_bytes())
    meta = spec.description.metadata.userDefined
    for key, value in kv.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    atomic_write_bytes(spec_path, spec.SerializeToString())
    return dict(meta)


# ------------------------------------------------------------------------------------------ running a package


def _core_ml_runtime() -> bool:
    """True where ``MLModel.predict`` works (macOS with coremltools' native library)."""
    if platform.system() != "Darwin":
        return False
    try:
        import coremltools.libcoremlpython  # noqa: F401
    except ImportError:
        return False
    return True


def open_mlpackage(path: str | os.PathLike, *, threads: int | None = None):
    """An ``.mlpackage`` as a ``eapnet.export.backends.Artifact``, ready to run: with ``MLModel.predict`` on
    macOS, elsewhere with the NumPy MIL interpreter (``eapnet.export.mil_interp``: what the program computes,
    not what a phone's Core ML kernels return). ``threads`` is unused (Core ML and the interpreter choose).

    The artifact takes the float convention whatever the package's ``io``: an app package gets
    ``round(ldrs * 255)`` as its three 8-bit images (exact for frames read from 8-bit files) and its
    ``(H, W, 3)`` output comes back as ``(1, 3, H, W)``. Raises ``ValueError`` for an unreadable package."""

    path = Path(path)
    try:
        meta = read_metadata(path)
    except Exception as e:
        raise ValueError(f"{path}: not a readable .mlpackage ({type(e).__name__}: {e})") from e
    program = load_program(path)      # parses the spec; also gives the input shape on every platform
    app = set(IMAGE_INPUTS) <= set(program.images)
    size = program.images["short"] if app else tuple(program.inputs["ldrs"][1][-2:])

    def feed(ldrs, evs) -> dict:
        if not app:
            return {"ldrs": ldrs.numpy(), "evs": evs.numpy()}
        codes = (ldrs[0] * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()   # (3, H, W, 3)
        return {**dict(zip(IMAGE_INPUTS, codes)), "evs": evs.reshape(3).numpy()}

    def back(out) -> torch.Tensor:
        out = torch.from_numpy(np.asarray(out, np.float32))
        return out.permute(2, 0, 1)[None] if app else out

    if _core_ml_runtime():
        import coremltools as ct

        model = ct.models.MLModel(str(path))

        def run(ldrs, evs):
            inputs = {k: Image.fromarray(v, "RGB") if k in IMAGE_INPUTS else v for k, v in feed(ldrs, evs).items()}
            return back(model.predict(inputs)["hdr"])
        executor = "Core ML runtime (MLModel.predict)"
    else:
        def run(ldrs, evs):
            return back(program.run(feed(ldrs, evs))["hdr"])
        executor = "reference-executed (eapnet.export.mil_interp, not the Core ML runtime)"
    return Artifact(path, "mlpackage", meta.get("precision", "?"), size, executor, meta, run)
