"""Tests for eapnet.losses (EAPNet Eq. 6-9: alpha * mu-law L1 + beta * Tanh-L1)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from eapnet.losses import EAPNetLoss, eapnet_loss, mu_law_l1, tan_l1


def _pair(seed: int = 0, shape=(2, 3, 24, 20), dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(shape, generator=g, dtype=torch.float64) ** 2 * 1.5  # gamma-encoded HDR, > 1 in places
    gt[:, :, :4, :4] = 1.5  # saturated block
    gt[0] *= 0.2  # images of very different brightness in one batch
    pred = (gt + 0.05 * torch.randn(shape, generator=g, dtype=torch.float64)).clamp_min(0.0)
    return pred.to(dtype), gt.to(dtype)


def _manual_mu_law_l1(pred: np.ndarray, gt: np.ndarray, mu=5000.0, gamma=2.24, percentile=99.0) -> float:
    """Independent NumPy version: official tanh/mu-law tone map, per-image percentile of linear gt."""
    diffs = []
    for p, g in zip(pred, gt):
        p_lin = np.maximum(p, 0.0) ** gamma
        g_lin = g**gamma
        norm = np.percentile(g_lin, percentile)
        t = lambda x: np.log(1 + mu * np.tanh(x / norm)) / np.log(1 + mu)  # noqa: E731
        diffs.append(np.abs(t(p_lin) - t(g_lin)))
    return float(np.mean(np.stack(diffs)))


def test_mu_law_l1_matches_independent_numpy_computation():
    pred, gt = _pair(1)
    got = mu_law_l1(pred, gt).item()
    assert got == pytest.approx(_manual_mu_law_l1(pred.numpy(), gt.numpy()), rel=1e-9, abs=1e-12)
    # a batch-global percentile would give a different value (images differ 5x in brightness)
    g_lin = gt.numpy() ** 2.24
    norm = np.percentile(g_lin, 99.0)
    t = lambda x: np.log(1 + 5000 * np.tanh(x / norm)) / np.log(5001)  # noqa: E731
    global_value = float(np.mean(np.abs(t(pred.numpy() ** 2.24) - t(g_lin))))
    assert abs(got - global_value) > 1e-4


def test_mu_law_l1_normaliser_comes_from_gt():
    pred, gt = _pair(2)
    pred = pred * 0.5  # different percentile from gt
    assert mu_law_l1(pred, gt).item() == pytest.approx(
        _manual_mu_law_l1(pred.numpy(), gt.numpy()), rel=1e-9
    )
    assert abs(mu_law_l1(pred, gt).item() - mu_law_l1(gt, pred).item()) > 1e-6


def test_tan_l1_matches_hdrunet_definition():
    pred, gt = _pair(3)
    expected = float(np.mean(np.abs(np.tanh(pred.numpy()) - np.tanh(gt.numpy()))))
    assert tan_l1(pred, gt).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("fn", [mu_law_l1, tan_l1, eapnet_loss, EAPNetLoss()])
def test_zero_for_identical_and_positive_otherwise(fn):
    pred, gt = _pair(4)
    assert fn(gt, gt.clone()).item() == 0.0
    # zeros (and clamped negatives) in identical inputs still give exactly zero
    z = gt.clone()
    z[:, :, 5:9, 5:9] = 0.0
    assert fn(z, z.clone()).item() == 0.0
    assert fn(pred, gt).item() > 0.0


def test_combination_is_weighted_sum_of_parts():
    pred, gt = _pair(5)
    mu_part = mu_law_l1(pred, gt)
    tan_part = tan_l1(pred, gt)
    assert mu_part.item() > 0 and tan_part.item() > 0
    total = eapnet_loss(pred, gt)
    assert total.item() == pytest.approx(0.5 * mu_part.item() + 0.5 * tan_part.item(), rel=1e-12)
    assert EAPNetLoss()(pred, gt).item() == pytest.approx(total.item(), rel=1e-12)
    assert eapnet_loss(pred, gt, alpha=1.0, beta=0.0).item() == pytest.approx(mu_part.item(), rel=1e-12)
    assert EAPNetLoss(alpha=0.0, beta=2.0)(pred, gt).item() == pytest.approx(2 * tan_part.item(), rel=1e-12)
    assert EAPNetLoss(alpha=0.3, beta=0.9)(pred, gt).item() == pytest.approx(
        0.3 * mu_part.item() + 0.9 * tan_part.item(), rel=1e-12
    )


def test_mu_law_l1_decreases_as_pred_approaches_gt():
    pred, gt = _pair(6)
    values = [mu_law_l1(gt + t * (pred - gt), gt).item() for t in (1.0, 0.5, 0.25, 0.1, 0.01, 0.0)]
    assert all(a > b for a, b in zip(values, values[1:])), values
    assert values[-1] == 0.0


@pytest.mark.parametrize("fn", [mu_law_l1, tan_l1, eapnet_loss])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_finite_gradients_at_zero_and_negative_pred(fn, dtype):
    _, gt = _pair(7, dtype=dtype)
    for start in (torch.zeros_like(gt), torch.full_like(gt, -0.2), gt.clone()):
        pred = start.clone()
        pred[:, :, 10:, 10:] = gt[:, :, 10:, 10:] * 0.9  # mix of zeros/negatives and positives
        pred.requires_grad_(True)
        loss = fn(pred, gt)
        loss.backward()
        assert torch.isfinite(loss)
        assert pred.grad is not None and torch.isfinite(pred.grad).all()
        assert pred.grad.abs().sum() > 0


def test_gt_percentile_is_a_constant_for_autograd():
    pred, gt = _pair(8)
    gt = gt.clone().requires_grad_(True)
    pred = pred.clone().requires_grad_(True)
    mu_law_l1(pred, gt).backward()
    # reference: same loss with the per-image normaliser computed outside autograd
    pred2 = pred.detach().clone().requires_grad_(True)
    gt2 = gt.detach().clone().requires_grad_(True)
    norm = torch.tensor(
        [np.percentile(g.numpy() ** 2.24, 99.0) for g in gt2.detach()], dtype=torch.float64
    ).view(-1, 1, 1, 1)
    t = lambda x: torch.log(1 + 5000 * torch.tanh(x.clamp_min(1e-8) ** 2.24 / norm)) / math.log(5001)  # noqa: E731
    torch.mean(torch.abs(t(pred2) - t(gt2))).backward()
    torch.testing.assert_close(pred.grad, pred2.grad, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(gt.grad, gt2.grad, rtol=1e-9, atol=1e-12)


def test_mu_law_l1_gradient_matches_finite_differences():
    pred, gt = _pair(9, shape=(2, 3, 5, 4))
    pred = pred.clamp_min(0.05).requires_grad_(True)  # away from the clamp kink
    assert torch.autograd.gradcheck(lambda p: mu_law_l1(p, gt), (pred,), eps=1e-7, atol=1e-6)


def test_chw_and_half_precision_inputs():
    pred, gt = _pair(10)
    assert mu_law_l1(pred[0], gt[0]).item() == pytest.approx(mu_law_l1(pred[:1], gt[:1]).item(), rel=1e-12)
    half = eapnet_loss(pred.to(torch.bfloat16), gt.to(torch.bfloat16))
    assert half.dtype == torch.float32 and torch.isfinite(half)
    assert half.item() == pytest.approx(eapnet_loss(pred, gt).item(), rel=0.05)


@pytest.mark.parametrize("fn", [mu_law_l1, tan_l1, eapnet_loss, EAPNetLoss()])
def test_shape_mismatch_raises_value_error_naming_both_shapes(fn):
    pred, gt = _pair(11)
    with pytest.raises(ValueError, match=r"\(2, 3, 24, 20\).*\(2, 3, 24, 19\)"):
        fn(pred, gt[..., :19])
    with pytest.raises(ValueError, match="NCHW"):
        fn(pred[0, 0], gt[0, 0])
