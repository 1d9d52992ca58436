"""A small reference interpreter for the MIL programs our Core ML exporter writes, in NumPy (convolutions
through ``torch.nn.functional`` in float32).

Core ML prediction exists only on macOS; this module executes an ``.mlpackage``'s ML Program on any machine,
so exports can be checked on Linux CI. Results are **reference-executed**: they show what the program
computes, op by op, not what the Core ML runtime (CPU, GPU or Neural Engine kernels) returns on a phone.

    from eapnet.export.mil_interp import run_mlpackage, program_ops
    out = run_mlpackage("standard_coreml_fp16_128x192.mlpackage", {"ldrs": ldrs, "evs": evs})["hdr"]
    program_ops("standard_coreml_fp16_128x192.mlpackage")   # Counter({'const': ..., 'conv': 131, ...})

What it reads: the protobuf spec that ships in the package (``Data/com.apple.CoreML/model.mlmodel``, via
``MLModel(path, skip_model_load=True).get_spec()``) and its weight blobs, function ``main``.

Image inputs (``ct.ImageType``, RGB): the runtime hands ``main`` the image as a ``(1, 3, H, W)`` float32 tensor
of its 8-bit codes (0..255, R, G, B planes); the program's own ops apply the image's scale and bias. ``run``
takes that tensor, or the image itself as an ``(H, W, 3)`` uint8 RGB array, which it converts the same way.

Numerics: every op computes in float32 and its result is stored in the dtype the program declares for that
output, so an fp16 program rounds every intermediate tensor to float16 (as the runtime stores them), honours
its ``cast`` ops and uses its fp16 constants as stored. int8/uint8 tensors (``quantize``) stay integers.
Real fp16 kernels also accumulate in fp16 or mixed precision, which this does not model.

Op set: exactly the ops that ``eapnet.export.coreml_export`` emits for EAPNet (fp32, fp16, int8w and w8a8
programs of the shipped variants and of small test configs, in both input/output conventions: the app one adds
``stack`` and ``transpose``; ``SUPPORTED_OPS``). Any other op, or an op
argument outside what is implemented (e.g. ``ceil_mode=True``), raises :class:`UnsupportedOpError` naming
it, before anything runs; nothing is skipped silently.
"""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["SUPPORTED_OPS", "MILProgram", "UnsupportedOpError", "load_program", "program_ops", "run_mlpackage"]


class UnsupportedOpError(NotImplementedError):
    """The program holds an op (or an op argument) this reference interpreter does not implement."""


# MIL DataType enum (coremltools/proto MIL.proto) -> NumPy dtype. Sub-byte and fp8 types are not used by us.
_DTYPES = {1: np.bool_, 2: np.str_, 10: np.float16, 11: np.float32, 12: np.float64, 21: np.int8, 22: np.int16,
           23: np.int32, 24: np.int64, 31: np.uint8, 32: np.uint16, 33: np.uint32, 34: np.uint64}
# MIL dtype strings (``cast``'s ``dtype``, ``quantize``'s ``output_dtype``) -> NumPy dtype
_DTYPE_NAMES = {"fp16": np.float16, "fp32": np.float32, "int8": np.int8, "uint8": np.uint8, "int16": np.int16,
                "uint16": np.uint16, "int32": np.int32, "bool": np.bool_}


def _np_dtype(code: int, where: str):
    if code not in _DTYPES:
        raise UnsupportedOpError(f"{where}: MIL data type {code} is not supported by the reference interpreter")
    return _DTYPES[code]


# ----------------------------------------------------------------------------------------------------------
# Reading values (immediate tensors and weight blobs)


class _Blobs:
    """Weight-blob readers of one package, one per file (coremltools' own blob reader)."""

    def __init__(self, weights_dir: str | os.PathLike | None):
        self.weights_dir = Path(weights_dir) if weights_dir else None
        self._readers: dict[str, object] = {}

    def read(self, file_name: str, offset: int, dtype, shape: tuple[int, ...]) -> np.ndarray:
        from coremltools.libmilstoragepython import _BlobStorageReader

        if self.weights_dir is None:
            raise ValueError(f"program refers to weight file {file_name} but the package has no weights folder")
        path = str(self.weights_dir / file_name.split("/")[-1])   # "@model_path/weights/weight.bin"
        reader = self._readers.get(path)
        if reader is None:
            if not Path(path).is_file():
                raise ValueError(f"{path}: the program's weight file is missing; the package is incomplete")
            try:
                reader = self._readers[path] = _BlobStorageReader(path)
            except Exception as e:
                raise ValueError(f"{path}: not a readable weight file ({type(e).__name__}: {e})") from e
        read = {np.float32: reader.read_float_data, np.float16: reader.read_fp16_data,
                np.int8: reader.read_int8_data, np.uint8: reader.read_uint8_data,
                np.int16: reader.read_int16_data, np.uint16: reader.read_uint16_data,
                np.int32: reader.read_int32_data, np.uint32: reader.read_uint32_data}.get(dtype)
        if read is None:
            raise UnsupportedOpError(f"weight blob of dtype {np.dtype(dtype).name} is not supported")
        try:
            raw = np.asarray(read(offset))
            return np.frombuffer(raw.tobytes(), dtype).reshape(shape).copy()
        except Exception as e:   # the blob reader says only "index out of bounds" for a cut-off file
            raise ValueError(f"{path}: cannot read the {np.dtype(dtype).name} weights {shape} at byte {offset} "
                             f"({type(e).__name__}: {e}); the package is damaged or truncated") from e


def _shape(tensor_type, where: str) -> tuple[int, ...]:
    dims = []
    for d in tensor_type.dimensions:
        if d.WhichOneof("dimension") != "constant":
            raise UnsupportedOpError(f"{where}: symbolic shapes are not supported (fixed-size exports only)")
        dims.append(int(d.constant.size))
    return tuple(dims)


def _decode(value, blobs: _Blobs, where: str):
    """A MIL ``Value`` proto -> NumPy array (scalars as 0-d arrays) or ``str``."""
    if value.type.WhichOneof("type") != "tensorType":
        raise UnsupportedOpError(f"{where}: {value.type.WhichOneof('type')} values are not supported")
    tt = value.type.tensorType
    dtype = _np_dtype(tt.dataType, where)
    shape = _shape(tt, where)
    kind = value.WhichOneof("value")
    if kind == "blobFileValue":
        return blobs.read(value.blobFileValue.fileName, value.blobFileValue.offset, dtype, shape)
    if kind != "immediateValue" or value.immediateValue.WhichOneof("value") != "tensor":
        raise UnsupportedOpError(f"{where}: value kind {kind!r} is not supported")
    tv = value.immediateValue.tensor
    field = tv.WhichOneof("value")
    if field == "strings":
        vals = list(tv.strings.values)
        return vals[0] if shape == () else np.array(vals).reshape(shape)
    if field == "bytes":
        arr = np.frombuffer(tv.bytes.values, dtype)
    elif field is None:
        arr = np.zeros(0, dtype)
    else:
        arr = np.array(list(getattr(tv, field).values))
    return arr.astype(dtype).reshape(shape)


# ----------------------------------------------------------------------------------------------------------
# The program


class _Op:
    __slots__ = ("attrs", "index", "inputs", "outputs", "type")

    def __init__(self, type_: str, inputs: dict, attrs: dict, outputs: list[tuple[str, object, tuple]], index: int):
        self.type = type_
        self.inputs = inputs        # param -> list of ("name", str) / ("value", array) bindings
        self.attrs = attrs          # attribute name -> decoded value (consts and constexpr_* ops)
        self.outputs = outputs      # [(name, numpy dtype, shape)]
        self.index = index


class MILProgram:
    """The ``main`` function of an ``.mlpackage``, ready to run (reference-executed; see the module docstring)."""

    def __init__(self, path: str | os.PathLike):
        import coremltools as ct

        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"no Core ML package at {self.path}")
        model = ct.models.MLModel(str(self.path), skip_model_load=True)
        spec = model.get_spec()
        if spec.WhichOneof("Type") != "mlProgram":
            raise UnsupportedOpError(f"{self.path} is a {spec.WhichOneof('Type')} model, not an ML Program")
        funcs = spec.mlProgram.functions
        if "main" not in funcs:
            raise ValueError(f"{self.path}: ML Program has no 'main' function (has {sorted(funcs)})")
        func = funcs["main"]
        block = func.block_specializations[func.opset]
        self.opset = func.opset
        self.metadata = dict(spec.description.metadata.userDefined)
        self.inputs = {i.name: (_np_dtype(i.type.tensorType.dataType, f"input {i.name}"),
                                _shape(i.type.tensorType, f"input {i.name}")) for i in func.inputs}
        self.output_names = list(block.outputs)
        self.images = {}   # name -> (H, W) of the RGB image inputs
        for feature in spec.description.input:
            if feature.type.WhichOneof("Type") == "imageType":
                image = feature.type.imageType
                space = type(image).ColorSpace.Name(image.colorSpace)
                if space != "RGB":
                    raise UnsupportedOpError(f"input {feature.name}: {space} images are not supported (RGB only)")
                self.images[feature.name] = (int(image.height), int(image.width))
        blobs = _Blobs(model.weights_dir)
        self.ops: list[_Op] = []
        for k, op in enumerate(block.operations):
            where = f"op {op.type!r} ({op.outputs[0].name if op.outputs else '?'})"
            if op.blocks:
                raise UnsupportedOpError(f"{where}: ops with nested blocks (control flow) are not supported")
            inputs = {}
            for key, arg in op.inputs.items():
                bindings = []
                for b in arg.arguments:
                    if b.WhichOneof("binding") == "name":
                        bindings.append(("name", b.name))
                    else:
                        bindings.append(("value", _decode(b.value, blobs, where)))
                inputs[key] = bindings
            attrs = {}
            if op.type == "const" or op.type.startswith("constexpr_"):
                attrs = {key: _decode(v, blobs, f"{where} attribute {key}")
                         for key, v in op.attributes.items() if key != "name"}
            outputs = [(o.name, _np_dtype(o.type.tensorType.dataType, where), _shape(o.type.tensorType, where))
                       for o in op.outputs]
            self.ops.append(_Op(op.type, inputs, attrs, outputs, k))
        unsupported = sorted({op.type for op in self.ops} - SUPPORTED_OPS)
        if unsupported:
            raise UnsupportedOpError(
                f"{self.path.name}: op(s) {unsupported} are not in the reference interpreter's op set "
                f"(eapnet/export/mil_interp.py supports {sorted(SUPPORTED_OPS)}); implement them there")
        # Free every tensor after its last use: full-size programs hold hundreds of feature maps.
        self._last_use: dict[str, int] = {}
        for op in self.ops:
            for bindings in op.inputs.values():
                for kind, v in bindings:
                    if kind == "name":
                        self._last_use[v] = op.index

    def op_counts(self) -> Counter:
        return Counter(op.type for op in self.ops)

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Execute ``main`` on ``inputs`` (name -> array, cast to the declared input dtype; shapes must match).

        An RGB image input also takes the image as an ``(H, W, 3)`` uint8 array (module docstring). Returns
        ``{output name: array}`` in the program's declared output dtypes. Reference-executed.
        """
        missing = sorted(set(self.inputs) - set(inputs))
        extra = sorted(set(inputs) - set(self.inputs))
        if missing or extra:
            raise ValueError(f"inputs must be exactly {sorted(self.inputs)}; missing {missing}, unexpected {extra}")
        env: dict[str, object] = {}
        for name, (dtype, shape) in self.inputs.items():
            arr = np.asarray(inputs[name])
            if name in self.images and arr.dtype == np.uint8 and arr.shape == (*self.images[name], 3):
                arr = arr.transpose(2, 0, 1)[None].astype(np.float32)   # what Core ML makes of an RGB image
            if tuple(arr.shape) != shape:
                raise ValueError(f"input {name!r} must have shape {shape}, got {tuple(arr.shape)}")
            env[name] = _astype(arr, dtype)
        keep = set(self.output_names)
        for op in self.ops:
            args = {k: [env[v] if kind == "name" else v for kind, v in b] for k, b in op.inputs.items()}
            try:
                results = _OPS[op.type](op, args)
            except UnsupportedOpError:
                raise
            except Exception as e:  # name the op: a bare NumPy error says nothing about where it happened
                raise RuntimeError(f"reference execution of op {op.type!r} ({op.outputs[0][0]}) failed: "
                                   f"{type(e).__name__}: {e}") from e
            if not isinstance(results, tuple):
                results = (results,)
            for (name, dtype, shape), res in zip(op.outputs, results, strict=True):
                res = np.asarray(res)
                if tuple(res.shape) != shape:
                    raise RuntimeError(f"op {op.type!r} ({name}) produced shape {tuple(res.shape)}, the program "
                                       f"declares {shape}: interpreter bug or unsupported semantics")
                env[name] = _astype(res, dtype)
            for bindings in op.inputs.values():
                for kind, v in bindings:
                    if kind == "name" and self._last_use.get(v) == op.index and v not in keep:
                        env.pop(v, None)
        return {name: env[name] for name in self.output_names}


def load_program(path: str | os.PathLike) -> MILProgram:
    """Parse an ``.mlpackage`` once (to run it on many inputs); raises :class:`UnsupportedOpError` early."""
    return MILProgram(path)


def run_mlpackage(path: str | os.PathLike, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Reference-execute the ``.mlpackage`` at ``path`` on ``inputs``; ``{output name: array}``.

    For our exports: ``{"ldrs": (1, 3, 3, H, W) float32 in [0, 1], "evs": (1, 3) float32 stops}`` ->
    ``{"hdr": (1, 3, H, W) float32}`` (gamma-encoded HDR, >= 0), H, W the export size.
    """
    return MILProgram(path).run(inputs)


def program_ops(path: str | os.PathLike) -> Counter:
    """Op type -> count over ``main`` of the ``.mlpackage`` at ``path`` (``const`` included).

    Reads the program without executing or checking it; compare with ``SUPPORTED_OPS``.
    """
    import coremltools as ct

    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    func = spec.mlProgram.functions["main"]
    return Counter(op.type for op in func.block_specializations[func.opset].operations)


# ----------------------------------------------------------------------------------------------------------
# Ops. Each takes (op, args) with args: param -> list of values, returns an array or a tuple of arrays.

_OPS: dict[str, Callable] = {}


def _op(*names: str):
    def register(fn):
        for n in names:
            _OPS[n] = fn
        return fn
    return register


def _one(args, key):
    """The single value bound to required parameter ``key``."""
    if key not in args:
        raise KeyError(f"missing input {key!r}")
    (v,) = args[key]
    return v


def _opt(args, key, default=None):
    """The value of optional parameter ``key``, or ``default`` when the program leaves it out."""
    return _one(args, key) if key in args else default


def _astype(x: np.ndarray, dtype) -> np.ndarray:
    """``x.astype(dtype)``; float16 <-> float32 goes through torch, whose vectorised conversion is ~10x
    faster than NumPy's and rounds the same way (IEEE round-to-nearest-even, both are exact casts)."""
    dtype = np.dtype(dtype)
    if x.dtype == dtype:
        return x
    pair = {x.dtype, dtype}
    if pair == {np.dtype(np.float16), np.dtype(np.float32)} and x.size > 4096:
        return torch.from_numpy(np.ascontiguousarray(x)).to(getattr(torch, dtype.name)).numpy()
    return x.astype(dtype)


def _f32(x) -> np.ndarray:
    return _astype(np.asarray(x), np.float32)


def _ints(v) -> list[int]:
    return [int(i) for i in np.asarray(v).reshape(-1)]


def _unsupported(op: _Op, what: str):
    raise UnsupportedOpError(f"op {op.type!r} ({op.outputs[0][0]}): {what} is not supported by the reference "
                             f"interpreter")


@_op("const")
def _const(op, args):
    return op.attrs["val"]


@_op("constexpr_affine_dequantize")
def _constexpr_affine_dequantize(op, args):
    q, zp, scale = (op.attrs[k] for k in ("quantized_data", "zero_point", "scale"))
    axis = int(op.attrs["axis"])
    return _affine(q, zp, scale, axis, op)


def _affine(q, zp, scale, axis, op):
    """``(q - zp) * scale`` with per-tensor or per-``axis`` scale / zero point, in float32."""
    q = q.astype(np.float32)
    scale, zp = _f32(scale), (None if zp is None else np.asarray(zp).astype(np.float32))
    if scale.size > 1 or (zp is not None and zp.size > 1):
        if axis is None:
            _unsupported(op, "a vector scale without an axis")
        bshape = [1] * q.ndim
        bshape[axis] = -1
        scale = scale.reshape(bshape)
        zp = None if zp is None else zp.reshape(bshape)
    return (q - zp) * scale if zp is not None else q * scale


@_op("quantize")
def _quantize(op, args):
    x = _f32(_one(args, "input"))
    scale = _one(args, "scale")
    zp = _opt(args, "zero_point")
    axis = _opt(args, "axis")
    dtype = _DTYPE_NAMES[str(_one(args, "output_dtype"))]
    axis = None if axis is None else int(axis) % x.ndim
    scale = _f32(scale)
    zpf = np.zeros((), np.float32) if zp is None else np.asarray(zp).astype(np.float32)
    if scale.size > 1 or zpf.size > 1:
        if axis is None:
            _unsupported(op, "a vector scale without an axis")
        bshape = [1] * x.ndim
        bshape[axis] = -1
        scale, zpf = scale.reshape(bshape), zpf.reshape(bshape) if zpf.size > 1 else zpf
    info = np.iinfo(dtype)
    # quantized = clip(round(x / scale) + zero_point); np.round rounds half to even, as torch.round
    return np.clip(np.round(x / scale) + zpf, info.min, info.max).astype(dtype)


@_op("dequantize")
def _dequantize(op, args):
    q = np.asarray(_one(args, "input"))
    axis = _opt(args, "axis")
    return _affine(q, _opt(args, "zero_point"), _one(args, "scale"),
                   None if axis is None else int(axis) % q.ndim, op)


@_op("cast")
def _cast(op, args):
    name = str(_one(args, "dtype"))
    if name not in _DTYPE_NAMES:
        _unsupported(op, f"dtype {name!r}")
    return _astype(np.asarray(_one(args, "x")), _DTYPE_NAMES[name])


def _binary(fn):
    def run(op, args):
        return fn(_f32(_one(args, "x")), _f32(_one(args, "y")))
    return run


_OPS["add"] = _binary(np.add)
_OPS["sub"] = _binary(np.subtract)
_OPS["mul"] = _binary(np.multiply)
_OPS["real_div"] = _binary(np.divide)
_OPS["pow"] = _binary(np.power)
_OPS["minimum"] = _binary(np.minimum)
_OPS["maximum"] = _binary(np.maximum)


def _unary(fn):
    def run(op, args):
        with np.errstate(over="ignore", under="ignore"):
            return fn(_f32(_one(args, "x")))
    return run


_OPS["abs"] = _unary(np.abs)
_OPS["exp"] = _unary(np.exp)
_OPS["exp2"] = _unary(np.exp2)
_OPS["relu"] = _unary(lambda x: np.maximum(x, np.float32(0)))
_OPS["sigmoid"] = _unary(lambda x: np.float32(1) / (np.float32(1) + np.exp(-x)))


@_op("log")
def _log(op, args):
    eps = _f32(_opt(args, "epsilon", np.float32(1e-45)))
    return np.log(_f32(_one(args, "x")) + eps)


@_op("clip")
def _clip(op, args):
    x = _f32(_one(args, "x"))
    return np.minimum(np.maximum(x, _f32(_one(args, "alpha"))), _f32(_one(args, "beta")))


def _reduce(fn):
    def run(op, args):
        x = _f32(_one(args, "x"))
        axes = _opt(args, "axes")
        keep = bool(_opt(args, "keep_dims", False))
        axes = None if axes is None else tuple(i % x.ndim for i in _ints(axes))
        return fn(x, axis=axes, keepdims=keep)
    return run


_OPS["reduce_mean"] = _reduce(np.mean)
_OPS["reduce_sum"] = _reduce(np.sum)


@_op("concat")
def _concat(op, args):
    if bool(_opt(args, "interleave", False)):
        _unsupported(op, "interleave=True")
    values = args["values"]
    axis = int(_one(args, "axis"))
    dtype = np.result_type(*[np.asarray(v).dtype for v in values])
    return np.concatenate([np.asarray(v, dtype) for v in values], axis=axis)


@_op("stack")
def _stack(op, args):
    values = args["values"]
    dtype = np.result_type(*[np.asarray(v).dtype for v in values])
    return np.stack([np.asarray(v, dtype) for v in values], axis=int(_one(args, "axis")))


@_op("transpose")
def _transpose(op, args):
    return np.transpose(np.asarray(_one(args, "x")), _ints(_one(args, "perm")))


@_op("split")
def _split(op, args):
    x = np.asarray(_one(args, "x"))
    axis = int(_one(args, "axis")) % x.ndim
    if "split_sizes" in args:
        sizes = _ints(_one(args, "split_sizes"))
    elif "num_splits" in args:
        n = int(_one(args, "num_splits"))
        sizes = [x.shape[axis] // n] * n
    else:
        _unsupported(op, "split without split_sizes or num_splits")
    return tuple(np.split(x, np.cumsum(sizes)[:-1], axis=axis))


@_op("reshape")
def _reshape(op, args):
    shape = _ints(_one(args, "shape"))
    if 0 in shape:
        _unsupported(op, "a 0 entry in the target shape")
    return np.reshape(_one(args, "x"), shape)


@_op("expand_dims")
def _expand_dims(op, args):
    x = np.asarray(_one(args, "x"))
    out_rank = x.ndim + len(_ints(_one(args, "axes")))
    axes = sorted(a % out_rank for a in _ints(_one(args, "axes")))
    return np.expand_dims(x, tuple(axes))


@_op("slice_by_index")
def _slice_by_index(op, args):
    x = np.asarray(_one(args, "x"))
    r = x.ndim
    begin = _ints(_one(args, "begin"))
    end = _ints(_one(args, "end"))
    stride = _ints(_opt(args, "stride", [1] * r))

    def mask(key):
        return [bool(b) for b in np.asarray(_opt(args, key, [False] * r)).reshape(-1)]

    bmask, emask, smask = mask("begin_mask"), mask("end_mask"), mask("squeeze_mask")
    index = []
    for d in range(r):
        if smask[d]:
            index.append(begin[d])
            continue
        index.append(slice(None if bmask[d] else begin[d], None if emask[d] else end[d], stride[d]))
    return x[tuple(index)]


@_op("pad")
def _pad(op, args):
    x = _one(args, "x")
    pad = _ints(_one(args, "pad"))
    mode = str(_opt(args, "mode", "constant"))
    n = len(pad) // 2
    widths = [(0, 0)] * (x.ndim - n) + [(pad[2 * i], pad[2 * i + 1]) for i in range(n)]
    if mode == "replicate":
        return np.pad(x, widths, mode="edge")
    if mode == "reflect":
        return np.pad(x, widths, mode="reflect")
    if mode == "constant":
        cv = _opt(args, "constant_val", 0.0)
        return np.pad(_f32(x), widths, mode="constant", constant_values=float(cv))
    _unsupported(op, f"pad mode {mode!r}")


def _window_pads(op, args, x_hw, kernel, strides, dilations):
    """(top, bottom, left, right) for MIL's pad_type / pad of a 2-D window op."""
    pad_type = str(_opt(args, "pad_type", "valid"))
    if pad_type == "valid":
        return 0, 0, 0, 0
    if pad_type == "custom":
        p = _ints(_one(args, "pad"))
        return p[0], p[1], p[2], p[3]
    if pad_type in ("same", "same_lower"):
        out = []
        for size, k, s, d in zip(x_hw, kernel, strides, dilations):
            total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
            small, big = total // 2, total - total // 2
            out += [small, big] if pad_type == "same" else [big, small]
        return tuple(out)
    _unsupported(op, f"pad_type {pad_type!r}")


@_op("conv")
def _conv(op, args):
    x = _f32(_one(args, "x"))                       # (N, Cin, H, W)
    w = _f32(_one(args, "weight"))                  # (Cout, Cin / groups, kH, kW)
    if x.ndim != 4:
        _unsupported(op, f"a rank-{x.ndim} input (2-D convs only)")
    groups = int(_opt(args, "groups", 1))
    strides = _ints(_opt(args, "strides", [1, 1]))
    dil = _ints(_opt(args, "dilations", [1, 1]))
    kh, kw = w.shape[2:]
    t, b, l, r = _window_pads(op, args, x.shape[2:], (kh, kw), strides, dil)
    if min(t, b, l, r) < 0:
        _unsupported(op, "negative padding")
    if x.shape[1] != w.shape[1] * groups or w.shape[0] % groups:
        _unsupported(op, f"weight {w.shape} for {x.shape[1]} input channels in {groups} groups")
    # float32 through torch: the same sums as a direct loop over taps, in milliseconds instead of minutes
    xt = torch.from_numpy(np.ascontiguousarray(x))
    if t or b or l or r:
        xt = F.pad(xt, (l, r, t, b))
    bias = torch.from_numpy(_f32(_one(args, "bias"))) if "bias" in args else None
    with torch.no_grad():
        out = F.conv2d(xt, torch.from_numpy(np.ascontiguousarray(w)), bias, stride=strides, dilation=dil,
                       groups=groups)
    return out.numpy()


@_op("conv_transpose")
def _conv_transpose(op, args):
    x = _f32(_one(args, "x"))                       # (N, Cin, H, W)
    w = _f32(_one(args, "weight"))                  # (Cin, Cout / groups, kH, kW), as torch
    groups = int(_opt(args, "groups", 1))
    if x.ndim != 4 or groups != 1:
        _unsupported(op, f"rank {x.ndim} / groups {groups} (2-D, groups=1 only)")
    s = _ints(_opt(args, "strides", [1, 1]))
    d = _ints(_opt(args, "dilations", [1, 1]))
    pad_type = str(_opt(args, "pad_type", "valid"))
    if pad_type == "valid":
        t = b = l = r = 0
    elif pad_type == "custom":
        t, b, l, r = _ints(_one(args, "pad"))
    else:
        _unsupported(op, f"pad_type {pad_type!r}")
    if min(t, b, l, r) < 0:
        _unsupported(op, "negative padding")
    with torch.no_grad():   # the full (uncropped) transposed conv, then MIL's (possibly asymmetric) crop
        full = F.conv_transpose2d(torch.from_numpy(np.ascontiguousarray(x)),
                                  torch.from_numpy(np.ascontiguousarray(w)), stride=s, dilation=d).numpy()
    Hf, Wf = full.shape[2:]
    out = full[:, :, t:Hf - b, l:Wf - r]
    if "output_shape" in args:
        want = _ints(_one(args, "output_shape"))
        if list(out.shape[2:]) != want[-2:]:
            _unsupported(op, f"output_shape {want} != computed {list(out.shape)} (output padding)")
    if "bias" in args:
        out = out + _f32(_one(args, "bias"))[None, :, None, None]
    return out


@_op("avg_pool")
def _avg_pool(op, args):
    x = _f32(_one(args, "x"))
    if x.ndim != 4:
        _unsupported(op, f"a rank-{x.ndim} input (2-D pooling only)")
    if bool(_opt(args, "ceil_mode", False)):
        _unsupported(op, "ceil_mode=True")
    k = _ints(_one(args, "kernel_sizes"))
    s = _ints(_opt(args, "strides", [1, 1]))
    t, b, l, r = _window_pads(op, args, x.shape[2:], k, s, (1, 1))
    exclude = bool(_opt(args, "exclude_padding_from_average", False))
    xp = np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)))
    ones = np.pad(np.ones(x.shape[2:], np.float32), ((t, b), (l, r)))
    Ho, Wo = (xp.shape[2] - k[0]) // s[0] + 1, (xp.shape[3] - k[1]) // s[1] + 1
    acc = np.zeros(x.shape[:2] + (Ho, Wo), np.float32)
    cnt = np.zeros((Ho, Wo), np.float32)
    for i in range(k[0]):
        for j in range(k[1]):
            win = (slice(i, i + s[0] * (Ho - 1) + 1, s[0]), slice(j, j + s[1] * (Wo - 1) + 1, s[1]))
            acc += xp[(..., *win)]
            cnt += ones[win]
    return acc / (cnt if exclude else np.float32(k[0] * k[1]))


def _bilinear_index(n_in: int, n_out: int, scale: float, align_corners: bool, half_pixel: bool):
    """Source indices i0, i1 and weights of each output row/column (PyTorch's / MIL's conventions)."""
    dst = np.arange(n_out, dtype=np.float32)
    if align_corners:
        src = dst * (np.float32(n_in - 1) / np.float32(max(n_out - 1, 1)))
    elif half_pixel:   # PyTorch align_corners=False: (dst + 0.5) / scale - 0.5, clamped at 0
        src = np.maximum((dst + np.float32(0.5)) / np.float32(scale) - np.float32(0.5), np.float32(0))
    else:
        src = dst / np.float32(scale)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = (src - i0).astype(np.float32)
    return i0, i1, lam


@_op("upsample_bilinear")
def _upsample_bilinear(op, args):
    x = _f32(_one(args, "x"))
    sh = float(_opt(args, "scale_factor_height", 1.0))
    sw = float(_opt(args, "scale_factor_width", 1.0))
    align = bool(_opt(args, "align_corners", False))
    half = bool(_opt(args, "half_pixel_centers", not align))
    H, W = x.shape[-2:]
    Ho, Wo = int(np.floor(H * sh)), int(np.floor(W * sw))
    y0, y1, ly = _bilinear_index(H, Ho, sh, align, half)
    x0, x1, lx = _bilinear_index(W, Wo, sw, align, half)
    rows = x[..., y0, :] * (1 - ly)[:, None] + x[..., y1, :] * ly[:, None]          # (..., Ho, W)
    return rows[..., x0] * (1 - lx) + rows[..., x1] * lx                             # (..., Ho, Wo)


SUPPORTED_OPS = frozenset(_OPS)
"""Op types the reference interpreter executes: what our exporter emits (see the module docstring)."""
