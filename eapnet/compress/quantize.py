"""Int8 quantization of EAPNet with PT2E: quantization-aware training (QAT), post-training calibration (PTQ),
conversion to the Q/DQ reference model, and a ``.pt2`` file the mobile exporters reload.

The flow (torchao PT2E; graphs from ``torch.export``)::

    # fake-quant graph (train mode) of the range-equalised model, activation ranges from calibration, frozen
    prepared = prepare_qat(model, "xnnpack", calib=calib_batches)
    ...train prepared (ldrs (B, 3, 3, H, W) with H, W multiples of 8) like the float model...
    qmodel = convert(prepared)                        # Q/DQ int8 reference model
    save_quantized("runs/x/standard-q8-xnnpack.pt2", qmodel, None, {"config": cfg.to_dict(), ...})
    model, meta = load_quantized("runs/x/standard-q8-xnnpack.pt2")   # Padded: any H, W

or, from a float model, ``convert(prepare_ptq(model, "coreml", calib_batches))``.

Backends (``QUANT_BACKENDS``):

* ``"xnnpack"``: ExecuTorch's ``XNNPACKQuantizer``, symmetric int8, per-channel conv weights except
  transposed convs, whose weights are per-tensor: a per-channel transposed conv fails ExecuTorch lowering
  (``Missing out variants: dequantize_per_channel``).
* ``"coreml"``: ExecuTorch's port of coremltools' ``CoreMLQuantizer`` (the one in coremltools 9.0 imports
  ``torch.ao.quantization.quantizer``, which torch 2.13 no longer has), W8A8: int8 symmetric per-channel
  weights, uint8 activations. It does not annotate transposed convs; they stay float, as does the short
  frame's encoder (``FLOAT_MODULES``). Preparing is slow
  (~1 min on 2 cores): the quantizer traces ~400 pattern graphs whatever the model.

Graphs take H, W multiples of 8 (``QUANT_MULTIPLE``, EAPNet's PDUB padding); :class:`Padded` restores the
float model's any-size interface. Inputs: ``ldrs`` gamma-encoded LDR frames in [0, 1], ``evs`` stops.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import re
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn
from torch.export import Dim

from eapnet.compress.equalise import equalise as range_equalise
from eapnet.compress.safe_pt2 import safe_load
from eapnet.inference import example_inputs
from eapnet.model import pad_frames
from eapnet.runs import atomic_path

QUANT_BACKENDS = ("xnnpack", "coreml")
QUANT_MULTIPLE = 8          # graphs are exported for H, W = 8 * k; Padded pads other sizes
_MAX_SIDE = 4096            # largest exported H or W (NTIRE frames are 1060 x 1900)
_MAX_BATCH = 64
_META_NAME = "eapnet_quant.json"   # the extra file in the .pt2 that holds save_quantized's ``meta``


def _dynamic_shapes(batch_dynamic: bool) -> tuple[dict, dict]:
    # Dims must be made per export call: torch.export ties a Dim object to one program.
    b = Dim("batch", min=1, max=_MAX_BATCH) if batch_dynamic else None
    h = Dim("h8", min=1, max=_MAX_SIDE // QUANT_MULTIPLE)
    w = Dim("w8", min=1, max=_MAX_SIDE // QUANT_MULTIPLE)
    ldrs = {3: QUANT_MULTIPLE * h, 4: QUANT_MULTIPLE * w}
    if b is not None:
        ldrs[0] = b
    return ldrs, ({0: b} if b is not None else {})


def _trace_example(example, batch_dynamic: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``example`` (default :func:`example_inputs`) checked and shaped for tracing dynamic dims."""
    ldrs, evs = example if example is not None else example_inputs((64, 64), batch=2)
    if (ldrs.dim() != 5 or ldrs.shape[-2] % QUANT_MULTIPLE or ldrs.shape[-1] % QUANT_MULTIPLE
            or min(ldrs.shape[-2:]) < 2 * QUANT_MULTIPLE):
        raise ValueError(f"example ldrs must be (B, 3, 3, H, W) with H, W multiples of {QUANT_MULTIPLE} and at "
                         f"least {2 * QUANT_MULTIPLE}, got {tuple(ldrs.shape)}")
    if batch_dynamic and ldrs.shape[0] == 1:
        # torch.export specialises a size-1 dim to a constant; two copies trace the same graph.
        ldrs, evs = ldrs.repeat(2, 1, 1, 1, 1), evs.repeat(2, 1)
    return ldrs, evs


def export_for_quant(model: nn.Module, example=None, *, batch_dynamic: bool = True) -> torch.fx.GraphModule:
    """``torch.export`` a copy of the float ``model`` (eval) for PT2E quantization; returns ``ep.module()``.

    Batch (if ``batch_dynamic``) and H, W are dynamic, H and W restricted to multiples of 8 (up to 4096), so
    one prepared model serves 96², 128², 256² inputs. ``example``: ``(ldrs, evs)`` with H, W multiples of 8
    and >= 16, default :func:`eapnet.inference.example_inputs` (2, 3, 3, 64, 64). Other sizes go through :class:`Padded`.
    The model is copied first: an exported module shares its parameters, and QAT must not train the caller's
    float model in place.
    """
    multiple = getattr(getattr(model, "config", None), "pad_multiple", 1)
    if QUANT_MULTIPLE % multiple:
        raise ValueError(f"model pads to multiples of {multiple}, which does not divide {QUANT_MULTIPLE}")
    example = _trace_example(example, batch_dynamic)
    model = copy.deepcopy(model).eval()
    ep = torch.export.export(model, example, dynamic_shapes=_dynamic_shapes(batch_dynamic))
    return ep.module()


FLOAT_MODULES: dict[str, tuple[str, ...]] = {"xnnpack": (), "coreml": ("encoders.0",)}
"""Module paths (and everything inside them) each backend's quantizer leaves in float, besides the output head.

Core ML W8A8 keeps the short frame's encoder in float (7.9 % of the 100 G variant's MAccs): its first conv
takes the LDR in [0, 1] beside the EV-aligned linear frame in [0, 4] under one uint8 scale, and its outputs
feed every later layer. Measured on the 100 G variant of the standard teacher (PTQ, 16 calibration scenes;
mean PSNR-μ drop against ground truth on 16 calibration / 16 held-out / the 4 real crops): all int8 0.58 /
0.61 / -0.18 dB, ``encoders.0`` float 0.39 / 0.40 / -0.15, only its first conv float 0.49 / 0.52 / -0.13,
all three encoders float (23.6 % of the MAccs) 0.36 / 0.31 / -0.12. Scaling the linear channels of the
encoders' inputs to the LDR's range instead (same function) changed nothing (0.63 / 0.61). XNNPACK stays all
int8: calibrated the same way, the main job's int8 ``.pte`` loses 0.39 dB on the held-out set, within budget."""


def quantizer_for(backend: str, *, qat: bool = True, float_modules: Sequence[str] = ()):
    """The PT2E quantizer for ``backend`` (one of ``QUANT_BACKENDS``): int8, per-channel conv weights.

    ``qat`` picks fake-quant modules for training (True) or calibration observers for PTQ (False).
    ``float_modules``: module paths left in float besides the backend's own :data:`FLOAT_MODULES` (the
    mixed-precision fallback, :mod:`eapnet.compress.fallback`).
    """
    keep = tuple(dict.fromkeys((*FLOAT_MODULES.get(backend, ()), *float_modules)))
    if backend == "xnnpack":
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
        )

        q = XNNPACKQuantizer().set_global(_xnnpack_config(per_channel=True, qat=qat))
        # Per-tensor transposed-conv weights (per-channel ones break ExecuTorch lowering). The operator hook,
        # not set_module_type: an exported graph's weight nodes carry no nn_module_stack, so a module-type
        # filter rejects the whole conv and leaves it float (measured).
        q.set_operator_type(torch.ops.aten.conv_transpose2d.input, _xnnpack_config(per_channel=False, qat=qat))
        return _float_head(q, float_modules=keep,
                           int8_everywhere=_xnnpack_config(per_channel=True, qat=qat).input_activation)
    if backend == "coreml":
        from coremltools.optimize.torch.quantization import (
            LinearQuantizerConfig,
            ModuleLinearQuantizerConfig,
        )
        from executorch.backends.apple.coreml.quantizer import CoreMLQuantizer

        # Min/max here; _float_head swaps the activations' observers for histograms (this config offers
        # min_max, moving_average and ema only). A moving average on the observer a cat shares across its
        # inputs clips the EV-aligned HDR channels (see _xnnpack_config).
        observer = "min_max"
        w8a8 = ModuleLinearQuantizerConfig(quantization_scheme="symmetric", weight_dtype=torch.qint8,
                                           weight_per_channel=True, activation_dtype=torch.quint8,
                                           weight_observer=observer, activation_observer=observer)
        return _float_head(CoreMLQuantizer(LinearQuantizerConfig(global_config=w8a8)), histogram_qat=qat,
                           float_modules=keep)
    raise ValueError(f"unknown quantization backend {backend!r}: expected one of {QUANT_BACKENDS}")


TRIM_COREML_PATTERNS = True
"""Whether the Core ML quantizer tries only the patterns present in the graph (see below); off only to check."""

TRIM_XNNPACK_PATTERNS = True
"""Whether the XNNPACK quantizer skips its batch-norm patterns on a graph without batch norm (see
:func:`_xnnpack_patterns_present_in`); off only to check."""

# Core ML quantizer annotators, and the aten op (substring of a node target) without which one cannot match
_COREML_ANNOTATOR_OPS = ((r"(^|_)bn(_|$)", "batch_norm"), (r"^linear", "linear"), (r"^matmul", "matmul"),
                         (r"^max_pool", "max_pool"), (r"avg_pool", "avg_pool"), (r"^conv", "conv"), (r"^add", "add"),
                         (r"^mul", "mul"))


@contextlib.contextmanager
def _coreml_patterns_present_in(model: torch.fx.GraphModule):
    """Let the Core ML quantizer try only the patterns whose ops occur in ``model``.

    Why: it builds every match pattern (each conv dimension x 15 activations x in-place or not, with and
    without batch norm, linear, matmul, pooling) by ``torch.export`` of a tiny module, ~0.5 s each: 417 of them,
    223 of the 281 s of a w8a8 export of a small EAPNet at 48x64 (profiled), whatever the model. A pattern
    whose activation, batch norm, linear or pooling op is absent from the graph cannot match, so leaving it
    out changes no annotation (checked: ``tests/test_quantize.py``); activations are kept by their aten name."""
    from executorch.backends.apple.coreml.quantizer import _coreml_quantizer as cq
    from executorch.backends.apple.coreml.quantizer import _coreml_quantizer_utils as cu

    targets = " ".join(str(n.target) for n in model.graph.nodes if n.op == "call_function")

    def present(act) -> bool:
        name = {"relu6": "hardtanh"}.get(act.__name__, act.__name__)   # F.relu6 traces to hardtanh
        return f"aten.{name}." in targets or f"aten.{name}_." in targets

    saved = cu._supported_activations, cu._supported_activations_no_inplace, cq._AnnotationPatternRegistry.REGISTRY
    cu._supported_activations = tuple(a for a in saved[0] if present(a))
    cu._supported_activations_no_inplace = tuple(a for a in saved[1] if present(a))
    cq._AnnotationPatternRegistry.REGISTRY = {
        name: fn for name, fn in saved[2].items()
        if all(f"aten.{op}" in targets for rule, op in _COREML_ANNOTATOR_OPS if re.search(rule, name))}
    try:
        yield
    finally:
        cu._supported_activations, cu._supported_activations_no_inplace = saved[0], saved[1]
        cq._AnnotationPatternRegistry.REGISTRY = saved[2]


@contextlib.contextmanager
def _xnnpack_patterns_present_in(quantizer, model: torch.fx.GraphModule):
    """Let the XNNPACK quantizer skip its conv + batch-norm patterns when ``model`` has no batch norm.

    Why: each of those annotators builds its match patterns (conv1d and conv2d, plain or transposed, with and
    without an in-place ReLU) by ``torch.export`` of a tiny module: 24 exports per preparation, which took the
    PTQ preparation of the 100 G standard from 14.3 to 19.9 s on 2 cores (two runs each, one process), paid
    again by every layer-group probe of the mixed-precision fallback. EAPNet has no batch norm, and a pattern
    with a batch norm cannot match a graph without one, so leaving them out changes no annotation (checked:
    ``tests/test_quantize.py``). The quantizer reads its pattern list from the instance, so only this call sees
    the shorter one."""
    if any("batch_norm" in str(n.target) for n in model.graph.nodes if n.op == "call_function"):
        yield
        return
    quantizer.SUPPORTED_PATTERNS = [p for p in type(quantizer).SUPPORTED_PATTERNS if "_bn" not in p.name]
    try:
        yield
    finally:
        del quantizer.SUPPORTED_PATTERNS


def _histogram_ctr(qat: bool):
    """The activation observer of both backends: a histogram (the range that minimises the quantization error,
    not min/max), inside a ``FakeQuantize`` for QAT (filled by :func:`calibrate`). dtype, scheme and range
    come from each annotation's spec when prepare builds it."""
    from torchao.quantization.pt2e import FakeQuantize, HistogramObserver

    return (FakeQuantize.with_args(observer=HistogramObserver, eps=2**-12) if qat
            else HistogramObserver.with_args(eps=2**-12))


def _histogram_activations(model: torch.fx.GraphModule, qat: bool) -> None:
    """Give every per-tensor activation spec of an annotated graph the :func:`_histogram_ctr` observer (weight
    inputs keep theirs).

    Why: the Core ML quantizer's config offers min/max, moving-average and EMA observers only; histogram ranges
    moved the compressed 100 G standard's W8A8 worst calibration scene from 27.06 to 28.72 dB vs float and its
    GT drop from 0.79 to 0.49 dB (PTQ, 16 calibration scenes)."""
    from torchao.quantization.pt2e.quantizer import QuantizationSpec
    from torchao.quantization.pt2e.quantizer.quantizer import Q_ANNOTATION_KEY

    ctr = _histogram_ctr(qat)

    def swap(spec, source=None):
        if (not isinstance(spec, QuantizationSpec) or getattr(source, "op", None) == "get_attr"
                or spec.qscheme not in (torch.per_tensor_affine, torch.per_tensor_symmetric)):
            return spec
        return dataclasses.replace(spec, observer_or_fake_quant_ctr=ctr)

    for node in model.graph.nodes:
        a = node.meta.get(Q_ANNOTATION_KEY)
        if a is not None:
            a.input_qspec_map = {k: swap(v, k) for k, v in a.input_qspec_map.items()}
            a.output_qspec = swap(a.output_qspec)


def _in_modules(node: torch.fx.Node, prefixes: Sequence[str]) -> bool:
    """Whether an exported graph's ``node`` was traced inside a module whose path starts with one of ``prefixes``
    (``"encoders.0"`` matches ``encoders.0.conv0``, not ``encoders.01``)."""
    if not prefixes:
        return False
    paths = [path for path, _ in (node.meta.get("nn_module_stack") or {}).values()]
    return any(p == pre or p.startswith(pre + ".") for p in paths for pre in prefixes)


# --------------------------------------------------------------------------------------------------
# XNNPACK int8 kernel rules: annotation hooks that exist only because of what XNNPACK's int8 kernels can and
# cannot do (run by the XNNPACK quantizer's ``_float_head`` below, in QAT and PTQ alike). They belong with the
# partitioner configs and node visitors of ``eapnet.export.xnnpack_rules``, which lists every rule, why, and
# the ExecuTorch version it was written for, and whose tests check them; they live here because quantizing
# (``compress/qat.py``) must not depend on the export layer.

_RESIZES = (torch.ops.aten.upsample_bilinear2d.vec, torch.ops.aten.upsample_bilinear2d.default)


def _share_resize_qparams(model: torch.fx.GraphModule, spec) -> int:
    """Annotate every bilinear resize: input quantized with ``spec``, output with the input's parameters
    (a shared spec); returns how many.

    Why: XNNPACK runs an int8 bilinear resize only with equal input and output quantization parameters; the
    XNNPACK quantizer leaves resizes unannotated, so each output was quantized at its user's own scale and the
    resize ran in float between two converts (``eapnet.export.xnnpack_rules``, rule 1). A
    bilinear resize interpolates between its inputs, so its output needs no wider range than its input."""
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, SharedQuantizationSpec
    from torchao.quantization.pt2e.quantizer.quantizer import Q_ANNOTATION_KEY

    n = 0
    for node in model.graph.nodes:
        if node.op == "call_function" and node.target in _RESIZES and Q_ANNOTATION_KEY not in node.meta:
            src = node.args[0]
            node.meta[Q_ANNOTATION_KEY] = QuantizationAnnotation(
                input_qspec_map={src: spec}, output_qspec=SharedQuantizationSpec((src, node)), _annotated=True)
            n += 1
    return n


def _share_split_qparams(model: torch.fx.GraphModule) -> int:
    """Every user of a ``torch.split`` half quantizes it with the split input's parameters (a shared spec);
    returns how many inputs it changed.

    Why: the XNNPACK quantizer leaves the split unannotated and quantizes each half at its user's own scale
    (``Alignment``: the ``1 + scale`` and the ``+ bias``), so the int8 program requantized the whole tensor and
    each half (three Converts per alignment, 65 ms of the 100 G standard's int8 program at 544x960, 1 thread).
    With the source's parameters the halves are plain int8 slices."""
    from torchao.quantization.pt2e.quantizer import SharedQuantizationSpec
    from torchao.quantization.pt2e.quantizer.quantizer import Q_ANNOTATION_KEY

    splits = (torch.ops.aten.split_with_sizes.default, torch.ops.aten.split.Tensor)
    n = 0
    for node in model.graph.nodes:
        if node.op != "call_function" or node.target not in splits:
            continue
        src = node.args[0]
        if Q_ANNOTATION_KEY not in src.meta:       # a float source (not quantized): nothing to share
            continue
        for half in node.users:
            for user in half.users:
                a = user.meta.get(Q_ANNOTATION_KEY)
                if a is not None and half in a.input_qspec_map:
                    a.input_qspec_map[half] = SharedQuantizationSpec(src)
                    n += 1
    return n


def _pools_as_convs(model: torch.fx.GraphModule) -> int:
    """Replace each 2x2 stride-2 average pool by the same function as a depthwise conv with fixed 1/4 weights (a
    buffer of ``model``); returns how many.

    Why: XNNPACK has no int8 average pooling, so in the int8 program each pool was a float island between two
    Converts of a full-resolution tensor (the half-resolution attention's and alignment's inputs: 99 ms of the
    100 G standard's int8 program at 544x960, 1 thread, pools and their Converts). As a conv it is an int8 depthwise conv; its weights
    quantize exactly (1/4 is 127 steps of a per-channel scale of 1/508). The float graph computes the same
    values: a conv with these weights is the pool."""
    n = 0
    for node in list(model.graph.nodes):
        if node.op != "call_function" or node.target != torch.ops.aten.avg_pool2d.default:
            continue
        names = ("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")
        a = dict(zip(names, node.args)) | node.kwargs
        if not (list(a["kernel_size"]) == [2, 2] and list(a.get("stride") or [2, 2]) == [2, 2]
                and a.get("padding", 0) in (0, [0, 0]) and not a.get("ceil_mode", False)
                and a.get("divisor_override") is None):
            continue
        x = a["input"]
        c = x.meta["val"].shape[1]
        name = f"_pool_as_conv_{n}"
        model.register_buffer(name, torch.full((c, 1, 2, 2), 0.25))
        with model.graph.inserting_before(node):
            w = model.graph.get_attr(name)
            conv = model.graph.call_function(torch.ops.aten.conv2d.default,
                                             (x, w, None, [2, 2], [0, 0], [1, 1], c))
        w.meta["val"] = getattr(model, name)
        conv.meta = dict(node.meta)
        node.replace_all_uses_with(conv)
        model.graph.erase_node(node)
        n += 1
    if n:
        model.graph.lint()
        model.recompile()
    return n


# End of the XNNPACK int8 kernel rules.
# --------------------------------------------------------------------------------------------------


def _float_head(quantizer, histogram_qat: bool | None = None, float_modules: Sequence[str] = (),
                int8_everywhere=None):
    """``quantizer`` with the output head left in float: the output conv (a conv whose result feeds no other
    conv) and every op after it (the residual add to the radiance merge, the final ReLU, the crop) keep float
    inputs, weights and outputs. ``histogram_qat`` not None: activations get histogram observers
    (:func:`_histogram_activations`, for QAT when True).

    Why: the head's output is the HDR image itself, and the output conv's is the correction added to it; in
    int8 either would be 255 levels over its whole range, which costs dB of PSNR-μ in the dark regions where
    μ-law tone mapping magnifies every step (measured on a 100 G standard, 16 held-out scenes, PTQ: float
    28.92 dB with an int8 output conv, 29.17 with a float one, 29.51 for the float model; any other module
    group left float gains at most 0.11 dB). The output conv is ~2 % of the MAccs (32 -> 3 channels); the
    rest stays int8, and XNNPACK runs the float conv and elementwise ops as well.

    ``int8_everywhere`` (XNNPACK): an activation spec; then bilinear resizes keep their input's int8 parameters
    (:func:`_share_resize_qparams`), the halves of a split their source's (:func:`_share_split_qparams`) and
    2x2 average pools become depthwise convs (:func:`_pools_as_convs`): the int8 program of an XNNPACK
    ``.pte`` then converts to float only for the output head."""
    from torchao.quantization.pt2e.quantizer.quantizer import (
        Q_ANNOTATION_KEY,
        Quantizer,
    )

    class FloatHead(Quantizer):
        inner = quantizer  # the backend's own quantizer (its config, for inspection)

        def transform_for_annotation(self, model):
            model = quantizer.transform_for_annotation(model)
            if int8_everywhere is not None:
                _pools_as_convs(model)
            return model

        def annotate(self, model):
            if type(quantizer).__name__ == "CoreMLQuantizer" and TRIM_COREML_PATTERNS:
                with _coreml_patterns_present_in(model):
                    model = quantizer.annotate(model)
            elif type(quantizer).__name__ == "XNNPACKQuantizer" and TRIM_XNNPACK_PATTERNS:
                with _xnnpack_patterns_present_in(quantizer, model):
                    model = quantizer.annotate(model)
            else:
                model = quantizer.annotate(model)
            if int8_everywhere is not None:
                _share_resize_qparams(model, int8_everywhere)
                _share_split_qparams(model)
            if histogram_qat is not None:
                _histogram_activations(model, histogram_qat)
            convs = (torch.ops.aten.conv2d.default, torch.ops.aten.conv_transpose2d.input)
            feeds_conv: set = set()
            for node in reversed(model.graph.nodes):  # reverse topological order: users come first
                if node.target in convs or any(u in feeds_conv for u in node.users):
                    feeds_conv.add(node)
            for node in model.graph.nodes:
                output_conv = node.target in convs and not any(u in feeds_conv for u in node.users)
                if node.op == "call_function" and (node not in feeds_conv or output_conv
                                                   or _in_modules(node, float_modules)):
                    node.meta.pop(Q_ANNOTATION_KEY, None)
            return model

        def validate(self, model):
            return quantizer.validate(model)

    return FloatHead()


def _xnnpack_config(per_channel: bool, qat: bool):
    """XNNPACK's symmetric int8 config; for QAT with fake-quant modules whose qparams are convert's."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e import (
        FakeQuantize,
        MovingAverageMinMaxObserver,
        MovingAveragePerChannelMinMaxObserver,
    )

    cfg = get_symmetric_quantization_config(is_per_channel=per_channel, is_qat=qat)
    if not qat:
        return cfg
    # XNNPACK's QAT default, FusedMovingAvgObsFakeQuantize, fake-quantizes with qparams of its own kernel:
    # 255 levels instead of the spec's symmetric [-127, 127], affine for single-sign weight channels. The
    # trained graph then differed from its converted form on 99 % of weights (measured). Plain FakeQuantize
    # uses its observer's qparams, the ones convert_pt2e bakes in.
    # Activations: a histogram observer (XNNPACK's PTQ choice: the range that minimises the quantization
    # error, not min/max), filled by calibrate() and then frozen. Min/max ranges that kept observing the
    # training patches grew up to 2x in 40 QAT steps and cost 0.66 dB held-out PSNR-μ, where the same steps
    # with frozen ranges gained 0.06 (100 G standard); the histogram's ranges gain another 0.34 dB over
    # min/max ones. A moving average clips the HDR channels of a cat that shares one observer with the LDR
    # ones (range 1.03 where the EV-aligned data reach 2-4).
    act = dataclasses.replace(cfg.input_activation, observer_or_fake_quant_ctr=_histogram_ctr(qat=True))
    # averaging_constant=1: weight ranges follow the current weights, which convert quantizes with them.
    w_obs = MovingAveragePerChannelMinMaxObserver if per_channel else MovingAverageMinMaxObserver
    weight = dataclasses.replace(cfg.weight, observer_or_fake_quant_ctr=FakeQuantize.with_args(
        observer=w_obs, averaging_constant=1.0, eps=2**-12))
    return dataclasses.replace(cfg, input_activation=act, output_activation=act, weight=weight)


def prepare_qat(model: nn.Module, backend: str = "xnnpack", example=None,
                calib: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None, *,
                equalise: bool = True) -> torch.fx.GraphModule:
    """Fake-quant graph of ``model`` for quantization-aware training, in train mode.

    ``calib`` (``(ldrs, evs)`` batches as in :func:`prepare_ptq`): the graph is built from the
    range-equalised model (:func:`eapnet.compress.equalise.equalise`, unless ``equalise`` is False) and calibrated
    on them (:func:`calibrate`); without ``calib``, calibrate it yourself before training. Then train it like
    the float model (any optimizer over ``prepared.parameters()``) on ldrs whose H, W are multiples of 8 (or
    through :class:`Padded`). Weight observers follow the weights on every forward (torchao's ``disable_observer``
    applied to the graph stops them). ``.train()``/``.eval()`` raise on exported graphs; the mode is set with torchao's
    ``move_exported_model_to_train/eval`` (it only affects dropout and batch norm).
    """
    from torchao.quantization.pt2e import move_exported_model_to_train
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    quantizer = quantizer_for(backend, qat=True)   # an unknown backend fails before the slow export
    if calib is not None and equalise:
        model = range_equalise(model, calib)
    prepared = move_exported_model_to_train(prepare_qat_pt2e(export_for_quant(model, example), quantizer))
    return prepared if calib is None else calibrate(prepared, calib)


def prepare_ptq(model: nn.Module, backend: str,
                calib_batches: Sequence[tuple[torch.Tensor, torch.Tensor]], *,
                equalise: bool = True, float_modules: Sequence[str] = ()) -> torch.fx.GraphModule:
    """Observed graph of ``model`` calibrated for post-training quantization; pass it to :func:`convert`.

    ``calib_batches``: ``(ldrs (B, 3, 3, H, W) in [0, 1], evs (B, 3))`` pairs, any H, W (padded to 8 as
    in inference). Use several representative scenes: ranges from one input clip the others. The graph is
    built from the range-equalised model (:func:`eapnet.compress.equalise.equalise`) unless ``equalise`` is False.
    ``float_modules``: module paths to keep in float (:func:`quantizer_for`).
    """
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    if not calib_batches:
        raise ValueError("prepare_ptq needs at least one calibration batch")
    quantizer = quantizer_for(backend, qat=False, float_modules=float_modules)
    if equalise:
        model = range_equalise(model, calib_batches)
    prepared = move_exported_model_to_eval(prepare_pt2e(export_for_quant(model), quantizer))
    _observe(prepared, calib_batches)
    return prepared


def _observe(prepared: torch.fx.GraphModule, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Run ``(ldrs, evs)`` batches of any H, W (padded to 8) through a prepared graph for its observers."""
    with torch.no_grad():
        for ldrs, evs in batches:
            prepared(pad_frames(ldrs, QUANT_MULTIPLE), evs)


def _activation_fake_quants(prepared: torch.fx.GraphModule) -> list[nn.Module]:
    """The observer/fake-quant modules of a prepared graph that see activations (not a weight parameter)."""
    found = {}   # by identity: a cat's inputs share one module under several names
    for n in prepared.graph.nodes:
        if (n.op == "call_module" and n.target.startswith("activation_post_process")
                and not (n.args and getattr(n.args[0], "op", None) == "get_attr")):
            m = prepared.get_submodule(n.target)
            found[id(m)] = m
    return list(found.values())


def calibrate(prepared: torch.fx.GraphModule,
              batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> torch.fx.GraphModule:
    """Set a :func:`prepare_qat` graph's activation ranges from ``batches`` (``(ldrs, evs)``, any H, W) and
    freeze them, as post-training quantization would: with 0 training steps, :func:`convert` of the result
    is PTQ. Fake quantization is off while the ranges are observed (each observer sees the float model's
    activations) and on afterwards; weight observers keep following the weights."""
    from torchao.quantization.pt2e import disable_fake_quant, disable_observer, enable_fake_quant

    if not batches:
        raise ValueError("calibrate needs at least one calibration batch")
    prepared.apply(disable_fake_quant)
    _observe(prepared, batches)
    prepared.apply(enable_fake_quant)
    for m in _activation_fake_quants(prepared):
        disable_observer(m)
    return prepared


def convert(prepared: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """The Q/DQ int8 reference model (eval mode) of a trained or calibrated graph; ``prepared`` is kept as is,
    so training can go on after converting a snapshot."""
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    return convert_pt2e(move_exported_model_to_eval(copy.deepcopy(prepared)))


class Padded(nn.Module):
    """The float model's interface for a graph that takes H, W multiples of ``multiple``: replicate-pads
    ``(B, 3, 3, H, W)`` frames at the bottom/right (``eapnet.model.pad_frames``), calls ``inner(ldrs, evs)``
    and crops its ``(B, 3, Hp, Wp)`` output back to ``(B, 3, H, W)``."""

    def __init__(self, inner: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], multiple: int = QUANT_MULTIPLE):
        super().__init__()
        self.inner = inner
        self.multiple = multiple

    def forward(self, ldrs: torch.Tensor, evs: torch.Tensor) -> torch.Tensor:
        H, W = ldrs.shape[-2], ldrs.shape[-1]
        return self.inner(pad_frames(ldrs, self.multiple), evs)[..., :H, :W]

    def train(self, mode: bool = True) -> Padded:
        # Exported graphs raise on .train()/.eval() (their mode is fixed at export): set only our flag, so
        # callers can still call model.eval() as on the float model.
        self.training = mode
        return self


def save_quantized(path: str | os.PathLike, gm: nn.Module, example=None, meta: dict | None = None) -> Path:
    """Write the converted int8 model ``gm`` (or a :class:`Padded` around it) to ``path`` (a ``.pt2``).

    The graph is exported again with dynamic batch and H, W = 8 * k (``example`` as in
    :func:`export_for_quant`) and saved with ``torch.export.save``, ``meta`` (JSON-serialisable: config
    dict, backend, ...) stored inside the file. Atomic: a crash never leaves a partial file at ``path``.
    The re-exported program is checked against ``gm`` (bit-identical on a 32² input) before anything is written.
    """
    if isinstance(gm, Padded):
        gm = gm.inner
    example = _trace_example(example, batch_dynamic=True)
    meta_json = json.dumps(meta or {})   # fails here, before anything is written, if not JSON-serialisable
    ep = torch.export.export(gm, example, dynamic_shapes=_dynamic_shapes(batch_dynamic=True))
    check = example_inputs((32, 32))   # small: the reference Q/DQ ops are slow (~2 s for 2 x 64² on CPU)
    with torch.no_grad():
        want, got = gm(*check), ep.module()(*check)
    if not torch.equal(want, got):
        raise RuntimeError(f"re-exported quantized program differs from the module: max abs diff "
                           f"{(want - got).abs().max().item():.3g}")
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.export.save(ep, tmp, extra_files={_META_NAME: meta_json})
    return path


_MAX_META_BYTES = 1 << 20
"""Largest metadata member read from a ``.pt2`` (1 MiB; save_quantized writes a few kB)."""


def read_quantized_meta(path: str | os.PathLike) -> dict:
    """The ``meta`` dict of a file written by :func:`save_quantized`, without loading its program (which takes
    ~20 s for a standard EAPNet)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no quantized model at {path}")
    try:
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if n.endswith(f"/extra/{_META_NAME}")]
            if not names:
                raise ValueError(f"{path} has no {_META_NAME}: not written by eapnet.compress.quantize.save_quantized")
            if z.getinfo(names[0]).file_size > _MAX_META_BYTES:
                raise ValueError(f"{path}: its {_META_NAME} is {z.getinfo(names[0]).file_size >> 20} MiB, not the "
                                 "few kB save_quantized writes")
            return json.loads(z.read(names[0]))
    except (zipfile.BadZipFile, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not a readable torch.export program ({type(e).__name__}: {e})") from e


def load_quantized(path: str | os.PathLike) -> tuple[Padded, dict]:
    """``(Padded(program), meta)`` from a file written by :func:`save_quantized`: the int8 model with the
    float model's interface (any H, W, eval mode) and the ``meta`` dict saved with it. The file is untrusted:
    :func:`eapnet.compress.safe_pt2.safe_load` refuses anything whose loading could run code (``ValueError``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no quantized model at {path}")
    extra = {_META_NAME: ""}
    import torchao.quantization.pt2e.quantize_pt2e  # noqa: F401  registers the quantized_decomposed Q/DQ ops

    ep = safe_load(path, extra_files=extra)   # refuses an archive whose loading could run code
    if not extra[_META_NAME]:
        raise ValueError(f"{path} has no {_META_NAME}: not written by eapnet.compress.quantize.save_quantized")
    return Padded(ep.module()).eval(), json.loads(extra[_META_NAME])
