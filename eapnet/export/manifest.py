"""The manifest beside every phone artifact: ``X.manifest.json`` next to ``X.pte`` / ``X.mlpackage``.

An app developer who receives the artifact and its manifest learns from the manifest alone how to feed the
program and what comes out: input names, dtypes, shapes, layouts and value ranges, the exposure values' meaning,
the output's domain and tone map, the fixed program size and how larger frames are tiled, what it was exported
from, which runtime it needs and, once measured, its parity. One schema for both backends
(``"schema": "eapnet-artifact-manifest/1"``, :data:`SCHEMA`, JSON Schema draft 2020-12, also shipped as
``eapnet/export/manifest.schema.json``: ``python -m eapnet.export.manifest`` regenerates it from :data:`SCHEMA`).

The input and output descriptions come from one table per input/output convention (``io``, see
``eapnet.export.common``): :func:`interface`. The two backends share every entry; the one thing a backend
changes is how the app convention's 8-bit frames are bound, because Core ML has no uint8 tensor inputs
(multi-arrays are fp16/fp32/fp64/int32, int8 from iOS 26): one ``(3, H, W, 3)`` uint8 tensor ``frames`` for
ExecuTorch, three RGB images ``short``, ``medium``, ``long`` (``ct.ImageType``) for Core ML.

    build_manifest(path, backend=..., precision=..., io=..., size=..., source=src, runtime=...) -> dict
    write_manifest(path, manifest)      # validates, then writes X.manifest.json atomically
    read_manifest(path) -> dict         # size-capped, validated; ValueError naming the file
    set_parity(path, record)            # the parity harness's verdict, validated, written back
    validate(manifest) -> list[str]     # [] when valid; each message names the field path

The validator implements the subset of JSON Schema that :data:`SCHEMA` uses (no third-party package), then
checks what a schema cannot say: the inputs and output are the ones of the ``io`` convention at
``program_size`` for the backend, and the tiles are the program's size with an overlap the blend allows.
"""
from __future__ import annotations

import copy
import json
import math
import numbers
import os
import re
import stat
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

from eapnet.data.scene import EV_SPAN
from eapnet.inference import TILE_OVERLAP
from eapnet.metrics import DEFAULT_GAMMA, DEFAULT_MU
from eapnet.runs import atomic_write_json

from eapnet.export.backends import artifact_sha256
from eapnet.export.common import IO, Source

__all__ = ["BACKENDS", "MAX_MANIFEST_BYTES", "SCHEMA", "SCHEMA_FILE", "SCHEMA_ID", "build_manifest",
           "default_overlap", "executorch_runtime", "interface", "manifest_path", "read_manifest", "set_parity",
           "validate", "write_manifest", "write_schema_file"]

SCHEMA_ID = "eapnet-artifact-manifest/1"
SCHEMA_FILE = Path(__file__).with_name("manifest.schema.json")
MAX_MANIFEST_BYTES = 1 << 20
"""Largest manifest read (1 MiB; one is about 5 kB)."""

BACKENDS = {"executorch-xnnpack": (".pte", ("fp32", "int8")),
            "coreml": (".mlpackage", ("fp32", "fp16", "int8w", "w8a8"))}
"""Manifest backend name -> (artifact suffix, precisions)."""
_ALIASES = {"xnnpack": "executorch-xnnpack", "executorch": "executorch-xnnpack"}   # eapnet.export.backends names
MACCS_AT = "1060x1900"
"""(H x W) at which ``source.maccs`` is counted: one NTIRE 2022 frame (1900 wide, 1060 high)."""

# ------------------------------------------------------------------------------------------ what the fields say

FRAMES = "short, medium, long"
LDR_MEANING = ("the three LDR frames of one bracket ({order}), gamma-encoded RGB as stored in 8-bit images: the "
               "network linearises x = code / 255 as x ** 2.24 (the NTIRE 2022 camera response); unaligned (the "
               "network de-ghosts), the output is aligned to the medium frame")
EV_SEMANTICS = ("stops relative to the medium frame, strictly increasing (short, medium, long); the NTIRE 2022 "
                "frames use -2, 0, 2; from capture metadata ev_i = log2((t_i * gain_i) / (t_medium * gain_medium))")
EV_MEANING = (f"exposure of each frame in stops relative to the medium one (the medium entry is 0); at most "
              f"{EV_SPAN:g} stops either side")
HDR_MEANING = "the merged HDR image, aligned to the medium frame, RGB"
DOMAIN = {
    "gamma": DEFAULT_GAMMA,
    "units": (f"linear radiance relative to the medium frame, gamma-encoded with {DEFAULT_GAMMA:g} (the NTIRE 2022 "
              f"ground-truth domain): linear = hdr ** {DEFAULT_GAMMA:g}"),
    "range": ">= 0, no upper bound: 1 is the medium frame's clipping level, highlights it clipped exceed it",
    "tonemap": {
        "name": "mu-law (NTIRE 2022 PSNR-mu)",
        "mu": DEFAULT_MU,
        "formula": (f"T(hdr) = log(1 + mu * tanh(hdr ** {DEFAULT_GAMMA:g} / norm)) / log(1 + mu), norm = the 99th "
                    f"percentile of hdr ** {DEFAULT_GAMMA:g} over all pixels and channels (PSNR-mu takes norm from "
                    f"the reference image and scores PSNR(T(reference), T(result)) with peak 1)"),
        "range": "[0, 1): a display image, e.g. round(255 * T(hdr)) as 8-bit RGB",
    },
}
BLEND = ("linear ramp over the middle half of the overlap, zero over its outer quarters "
         "(eapnet.inference._ramp), flat 1 at the frame's borders; the output is the weighted sum over tiles divided "
         "by the summed weights")
POLICY = ("frames larger than the program are tiled; smaller are refused: a frame at least the program size on "
          "each side runs in tiles of exactly the program size, one starting every (tile - overlap) px and the last "
          "flush with the far edge (eapnet.inference.predict(model, ldrs, evs, tile=tile, overlap=overlap)); a "
          "frame of exactly the program size runs whole")
IMAGE_FEED = ("Core ML image: a CVPixelBuffer (kCVPixelFormatType_32BGRA or 32ARGB) or CGImage of exactly W x H "
              "pixels, passed to MLModel directly (Vision's VNCoreMLRequest would resize it); Core ML hands the "
              "program its R, G, B 8-bit codes and the program scales them by 1/255")


def _hw(size) -> tuple[int, int]:
    if (not isinstance(size, list | tuple) or len(size) != 2
            or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in size)):
        raise ValueError(f"size must be (H, W) in pixels, got {size!r}")
    return int(size[0]), int(size[1])


def _backend(backend: str) -> str:
    name = _ALIASES.get(backend, backend)
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    return name


def interface(io: str, size, backend: str = "executorch-xnnpack") -> tuple[list[dict], dict]:
    """``(inputs, output)`` of a program of convention ``io`` at ``size`` = (H, W) on ``backend``: the
    manifest's ``inputs`` (in the program's positional order) and ``output``. See the module docstring for the
    one backend difference (how the app convention binds its frames)."""
    if io not in IO:
        raise ValueError(f"io must be one of {IO}, got {io!r}")
    h, w = _hw(size)
    backend = _backend(backend)
    if io == "float":
        inputs = [
            {"name": "ldrs", "dtype": "float32", "shape": [1, 3, 3, h, w], "layout": "batch,frame,channel,row,col",
             "range": [0, 1], "meaning": LDR_MEANING.format(order=FRAMES) + "; values are the codes / 255"},
            {"name": "evs", "dtype": "float32", "shape": [1, 3], "layout": "batch,frame",
             "range": [-EV_SPAN, EV_SPAN], "meaning": EV_MEANING, "ev_semantics": EV_SEMANTICS},
        ]
        output = {"name": "hdr", "dtype": "float32", "shape": [1, 3, h, w], "layout": "batch,channel,row,col"}
    else:
        if backend == "coreml":
            frames = [{"name": name, "dtype": "uint8", "shape": [h, w, 3], "layout": "row,col,rgb", "range": [0, 255],
                       "meaning": f"the {name} frame: 8-bit RGB codes; one of " + LDR_MEANING.format(order=FRAMES),
                       "image": {"color_layout": "RGB", "scale": 1 / 255, "bias": [0.0, 0.0, 0.0],
                                 "feed": IMAGE_FEED}}
                      for name in ("short", "medium", "long")]
        else:
            frames = [{"name": "frames", "dtype": "uint8", "shape": [3, h, w, 3], "layout": "frame,row,col,rgb",
                       "range": [0, 255], "meaning": "8-bit RGB codes, rows interleaved as a decoder or camera buffer "
                       "gives them: " + LDR_MEANING.format(order=FRAMES)}]
        inputs = [*frames, {"name": "evs", "dtype": "float32", "shape": [3], "layout": "frame",
                            "range": [-EV_SPAN, EV_SPAN], "meaning": EV_MEANING, "ev_semantics": EV_SEMANTICS}]
        output = {"name": "hdr", "dtype": "float32", "shape": [h, w, 3], "layout": "row,col,rgb"}
    return inputs, {**output, "meaning": HDR_MEANING, "domain": copy.deepcopy(DOMAIN)}


def default_overlap(size) -> int:
    """:data:`eapnet.inference.TILE_OVERLAP`, or for a program too small to share that many pixels (a side under
    130 px) the largest multiple of 4 below half its shorter side (``predict`` wants overlap < tile/2)."""
    h, w = _hw(size)
    return min(TILE_OVERLAP, (min(h, w) // 2 - 1) // 4 * 4)


# ------------------------------------------------------------------------------------------ the schema

_HEX64 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_TEXT = {"type": "string", "minLength": 1}
_PIXELS = {"type": "integer", "minimum": 1}
_VERSION = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)*([.+-][0-9A-Za-z.+-]*)?$"}


def _object(required: dict, optional: dict | None = None, *, extra: bool = False, **kw) -> dict:
    return {"type": "object", "required": list(required), "properties": {**required, **(optional or {})},
            "additionalProperties": extra, **kw}


def _when(path: list[str], value: str, then: dict) -> dict:
    """``if`` the string at ``path`` is ``value`` ``then`` ``then`` (at the root)."""
    cond: dict = {"const": value}
    for key in reversed(path):
        cond = {"type": "object", "required": [key], "properties": {key: cond}}
    return {"if": cond, "then": then}


_TENSOR = _object(
    {"name": {**_TEXT, "description": "the program's input name (Core ML binds by name, ExecuTorch by position)"},
     "dtype": {"enum": ["uint8", "float16", "float32"]},
     "shape": {"type": "array", "items": _PIXELS, "minItems": 1, "maxItems": 5},
     "layout": {**_TEXT, "description": "comma-separated axis names, outermost first, e.g. frame,row,col,rgb"},
     "range": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2,
               "description": "[lowest, highest] value the program is meant to be fed"},
     "meaning": _TEXT},
    {"ev_semantics": _TEXT,
     "image": _object({"color_layout": {"const": "RGB"}, "scale": {"type": "number", "exclusiveMinimum": 0},
                       "bias": {"type": "array", "items": {"type": "number"}, "minItems": 3, "maxItems": 3},
                       "feed": _TEXT},
                      description="a Core ML image input (ct.ImageType): how to hand it over")},
    allOf=[{"if": {"type": "object", "required": ["name"], "properties": {"name": {"const": "evs"}}},
            "then": {"required": ["ev_semantics"]}}])

_MACHINE = _object(
    {"arch": {"enum": ["x86_64", "aarch64"]},
     "cpu": {**_TEXT, "description": "e.g. 'AMD EPYC 9B14 (AVX2, AVX-512, AVX-512 VNNI)' or "
                                     "'cortex-a76 (QEMU 10.0 user mode, -cpu cortex-a76)'"},
     "executor": {**_TEXT, "description": "e.g. 'ExecuTorch Python runtime', 'native runner', "
                                          "'reference-executed (eapnet.export.mil_interp)'"},
     "passed": {"type": "boolean"}},
    {"max_abs_vs_reference": {"type": ["number", "null"], "minimum": 0}}, extra=True)

SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": SCHEMA_ID,
    "title": "EAPNet phone artifact manifest",
    "description": "What an exported EAPNet program (.pte or .mlpackage) takes and returns; the file beside it "
                   "named <artifact stem>.manifest.json.",
    **_object({
        "schema": {"const": SCHEMA_ID},
        "artifact": _object({
            "file": {"type": "string", "pattern": r"^[^/\\]+\.(pte|mlpackage)$",
                     "description": "the artifact's file name (a .mlpackage is a folder)"},
            "backend": {"enum": list(BACKENDS)},
            "precision": {"enum": sorted({p for _, ps in BACKENDS.values() for p in ps})},
            "sha256": {**_HEX64, "description": "the artifact's own content hash "
                                                "(eapnet.export.backends.artifact_sha256: a .pte's bytes; a "
                                                ".mlpackage's program and weights, its metadata left out)"},
            "bytes": {**_PIXELS, "description": "size in bytes (a .mlpackage: all its files)"}}),
        "io": {"enum": list(IO), "description": "input/output convention (eapnet.export.common): 'float' the "
                                                "research one, 'app' 8-bit frames in, interleaved HDR out"},
        "program_size": {"type": "array", "items": _PIXELS, "minItems": 2, "maxItems": 2,
                         "description": "[H, W] pixels of the fixed-size program"},
        "inputs": {"type": "array", "items": _TENSOR, "minItems": 2, "maxItems": 4,
                   "description": "in the program's positional order"},
        "output": _object(
            {"name": _TEXT, "dtype": {"enum": ["float16", "float32"]},
             "shape": {"type": "array", "items": _PIXELS, "minItems": 3, "maxItems": 4},
             "layout": _TEXT, "meaning": _TEXT,
             "domain": _object({
                 "gamma": {"type": "number", "exclusiveMinimum": 0}, "units": _TEXT, "range": _TEXT,
                 "tonemap": _object({"name": _TEXT, "mu": {"type": "number", "exclusiveMinimum": 0},
                                     "formula": _TEXT, "range": _TEXT})})}),
        "tiling": _object({
            "tile": {"type": "array", "items": _PIXELS, "minItems": 2, "maxItems": 2, "description": "[H, W]"},
            "overlap": {"type": "integer", "minimum": 0, "description": "pixels shared by neighbouring tiles"},
            "blend": _TEXT, "policy": _TEXT}),
        "source": _object(
            {"file": {"type": ["string", "null"], "pattern": r"^[^/\\]+$",
                      "description": "file name of the exported model; null: built in memory, not read from a file"},
             "sha256": {**_HEX64, "type": ["string", "null"], "description": "of that file; null: no file"},
             "variant": _TEXT,
             "config": {**_TEXT, "description": "the model config's name"},
             "precision": {"enum": ["fp32", "int8"]},
             "maccs": {"type": ["integer", "null"], "minimum": 0,
                       "description": "multiply-accumulates of one frame at maccs_at (NTIRE 2022 count)"},
             "maccs_at": {"const": MACCS_AT, "description": "H x W of the MAcc count"},
             "params": {"type": ["integer", "null"], "minimum": 0}},
            {"quant_backend": {"enum": ["xnnpack", "coreml"]}}),
        "runtime": {"type": "object", "description": "what runs the artifact; keys depend on the backend"},
    }, {
        "parity": _object(
            {"passed": {"type": "boolean"},
             "measured": {"type": "string", "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}"},
             "reference": _object({"path": _TEXT, "sha256": _HEX64}, extra=True),
             "reference_is_export_source": {"type": "boolean"},
             "machines": {"type": "array", "items": _MACHINE, "minItems": 1}},
            {"artifact_sha256": _HEX64,
             "worst_psnr_mu_vs_float": {"type": ["number", "null"], "description": "dB, worst scene"},
             "gt_drop": {"type": "object", "additionalProperties": {"type": "number"},
                         "description": "dataset -> mean PSNR-mu (dB) the artifact loses against the ground truth "
                                        "relative to the float model"},
             "notes": {"type": "array", "items": {"type": "string"}}},
            extra=True, description="optional until measured (eapnet.export.parity)")}),
    "allOf": [
        _when(["artifact", "backend"], "executorch-xnnpack", {"properties": {
            "artifact": {"properties": {"file": {"pattern": r"\.pte$"},
                                        "precision": {"enum": list(BACKENDS["executorch-xnnpack"][1])}}},
            "runtime": _object({"executorch": _VERSION, "min_runtime": _VERSION, "delegate": {"const": "XNNPACK"},
                                "libraries": {"type": "array", "items": _TEXT, "minItems": 1}}, extra=True)}}),
        _when(["artifact", "backend"], "coreml", {"properties": {
            "artifact": {"properties": {"file": {"pattern": r"\.mlpackage$"},
                                        "precision": {"enum": list(BACKENDS["coreml"][1])}}},
            "runtime": _object({
                "coremltools": _VERSION,
                "minimum_deployment_target": {"type": "string", "pattern": "^(iOS|macOS|tvOS|watchOS)[0-9]+$"},
                "compute_units": {"enum": ["all", "cpuAndNeuralEngine", "cpuAndGPU", "cpuOnly"],
                                  "description": "the MLComputeUnits to load it with"}}, extra=True)}}),
    ],
}
"""JSON Schema (draft 2020-12) of a manifest; ``manifest.schema.json`` is this, written by
:func:`write_schema_file`."""


# ------------------------------------------------------------------------------------------ the validator

_KEYWORDS = {"$schema", "$id", "title", "description", "type", "const", "enum", "properties", "required",
             "additionalProperties", "items", "minItems", "maxItems", "minimum", "exclusiveMinimum", "minLength",
             "pattern", "allOf", "if", "then"}
"""The JSON Schema keywords :func:`validate` implements (all that :data:`SCHEMA` uses)."""
_TYPES = {"object": "an object", "array": "an array", "string": "a string", "integer": "an integer",
          "number": "a number", "boolean": "true or false", "null": "null"}


def _is(value, t: str) -> bool:
    if t == "object":
        return isinstance(value, dict)
    if t == "array":
        return isinstance(value, list)
    if t == "string":
        return isinstance(value, str)
    if t == "boolean":
        return isinstance(value, bool)
    if t == "null":
        return value is None
    if isinstance(value, bool):
        return False
    if t == "integer":
        return isinstance(value, int)
    return isinstance(value, int | float)   # number


def _kind(value) -> str:
    return next((t for t in ("boolean", "null", "integer", "number", "string", "array", "object") if _is(value, t)),
                type(value).__name__)


def _where(path: str) -> str:
    return path or "(manifest)"


def _check(value, schema: dict, path: str, errors: list[str]) -> None:
    """Append to ``errors`` one line per way ``value`` breaks ``schema`` (the :data:`_KEYWORDS` subset)."""
    unknown = set(schema) - _KEYWORDS
    if unknown:
        raise ValueError(f"schema at {_where(path)} uses keywords the validator does not implement: {sorted(unknown)}")
    if isinstance(value, float) and not math.isfinite(value):
        errors.append(f"{_where(path)}: {value} is not a finite number")
        return
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_is(value, t) for t in types):
            errors.append(f"{_where(path)}: expected {' or '.join(_TYPES[t] for t in types)}, got {_kind(value)}")
            return
    if "const" in schema and (value != schema["const"] or _kind(value) != _kind(schema["const"])):
        errors.append(f"{_where(path)}: must be {schema['const']!r}, got {value!r}")
    if "enum" in schema and not any(value == e and _kind(value) == _kind(e) for e in schema["enum"]):
        errors.append(f"{_where(path)}: {value!r} is not one of {schema['enum']}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            errors.append(f"{_where(path)}: must not be empty")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{_where(path)}: {value!r} does not match {schema['pattern']}")
    if _is(value, "number"):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{_where(path)}: {value} is below the minimum {schema['minimum']}")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            errors.append(f"{_where(path)}: {value} must be above {schema['exclusiveMinimum']}")
    if isinstance(value, list):
        lo, hi = schema.get("minItems", 0), schema.get("maxItems", math.inf)
        if not lo <= len(value) <= hi:
            want = f"{lo}" if lo == hi else f"at least {lo}" if hi == math.inf else f"{lo} to {hi}"
            errors.append(f"{_where(path)}: expected {want} items, got {len(value)}")
        if "items" in schema:
            for i, item in enumerate(value):
                _check(item, schema["items"], f"{path}[{i}]", errors)
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{path + '.' if path else ''}{key}: required field missing")
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if key in props:
                _check(item, props[key], where, errors)
            elif extra is False:
                errors.append(f"{where}: unknown field")
            elif isinstance(extra, dict):
                _check(item, extra, where, errors)
    for sub in schema.get("allOf", []):
        _check(value, sub, path, errors)
    if "if" in schema:
        probe: list[str] = []
        _check(value, schema["if"], path, probe)
        if not probe and "then" in schema:
            _check(value, schema["then"], path, errors)


def validate(manifest) -> list[str]:
    """Every way ``manifest`` breaks the schema, one line each naming the field path (``inputs[0].dtype: ...``);
    empty when valid. Beyond :data:`SCHEMA`: the inputs and output must be those of ``io`` at ``program_size``
    on the backend (names, dtypes, shapes, layouts: :func:`interface`), the tiles the program's size and the
    overlap below half the tile's shorter side (what ``eapnet.inference.predict`` blends)."""
    errors: list[str] = []
    _check(manifest, SCHEMA, "", errors)
    if isinstance(manifest, dict):
        _check_interface(manifest, errors)
    return list(dict.fromkeys(errors))


def _check_interface(m: dict, errors: list[str]) -> None:
    """The checks a schema cannot express, each run where the fields it reads are well-formed."""
    art, size, io = m.get("artifact"), m.get("program_size"), m.get("io")
    backend = art.get("backend") if isinstance(art, dict) else None
    try:
        size = _hw(size)
        want_in, want_out = interface(io, size, backend)
    except (ValueError, TypeError):
        return   # the schema's messages say what is wrong with io, program_size or artifact.backend
    what = f"the {io!r} convention on {backend} at {size[0]}x{size[1]}"
    inputs = m.get("inputs")
    if isinstance(inputs, list):
        if len(inputs) != len(want_in):
            errors.append(f"inputs: {what} has {len(want_in)} inputs {[i['name'] for i in want_in]}, got "
                          f"{len(inputs)}")
        for i, (got, want) in enumerate(zip(inputs, want_in)):
            if not isinstance(got, dict):
                continue
            for key in ("name", "dtype", "shape", "layout"):
                if key in got and got[key] != want[key]:
                    errors.append(f"inputs[{i}].{key}: {what} wants {want[key]!r}, got {got[key]!r}")
            if "image" in want and "image" not in got:
                errors.append(f"inputs[{i}].image: required field missing (a Core ML image input)")
    out = m.get("output")
    if isinstance(out, dict):
        for key in ("name", "dtype", "shape", "layout"):
            if key in out and out[key] != want_out[key]:
                errors.append(f"output.{key}: {what} wants {want_out[key]!r}, got {out[key]!r}")
    tiling = m.get("tiling")
    if isinstance(tiling, dict):
        if "tile" in tiling and tiling["tile"] != list(size):
            errors.append(f"tiling.tile: {tiling['tile']!r} must be the program size {list(size)}")
        overlap = tiling.get("overlap")
        if _is(overlap, "integer") and not overlap < min(size) // 2:
            errors.append(f"tiling.overlap: {overlap} px must be below half the tile's shorter side "
                          f"({min(size) // 2})")
    parity, sha = m.get("parity"), art.get("sha256")
    if isinstance(parity, dict) and isinstance(parity.get("artifact_sha256"), str) and isinstance(sha, str) \
            and parity["artifact_sha256"] != sha:
        errors.append(f"parity.artifact_sha256: measured on another file ({parity['artifact_sha256'][:12]}...), "
                      f"not this artifact ({sha[:12]}...)")


# ------------------------------------------------------------------------------------------ building


def manifest_path(artifact_path: str | os.PathLike) -> Path:
    """``X.manifest.json`` beside ``X.pte`` / ``X.mlpackage``."""
    path = Path(artifact_path)
    if path.suffix not in {s for s, _ in BACKENDS.values()}:
        raise ValueError(f"{path}: not an artifact (want a .pte or .mlpackage)")
    return path.with_suffix(".manifest.json")


def _artifact_bytes(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    return path.stat().st_size


def executorch_runtime(precision: str = "fp32", version: str | None = None) -> dict:
    """``runtime`` of an ExecuTorch artifact: the ``executorch`` package that exported it (``version``, default
    the installed one) is also the oldest runtime it is known to load; the delegate; and the components of the
    ExecuTorch package (its CMake targets) an app links: the runtime, the XNNPACK delegate, the CPU kernels for
    what is not delegated, and for int8 the quantized kernels."""
    version = version or metadata.version("executorch")
    libraries = ["executorch::runtime", "executorch::backend_xnnpack", "executorch::kernels_optimized"]
    if precision == "int8":
        libraries.append("executorch::kernels_quantized")
    return {"executorch": version, "min_runtime": version, "delegate": "XNNPACK", "libraries": libraries}


def _source(source: Source | Mapping) -> dict:
    if isinstance(source, Source):
        # a model built in memory (tests) has no file: its placeholder path and hash ("mem", "0") are not recorded
        is_hash = isinstance(source.sha256, str) and re.fullmatch("[0-9a-f]{64}", source.sha256) is not None
        entry = {"file": Path(source.path).name if is_hash else None, "sha256": source.sha256 if is_hash else None,
                 "variant": source.variant,
                 "config": str(source.config.get("name", source.variant)), "precision": source.precision,
                 "maccs": None if source.maccs is None else int(source.maccs), "maccs_at": MACCS_AT,
                 "params": None if source.params is None else int(source.params)}
        if source.quant_backend:
            entry["quant_backend"] = source.quant_backend
        return entry
    if not isinstance(source, Mapping):
        raise ValueError(f"source must be a eapnet.export.common.Source or a dict, got {type(source).__name__}")
    return {"maccs_at": MACCS_AT, **source}


def build_manifest(artifact_path: str | os.PathLike, *, backend: str, precision: str, io: str, size,
                   source: Source | Mapping, runtime: Mapping, tile_overlap: int | None = None) -> dict:
    """The manifest of the artifact at ``artifact_path`` (hashed and sized here), not yet validated or written.

    ``backend``: ``"executorch-xnnpack"`` (or ``eapnet.export.backends``' ``"xnnpack"``) or ``"coreml"``;
    ``precision`` the artifact's; ``io`` its convention (``eapnet.export.common.IO``); ``size`` its fixed (H, W);
    ``source`` the :class:`~eapnet.export.common.Source` it was exported from (or the manifest's ``source``
    dict); ``runtime`` the backend's runtime record (:func:`executorch_runtime`,
    ``eapnet.export.coreml_export.coreml_runtime``); ``tile_overlap`` pixels tiles share, None for
    :func:`default_overlap`."""
    path = Path(artifact_path)
    backend = _backend(backend)
    if not path.exists():
        raise FileNotFoundError(f"no artifact at {path}")
    h, w = _hw(tuple(size))
    inputs, output = interface(io, (h, w), backend)
    return {
        "schema": SCHEMA_ID,
        "artifact": {"file": path.name, "backend": backend, "precision": precision, "sha256": artifact_sha256(path),
                     "bytes": _artifact_bytes(path)},
        "io": io,
        "program_size": [h, w],
        "inputs": inputs,
        "output": output,
        "tiling": {"tile": [h, w], "overlap": default_overlap((h, w)) if tile_overlap is None else tile_overlap,
                   "blend": BLEND, "policy": POLICY},
        "source": _source(source),
        "runtime": dict(runtime),
    }


# ------------------------------------------------------------------------------------------ files


def _invalid(where, errors: list[str]) -> str:
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: not a valid {SCHEMA_ID} manifest: {errors[0]}{more}"


def write_manifest(artifact_path: str | os.PathLike, manifest: dict) -> Path:
    """Validate ``manifest`` and write it to :func:`manifest_path` atomically; returns that path. ValueError
    (the first problem and how many more) when it is not valid, and nothing is written."""
    errors = validate(manifest)
    target = manifest_path(artifact_path)
    if errors:
        raise ValueError(_invalid(target.name, errors))
    atomic_write_json(target, manifest)
    return target


def read_manifest(path: str | os.PathLike) -> dict:
    """The validated manifest of an artifact (``X.pte`` / ``X.mlpackage``, or the ``X.manifest.json`` itself).

    FileNotFoundError when there is none; ValueError in one line naming the file when it is not a plain file,
    larger than :data:`MAX_MANIFEST_BYTES`, not UTF-8 JSON, or not a valid manifest."""
    path = Path(path)
    target = path if path.name.endswith(".manifest.json") else manifest_path(path)
    try:
        st = target.stat()
    except FileNotFoundError:
        raise FileNotFoundError(f"no manifest at {target}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{target}: refused: not a plain file")
    with open(target, "rb") as f:
        data = f.read(MAX_MANIFEST_BYTES + 1)
    if len(data) > MAX_MANIFEST_BYTES:
        raise ValueError(f"{target}: refused: larger than {MAX_MANIFEST_BYTES >> 20} MiB, not a manifest")
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{target}: not JSON ({e})") from None
    errors = validate(manifest)
    if errors:
        raise ValueError(_invalid(target, errors))
    return manifest


def set_parity(artifact_path: str | os.PathLike, parity_record: Mapping) -> dict:
    """Record the parity harness's verdict in the artifact's manifest; returns the updated manifest.

    Refused (ValueError naming the file) when the artifact is no longer the one the manifest describes (its
    content hash changed: export again), when the record says it measured another file, or when the result is
    not valid. Refreshes ``artifact.bytes`` (a Core ML package's metadata may have grown)."""
    path = Path(artifact_path)
    manifest = read_manifest(path)
    sha = artifact_sha256(path)
    if sha != manifest["artifact"]["sha256"]:
        raise ValueError(f"{manifest_path(path).name} describes another file (sha256 "
                         f"{manifest['artifact']['sha256'][:12]}...), not {path.name} ({sha[:12]}...): export it again")
    manifest["parity"] = dict(parity_record)
    manifest["artifact"]["bytes"] = _artifact_bytes(path)
    write_manifest(path, manifest)
    return manifest


def write_schema_file(path: str | os.PathLike = SCHEMA_FILE) -> Path:
    """Write :data:`SCHEMA` as JSON (the shipped ``manifest.schema.json``)."""
    atomic_write_json(path, SCHEMA)
    return Path(path)


if __name__ == "__main__":
    print(write_schema_file())
