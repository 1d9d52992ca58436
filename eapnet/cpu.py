"""Fast CPU training: dilated depthwise convs with a cheaper backward, no page faults, native-bf16 detection.

Measured on the standard model, batch 8 of 128^2, 2 threads (``python -m eapnet.bench.bench_model`` prints the
side-by-side table). Three things cost time on CPU without buying anything:

**Dilated depthwise convs.** PyTorch's CPU backward of a *dilated* depthwise 3x3 conv is slow: one PDUB's
stride-2/dilation-2 ``enc2`` took 120-136 ms per forward+backward (channels_last) against 22 ms for the
formulation below, and the four dilated convs of the four PDUBs were about a quarter of a step. Two
identities fix it without changing the layer:

- a stride-``s`` conv whose dilation ``d`` is a multiple of ``s`` reads only the sub-grid ``x[::s, ::s]``,
  so it equals a stride-1 conv with dilation ``d / s`` on that sub-grid (4x fewer input pixels);
- the backward of a stride-1 depthwise conv is two cheap passes: the input gradient is the same
  depthwise conv of the output gradient with the kernel flipped, and the weight gradient is nine
  per-channel reductions of ``x_shifted * grad_out`` (one per tap).

:func:`use_fast_depthwise` swaps such convs of a *training* model in place for :class:`FastDepthwiseConv2d`,
which shares the original parameters (same ``state_dict`` keys, so checkpoints, EMA and export are
unaffected). Exported, evaluated and quantized models never see it; non-dilated depthwise convs keep
PyTorch's kernels, which are fast. Results equal ``nn.Conv2d`` to float rounding (tested).

**Page faults.** glibc serves allocations above 32 MB (and, by its dynamic threshold, many smaller ones)
with fresh ``mmap`` pages and returns them on free, so every step first-touches its large activations
again: ``cat`` and zero-filled gradients ran at ~1 GB/s. :func:`keep_freed_memory` tells glibc to serve
everything from its heap and keep freed memory (``mallopt``); the process's peak memory is unchanged.

**bf16.** Only CPUs with AMX-BF16 or AVX512-BF16 compute bf16 natively (:func:`native_bf16`); elsewhere
autocast to bf16 is emulated and slower than fp32, so training uses it only where native.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import platform

import torch
import torch.nn.functional as F
from torch import nn


class _DepthwiseStride1(torch.autograd.Function):
    """Depthwise 3x3, stride 1, padding = dilation, with the two-pass backward of the module docstring."""

    # The backward runs under the forward's autocast state (bf16 on CPUs with native bf16): without it the
    # saved bf16 activations would meet the fp32 weights.
    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu")
    def forward(ctx, x, weight, bias, dilation: int):
        ctx.save_for_backward(x, weight)
        ctx.dilation = dilation
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias, padding=dilation, dilation=dilation, groups=x.shape[1])

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        d = ctx.dilation
        C = x.shape[1]
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = F.conv2d(grad_out, weight.flip(2, 3), None, padding=d, dilation=d, groups=C)
        if ctx.needs_input_grad[1]:
            xp = F.pad(x, (d, d, d, d))
            H, W = grad_out.shape[-2:]
            taps = [(xp[:, :, i * d: i * d + H, j * d: j * d + W] * grad_out).sum((0, 2, 3))
                    for i in range(3) for j in range(3)]
            gw = torch.stack(taps, 1).view_as(weight).to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = grad_out.sum((0, 2, 3)).to(weight.dtype)
        return None if gx is None else gx.to(x.dtype), gw, gb, None


class FastDepthwiseConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` (depthwise 3x3, padding = dilation, dilation a multiple of the stride) computed by
    the sub-grid and two-pass-backward identities of the module docstring. Same parameters and outputs."""

    @classmethod
    def eligible(cls, m: nn.Module) -> bool:
        return (type(m) is nn.Conv2d and m.groups == m.in_channels == m.out_channels and m.kernel_size == (3, 3)
                and m.dilation[0] == m.dilation[1] > 1 and m.stride[0] == m.stride[1]
                and m.dilation[0] % m.stride[0] == 0 and m.padding == m.dilation and m.padding_mode == "zeros")

    @classmethod
    def from_conv(cls, m: nn.Conv2d) -> "FastDepthwiseConv2d":
        new = cls(m.in_channels, m.out_channels, 3, stride=m.stride, padding=m.padding, dilation=m.dilation,
                  groups=m.groups, bias=m.bias is not None, device="meta")
        new.weight, new.bias = m.weight, m.bias  # the same Parameter objects: optimizer and state_dict unchanged
        return new.train(m.training)

    def forward(self, x):
        s = self.stride[0]
        if s > 1:
            x = x[:, :, ::s, ::s]
        return _DepthwiseStride1.apply(x, self.weight, self.bias, self.dilation[0] // s)


def use_fast_depthwise(model: nn.Module) -> int:
    """Swap every eligible dilated depthwise conv of ``model`` for :class:`FastDepthwiseConv2d` in place
    (parameters shared); returns how many were swapped. For training on CPU; call before building the
    optimizer or after, either way (the parameters are the same objects)."""
    return len(_swap_fast_depthwise(model))


def _swap_fast_depthwise(model: nn.Module) -> list[tuple[nn.Module, str, nn.Conv2d]]:
    """The swap of :func:`use_fast_depthwise`; returns ``(parent, attribute, original conv)`` per swap."""
    swapped = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if FastDepthwiseConv2d.eligible(child):
                setattr(parent, name, FastDepthwiseConv2d.from_conv(child))
                swapped.append((parent, name, child))
    return swapped


@contextlib.contextmanager
def fast_cpu_training(*models: nn.Module):
    """For the duration: ``models`` in channels_last and, in training mode, with fast dilated depthwise convs
    (:func:`use_fast_depthwise`); afterwards the original conv modules and layouts are back, so the models
    export and quantize as before. Parameters stay the same objects (an optimizer built before or
    inside keeps working). For a loop that trains on CPU outside ``eapnet.train`` (the compression fine-tune).
    The layout change is :func:`cpu_channels_last`'s."""
    swapped = []
    with contextlib.ExitStack() as layouts:
        for model in models:
            layouts.enter_context(cpu_channels_last(model))
            if model.training:
                swapped += _swap_fast_depthwise(model)
        try:
            yield
        finally:
            for parent, name, child in swapped:
                setattr(parent, name, child)


@contextlib.contextmanager
def cpu_channels_last(model: nn.Module):
    """For the duration: a float ``model`` on CPU in channels_last (PyTorch picks its faster CPU conv kernels
    when the weights are channels_last: the standard model's forward on 16 scenes of 128^2 took 1.9 s
    instead of 4.1 s on one thread; outputs equal to float rounding); afterwards the contiguous layout is
    back. Models without ``nn.Conv2d`` modules (exported or quantized graphs), models on another device and
    models already in channels_last are left as they are."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    change = bool(convs) and convs[0].weight.device.type == "cpu" and \
        not all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    if change:
        model.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        if change:
            model.to(memory_format=torch.contiguous_format)


def keep_freed_memory() -> bool:
    """Make glibc's malloc serve all sizes from its heap and keep freed memory (no per-step ``mmap`` page
    faults; see the module docstring). Affects later allocations of this process; returns whether it took
    effect (False off glibc)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    ok = mallopt(M_MMAP_MAX, 0) == 1
    return bool(ok and mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1)


def _cpuinfo(key: str) -> str | None:
    """The value of the first ``key`` line of /proc/cpuinfo (``None`` where there is none or no such file)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AMX-BF16 or AVX512-BF16); elsewhere bf16 is emulated
    and slower than fp32."""
    return bool({"amx_bf16", "avx512_bf16"} & set(cpu_features()))


_ISA = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")


def cpu_features() -> list[str]:
    """The instruction-set extensions of this CPU that decide int8 and bf16 speed (/proc/cpuinfo flags among
    AVX2, AVX-512, the VNNI int8 dot products, AVX512-BF16 and AMX); empty where /proc/cpuinfo does not
    exist. An int8 XNNPACK program gains most over fp32 with VNNI: machines without it differ by design."""
    flags = set((_cpuinfo("flags") or "").split())
    return [x for x in _ISA if x in flags]


def machine() -> str:
    """One line naming the CPU, its core count and :func:`cpu_features`, for reports and run records."""
    return f"{cpu_name()}, {os.cpu_count()} cores, {' '.join(cpu_features()) or 'no AVX2'}"


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), or the platform's processor string."""
    return _cpuinfo("model name") or platform.processor() or "unknown"
