"""Every rule this project adds to ExecuTorch's XNNPACK backend, in one place, for ExecuTorch ``WRITTEN_FOR``.

Stock ExecuTorch (1.5.1) offers some ops XNNPACK itself runs on int8 (or uint8) tensors in fp32 only, so an
int8 program paid two XNNPACK Converts (int8 -> fp32 -> int8) around each of them; and it has no way to take
an app program's 8-bit frames into the delegate. The rules, what they rely on, and why:

Partitioner configs (:func:`partitioner_configs`, passed to ``XnnpackPartitioner`` by
``eapnet.export.executorch_export.lower``):

1. ``Int8Resize`` (replaces ``UpsampleBilinear2dConfig``): bilinear resizes also on int8 tensors. XNNPACK's
   int8 resize cannot requantize, so a ``dequantize -> resize -> quantize`` whose two parameter sets differ is
   refused with a reason (:func:`requantizing_int8_ops` finds them before lowering: ExecuTorch keeps resizes
   from decomposition, so a refused one cannot be lowered at all); the XNNPACK quantizer of
   ``eapnet.compress.quantize`` gives every resize its input's parameters (rule 6), so only an int8 program
   quantized before that sharing has such a resize. Before: the resizes ran in float, 120 ms of the 100 G
   standard's int8 program at 1900x1060, plus their share of XNNPACK's Converts (243 ms).
2. ``Int8Sigmoid`` (replaces ``SigmoidConfig``): sigmoids also on int8 tensors (XNNPACK runs an int8 sigmoid
   as a lookup table, for any pair of parameters).
3. ``Uint8Dequantize`` (replaces ``DeQuantizedPerTensorConfig``): a standalone ``dequantize_per_tensor`` of a
   uint8 tensor into float32 (an app program's input ``frames``: the code ``c`` as ``c / 255``; see
   ``eapnet.export.executorch_export.make_delegable``), in fp32 and int8 programs. Stock configs accept int8
   dequantizes only (``invalid dtype``) and ``_to_copy`` without a dtype change only, so the frames' cast stayed
   outside the delegate.

Node visitors (:func:`install`, called by ``lower``: ExecuTorch keeps one visitor per op in its private
registry ``node_visitor._node_visitor_dict``, so the replacement is process-wide; installing twice is a no-op):

4. ``Int8ResizeVisitor``: ExecuTorch's resize visitor defines the resize's tensors without their
   quantization parameters (it never sees int8 ones); this one defines them with (``define_nodes_tensor_inputs_
   outputs``), then serialises the op as before.
5. ``Uint8DequantizeVisitor``: ExecuTorch serialises every per-tensor quantized tensor as ``qint8``
   (``NodeVisitor.get_serialized_dtype``), which would read code 200 as -56; this one serialises a uint8
   dequantize's input as ``quint8`` (XNNPACK's ``Convert (NC, QU8, F32)``). Measured without it: output off
   by 1.3 on a one-conv program.

Quantizer annotation hooks (in ``eapnet.compress.quantize``, section "XNNPACK int8 kernel rules", run by its XNNPACK
quantizer in QAT and PTQ alike; they stay there because ``compress/qat.py`` (layer 1) quantizes without
``eapnet.export``; :data:`QUANTIZER_RULES` names them here):

6. ``_share_resize_qparams``: a resize's output keeps its input's int8 parameters (rule 1 needs them equal).
7. ``_share_split_qparams``: a ``torch.split``'s halves keep their source's parameters (XNNPACK's int8 slice
   cannot requantize; ExecuTorch refuses such a slice: ``XNNPACK static slice requires matching input and
   output quantization parameters``).
8. ``_pools_as_convs``: 2x2 stride-2 average pools as fixed depthwise convs (XNNPACK has no int8 average
   pooling; 1/4 weights quantize exactly).

On an ExecuTorch upgrade ``tests/test_xnnpack_rules.py`` fails first (version pin, the private names of
:data:`PRIVATE_NAMES`, what the rules do on a tiny int8 graph); re-verify there whether ExecuTorch now does each
rule itself (then drop it) and that the replaced configs and visitors still match ExecuTorch's own.
"""
from __future__ import annotations

import importlib
import logging

import torch

from eapnet.compress.quantize import _pools_as_convs, _share_resize_qparams, _share_split_qparams

__all__ = ["PRIVATE_NAMES", "QUANTIZER_RULES", "REPLACED_VISITORS", "WRITTEN_FOR", "install", "installed",
           "partitioner_configs", "requantizing_int8_ops", "resolve"]

WRITTEN_FOR = "1.5.1"
"""The ExecuTorch version these rules were written and measured for (``pyproject.toml`` pins it)."""

PRIVATE_NAMES: tuple[tuple[str, str], ...] = (
    ("executorch.backends.xnnpack.operators.node_visitor", "_node_visitor_dict"),
    ("executorch.backends.xnnpack.operators.node_visitor", "register_node_visitor"),
    ("executorch.backends.xnnpack.operators.node_visitor", "NodeVisitor.define_nodes_tensor_inputs_outputs"),
    ("executorch.backends.xnnpack.operators.node_visitor", "NodeVisitor.get_serialized_dtype"),
    ("executorch.backends.xnnpack.partition.config", "ALL_PARTITIONER_CONFIGS"),
    ("executorch.backends.xnnpack.partition.config.generic_node_configs", "UpsampleBilinear2dConfig"),
    ("executorch.backends.xnnpack.partition.config.generic_node_configs", "SigmoidConfig"),
    ("executorch.backends.xnnpack.partition.config.generic_node_configs", "DeQuantizedPerTensorConfig"),
    ("executorch.backends.xnnpack.partition.config.xnnpack_config", "ConfigPrecisionType"),
    ("executorch.backends.xnnpack.partition.config.xnnpack_config", "XNNPartitionerConfig._check_node_has_valid_dtype"),
    ("executorch.backends.xnnpack.partition.config.xnnpack_config", "XNNPartitionerConfig.check_common_constraints"),
    ("executorch.backends.xnnpack.serialization.xnnpack_graph_schema", "XNNDatatype.xnn_datatype_quint8"),
    ("executorch.backends.xnnpack.utils.quant_utils", "is_dequant"),
    ("executorch.backends.xnnpack.utils.quant_utils", "is_quant"),
    ("executorch.exir.backend.canonical_partitioners.config_partitioner", "format_target_name"),
    ("executorch.exir.backend.utils", "WhyNoPartition"),
)
"""``(module, attribute path)`` of each ExecuTorch name that is not public API and that these rules (or the
reasons ``eapnet.export.executorch_export`` collects from the partitioner's log) rely on."""

QUANTIZER_RULES = (_share_resize_qparams, _share_split_qparams, _pools_as_convs)
"""Rules 6-8 (module docstring): the XNNPACK quantizer's annotation hooks, defined in ``eapnet.compress.quantize``."""

_RESIZE_TARGET = "aten.upsample_bilinear2d.vec"
_DEQUANT_TARGET = "quantized_decomposed.dequantize_per_tensor.default"
REPLACED_VISITORS = {_RESIZE_TARGET: "StaticResizeBilinear2DVisitor", _DEQUANT_TARGET: "OpDeQuantizePerTensor"}
"""Registry key -> ExecuTorch's own visitor class that :func:`install` subclasses (rules 4, 5). ExecuTorch's
``register_node_visitor`` decorator returns None, so these classes exist only in the registry."""


def resolve(module: str, path: str):
    """The object at ``module``.``path`` (``"Class.method"`` allowed); AttributeError / ImportError if gone."""
    obj = importlib.import_module(module)
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _is_uint8_dequantize(node: torch.fx.Node) -> bool:
    """A per-tensor ``dequantize`` of a uint8 tensor into float32 (rule 3)."""
    if not (node.op == "call_function"
            and getattr(node.target, "__name__", "").endswith("dequantize_per_tensor.default")):
        return False
    src, val = node.args[0], node.meta.get("val")
    return (isinstance(src, torch.fx.Node) and getattr(src.meta.get("val"), "dtype", None) == torch.uint8
            and node.args[-1] == torch.uint8 and val is not None and val.dtype == torch.float32)


_EQUAL_QPARAMS = {
    "upsample_bilinear2d.vec": "XNNPACK int8 bilinear resize requires matching input and output quantization "
                               "parameters",
    "slice.Tensor": "XNNPACK static slice requires matching input and output quantization parameters",
    "slice_copy.Tensor": "XNNPACK static slice requires matching input and output quantization parameters",
}
"""Ops whose XNNPACK int8 kernel cannot requantize (aten and edge names), with the reason (ExecuTorch's own
words for the slice)."""


def _requantizes(node: torch.fx.Node) -> str | None:
    """The reason ``node`` cannot run as an XNNPACK int8 op: a ``dequantize -> op -> quantize`` of an op of
    ``_EQUAL_QPARAMS`` whose two parameter sets differ; None otherwise."""
    from executorch.backends.xnnpack.utils.quant_utils import is_dequant, is_quant
    from executorch.exir.backend.canonical_partitioners.config_partitioner import (
        format_target_name,
    )

    if node.op != "call_function":
        return None
    why = _EQUAL_QPARAMS.get(format_target_name(getattr(node.target, "__name__", "")))
    dq, users = node.args[0] if node.args else None, list(node.users)
    if (why is None or not isinstance(dq, torch.fx.Node) or not is_dequant(dq) or len(users) != 1
            or not is_quant(users[0]) or tuple(dq.args[1:]) == tuple(users[0].args[1:])):
        return None
    return why


def requantizing_int8_ops(graph: torch.fx.Graph) -> list[tuple[torch.fx.Node, str]]:
    """``(node, reason)`` of each bilinear resize and slice of an int8 program that would have to requantize
    (:func:`_requantizes`): an int8 program quantized before ``eapnet.compress.quantize`` shared their parameters
    (rules 6, 7). ExecuTorch refuses such a slice (it stays outside the delegate); such a resize cannot be
    lowered at all (rule 1 refuses it, and ExecuTorch keeps resizes from decomposition), so
    ``eapnet.export.executorch_export.lower`` looks for them first."""
    return [(n, why) for n in graph.nodes if (why := _requantizes(n)) is not None]


def partitioner_configs() -> list:
    """ExecuTorch's XNNPACK partitioner configs with rules 1-3 (module docstring) in place of the configs they
    extend; every other config is ExecuTorch's own."""
    from executorch.backends.xnnpack.partition.config import ALL_PARTITIONER_CONFIGS
    from executorch.backends.xnnpack.partition.config.generic_node_configs import (
        DeQuantizedPerTensorConfig,
        SigmoidConfig,
        UpsampleBilinear2dConfig,
    )
    from executorch.backends.xnnpack.partition.config.xnnpack_config import (
        ConfigPrecisionType,
    )
    from executorch.exir.backend.utils import WhyNoPartition

    both = [ConfigPrecisionType.FP32, ConfigPrecisionType.STATIC_QUANT]
    # the partitioner's own reason logger (``eapnet.export.executorch_export`` collects its messages)
    why = WhyNoPartition(logger=logging.getLogger(UpsampleBilinear2dConfig.__module__))

    class Int8Resize(UpsampleBilinear2dConfig):
        def supported_precision_types(self):
            return both

        def check_constraints(self, node, ep):
            if not super().check_constraints(node, ep):
                return False
            reason = _requantizes(node)
            if reason is not None:
                why(node, reason=reason)
                return False
            return True

    class Int8Sigmoid(SigmoidConfig):
        def supported_precision_types(self):
            return both

    class Uint8Dequantize(DeQuantizedPerTensorConfig):
        def supported_precision_types(self):
            return both

        def _check_node_has_valid_dtype(self, node):
            return _is_uint8_dequantize(node) or super()._check_node_has_valid_dtype(node)

    swap = {UpsampleBilinear2dConfig: Int8Resize, SigmoidConfig: Int8Sigmoid,
            DeQuantizedPerTensorConfig: Uint8Dequantize}
    return [swap.get(c, c) for c in ALL_PARTITIONER_CONFIGS]


def install() -> None:
    """Put rules 4 and 5 (module docstring) into ExecuTorch's visitor registry; does nothing when they are
    already there. Process-wide: ``to_edge_transform_and_lower`` looks visitors up in that registry."""
    from executorch.backends.xnnpack.operators.node_visitor import (
        _node_visitor_dict,
        register_node_visitor,
    )
    from executorch.backends.xnnpack.serialization.xnnpack_graph_schema import (
        XNNDatatype,
    )

    resize = _node_visitor_dict[_RESIZE_TARGET]
    if not getattr(resize, "eapnet_rule", False):
        class Int8ResizeVisitor(resize):
            eapnet_rule = True

            def define_node(self, node, xnn_graph, vals_to_ids, debug_handle):
                self.define_nodes_tensor_inputs_outputs(node, xnn_graph, vals_to_ids, convert_to_nhwc=True)
                super().define_node(node, xnn_graph, vals_to_ids, debug_handle)

        register_node_visitor(Int8ResizeVisitor)

    dequant = _node_visitor_dict[_DEQUANT_TARGET]
    if not getattr(dequant, "eapnet_rule", False):
        class Uint8DequantizeVisitor(dequant):
            eapnet_rule = True

            def get_serialized_dtype(self, quant_params, node, force_fp32=False):
                if (quant_params is not None and not quant_params.per_channel and not quant_params.is_dynamic
                        and quant_params.dtype == torch.uint8):
                    return XNNDatatype.xnn_datatype_quint8
                return super().get_serialized_dtype(quant_params, node, force_fp32)

        register_node_visitor(Uint8DequantizeVisitor)


def installed() -> bool:
    """Whether :func:`install` has put both visitors into ExecuTorch's registry."""
    from executorch.backends.xnnpack.operators.node_visitor import _node_visitor_dict

    return all(getattr(_node_visitor_dict[t], "eapnet_rule", False) for t in (_RESIZE_TARGET, _DEQUANT_TARGET))
