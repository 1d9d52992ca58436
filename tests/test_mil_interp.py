"""The NumPy reference interpreter of our Core ML packages (eapnet.export.mil_interp) against PyTorch.

Default tests use a tiny EAPNet shaped like the standard variant (half-resolution alignment and attention,
transposed-conv upsampling, radiance-merge base), so every op the exporter emits for the shipped models
occurs; single-op programs built with coremltools' MIL builder pin the semantics of the windowed ops.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY

from eapnet.checkpoint import save_checkpoint
from eapnet.model import EAPNet
from eapnet.training import pytorch_default_init
from eapnet.export.common import load_source
from eapnet.export.coreml_export import _int8_weights, to_mlmodel
from eapnet.export.mil_interp import (
    SUPPORTED_OPS,
    UnsupportedOpError,
    load_program,
    program_ops,
    run_mlpackage,
)

ct = pytest.importorskip("coremltools")
from coremltools.converters.mil import Builder as mb

# coremltools 9.0 warns about its own op registry on every converted op
pytestmark = pytest.mark.filterwarnings("ignore:Function _TORCH_OPS_REGISTRY:DeprecationWarning")

TINY_STD = TINY.replace(align="half", attention="half", upsample="conv", base="merge")
# fp16 programs store every intermediate tensor in float16 (half an ulp at 1.0 is 4.9e-4); measured on this
# model: max 9e-4, mean 1.8e-4 against float32 PyTorch. int8 weights move the output by a further ~5e-4.
FP16_MAX, FP16_MEAN = 5e-3, 1e-3
INT8W_VS_FP16_MAX = 1e-2


def _inputs(size, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, 3, *size, generator=g), torch.tensor([[-2.0, 0.0, 1.5]])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(float model, Source, folder): a standard-shaped tiny EAPNet with a non-zero output conv."""
    torch.manual_seed(0)
    model = EAPNet(TINY_STD).eval()
    # Int8 thresholds here are measured with PyTorch's default conv init: an untrained tiny net with He init
    # amplifies random features and its int8 error with them. Trained models are held to the parity harness.
    pytorch_default_init(model)
    torch.nn.init.normal_(model.out.weight, std=0.05)   # zero-initialised: the network would add nothing
    torch.nn.init.normal_(model.out.bias, std=0.02)
    d = tmp_path_factory.mktemp("interp")
    save_checkpoint(d / "tiny.pt", model)
    return model, load_source(d / "tiny.pt"), d


@pytest.fixture(scope="module")
def packages(tiny):
    """fp32 at 30x45 (replicate pad + crop inside), fp16 and int8w at 32x48 (no padding)."""
    _, src, d = tiny
    paths = {"fp32": d / "fp32.mlpackage", "fp16": d / "fp16.mlpackage", "int8w": d / "int8w.mlpackage"}
    to_mlmodel(src, "fp32", (30, 45)).save(str(paths["fp32"]))
    fp16 = to_mlmodel(src, "fp16", (32, 48))
    fp16.save(str(paths["fp16"]))
    _int8_weights(fp16).save(str(paths["int8w"]))
    return paths


def _run(path, ldrs, evs):
    return run_mlpackage(path, {"ldrs": ldrs.numpy(), "evs": evs.numpy()})["hdr"]


def test_fp32_program_matches_pytorch(tiny, packages):
    model, _, _ = tiny
    ldrs, evs = _inputs((30, 45))
    with torch.no_grad():
        want = model(ldrs, evs).numpy()
    got = _run(packages["fp32"], ldrs, evs)
    assert got.dtype == np.float32 and got.shape == (1, 3, 30, 45)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


def test_fp16_program_within_fp16_tolerance(tiny, packages):
    model, _, _ = tiny
    ldrs, evs = _inputs((32, 48), seed=2)
    with torch.no_grad():
        want = model(ldrs, evs).numpy()
    got = _run(packages["fp16"], ldrs, evs)
    err = np.abs(got - want)
    assert got.dtype == np.float32 and np.isfinite(got).all()
    assert err.max() < FP16_MAX and err.mean() < FP16_MEAN, (err.max(), err.mean())
    assert err.max() > 0   # fp16 storage really happened (the program's casts and fp16 constants were honoured)


def test_int8_weight_program_close_to_fp16(packages):
    ldrs, evs = _inputs((32, 48), seed=3)
    fp16, int8w = _run(packages["fp16"], ldrs, evs), _run(packages["int8w"], ldrs, evs)
    assert program_ops(packages["int8w"])["constexpr_affine_dequantize"] > 0
    assert np.abs(int8w - fp16).max() < INT8W_VS_FP16_MAX
    assert not np.array_equal(int8w, fp16)


def test_emitted_ops_are_all_supported(packages):
    for path in packages.values():
        ops = program_ops(path)
        assert set(ops) <= SUPPORTED_OPS, set(ops) - SUPPORTED_OPS
        assert ops["conv"] > 0
    assert program_ops(packages["fp16"])["cast"] == 3          # ldrs, evs in; hdr out
    assert load_program(packages["fp32"]).op_counts()["pad"] == 1


def test_unsupported_op_raises_naming_it(tmp_path):
    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 4))], opset_version=ct.target.iOS17)
    def prog(x):
        return mb.tanh(x=x, name="y")

    path = tmp_path / "tanh.mlpackage"
    ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS17,
               skip_model_load=True).save(str(path))
    with pytest.raises(UnsupportedOpError, match="tanh"):
        run_mlpackage(path, {"x": np.zeros((1, 4), np.float32)})


def test_bad_inputs_are_named(packages):
    ldrs, evs = _inputs((32, 48))
    prog = load_program(packages["fp16"])
    with pytest.raises(ValueError, match="missing.*evs"):
        prog.run({"ldrs": ldrs.numpy()})
    with pytest.raises(ValueError, match="shape"):
        prog.run({"ldrs": ldrs.numpy()[..., :16], "evs": evs.numpy()})


# -------------------------------------------------------------------- single-op programs vs torch


def _single_op(tmp_path, shape, build, name="op"):
    @mb.program(input_specs=[mb.TensorSpec(shape=shape)], opset_version=ct.target.iOS17)
    def prog(x):
        return build(x)

    path = tmp_path / f"{name}.mlpackage"
    ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS17,
               compute_precision=ct.precision.FLOAT32, skip_model_load=True).save(str(path))
    return path


def _check(tmp_path, shape, build, reference, atol=1e-5):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    (got,) = run_mlpackage(_single_op(tmp_path, shape, build), {"x": x.numpy()}).values()
    np.testing.assert_allclose(got, reference(x).numpy(), rtol=0, atol=atol)


def test_conv_groups_strides_dilation_custom_pad(tmp_path):
    w = torch.randn(6, 2, 3, 3, generator=torch.Generator().manual_seed(1))
    b = torch.randn(6, generator=torch.Generator().manual_seed(2))
    _check(tmp_path, (1, 4, 11, 13),
           lambda x: mb.conv(x=x, weight=w.numpy(), bias=b.numpy(), strides=[2, 1], dilations=[2, 3],
                             pad_type="custom", pad=[1, 2, 3, 0], groups=2),
           lambda x: F.conv2d(F.pad(x, (3, 0, 1, 2)), w, b, stride=(2, 1), dilation=(2, 3), groups=2))


def test_depthwise_conv(tmp_path):
    w = torch.randn(5, 1, 3, 3, generator=torch.Generator().manual_seed(1))
    _check(tmp_path, (1, 5, 12, 9),
           lambda x: mb.conv(x=x, weight=w.numpy(), strides=[2, 2], dilations=[2, 2], pad_type="custom",
                             pad=[2, 2, 2, 2], groups=5),
           lambda x: F.conv2d(x, w, stride=2, padding=2, dilation=2, groups=5))


def test_conv_transpose(tmp_path):
    w = torch.randn(4, 3, 2, 2, generator=torch.Generator().manual_seed(1))
    b = torch.randn(3, generator=torch.Generator().manual_seed(2))
    _check(tmp_path, (1, 4, 5, 7),
           lambda x: mb.conv_transpose(x=x, weight=w.numpy(), bias=b.numpy(), strides=[2, 2], pad_type="valid"),
           lambda x: F.conv_transpose2d(x, w, b, stride=2))


@pytest.mark.parametrize("align_corners", [False, True])
def test_upsample_bilinear_align_corners(tmp_path, align_corners):
    _check(tmp_path, (1, 2, 5, 7),
           lambda x: mb.upsample_bilinear(x=x, scale_factor_height=2.0, scale_factor_width=2.0,
                                          align_corners=align_corners),
           lambda x: F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=align_corners))


def test_avg_pool_excluding_padding(tmp_path):
    _check(tmp_path, (1, 3, 9, 8),
           lambda x: mb.avg_pool(x=x, kernel_sizes=[3, 3], strides=[2, 2], pad_type="custom", pad=[1, 1, 1, 1],
                                 exclude_padding_from_average=True),
           lambda x: F.avg_pool2d(x, 3, 2, padding=1, count_include_pad=False))


def test_replicate_pad_and_strided_slice(tmp_path):
    _check(tmp_path, (1, 2, 5, 6),
           lambda x: mb.slice_by_index(x=mb.pad(x=x, pad=[0, 3, 2, 1], mode="replicate"),
                                       begin=[0, 1, 1, 0], end=[1, 2, 8, 9], stride=[1, 1, 2, 3],
                                       begin_mask=[True, False, False, True]),
           lambda x: F.pad(x, (2, 1, 0, 3), mode="replicate")[:, 1:2, 1:8:2, 0:9:3])


def test_quantize_dequantize_round_trip(tmp_path):
    scale = np.float32(0.05)
    _check(tmp_path, (1, 3, 4, 4),
           lambda x: mb.dequantize(input=mb.quantize(input=x, scale=scale, zero_point=np.uint8(128),
                                                     output_dtype="uint8"), scale=scale, zero_point=np.uint8(128)),
           lambda x: torch.dequantize(torch.quantize_per_tensor(x, float(scale), 128, torch.quint8)), atol=1e-6)
