"""The XNNPACK rules of ``eapnet.export.xnnpack_rules`` hold for the installed ExecuTorch: it is the version they
were written for, every private name they use is still there, and on a tiny int8 graph they do what they say
(resizes and sigmoids run on int8 tensors with no Convert before them, split halves and pools need no
requantization, a uint8 input converts inside the delegate); an int8 program quantized without the shared
parameters is refused with advice. Micro graphs at 16x24: each lowering takes seconds."""
import importlib.metadata

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import eapnet.compress.quantize as cq
from eapnet.compress.quantize import Padded, convert, prepare_ptq
from eapnet.export import executorch_export as ee
from eapnet.export import xnnpack_rules as rules
from eapnet.export.common import Source, app_example_inputs, example_inputs, export_fixed, with_io
from eapnet.export.pte_profile import profile_pte

SIZE = (16, 24)


def test_executorch_is_the_version_the_rules_were_written_for():
    installed = importlib.metadata.version("executorch")
    assert installed == rules.WRITTEN_FOR, (
        f"ExecuTorch {installed} is installed; eapnet/export/xnnpack_rules.py was written for {rules.WRITTEN_FOR}. "
        "Re-verify each rule its docstring lists: does ExecuTorch now take int8 bilinear resizes, int8 sigmoids "
        "and uint8 dequantizes itself (then drop the rule), do the configs and visitors it replaces still match "
        "ExecuTorch's own (Int8Resize / Int8Sigmoid / Uint8Dequantize, the resize and dequantize visitors), and "
        "does the XNNPACK quantizer still leave resizes and splits unannotated (eapnet.compress.quantize's hooks); run "
        "tests/test_xnnpack_rules.py and tests/test_executorch_export.py -m slow, then set WRITTEN_FOR")


@pytest.mark.parametrize("module, name", rules.PRIVATE_NAMES, ids=[n for _, n in rules.PRIVATE_NAMES])
def test_each_private_executorch_name_still_exists(module, name):
    assert rules.resolve(module, name) is not None


def test_the_visitors_the_rules_extend_are_executorchs():
    from executorch.backends.xnnpack.operators.node_visitor import NodeVisitor, _node_visitor_dict

    for target, name in rules.REPLACED_VISITORS.items():
        visitor = _node_visitor_dict[target]
        stock = next(c for c in visitor.__mro__ if not getattr(c, "eapnet_rule", False))   # under ours, if installed
        assert stock.__name__ == name and issubclass(stock, NodeVisitor) and "define_node" in vars(stock), target


def test_install_is_explicit_and_idempotent():
    from executorch.backends.xnnpack.operators.node_visitor import _node_visitor_dict

    rules.install()
    before = dict(_node_visitor_dict)
    rules.install()
    assert _node_visitor_dict == before and rules.installed()
    names = {c.__name__ for c in rules.partitioner_configs()}
    assert {"Int8Resize", "Int8Sigmoid", "Uint8Dequantize"} <= names
    assert not {"UpsampleBilinear2dConfig", "SigmoidConfig", "DeQuantizedPerTensorConfig"} & names
    assert [r.__name__ for r in rules.QUANTIZER_RULES] == ["_share_resize_qparams", "_share_split_qparams",
                                                          "_pools_as_convs"]


class Micro(nn.Module):
    """Every op the rules are about, in the model's arrangement: conv -> 2x2 average pool -> conv -> bilinear
    x2 -> + skip -> sigmoid gate (half-resolution attention) -> split halves ``f * (1 + a) + b`` (the
    alignment) -> conv -> output conv (float head)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.c0 = nn.Conv2d(9, 8, 3, padding=1)
        self.c1 = nn.Conv2d(8, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 16, 1)
        self.c3 = nn.Conv2d(8, 8, 3, padding=1)
        self.out = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, ldrs, evs):
        b, _, _, h, w = ldrs.shape
        x = torch.relu(self.c0(ldrs.reshape(b, 9, h, w)))
        g = F.interpolate(self.c1(F.avg_pool2d(x, 2)), scale_factor=2, mode="bilinear", align_corners=False)
        x = x * torch.sigmoid(g + x)
        a, c = torch.split(self.c2(x), 8, dim=1)
        return self.out(torch.relu(self.c3(x * (1 + a) + c)))


def _int8(model: nn.Module) -> Padded:
    calib = [example_inputs(SIZE, batch=2, seed=s) for s in range(2)]
    return Padded(convert(prepare_ptq(model, "xnnpack", calib, equalise=False))).eval()


@pytest.fixture(scope="module")
def micro_int8():
    return _int8(Micro().eval())


def _write(edge, path):
    with open(path, "wb") as f:
        edge.to_executorch().write_to_file(f)
    return path


def test_rules_keep_resize_sigmoid_split_and_pools_int8(tmp_path, micro_int8):
    """With the rules the int8 program converts only its input and its float head; ExecuTorch's stock configs
    run the resize in float between two Converts."""
    from executorch.backends.xnnpack.partition.config import ALL_PARTITIONER_CONFIGS

    targets = {str(n.target) for n in micro_int8.inner.graph.nodes if n.op == "call_function"}
    assert "aten.avg_pool2d.default" not in targets                  # rule 8: the pool is a depthwise conv
    edge = ee.lower(export_fixed(micro_int8, SIZE))
    assert ee.delegation_report(edge)["non_delegated_nodes"] == 0
    names = [e.name for e in profile_pte(_write(edge, tmp_path / "rules.pte"), runs=1, threads=1).events]
    gated = [i for i, n in enumerate(names) if n.startswith(("Resize Bilinear", "Sigmoid", "Invalid Unary"))]
    assert len(gated) == 2, names                                    # the resize and the sigmoid
    assert not [names[i - 1] for i in gated if names[i - 1].startswith("Convert")], names
    assert not [n for n in names if n.startswith(("Average Pooling", "Slice (ND, X32)"))], names
    converts = sum(n.startswith("Convert") for n in names)
    assert converts == 2, names                                      # the input frames and the float head

    # the same program with ExecuTorch's own configs: the float islands come back
    import executorch.exir as exir
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    stock = exir.to_edge_transform_and_lower(ee.make_delegable(export_fixed(micro_int8, SIZE)),
                                             partitioner=[XnnpackPartitioner(configs=ALL_PARTITIONER_CONFIGS)])
    stock_names = [e.name for e in profile_pte(_write(stock, tmp_path / "stock.pte"), runs=1, threads=1).events]
    resize = next(i for i, n in enumerate(stock_names) if n.startswith("Resize Bilinear"))
    assert stock_names[resize - 1].startswith("Convert"), stock_names      # int8 -> fp32 before the resize
    assert sum(n.startswith("Convert") for n in stock_names) == converts + 2, stock_names   # and back after


def test_uint8_frames_convert_inside_the_delegate(micro_int8, tmp_path):
    """Rules 3 and 5: the app program's ``frames.to(float32) * (1/255)`` becomes one dequantize that XNNPACK
    takes, with the uint8 codes read as uint8 (read as int8 they were off by 1.3), fp32 and int8."""
    from executorch.runtime import Runtime

    frames, evs = app_example_inputs(SIZE, seed=1)
    for name, module, tol in (("fp32", Micro().eval(), 1e-5), ("int8", micro_int8, 0.05)):
        edge = ee.lower(export_fixed(module, SIZE, "app"))
        report = ee.delegation_report(edge)
        assert report["non_delegated_nodes"] == 0, (name, report["non_delegated"])
        ops = {n.target.__name__ for n in edge.exported_program().graph.nodes if n.op == "call_function"}
        assert not {o for o in ops if "to_copy" in o or "dequantize" in o}, ops   # all inside the delegate
        method = Runtime.get().load_program(_write(edge, tmp_path / f"{name}.pte")).load_method("forward")
        got = method.execute((frames, evs))[0]
        with torch.no_grad():
            want = with_io(module, "app")(frames, evs)
        assert got.shape == (*SIZE, 3) and (got - want).abs().max().item() < tol, name


def test_int8_program_quantized_without_shared_qparams_is_refused_with_advice(tmp_path, monkeypatch):
    """An int8 program quantized before the XNNPACK quantizer shared resize and split parameters (rules 6, 7
    off): its requantizing resize and slices stay outside the delegate, and the error says what to do."""
    monkeypatch.setattr(cq, "_share_resize_qparams", lambda model, spec: 0)
    monkeypatch.setattr(cq, "_share_split_qparams", lambda model: 0)
    old = _int8(Micro().eval())
    src = Source(old, "int8", "old", "old.pt2", "0", quant_backend="xnnpack")
    with pytest.raises(ee.DelegationError, match="re-quantize it with the current compress/qat.py") as e:
        ee.export_pte(src, tmp_path, size=SIZE)
    outside = [(d["op"], d.get("why", "")) for d in e.value.report["non_delegated"]]
    assert {op for op, _ in outside} == {"aten.upsample_bilinear2d.vec", "aten.slice.Tensor"}, outside
    assert all("matching input and output quantization parameters" in why for _, why in outside), outside
    assert list(tmp_path.iterdir()) == []
    # the slices alone (resize parameters shared): ExecuTorch refuses them, and the error says the same
    monkeypatch.undo()
    monkeypatch.setattr(cq, "_share_split_qparams", lambda model: 0)
    src = Source(_int8(Micro().eval()), "int8", "old", "old.pt2", "0", quant_backend="xnnpack")
    with pytest.raises(ee.DelegationError, match="slice_copy.* re-quantize it with the current compress/qat.py"):
        ee.export_pte(src, tmp_path, size=SIZE)
    assert list(tmp_path.iterdir()) == []

