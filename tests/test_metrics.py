"""Tests for eapnet.metrics against an independent transcription of the official NTIRE HDR scorer.

The ``_official_*`` functions below are a literal transcription of the formulas in the organisers'
starting kit (``utils/metrics.py`` / ``utils/evaluation.py`` / ``utils/data_io.py`` as vendored in
liuzhen03/ADNet); they are deliberately written without using eapnet code.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from eapnet.data import SHARED_SAMPLES
from eapnet import metrics as M
from eapnet.metrics import (
    mu_tonemap,
    percentile_per_image_torch,
    psnr_l,
    psnr_l_torch,
    psnr_mu,
    psnr_mu_torch,
    tanh_norm_mu_tonemap,
)

SAMPLES = SHARED_SAMPLES
CROPS = SAMPLES / "crops256"


# ---------------------------------------------------------------- official formulas (transcribed)
def _official_mu_tonemap(hdr_image, mu=5000):
    return np.log(1 + mu * hdr_image) / np.log(1 + mu)


def _official_tanh_norm_mu_tonemap(hdr_image, norm_value, mu=5000):
    bounded_hdr = np.tanh(hdr_image / norm_value)
    return _official_mu_tonemap(bounded_hdr, mu)


def _official_psnr(im0, im1):
    return -10 * np.log10(np.mean(np.power(im0 - im1, 2)))


def _official_normalized_psnr(im0, im1, norm):
    return _official_psnr(im0 / norm, im1 / norm)


def _official_psnr_tanh_norm_mu_tonemap(hdr_nonlinear_ref, hdr_nonlinear_res, percentile=99, gamma=2.24):
    hdr_linear_ref = hdr_nonlinear_ref**gamma
    hdr_linear_res = hdr_nonlinear_res**gamma
    norm_perc = np.percentile(hdr_linear_ref, percentile)
    return _official_psnr(
        _official_tanh_norm_mu_tonemap(hdr_linear_ref, norm_perc),
        _official_tanh_norm_mu_tonemap(hdr_linear_res, norm_perc),
    )


def _official_scores(ref, res):
    """What evaluation.py computes for one image: (PSNR-l, PSNR-mu)."""
    return (
        _official_normalized_psnr(ref, res, np.max(ref)),
        _official_psnr_tanh_norm_mu_tonemap(ref, res, percentile=99, gamma=2.24),
    )


# ---------------------------------------------------------------- helpers
def _random_hdr_pair(seed: int, shape=(48, 40, 3)):
    """Gamma-encoded HDR pair in [0, 10] with saturated blocks and heavy tails."""
    rng = np.random.default_rng(seed)
    ref = rng.uniform(0.0, 1.0, shape) ** 3 * 10.0  # many dark values, a few bright ones
    ref[:8, :8, :] = 10.0  # saturated block in the reference
    ref[-5:, 10:20, 1] = 0.0  # black patch
    res = ref + rng.normal(0.0, 0.05, shape) * (1.0 + ref)
    res[:8, :8, :] = rng.uniform(7.0, 10.0, (8, 8, shape[2]))  # result misses the saturated block
    res[20:24, 20:24, :] = 10.0  # result saturates where the reference does not
    return ref, np.clip(res, 0.0, 10.0)


def _load_crop(idx: int):
    cv2 = pytest.importorskip("cv2")
    if not CROPS.is_dir():
        pytest.skip(f"NTIRE sample folder absent: {CROPS} (expected beside the checkout in shared/data)")
    gt_png = CROPS / f"{idx:04d}_gt.png"
    ratio = CROPS / f"{idx:04d}_alignratio.npy"
    med_png = CROPS / f"{idx:04d}_medium.png"
    for p in (gt_png, ratio, med_png):
        if not p.is_file():
            pytest.skip(f"NTIRE sample file absent: {p}")
    gt16 = cv2.cvtColor(cv2.imread(str(gt_png), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)
    align_ratio = np.load(ratio)
    medium8 = cv2.cvtColor(cv2.imread(str(med_png), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)
    assert gt16.dtype == np.uint16 and medium8.dtype == np.uint8
    return gt16, align_ratio, medium8


# ---------------------------------------------------------------- agreement with the official scorer
@pytest.mark.parametrize("seed", range(6))
def test_numpy_metrics_match_official_on_random_hdr(seed):
    ref, res = _random_hdr_pair(seed)
    off_l, off_mu = _official_scores(ref, res)
    assert abs(psnr_l(ref, res) - off_l) < 1e-6
    assert abs(psnr_mu(ref, res) - off_mu) < 1e-6
    # the two metrics really differ (guards against returning the same thing twice)
    assert abs(off_l - off_mu) > 0.1


@pytest.mark.parametrize("idx", range(4))
def test_numpy_metrics_match_official_on_real_ntire_crop(idx):
    gt16, align_ratio, medium8 = _load_crop(idx)
    ref = gt16.astype(np.float64) / align_ratio
    res = medium8.astype(np.float64) / 255.0  # medium LDR ~ GT (GT is aligned to the medium frame)
    off_l, off_mu = _official_scores(ref, res)
    got_l, got_mu = psnr_l(ref, res), psnr_mu(ref, res)
    assert abs(got_l - off_l) < 1e-6
    assert abs(got_mu - off_mu) < 1e-6
    # plausible values for "medium LDR as an HDR estimate": clearly positive, clearly imperfect
    assert 10.0 < got_l < 40.0 and 10.0 < got_mu < 40.0


def test_float32_loading_path_of_the_official_scorer_is_within_float_rounding():
    """data_io.imread_uint16_png gives float32 images (uint16 / float32 align ratio)."""
    gt16, align_ratio, medium8 = _load_crop(0)
    ref32 = gt16 / align_ratio.astype(np.float32)
    res32 = (medium8 / np.float32(255.0)).astype(np.float32)
    assert ref32.dtype == np.float32
    off_l, off_mu = _official_scores(ref32, res32)
    assert abs(psnr_l(ref32, res32) - off_l) < 1e-4
    assert abs(psnr_mu(ref32, res32) - off_mu) < 1e-4


# ---------------------------------------------------------------- known values computed by hand
def test_identical_images_give_inf():
    ref, _ = _random_hdr_pair(0)
    assert psnr_l(ref, ref.copy()) == float("inf")
    assert psnr_mu(ref, ref.copy()) == float("inf")
    t = torch.from_numpy(ref.transpose(2, 0, 1)).unsqueeze(0)
    assert torch.isinf(psnr_mu_torch(t, t.clone())).all()
    assert torch.isinf(psnr_l_torch(t, t.clone())).all()


def test_psnr_l_constant_offset_by_hand():
    rng = np.random.default_rng(1)
    ref = rng.uniform(0.0, 4.0, (16, 16, 3))
    ref[3, 4, 2] = 4.0  # max(ref) = 4 exactly
    res = ref + 0.04  # error / max = 0.01 everywhere -> 40 dB
    assert psnr_l(ref, res) == pytest.approx(40.0, abs=1e-9)
    assert psnr_l(ref, ref - 0.04) == pytest.approx(40.0, abs=1e-9)


def test_psnr_l_does_not_clip_and_normalises_by_reference_max_only():
    ref = np.linspace(0.0, 1.0, 4 * 5 * 3).reshape(4, 5, 3)
    res = ref + 0.5  # res/max(ref) reaches 1.5: clipping to 1 would change the value
    assert psnr_l(ref, res) == pytest.approx(-10 * math.log10(0.25), abs=1e-9)
    # swapping the arguments changes the normaliser (max 1.5 instead of 1)
    assert psnr_l(res, ref) == pytest.approx(-10 * math.log10((0.5 / 1.5) ** 2), abs=1e-9)


def test_psnr_mu_constant_images_by_hand():
    v, w, g, mu = 0.5, 0.25, 2.24, 5000.0
    ref = np.full((6, 7, 3), v)
    res = np.full((6, 7, 3), w)
    # percentile of a constant linear image is v**g, so tanh(ref_lin / norm) = tanh(1)
    t_ref = math.log(1 + mu * math.tanh(1.0)) / math.log(1 + mu)
    t_res = math.log(1 + mu * math.tanh((w / v) ** g)) / math.log(1 + mu)
    expected = -20.0 * math.log10(abs(t_ref - t_res))
    assert psnr_mu(ref, res) == pytest.approx(expected, abs=1e-9)


def test_psnr_mu_uses_linear_interpolated_99th_percentile_of_linear_reference():
    g, mu = 2.24, 5000.0
    vals = np.array([0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 1.3, 2.0])  # gamma-encoded, 10 values
    ref = vals.reshape(2, 5, 1)
    res = np.zeros_like(ref)  # T(0) = 0, so PSNR = -10 log10(mean(T(ref)^2))
    lin = np.sort(vals) ** g
    pos = 0.99 * (lin.size - 1)  # 8.91 -> between the 9th and 10th order statistics
    lo = int(math.floor(pos))
    norm = lin[lo] + (lin[lo + 1] - lin[lo]) * (pos - lo)
    t = [math.log(1 + mu * math.tanh(x / norm)) / math.log(1 + mu) for x in lin]
    expected = -10.0 * math.log10(sum(x * x for x in t) / len(t))
    assert psnr_mu(ref, res) == pytest.approx(expected, abs=1e-9)
    # a nearest-rank or gamma-encoded-domain percentile would give a different value
    assert psnr_mu(ref, res, percentile=90.0) != pytest.approx(expected, abs=1e-3)


def test_psnr_mu_reference_argument_sets_the_normaliser():
    ref, res = _random_hdr_pair(3)
    res = 0.6 * res  # different 99th percentile than ref
    assert psnr_mu(ref, res) == pytest.approx(_official_psnr_tanh_norm_mu_tonemap(ref, res), abs=1e-6)
    assert psnr_mu(res, ref) == pytest.approx(_official_psnr_tanh_norm_mu_tonemap(res, ref), abs=1e-6)
    assert abs(psnr_mu(ref, res) - psnr_mu(res, ref)) > 1e-4


def test_numpy_tonemap_helpers():
    x = np.array([0.0, 0.25, 1.0])
    assert mu_tonemap(x) == pytest.approx([0.0, math.log(1 + 1250.0) / math.log(5001.0), 1.0])
    assert tanh_norm_mu_tonemap(np.array([0.0, 2.0]), 2.0) == pytest.approx(
        [0.0, math.log(1 + 5000 * math.tanh(1.0)) / math.log(5001.0)]
    )


def test_integer_and_float32_inputs_are_accepted():
    rng = np.random.default_rng(5)
    ref16 = rng.integers(0, 65535, (20, 20, 3), dtype=np.uint16)
    res16 = rng.integers(0, 65535, (20, 20, 3), dtype=np.uint16)
    assert psnr_l(ref16, res16) == pytest.approx(psnr_l(ref16.astype(float), res16.astype(float)), abs=1e-12)
    assert psnr_mu(ref16, res16) == pytest.approx(
        _official_psnr_tanh_norm_mu_tonemap(ref16.astype(float), res16.astype(float)), abs=1e-6
    )
    ref, res = _random_hdr_pair(4)
    assert isinstance(psnr_mu(ref.astype(np.float32), res.astype(np.float32)), float)


# ---------------------------------------------------------------- input validation
@pytest.mark.parametrize("fn", [psnr_mu, psnr_l])
def test_bad_inputs_raise_value_error(fn):
    ref, res = _random_hdr_pair(0)
    with pytest.raises(ValueError, match=r"shape mismatch.*\(48, 40, 3\).*\(48, 40, 2\)"):
        fn(ref, res[..., :2])
    bad = res.copy()
    bad[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite.*res|res.*non-finite"):
        fn(ref, bad)
    bad_ref = ref.copy()
    bad_ref[0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="ref contains non-finite"):
        fn(bad_ref, res)
    with pytest.raises(ValueError, match="empty"):
        fn(np.zeros((0, 4, 3)), np.zeros((0, 4, 3)))


def test_psnr_mu_rejects_negative_values_and_zero_normaliser():
    ref, res = _random_hdr_pair(0)
    with pytest.raises(ValueError, match="negative"):
        psnr_mu(ref, res - 1.0)
    with pytest.raises(ValueError, match="percentile"):
        psnr_mu(np.zeros((4, 4, 3)), res[:4, :4])
    with pytest.raises(ValueError, match=r"max\(ref\)"):
        psnr_l(np.zeros((4, 4, 3)), res[:4, :4])


# ---------------------------------------------------------------- torch versions
def _nchw(batch):
    return torch.from_numpy(np.stack([b.transpose(2, 0, 1) for b in batch]))


def test_torch_float64_matches_numpy_per_image():
    pairs = [_random_hdr_pair(s) for s in range(3)]
    # images with very different brightness: a batch-global percentile would be wrong
    pairs[1] = (pairs[1][0] * 0.05, pairs[1][1] * 0.05)
    refs = _nchw([p[0] for p in pairs])
    ress = _nchw([p[1] for p in pairs])
    mu_t = psnr_mu_torch(refs, ress)
    l_t = psnr_l_torch(refs, ress)
    assert mu_t.shape == (3,) and l_t.shape == (3,) and mu_t.dtype == torch.float64
    for i, (ref, res) in enumerate(pairs):
        off_l, off_mu = _official_scores(ref, res)
        assert abs(mu_t[i].item() - off_mu) < 1e-6
        assert abs(l_t[i].item() - off_l) < 1e-6
        # single-image (CHW) call gives a 0-d tensor with the same value
        single = psnr_mu_torch(refs[i], ress[i])
        assert single.dim() == 0 and abs(single.item() - off_mu) < 1e-6


def test_torch_float32_matches_numpy_within_1e3_db():
    pairs = [_random_hdr_pair(s, shape=(64, 64, 3)) for s in (7, 8)]
    refs = _nchw([p[0] for p in pairs]).float()
    ress = _nchw([p[1] for p in pairs]).float()
    mu_t, l_t = psnr_mu_torch(refs, ress), psnr_l_torch(refs, ress)
    assert mu_t.dtype == torch.float32
    for i, (ref, res) in enumerate(pairs):
        assert abs(mu_t[i].item() - psnr_mu(ref, res)) < 1e-3
        assert abs(l_t[i].item() - psnr_l(ref, res)) < 1e-3


def test_torch_on_real_ntire_crops_matches_official():
    refs, ress, offs = [], [], []
    for idx in range(4):
        gt16, align_ratio, medium8 = _load_crop(idx)
        ref = gt16.astype(np.float64) / align_ratio
        res = medium8.astype(np.float64) / 255.0
        refs.append(ref)
        ress.append(res)
        offs.append(_official_scores(ref, res))
    mu_t = psnr_mu_torch(_nchw(refs), _nchw(ress))
    l_t = psnr_l_torch(_nchw(refs), _nchw(ress))
    for i, (off_l, off_mu) in enumerate(offs):
        assert abs(mu_t[i].item() - off_mu) < 1e-6
        assert abs(l_t[i].item() - off_l) < 1e-6


def test_torch_metrics_are_differentiable_with_finite_gradients():
    ref, res = _random_hdr_pair(2)
    ref_t = _nchw([ref, ref * 0.5])
    res_np = np.stack([res, res * 0.5]).transpose(0, 3, 1, 2).copy()
    res_np[:, :, :4, :4] = 0.0  # zeros
    res_np[:, :, 4:8, :4] = -0.3  # negatives (clamped at 0 in the torch metric)
    res_t = torch.from_numpy(res_np).requires_grad_(True)
    for fn in (psnr_mu_torch, psnr_l_torch):
        res_t.grad = None
        val = fn(ref_t, res_t)
        assert torch.isfinite(val).all()
        val.sum().backward()
        assert res_t.grad is not None
        assert torch.isfinite(res_t.grad).all()
        assert res_t.grad.abs().sum() > 0
    # gradient ascent on PSNR-mu improves it (the gradient points the right way)
    x = _nchw([res]).clone().requires_grad_(True)
    r = _nchw([ref])
    before = psnr_mu_torch(r, x)
    before.sum().backward()
    with torch.no_grad():
        after = psnr_mu_torch(r, x + 1e-4 * x.grad / x.grad.abs().max())
    assert after.item() > before.item()


def test_torch_negative_values_are_clamped_to_zero():
    ref, res = _random_hdr_pair(6)
    r, x = _nchw([ref]), _nchw([res])
    neg = x.clone()
    neg[:, :, :5, :5] = -1.0
    zero = x.clone()
    zero[:, :, :5, :5] = 0.0
    assert psnr_mu_torch(r, neg).item() == pytest.approx(psnr_mu_torch(r, zero).item(), abs=1e-12)


def test_torch_undefined_normaliser_gives_nan_for_that_image_only():
    ref, res = _random_hdr_pair(0, shape=(8, 8, 3))
    refs = _nchw([ref, np.zeros_like(ref)])
    ress = _nchw([res, res])
    for fn in (psnr_mu_torch, psnr_l_torch):
        v = fn(refs, ress)
        assert torch.isfinite(v[0]) and torch.isnan(v[1])


@pytest.mark.parametrize("fn", [psnr_mu_torch, psnr_l_torch])
def test_torch_bad_inputs_raise_value_error(fn):
    a = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"shape mismatch.*\(2, 3, 8, 8\).*\(2, 3, 8, 7\)"):
        fn(a, a[..., :7])
    b = a.clone()
    b[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="res contains non-finite"):
        fn(a, b)
    with pytest.raises(ValueError, match="NCHW or CHW"):
        fn(a[0, 0], a[0, 0])


@pytest.mark.parametrize("q", [0.0, 37.5, 99.0, 99.9, 100.0])
def test_percentile_per_image_matches_numpy_including_kthvalue_fallback(q, monkeypatch):
    rng = np.random.default_rng(11)
    x = rng.lognormal(0.0, 2.0, (3, 3, 17, 13))
    t = torch.from_numpy(x)
    expected = [np.percentile(x[i], q) for i in range(3)]
    np.testing.assert_allclose(percentile_per_image_torch(t, q).numpy(), expected, rtol=1e-12)
    monkeypatch.setattr(M, "_TORCH_QUANTILE_MAX_NUMEL", 100)  # force the kthvalue path
    np.testing.assert_allclose(percentile_per_image_torch(t, q).numpy(), expected, rtol=1e-12)
    # and the full metric on the fallback path still matches the official scorer
    ref, res = _random_hdr_pair(9, shape=(12, 10, 3))
    val = psnr_mu_torch(_nchw([ref]), _nchw([res]))
    assert abs(val.item() - _official_psnr_tanh_norm_mu_tonemap(ref, res)) < 1e-6


def test_percentile_beyond_torch_quantile_size_limit():
    """A real image larger than torch.quantile's 2**24-element limit (e.g. 4K) still works."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 2368, 2368, generator=g)  # 16.8M elements > 2**24
    # torch.quantile(x.flatten(1), 0.99, dim=1) raises "quantile() input tensor is too large" here
    # (not asserted: it spends ~2 s sorting before it raises)
    assert x[0].numel() > 2**24
    got = percentile_per_image_torch(x, 99.0)
    expected = np.percentile(x.numpy(), 99.0)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_psnr_mu_masked_is_psnr_mu_on_a_full_mask_and_local_otherwise():
    from eapnet.metrics import psnr_mu_masked

    rng = np.random.default_rng(0)
    ref = rng.uniform(0, 2, (16, 16, 3))
    res = ref.copy()
    res[:4] += 0.3  # error only in the top rows
    full = np.ones((16, 16), bool)
    assert psnr_mu_masked(ref, res, full) == pytest.approx(psnr_mu(ref, res))
    top, bottom = full.copy(), full.copy()
    top[4:], bottom[:4] = False, False
    assert psnr_mu_masked(ref, res, top) < psnr_mu(ref, res)
    assert psnr_mu_masked(ref, res, bottom) == float("inf")
    assert psnr_mu_masked(ref, res, np.zeros((16, 16), bool)) is None
    with pytest.raises(ValueError, match="mask shape"):
        psnr_mu_masked(ref, res, np.ones((8, 8), bool))
