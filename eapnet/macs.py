"""MAcc counting in the NTIRE 2022 HDR challenge convention, and the `100G` budget parser.

The organisers counted multiply-accumulates with torchinfo's ``total_mult_adds`` on one scene of
1900x1060: for every conv call, (weight elements + bias elements) x output pixels; a transposed conv is
counted by its *output* pixels; activations, pooling, interpolation and element-wise ops count zero.
:func:`count_maccs` applies torchinfo's rule itself in forward hooks on meta tensors, so the budget search,
which counts hundreds of configs, spends 0.3 s on each instead of about 1 s; :func:`macc_breakdown` runs
torchinfo, and a test checks that the two agree on every variant.

Per-module breakdown on the command line: ``python -m eapnet.breakdown --variant standard``.
"""
from __future__ import annotations

import copy
import math
import re
from collections import OrderedDict

import torch
from torch import nn
from torchinfo import summary

NTIRE_HEIGHT = 1060
NTIRE_WIDTH = 1900
FRAME_SIZE = (NTIRE_HEIGHT, NTIRE_WIDTH)
"""(H, W) of one NTIRE frame: MAccs are counted, and phone programs exported, at this size by default."""

_SUFFIX = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_BUDGET_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKmMgGtT]?)\s*(?:MACC?S?)?\s*$", re.I)


def parse_maccs(text: str | int | float) -> int:
    """Parse a MAcc budget such as ``100G``, ``1.5e11``, ``150000M`` or ``2.5T`` into an integer MAcc count.

    Suffixes are decimal (K=1e3, M=1e6, G=1e9, T=1e12), case-insensitive; a trailing ``MAccs`` is allowed.
    Raises ``ValueError`` naming the bad text for anything else (empty, negative, zero, NaN, unknown suffix).
    """
    if isinstance(text, bool):
        raise ValueError(f"MAcc budget must be a number like '100G', got {text!r}")
    if isinstance(text, (int, float)):
        value = float(text)
        suffix = ""
    else:
        m = _BUDGET_RE.match(str(text))
        if not m:
            raise ValueError(
                f"cannot parse MAcc budget {text!r}: expected a positive number with an optional K/M/G/T "
                "suffix, e.g. '100G', '1.5e11', '150000M'")
        value = float(m.group(1))
        suffix = m.group(2).upper()
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"MAcc budget must be positive and finite, got {text!r}")
    maccs = value * _SUFFIX[suffix]
    if maccs < 1:
        raise ValueError(f"MAcc budget {text!r} is below one multiply-accumulate")
    return int(round(maccs))


def format_maccs(maccs: int | float) -> str:
    """``198380000000`` -> ``'198.38 G'`` (decimal giga, as the challenge reports); below a giga the unit
    follows the size (``'57.64 M'``, ``'1.00 K'``, ``'12'``) so that no count reads as ``0.00 G``."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(maccs) >= scale:
            return f"{maccs / scale:.2f} {unit}"
    return f"{maccs:.0f}"


def ntire_inputs(height: int = NTIRE_HEIGHT, width: int = NTIRE_WIDTH) -> tuple[torch.Tensor, torch.Tensor]:
    """Meta tensors shaped like one scene of the challenge interface: LDRs ``(1, 3, 3, H, W)``, EVs ``(1, 3)``
    (MAccs depend on shapes only)."""
    if height < 1 or width < 1:
        raise ValueError(f"resolution must be positive, got {height}x{width}")
    return torch.zeros(1, 3, 3, height, width, device="meta"), torch.zeros(1, 3, device="meta")


def _summary(model: nn.Module, height: int, width: int, depth: int = 100):
    meta_model = copy.deepcopy(model).to("meta").eval()
    ldrs, evs = ntire_inputs(height, width)
    with torch.no_grad():
        return summary(meta_model, input_data=[ldrs, evs], depth=depth, verbose=0, device="meta",
                       col_names=("output_size", "num_params", "mult_adds"))


def count_maccs(model: nn.Module, height: int = NTIRE_HEIGHT, width: int = NTIRE_WIDTH) -> int:
    """MAccs of one forward pass on one scene of ``height`` x ``width`` (NTIRE convention, see module doc).

    ``model`` follows the challenge interface ``model(ldrs, evs)``. The model is copied to the meta device,
    so nothing is computed and the caller's model is untouched. torchinfo's rule, per call of a module without
    children: a conv (any class whose name holds "Conv") counts its weight and bias elements times the batch
    times its output's spatial size; another module with parameters counts them times the batch.
    """
    return maccs_from_factors(model, macc_factors(model, height, width))


def macc_factors(model: nn.Module, height: int = NTIRE_HEIGHT, width: int = NTIRE_WIDTH) -> dict[str, int]:
    """Per leaf module with parameters (by name): what :func:`count_maccs` multiplies its weight and bias
    element count by, summed over its calls (a conv: its output's batch x spatial size; another module: the
    batch; 0 if never called). The factors depend on the input size and the layer structure, not on the
    channel widths."""
    meta_model = model if _on_meta(model) else copy.deepcopy(model).to("meta")
    was_training = meta_model.training
    meta_model.eval()
    leaves = list(_param_leaves(meta_model))
    factors: dict[str, int] = {n: 0 for n, _ in leaves}

    def hook_for(name):
        def hook(module, _inputs, out):
            f = math.prod([out.shape[0], *out.shape[2:]]) if "Conv" in type(module).__name__ else out.shape[0]
            factors[name] += int(f)
        return hook

    handles = [m.register_forward_hook(hook_for(n)) for n, m in leaves]
    try:
        with torch.no_grad():
            meta_model(*ntire_inputs(height, width))
    finally:
        for h in handles:
            h.remove()
        meta_model.train(was_training)
    return factors


def maccs_from_factors(model: nn.Module, factors: dict[str, int]) -> int:
    """MAccs of ``model`` from :func:`macc_factors` of a model of the same layer structure (any widths).
    Raises ``KeyError`` for a leaf module with parameters that ``factors`` does not know."""
    total = 0
    for name, m in _param_leaves(model):
        total += sum(p.numel() for k, p in m.named_parameters(recurse=False) if k in ("weight", "bias")) * factors[name]
    return int(total)


def _param_leaves(model: nn.Module):
    """``(name, module)`` of every module without children that holds parameters: what the rule counts."""
    return ((n, m) for n, m in model.named_modules()
            if not any(True for _ in m.children()) and any(True for _ in m.parameters(recurse=False)))


def _on_meta(model: nn.Module) -> bool:
    params = list(model.parameters())
    return bool(params) and all(p.is_meta for p in params) and all(b.is_meta for b in model.buffers())


def count_params(model: nn.Module) -> int:
    """Number of parameters (each shared tensor once), as reported beside MAccs in the challenge."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def macc_breakdown(model: nn.Module, height: int = NTIRE_HEIGHT, width: int = NTIRE_WIDTH,
                   depth: int = 1) -> "OrderedDict[str, int]":
    """MAccs per named child module down to ``depth`` levels (``'a.b'`` names), in call order.

    Calls of the same module are summed; the values add up to :func:`count_maccs`.
    """
    return _group(_summary(model, height, width), depth)


def _group(stats, depth: int) -> "OrderedDict[str, int]":
    out: "OrderedDict[str, int]" = OrderedDict()
    for layer in stats.summary_list:
        if not layer.is_leaf_layer or not layer.macs:
            continue
        name = layer.var_name if not layer.parent_info else _qualname(layer)
        key = ".".join(name.split(".")[:depth])
        out[key] = out.get(key, 0) + int(layer.macs)
    return out


def _qualname(layer) -> str:
    parts = []
    while layer is not None and layer.parent_info is not None:
        parts.append(layer.var_name)
        layer = layer.parent_info
    return ".".join(reversed(parts))
