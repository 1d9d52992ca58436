"""Inspect a ``.pt2`` archive before ``torch.export.load`` touches it: loading a program must never run code.

A ``torch.export`` archive can execute code of its author's choosing when it is loaded or first called:

- a weight or constant whose config says ``use_pickle: true`` is read with ``torch.load(weights_only=False)``;
  constants named ``custom_obj_*`` / ``opaque_obj_*`` are unpickled;
- the example inputs fall back to ``weights_only=False`` when the safe load fails;
- each node's ``target`` is resolved by attribute lookup under ``torch``, ``operator`` or ``math`` (so
  ``torch.os.system`` is a valid target) and called when the program runs;
- symbolic shape expressions go through ``sympy.sympify`` (an ``eval``), and the guards are compiled into a
  Python function when ``ExportedProgram.module()`` is called.

:func:`check_archive` reads only the archive's directory and its JSON files, never a pickle, and refuses
anything outside what :func:`eapnet.compress.quantize.save_quantized` writes for an EAPNet program: tensor weights
and constants stored as raw bytes, example inputs that load with ``weights_only=True`` as plain tensors, ATen /
quantized_decomposed / prims operators and a few ``operator`` functions, and shape expressions and guards made
of integers, shape symbols, arithmetic and comparisons. :func:`safe_load` runs the check, then loads with
``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` set, so any ``torch.load`` the loader still makes is a weights-only one.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import torch

MAX_ARCHIVE_BYTES = 1 << 30
"""Largest total of the archive's uncompressed members (1 GiB). A standard EAPNet int8 program is a few MB;
anything near this is not one of ours, and its members are read into memory."""

MAX_JSON_BYTES = 64 << 20
"""Largest JSON member read (64 MiB; a standard EAPNet graph is about 8 MB)."""


class UnsafeProgramError(ValueError):
    """A ``.pt2`` holds something whose loading could run code, or is not a well-formed archive."""


# The members save_quantized writes, relative to the archive's root folder; {n} is the model's name.
_MEMBERS = (
    r"archive_format", r"archive_version", r"byteorder", r"\.data/version", r"\.data/serialization_id",
    r"models/\w+\.json", r"data/weights/\w+_weights_config\.json", r"data/weights/weight_\d+",
    r"data/constants/\w+_constants_config\.json", r"data/constants/tensor_\d+",
    r"data/sample_inputs/\w+\.pt", r"extra/[\w.\-]+",
)
_MEMBER_RE = re.compile("|".join(f"(?:{m})" for m in _MEMBERS))

_TARGET_RE = re.compile(
    r"torch\.ops\.(?:aten|quantized_decomposed|prims)\.[A-Za-z_]\w*\.[A-Za-z_]\w*"
    r"|_operator\.(?:getitem|add|sub|mul|floordiv|truediv|mod|neg|pow|eq|ne|lt|le|gt|ge|and_|or_|not_)"
    r"|torch\.sym_(?:int|float|max|min|not|ite|sqrt|sum)|math\.(?:ceil|floor|sqrt|trunc)")

# Names a shape expression (sympy's srepr or infix form) may hold: sympy classes and torch's integer functions.
_EXPR_NAMES = frozenset(
    "Symbol Integer Rational Mul Add Pow Mod FloorDiv CeilDiv CleanDiv PythonMod ModularIndexing FloorToInt "
    "CeilToInt TruncToInt IntTrueDiv Max Min Eq Ne Lt Le Gt Ge StrictLessThan StrictGreaterThan LessThan "
    "GreaterThan Equality Unequality And Or Not positive integer nonnegative negative True False".split())
_SHAPE_SYMBOL = re.compile(r"[su]\d+")
_QUOTED_SYMBOL = re.compile(r"'[su]\d+'")
_NAME = re.compile(r"[A-Za-z_]\w*")
_EXPR_PUNCT = set(" (),=+-*/%<>!")
# A guard: L['input'].size()[k] or .stride()[k] terms joined by integer arithmetic, comparisons, and/or/not,
# max / min / abs and the integer functions of shape expressions.
_GUARD_TERM = re.compile(r"L\['[A-Za-z_]\w*'\]\.(?:size|stride)\(\)\[\d+\]")
_GUARD_WORDS = _EXPR_NAMES | {"and", "or", "not", "max", "min", "abs"}


# Keys whose string values become identifiers in the code FX generates (and execs) for the program, and
# tables keyed by such names; a tree spec's strings name the forward's arguments the same way.
_NAME_KEYS = frozenset({"name", "as_name", "parameter_name", "buffer_name", "forward_arg_names", "fqn",
                        "as_names"})
_NAME_TABLES = frozenset({"tensor_values", "sym_int_values", "sym_bool_values", "sym_float_values",
                          "custom_obj_values"})
_IDENT = re.compile(r"[A-Za-z_]\w*(?:\.\w+)*")
_SPEC_BAD = re.compile(r"[()=';]|[^\x20-\x7e]")


def _names_ok(value: object) -> bool:
    values = value if isinstance(value, list) else [value]
    return all(isinstance(v, str) and (v == "" or _IDENT.fullmatch(v)) for v in values)


def _bad_expr(text: object, names: frozenset[str], quoted_symbols: bool) -> bool:
    # no powers (sympy evaluates 9**9**9 eagerly: a load that never ends) and no long integer literals
    if not isinstance(text, str) or len(text) > 10_000 or "**" in text or re.search(r"\d{16}", text):
        return True
    s = _QUOTED_SYMBOL.sub("0", text) if quoted_symbols else text
    for name in _NAME.findall(s):
        if name not in names and not _SHAPE_SYMBOL.fullmatch(name):
            return True
    rest = _NAME.sub("", re.sub(r"\d+", "", s))
    return not set(rest) <= _EXPR_PUNCT


def _walk(obj, where: str) -> Iterator[tuple[str, str, object]]:
    """(path, key, value) of every dict entry in ``obj``, depth first."""
    stack = [(obj, where)]
    while stack:
        o, at = stack.pop()
        if isinstance(o, dict):
            for k, v in o.items():
                yield at, k, v
                stack.append((v, f"{at}.{k}"))
        elif isinstance(o, list):
            stack.extend((v, at) for v in o)


def _check_graph(doc: dict, name: str) -> None:
    for at, key, value in _walk(doc, name):
        if key == "target" and isinstance(value, str) and not _TARGET_RE.fullmatch(value):
            raise UnsafeProgramError(f"calls {value!r}, which is not an ATen or quantization operator")
        if key in _NAME_KEYS and not _names_ok(value):
            raise UnsafeProgramError(f"has a {key} that is not a Python identifier at {at}: {str(value)[:80]!r} "
                                     "(names are pasted into the generated forward's code)")
        if key in _NAME_TABLES and isinstance(value, dict) and not _names_ok(list(value)):
            raise UnsafeProgramError(f"has a {key} entry named other than a Python identifier at {at}")
        if key in ("in_spec", "out_spec") and (not isinstance(value, str) or _SPEC_BAD.search(value)):
            raise UnsafeProgramError(f"has an {key} that is not a plain tree of names at {at}: {str(value)[:80]!r}")
        if key == "as_operator":
            raise UnsafeProgramError(f"passes an operator as an argument at {at}, which EAPNet programs never do")
        if key == "expr_str" and _bad_expr(value, _EXPR_NAMES, quoted_symbols=True):
            raise UnsafeProgramError(f"has a shape expression that is not plain arithmetic: {str(value)[:80]!r}")
        if key in ("as_custom_obj", "as_graph") or (key == "custom_obj_values" and value):
            raise UnsafeProgramError(f"holds a {key.replace('as_', '').replace('_values', '')} entry at {at} "
                                     "(custom objects and subgraphs are not part of an EAPNet program)")
    for expr in doc.get("range_constraints", {}) or {}:
        if _bad_expr(expr, frozenset(), quoted_symbols=False):
            raise UnsafeProgramError(f"has a range constraint that is not plain arithmetic: {expr[:80]!r}")
    for guard in doc.get("guards_code", []) or []:
        if not isinstance(guard, str) or _bad_expr(_GUARD_TERM.sub("0", guard), _GUARD_WORDS, quoted_symbols=False):
            raise UnsafeProgramError(f"has a guard that is not a comparison of input sizes: {str(guard)[:80]!r}")


def _check_payload_config(doc: dict, what: str) -> None:
    entries = doc.get("config")
    if not isinstance(entries, dict):
        raise UnsafeProgramError(f"has a {what} config without entries")
    for fqn, meta in entries.items():
        if not isinstance(meta, dict) or meta.get("use_pickle") is not False:
            raise UnsafeProgramError(f"stores {what} {fqn!r} as a pickle (use_pickle), which loading would run")
        if not str(meta.get("path_name", "")).startswith(("weight_", "tensor_")) or meta.get("tensor_meta") is None:
            raise UnsafeProgramError(f"stores {what} {fqn!r} as {meta.get('path_name')!r}, not as tensor bytes")


def _check_sample_inputs(data: bytes) -> None:
    try:
        loaded = torch.load(io.BytesIO(data), weights_only=True)
    except Exception as e:
        raise UnsafeProgramError(f"has example inputs that safe loading refuses ({type(e).__name__}); "
                                 "torch would load them with weights_only=False") from None
    stack = [loaded]
    while stack:
        o = stack.pop()
        if isinstance(o, (tuple, list)):
            stack.extend(o)
        elif isinstance(o, dict):
            stack.extend(o.values())
        elif not isinstance(o, torch.Tensor) or type(o) is not torch.Tensor:
            raise UnsafeProgramError(f"has an example input of type {type(o).__name__}, not a plain tensor")


def check_archive(path: str | os.PathLike) -> None:
    """Raise :class:`UnsafeProgramError` (a ``ValueError`` naming ``path``) unless ``path`` is a ``.pt2`` archive
    whose loading cannot run code (see the module docstring). Reads the zip directory, the JSON members and the
    example inputs (weights-only); a few seconds at most for a standard model."""
    path = Path(path)
    try:
        _check_archive(path)
    except UnsafeProgramError as e:
        raise UnsafeProgramError(f"{path}: refused: {e}") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as e:
        size = path.stat().st_size
        raise UnsafeProgramError(f"{path} is not a torch.export archive ({size} bytes; truncated or another "
                                 f"format: {e})") from None


def _check_archive(path: Path) -> None:
    with zipfile.ZipFile(path) as z:
        infos = z.infolist()
        if not infos:
            raise UnsafeProgramError("is an empty zip archive")
        total = sum(i.file_size for i in infos)
        if total > MAX_ARCHIVE_BYTES:
            raise UnsafeProgramError(f"unpacks to {total / 2**20:.0f} MiB, more than the {MAX_ARCHIVE_BYTES >> 20} "
                                     "MiB an EAPNet program can need")
        roots = {i.filename.split("/", 1)[0] for i in infos}
        if len(roots) != 1:
            raise UnsafeProgramError(f"has {len(roots)} top-level folders; a .pt2 has one")
        root = roots.pop() + "/"
        if len({i.filename for i in infos}) != len(infos):
            raise UnsafeProgramError("holds two members of one name (zip readers disagree on which one counts)")
        rel = {}
        for i in infos:
            name = i.filename[len(root):]
            if i.is_dir() and i.file_size == 0:
                continue
            if ".." in name.split("/") or not _MEMBER_RE.fullmatch(name):
                raise UnsafeProgramError(f"holds {name!r}, which a program written by eapnet.compress.quantize never "
                                         "holds")
            rel[name] = i

        def read_json(name: str) -> dict:
            if rel[name].file_size > MAX_JSON_BYTES:
                raise UnsafeProgramError(f"{name} is {rel[name].file_size >> 20} MiB, larger than any EAPNet graph")
            try:
                doc = json.loads(z.read(rel[name]))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise UnsafeProgramError(f"{name} is not JSON ({e})") from None
            if not isinstance(doc, dict):
                raise UnsafeProgramError(f"{name} is not a JSON object")
            return doc

        models = [m.group(1) for n in rel if (m := re.fullmatch(r"models/(\w+)\.json", n))]
        if not models:
            raise UnsafeProgramError("holds no program (models/*.json)")
        for model in models:
            for required in (f"data/weights/{model}_weights_config.json",
                             f"data/constants/{model}_constants_config.json",
                             f"data/sample_inputs/{model}.pt"):
                if required not in rel:
                    raise UnsafeProgramError(f"lacks {required}")
            _check_payload_config(read_json(f"data/weights/{model}_weights_config.json"), "weight")
            _check_payload_config(read_json(f"data/constants/{model}_constants_config.json"), "constant")
            _check_graph(read_json(f"models/{model}.json"), f"models/{model}.json")
            _check_sample_inputs(z.read(rel[f"data/sample_inputs/{model}.pt"]))


@contextlib.contextmanager
def _weights_only_loads() -> Iterator[None]:
    old = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = old


def safe_load(path: str | os.PathLike, extra_files: dict[str, str] | None = None) -> torch.export.ExportedProgram:
    """``torch.export.load(path, extra_files=...)`` after :func:`check_archive`, with every ``torch.load`` it
    makes forced to ``weights_only``. Raises :class:`UnsafeProgramError` for a refused archive and
    ``ValueError`` (naming ``path``) for one torch cannot read."""
    check_archive(path)
    log = logging.getLogger("torch.export")   # logs a traceback per failure before raising: the error says it
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        with _weights_only_loads():
            return torch.export.load(path, extra_files=extra_files)
    except Exception as e:  # torch raises assorted zip / schema / flatbuffer errors for a damaged file
        raise ValueError(f"{path} is not a readable torch.export program ({type(e).__name__}: "
                         f"{str(e).strip().splitlines()[0] if str(e).strip() else ''})") from None
    finally:
        log.setLevel(level)
