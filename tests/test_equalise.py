"""Range equalisation before int8: same function, equal depthwise output ranges, and it recovers int8 accuracy
lost to channels of very different ranges."""
import copy

import pytest
import torch
from conftest import TINY

from eapnet.compress.equalise import MAX_SCALE, depthwise_ranges, equalise, rescale
from eapnet.inference import example_inputs
from eapnet.model import DSConv, EAPNet
from eapnet.training import pytorch_default_init


def _model() -> EAPNet:
    torch.manual_seed(0)
    m = EAPNet(TINY.replace(base="merge")).eval()
    pytorch_default_init(m)
    m.out.reset_parameters()     # zero-initialised: the output would be the base whatever the rest does
    return m


def _batches(n=2, size=(32, 32)):
    ldrs, evs = example_inputs(size, batch=2)
    return [(ldrs.roll(7 * k, -1), evs) for k in range(n)]


def _skew(model: EAPNet, factor: float = 300.0) -> EAPNet:
    """The same function with every other depthwise output channel ``factor`` x larger (the pointwise conv
    scaled back): per-tensor int8 then leaves the small channels a few levels."""
    model = copy.deepcopy(model)
    for m in model.modules():
        if isinstance(m, DSConv):
            s = torch.ones(m.dw.out_channels)
            s[::2] = factor
            rescale(m, s)
    return model


def test_equalise_keeps_the_function_and_evens_the_ranges():
    model, batches = _model(), _batches()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    eq = equalise(model, batches, strength=1.0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())   # a copy
    ldrs, evs = example_inputs((40, 56), batch=2)
    with torch.no_grad():
        torch.testing.assert_close(eq(ldrs, evs), model(ldrs, evs), rtol=1e-4, atol=1e-5)
    old, new = depthwise_ranges(model, batches), depthwise_ranges(eq, batches)
    assert old.keys() == new.keys() and len(new) == sum(isinstance(m, DSConv) for m in model.modules())
    for name, r in new.items():
        o = old[name]
        free = o >= o.max() / MAX_SCALE        # channels not held back by the scale limit
        torch.testing.assert_close(r[free], torch.full_like(r[free], float(o.max())), rtol=1e-4, atol=0)
        assert torch.all(r[~free] <= o.max())
    half = depthwise_ranges(equalise(model, batches), batches)     # the default: halfway in log scale
    for name, r in half.items():
        o = old[name]
        free = o >= o.max() / MAX_SCALE
        torch.testing.assert_close(r[free], (o[free] * o.max()).sqrt(), rtol=1e-4, atol=0)


def _int8_depthwise_outputs(model: EAPNet) -> EAPNet:
    """``model`` with every depthwise output fake-quantized per tensor to 256 levels over its min..max,
    as both backends' int8 activations are (fast: no quantizer, no export)."""
    def fq(_mod, _inputs, out):
        lo, hi = out.min(), out.max()
        step = (hi - lo).clamp_min(1e-12) / 255
        return torch.round((out - lo) / step) * step + lo

    for m in model.modules():
        if isinstance(m, DSConv):
            m.dw.register_forward_hook(fq)
    return model


def test_equalise_recovers_int8_accuracy_lost_to_uneven_ranges():
    model, batches = _model(), _batches()
    skewed = _skew(model, factor=50.0)            # within MAX_SCALE: equalisation can undo all of it
    ldrs, evs = example_inputs((48, 64), batch=2)

    def int8_error(m):
        with torch.no_grad():
            return (_int8_depthwise_outputs(copy.deepcopy(m))(ldrs, evs) - model(ldrs, evs)).abs().mean().item()

    plain, skewed_err = int8_error(model), int8_error(skewed)
    fixed = int8_error(equalise(skewed, batches, strength=1.0))
    assert skewed_err > 3 * plain             # uneven ranges hurt per-tensor int8 ...
    assert fixed < 2 * plain < skewed_err / 2     # ... and equalisation takes it back


def test_equalise_needs_batches():
    with pytest.raises(ValueError, match="at least one calibration batch"):
        equalise(_model(), [])
