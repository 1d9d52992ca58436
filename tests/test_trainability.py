"""Every part of a fresh EAPNet is alive and trains: dead channels, gradient flow, the fast CPU paths."""
import contextlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from eapnet import build_model
from eapnet.cpu import FastDepthwiseConv2d, use_fast_depthwise
from eapnet.diagnostics import dead_channels, health, module_group, probe_batches
from eapnet.losses import EAPNetLoss


def _small(batch):
    x, e, gt = batch
    return x[:2, ..., :32, :32], e[:2], gt[:2, ..., :32, :32]


@pytest.fixture(scope="module")
def scenes():
    return probe_batches(8, 64)


@pytest.mark.parametrize("variant", ["standard", "lightweight"])
def test_fresh_model_has_almost_no_dead_relu_channels(variant, scenes):
    torch.manual_seed(0)
    model = build_model(variant)
    dead = dead_channels(model, ((x, e) for x, e, _ in scenes))
    assert len(dead) >= 20  # every DSConv's ReLU and the encoders' are found
    total = sum(d for d, _ in dead.values()) / sum(n for _, n in dead.values())
    assert total < 0.03, f"{total:.1%} of the ReLU channels are dead at init"
    worst = max(dead, key=lambda k: dead[k][0] / dead[k][1])
    assert dead[worst][0] / dead[worst][1] <= 0.15, (worst, dead[worst])


def test_pytorch_default_init_would_fail_the_dead_channel_check(scenes):
    # the check can fail: PyTorch's default init (what the model used before) leaves ~40 % dead
    from eapnet.training import pytorch_default_init

    torch.manual_seed(0)
    model = build_model("standard")
    pytorch_default_init(model)
    assert not model.out.weight.any()
    dead = dead_channels(model, ((x, e) for x, e, _ in scenes))
    assert sum(d for d, _ in dead.values()) / sum(n for _, n in dead.values()) > 0.2


@pytest.mark.parametrize("variant", ["standard", "lightweight"])
def test_every_module_group_receives_gradient_after_the_first_step(variant, scenes):
    torch.manual_seed(0)
    model = build_model(variant)
    opt = torch.optim.Adam(model.parameters(), lr=8e-4)
    x, e, gt = scenes[0]
    EAPNetLoss()(model(x, e), gt).backward()
    # at step 0 only the zero-initialised output conv has gradient; after one step everything must
    grads0 = {n: p.grad for n, p in model.named_parameters()}
    assert grads0["out.weight"].abs().sum() > 0
    opt.step()
    ratios = health(model, scenes[:1])["grad"]
    groups = {module_group(n) for n, _ in model.named_parameters()}
    assert set(ratios) == groups
    med = sorted(ratios.values())[len(ratios) // 2]
    starved = {g: r for g, r in ratios.items() if r < 1e-2 * med}
    assert not starved, f"groups with < 1 % of the median |grad|/|w| ({med:.1e}): {starved}"


@pytest.mark.parametrize("stride,dilation", [(1, 2), (2, 2), (1, 4), (2, 4)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fast_depthwise_equals_the_conv(stride, dilation, channels_last):
    torch.manual_seed(0)
    conv = nn.Conv2d(12, 12, 3, stride=stride, padding=dilation, dilation=dilation, groups=12)
    fast = FastDepthwiseConv2d.from_conv(conv)
    assert fast.weight is conv.weight and fast.bias is conv.bias
    x = torch.randn(2, 12, 32, 24)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = conv(xa), fast(xb)
    torch.testing.assert_close(yb, ya, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(ya)
    ga = torch.autograd.grad(ya, (xa, conv.weight, conv.bias), g)
    gb = torch.autograd.grad(yb, (xb, conv.weight, conv.bias), g)
    for a, b in zip(ga, gb):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


def test_fast_depthwise_backward_under_bf16_autocast_matches_the_conv():
    # Training uses bf16 autocast on CPUs with native bf16: the backward must see the forward's autocast state
    # (bf16 activations saved, fp32 weights) and return gradients in the inputs' dtypes.
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8)
    fast = FastDepthwiseConv2d.from_conv(conv)
    x = torch.randn(2, 8, 20, 16).bfloat16()
    grads = []
    for m in (conv, fast):
        xi = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = m(xi)
        g = torch.autograd.grad(y.float().square().sum(), (xi, conv.weight, conv.bias))
        assert [t.dtype for t in g] == [torch.bfloat16, torch.float32, torch.float32]
        grads.append(g)
    for a, b in zip(*grads):
        torch.testing.assert_close(b.float(), a.float(), rtol=0.05, atol=0.05 * float(a.abs().max()))


def test_fast_depthwise_swaps_only_dilated_depthwise_convs_and_keeps_the_model():
    torch.manual_seed(0)
    model = build_model("standard")
    nn.init.normal_(model.out.weight, 0, 0.1)
    keys = list(model.state_dict())
    x, e = torch.rand(1, 3, 3, 32, 48), torch.tensor([[-2.0, 0.0, 2.0]])
    with torch.no_grad():
        ref = model(x, e)
    n = use_fast_depthwise(model)
    assert n == 4 * 4  # enc2, enc3, dec3, dec2 of each of the four PDUBs
    assert list(model.state_dict()) == keys
    assert not any(FastDepthwiseConv2d.eligible(m) for m in model.modules())
    with torch.no_grad():
        torch.testing.assert_close(model(x, e), ref, rtol=1e-5, atol=1e-5)
    assert use_fast_depthwise(model) == 0  # idempotent


def test_bf16_autocast_on_cpu_is_finite_and_close_to_fp32(scenes):
    torch.manual_seed(0)
    model = build_model("lightweight")
    nn.init.normal_(model.out.weight, 0, 1e-2)
    x, e, gt = _small(scenes[0])
    crit = EAPNetLoss()
    ref = crit(model(x, e), gt)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pred = model(x, e)
    loss = crit(pred.float(), gt)
    assert torch.isfinite(loss)
    assert abs(loss.item() - ref.item()) < 0.05 * ref.item()


def _adam_steps(model, x, e, gt, n=3) -> list[float]:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    run = []
    for _ in range(n):
        loss = EAPNetLoss()(model(x, e), gt)
        opt.zero_grad()
        loss.backward()
        opt.step()
        run.append(loss.item())
    return run


def test_channels_last_training_matches_contiguous(scenes):
    x, e, gt = _small(scenes[0])
    losses = []
    for cl in (False, True):
        torch.manual_seed(0)
        model = build_model("lightweight")
        if cl:
            model.to(memory_format=torch.channels_last)
        use_fast_depthwise(model)
        losses.append(_adam_steps(model, x, e, gt))
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)


def test_sub_grid_identity_behind_the_fast_conv():
    # a stride-2 conv with dilation 2 reads only the even sub-grid (the identity eapnet/cpu.py relies on)
    x, w = torch.randn(1, 3, 16, 16), torch.randn(3, 1, 3, 3)
    a = F.conv2d(x, w, stride=2, padding=2, dilation=2, groups=3)
    b = F.conv2d(x[:, :, ::2, ::2], w, padding=1, groups=3)
    torch.testing.assert_close(a, b)


def test_fast_cpu_training_trains_the_same_and_restores_the_model(scenes):
    from eapnet.cpu import fast_cpu_training

    x, e, gt = _small(scenes[0])
    runs, models = [], []
    for fast in (False, True):
        torch.manual_seed(0)
        model = build_model("standard").train()
        nn.init.normal_(model.out.weight, 0, 0.1)
        types = [type(m) for m in model.modules()]
        with fast_cpu_training(model) if fast else contextlib.nullcontext():
            if fast:
                assert sum(isinstance(m, FastDepthwiseConv2d) for m in model.modules()) == 16
                assert model.out.weight.is_contiguous(memory_format=torch.channels_last)
            run = _adam_steps(model, x, e, gt)
        # afterwards: the original modules (export and PT2E quantization see plain convs), contiguous weights
        assert [type(m) for m in model.modules()] == types
        assert all(p.is_contiguous() for p in model.parameters())
        runs.append(run)
        models.append(model)
    # float rounding differs (NHWC kernels, the two-pass backward) and Adam's first steps amplify it a little
    assert runs[0] == pytest.approx(runs[1], rel=1e-3)
    assert runs[1][-1] < runs[1][0]
    torch.manual_seed(0)
    init = build_model("standard")
    nn.init.normal_(init.out.weight, 0, 0.1)
    # Adam moves near-zero-gradient entries by +-lr whatever the rounding, so compare whole updates (L2)
    with torch.no_grad():
        moved = sum(float((a - i).pow(2).sum()) for a, i in zip(models[0].parameters(), init.parameters())) ** 0.5
        apart = sum(float((a - b).pow(2).sum()) for a, b in zip(models[0].parameters(), models[1].parameters())) ** 0.5
    assert apart < 0.1 * moved, (moved, apart)
