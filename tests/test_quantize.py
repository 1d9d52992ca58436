"""Int8 PT2E quantization: QAT learns, the converted model equals its fake-quant form, weight granularity
per backend, any-size interface, the .pt2 round trip. Tiny configs; the Core ML quantizer and the standard
model take minutes on 2 cores and are marked slow."""
import copy
import math

import pytest
import torch
from conftest import TINY
from torch import nn

from eapnet.inference import example_inputs
from eapnet.compress.quantize import (
    QUANT_BACKENDS,
    Padded,
    _activation_fake_quants,
    _pools_as_convs,
    convert,
    export_for_quant,
    load_quantized,
    prepare_ptq,
    prepare_qat,
    quantizer_for,
    save_quantized,
)
from eapnet import build_model
from eapnet.model import EAPNet, pad_frames
from eapnet.training import pytorch_default_init

# upsample="conv": the tiny model has transposed convs (2 PDUBs + the final x2) like the standard one.
TINY_CONV = TINY.replace(upsample="conv", base="merge")
QDQ = torch.ops.quantized_decomposed


def freeze_observers(prepared):
    """Stop every observer of a prepared graph: scales and zero points stay fixed, fake-quant stays on."""
    from torchao.quantization.pt2e import disable_observer

    return prepared.apply(disable_observer)


def _float_model(cfg=TINY_CONV) -> EAPNet:
    torch.manual_seed(0)
    m = EAPNet(cfg).eval()
    # Int8 thresholds here are measured with PyTorch's default conv init: an untrained tiny net with He init
    # amplifies random features and its int8 error with them. Trained models are held to the parity harness.
    pytorch_default_init(m)
    # The output conv is zero-initialised, which makes the output the base image whatever the quantized
    # layers do: give it weights so that every comparison below sees the quantized network.
    m.out.reset_parameters()
    return m


def _psnr(a: torch.Tensor, b: torch.Tensor, peak: float = 1.0) -> float:
    mse = torch.mean((a - b) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(peak ** 2 / mse)


@pytest.fixture(scope="module")
def float_model():
    return _float_model()


@pytest.fixture(scope="module")
def prepared(float_model):
    return prepare_qat(float_model, "xnnpack", calib=_calib_batches())      # as at the start of QAT


def _calib_batches():
    ldrs, evs = example_inputs((32, 32), batch=2)
    return [(ldrs.roll(seed, -1), evs) for seed in range(2)]


def test_calibrated_qat_graph_freezes_activation_ranges_and_equals_ptq(float_model, prepared):
    acts = _activation_fake_quants(prepared)
    weights = [prepared.get_submodule(n.target) for n in prepared.graph.nodes if n.op == "call_module"
               and n.target.startswith("activation_post_process") and n.args[0].op == "get_attr"]
    int8_convs = sum(isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)) for m in float_model.modules()) - 1
    assert len(acts) > 20 and len(weights) >= int8_convs     # (and a few constant tensors)
    assert all(not m.observer_enabled[0] and m.fake_quant_enabled[0] for m in acts)
    assert all(m.observer_enabled[0] for m in weights)     # weight ranges follow the trained weights
    # 0 QAT steps is post-training quantization: the same qparams as PTQ on the same batches, so the same model
    ptq = convert(prepare_ptq(float_model, "xnnpack", _calib_batches()))
    ldrs, evs = example_inputs((48, 64), batch=2)
    with torch.no_grad():
        torch.testing.assert_close(convert(prepared)(ldrs, evs), ptq(ldrs, evs), rtol=0, atol=1e-6)
        # a forward on much brighter inputs moves no activation range
        scales = [m.scale.clone() for m in acts]
        p = copy.deepcopy(prepared)
        p(ldrs * 0 + 1, evs * 2)
    acts_after = _activation_fake_quants(p)
    assert all(torch.equal(a.scale, s) for a, s in zip(acts_after, scales, strict=True))


@pytest.fixture(scope="module")
def converted(prepared):
    return convert(freeze_observers(copy.deepcopy(prepared)))


def test_qat_model_serves_several_sizes_and_learns(float_model, prepared):
    p = copy.deepcopy(prepared)
    before = copy.deepcopy(float_model.state_dict())
    for hw in [(32, 32), (48, 64)]:
        ldrs, evs = example_inputs(hw, batch=2)
        assert p(ldrs, evs).shape == (2, 3, *hw)
    ldrs, evs = example_inputs((32, 32), batch=2)
    with torch.no_grad():
        target = float_model(ldrs, evs) + 0.1    # a brighter output: reachable through the residual
    w0 = p.get_parameter("out.weight").detach().clone()
    opt = torch.optim.Adam(p.parameters(), lr=1e-3)   # 1e-2 overshoots with He-initialised weights
    losses = []
    for _ in range(20):
        loss = (p(ldrs, evs) - target).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        final = (p(ldrs, evs) - target).abs().mean().item()
    assert not torch.equal(p.get_parameter("out.weight"), w0)
    assert final < 0.7 * losses[0], losses + [final]      # measured 0.102 -> 0.056
    # The exported graph owns a copy: QAT never trains the caller's float model.
    for k, v in float_model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_converted_model_equals_its_fake_quant_form(float_model, prepared, converted):
    p = freeze_observers(copy.deepcopy(prepared))    # observers would otherwise move with every forward
    ldrs, evs = example_inputs((48, 64), batch=2)
    ldrs = ldrs.flip(-1)                             # not a calibration input
    with torch.no_grad():
        fake, real, ref = p(ldrs, evs), converted(ldrs, evs), float_model(ldrs, evs)
    # Measured bit-identical (max |diff| 0): same qparams, same rounding. 1e-5 is far below one int8 step.
    torch.testing.assert_close(real, fake, rtol=0, atol=1e-5)
    # ...and it is really quantized: off the float model by int8 steps, yet close to it.
    assert (real - ref).abs().max() > 1e-3
    assert _psnr(real, ref) > 30
    targets = {n.target for n in converted.graph.nodes if n.op == "call_function"}
    assert QDQ.quantize_per_tensor.default in targets


def _weight_dequant_ops(gm) -> dict:
    """conv target -> set of the dequantize ops that feed conv weights."""
    out = {}
    for n in gm.graph.nodes:
        if n.op == "call_function" and n.target in (torch.ops.aten.conv2d.default,
                                                     torch.ops.aten.conv_transpose2d.input):
            w = n.args[1]
            out.setdefault(n.target, []).append(w.target if w.op == "call_function" else w.op)
    return out


def _assert_xnnpack_weight_granularity(gm, n_transposed: int):
    ops = _weight_dequant_ops(gm)
    # Per-channel transposed-conv weights break ExecuTorch lowering: they must be per-tensor.
    assert ops[torch.ops.aten.conv_transpose2d.input] == [QDQ.dequantize_per_tensor.default] * n_transposed
    *int8, head = ops[torch.ops.aten.conv2d.default]
    assert set(int8) == {QDQ.dequantize_per_channel.default} and head == "get_attr"   # the output conv is float


def test_xnnpack_transposed_conv_weights_per_tensor_others_per_channel(converted):
    _assert_xnnpack_weight_granularity(converted, n_transposed=TINY_CONV.num_blocks + 1)


@pytest.mark.slow  # ~18 s on 2 busy cores: export + prepare + convert of the 590 k-parameter model
def test_standard_weight_granularity():
    m = build_model("standard")
    _assert_xnnpack_weight_granularity(convert(prepare_qat(m, "xnnpack", example_inputs((32, 32)))),
                                       n_transposed=m.config.num_blocks + 1)


def test_padded_pads_like_the_model_and_crops():
    seen = []

    def inner(ldrs, evs):
        seen.append(tuple(ldrs.shape))
        return ldrs[:, 1] * 2                           # (B, 3, Hp, Wp)

    ldrs, evs = example_inputs((37, 53), batch=2)
    out = Padded(inner)(ldrs, evs)
    assert seen == [(2, 3, 3, 40, 56)]
    assert torch.equal(out, ldrs[:, 1] * 2)
    padded = pad_frames(ldrs, 8)
    assert torch.equal(Padded(lambda x, e: x[:, 0])(ldrs, evs), padded[:, 0, ..., :37, :53])


def test_padded_quantized_model_has_the_float_interface(float_model, converted):
    ldrs, evs = example_inputs((37, 53))
    q = Padded(converted).eval()                       # .eval() works although the graph refuses it
    with torch.no_grad():
        real, ref = q(ldrs, evs), float_model(ldrs, evs)
    assert real.shape == ref.shape == (1, 3, 37, 53)
    assert _psnr(real, ref) > 30                       # same padding, so the pixels line up


def test_ptq_calibrates_on_any_size(float_model):
    calib = [example_inputs((37, 53)), example_inputs((24, 40), batch=2)]
    q = convert(prepare_ptq(float_model, "xnnpack", calib))
    ldrs, evs = example_inputs((32, 32))
    with torch.no_grad():
        assert _psnr(q(ldrs, evs), float_model(ldrs, evs)) > 30
    with pytest.raises(ValueError, match="calibration"):
        prepare_ptq(float_model, "xnnpack", [])


def test_save_load_round_trip(converted, tmp_path):
    path = tmp_path / "tiny-q8-xnnpack.pt2"
    meta = {"config": TINY_CONV.to_dict(), "backend": "xnnpack", "qat_steps": 8}
    save_quantized(path, converted, None, meta)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]   # no temporary file left behind
    loaded, meta2 = load_quantized(path)
    assert meta2 == meta
    ldrs, evs = example_inputs((21, 35), batch=3)              # other batch, odd size
    with torch.no_grad():
        assert torch.equal(loaded(ldrs, evs), Padded(converted)(ldrs, evs))


def test_load_errors_name_the_file(tmp_path):
    missing = tmp_path / "none.pt2"
    with pytest.raises(FileNotFoundError, match="none.pt2"):
        load_quantized(missing)
    bad = tmp_path / "bad.pt2"
    bad.write_bytes(b"not a zip archive")
    with pytest.raises(ValueError, match="bad.pt2"):
        load_quantized(bad)


def test_bad_arguments():
    with pytest.raises(ValueError, match="xnnpack"):
        quantizer_for("tflite")
    with pytest.raises(ValueError, match="coreml"):
        prepare_qat(_float_model(), "tflite")
    with pytest.raises(ValueError, match="multiples of 8"):
        export_for_quant(_float_model(), example_inputs((30, 32)))
    assert QUANT_BACKENDS == ("xnnpack", "coreml")


def test_coreml_quantizer_is_w8a8():
    q = quantizer_for("coreml")
    cfg = q.inner._config.global_config
    assert (cfg.weight_dtype, cfg.activation_dtype, cfg.weight_per_channel) == (torch.qint8, torch.quint8, True)


@pytest.mark.slow  # the untrimmed Core ML quantizer traces 417 pattern graphs: minutes on 2 cores
@pytest.mark.parametrize("backend, flag", [("coreml", "TRIM_COREML_PATTERNS"), ("xnnpack", "TRIM_XNNPACK_PATTERNS")])
def test_trimming_the_quantizers_patterns_to_the_graph_changes_no_annotation(float_model, monkeypatch, backend, flag):
    import eapnet.compress.quantize as cq

    ldrs, evs = example_inputs((32, 40), batch=2)
    outs = {}
    for trim in (True, False):
        monkeypatch.setattr(cq, flag, trim)
        prepared = prepare_ptq(float_model, backend, [(ldrs, evs)])
        observers = sorted(n.name for n in prepared.graph.nodes if "activation_post_process" in str(n.target))
        with torch.no_grad():
            outs[trim] = (observers, convert(prepared)(ldrs, evs))
    assert outs[True][0] == outs[False][0] and len(outs[True][0]) > 10
    assert torch.equal(outs[True][1], outs[False][1])


def test_xnnpack_batch_norm_patterns_are_skipped_only_where_no_batch_norm_is():
    import eapnet.compress.quantize as cq

    q = cq.quantizer_for("xnnpack").inner
    every = [p.name for p in type(q).SUPPORTED_PATTERNS]
    seen = {}

    def patterns_during(module):
        gm = torch.export.export(module.eval(), (torch.rand(1, 3, 8, 8),)).module()
        with cq._xnnpack_patterns_present_in(q, gm):
            seen[type(module).__name__] = [p.name for p in q.SUPPORTED_PATTERNS]
        assert [p.name for p in q.SUPPORTED_PATTERNS] == every      # the instance reads the class's list again

    patterns_during(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()))
    assert seen["Sequential"] == every
    patterns_during(nn.Conv2d(3, 4, 3))
    assert {"conv_bn", "conv_bn_relu", "conv_transpose_bn", "conv_transpose_bn_relu"} <= set(every)
    assert seen["Conv2d"] == [n for n in every if "_bn" not in n] and "conv" in seen["Conv2d"]


def test_coreml_qat_converts_to_its_fake_quant_form(float_model):
    from torchao.quantization.pt2e import FakeQuantize, HistogramObserver

    import eapnet.compress.quantize as cq

    p = prepare_qat(float_model, "coreml")
    # its config offers no histogram observer: the activations get ours, the weights keep per-channel min/max
    acts = cq._activation_fake_quants(p)
    assert acts and all(isinstance(m.activation_post_process, HistogramObserver) for m in acts)
    weights = [m for m in p.modules() if isinstance(m, FakeQuantize) and m not in acts]
    assert weights and not any(isinstance(m.activation_post_process, HistogramObserver) for m in weights)
    ldrs, evs = example_inputs((32, 40), batch=2)
    cq.calibrate(p, [(ldrs.flip(-2), evs)])
    q = convert(p)
    with torch.no_grad():
        fake, real, ref = p(ldrs, evs), q(ldrs, evs), float_model(ldrs, evs)
    torch.testing.assert_close(real, fake, rtol=0, atol=1e-5)   # measured bit-identical
    assert _psnr(real, ref) > 30
    assert QDQ.dequantize_per_channel.default in {n.target for n in q.graph.nodes if n.op == "call_function"}


def test_float_modules_stay_float_and_the_rest_int8(float_model, monkeypatch):
    # FLOAT_MODULES (Core ML keeps the short frame's encoder float): every conv inside a listed module keeps
    # float weights and output; the other encoders' convs stay int8. Checked with the XNNPACK flavour (faster).
    import eapnet.compress.quantize as quantize

    assert quantize.FLOAT_MODULES["coreml"] == ("encoders.0",) and quantize.FLOAT_MODULES["xnnpack"] == ()
    monkeypatch.setitem(quantize.FLOAT_MODULES, "xnnpack", ("encoders.0",))
    q = convert(prepare_ptq(float_model, "xnnpack", _calib_batches()))

    def path(n):
        return list(n.meta["nn_module_stack"].values())[-1][0]

    convs = [n for n in q.graph.nodes if n.target == torch.ops.aten.conv2d.default]
    short = [c for c in convs if path(c).startswith("encoders.0.")]
    medium = [c for c in convs if path(c).startswith("encoders.1.")]
    assert short and medium
    assert all(c.args[1].op == "get_attr" for c in short), [path(c) for c in short]
    assert all("dequantize" in str(c.args[1].target) for c in medium)
    assert not quantize._in_modules(medium[0], ("encoders.0",)) and quantize._in_modules(short[0], ("encoders",))
    assert not quantize._in_modules(short[0], ("encoders.01",))


def test_the_output_head_stays_float(float_model):
    # Only the convs are int8: the HDR output (residual + radiance merge, ReLU) keeps float precision, so
    # it is not limited to 255 levels (measured ~216 distinct values per tensor with an int8 head).
    ldrs, evs = example_inputs((32, 40), batch=2)
    q = convert(prepare_ptq(float_model, "xnnpack", [(ldrs, evs)]))
    with torch.no_grad():
        y = q(ldrs, evs)
    assert y.unique().numel() > 2000
    out_node = next(n for n in q.graph.nodes if n.op == "output").args[0][0]
    chain = []
    while out_node.op == "call_function" and "quantize" not in str(out_node.target) and len(chain) < 10:
        chain.append(str(out_node.target))
        out_node = out_node.args[0]
    assert any("relu" in t for t in chain) and any("add" in t for t in chain), chain
    # ...and so does the output conv (the correction added to the base): float weights, float output; the
    # convs before it have int8 weights
    convs = [n for n in q.graph.nodes if n.target == torch.ops.aten.conv2d.default]
    assert convs[-1].args[1].op == "get_attr"
    assert not any("quantize" in str(u.target) for u in convs[-1].users)
    assert all("dequantize" in str(c.args[1].target) for c in convs[:-1])


def test_xnnpack_int8_resizes_splits_and_pools_need_no_requantization():
    """For XNNPACK the 2x2 average pools become depthwise convs with the same values, and bilinear resizes and
    the halves of a split keep their input's int8 parameters (XNNPACK runs them in int8 only so)."""
    m = _float_model(TINY_CONV.replace(attention="half", align="half"))
    gm = export_for_quant(m)
    ldrs, evs = example_inputs((32, 48), batch=2, seed=3)
    want = gm(ldrs, evs)
    pools = [n for n in gm.graph.nodes if n.target == torch.ops.aten.avg_pool2d.default]
    assert len(pools) == 8 and _pools_as_convs(gm) == 8       # 2 side frames x 2 scales x (attention, alignment)
    assert not [n for n in gm.graph.nodes if n.target == torch.ops.aten.avg_pool2d.default]
    torch.testing.assert_close(gm(ldrs, evs), want, rtol=1e-5, atol=1e-5)

    q = convert(prepare_ptq(m, "xnnpack", _calib_batches()))
    nodes = list(q.graph.nodes)
    assert not [n for n in nodes if n.target == torch.ops.aten.avg_pool2d.default]
    resizes = [n for n in nodes if n.target in (torch.ops.aten.upsample_bilinear2d.vec,
                                                 torch.ops.aten.upsample_bilinear2d.default)]
    splits = [n for n in nodes if n.target in (torch.ops.aten.split_with_sizes.default, torch.ops.aten.split.Tensor)]
    assert len(resizes) == 8 + 2 and len(splits) == 4           # + each PDUB's inner bilinear x2
    for n in resizes + splits:
        dq = n.args[0]
        assert dq.target == QDQ.dequantize_per_tensor.default, n.name
        outs = list(n.users) if n in resizes else [u for half in n.users for u in half.users]
        assert outs and all(u.target == QDQ.quantize_per_tensor.default and u.args[1:] == dq.args[1:]
                            for u in outs), n.name
