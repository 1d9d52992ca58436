"""Classical baselines: interface, GT domain, and the Debevec response convention on clean data."""
import inspect

import numpy as np
import pytest

from eapnet.baselines import (
    ALL_BASELINES,
    BASELINES,
    debevec,
    known_response,
    mertens,
    reference_frame,
)
from eapnet.data.synthetic import HELDOUT_SEED, SyntheticConfig, generate_scene, scene_seed
from eapnet.metrics import psnr_mu

# No motion, no noise (the log-uniform draws need positive ranges, so "off" is 1e-12), no black level:
# what is left is 8-bit quantisation and clipping, which a correct HDR merge handles.
CLEAN = SyntheticConfig(camera_shake=False, object_motion=False, iso_range=(100.0, 100.0),
                        shot_noise_range=(1e-12, 1e-12), read_noise_range=(1e-12, 1e-12),
                        black_level_range=(0.0, 0.0), challenge_white_prob=0.0, white_level_range=(255, 255))
EVS = np.array([-2.0, 0.0, 2.0], np.float32)


def _bracket(linear_rgb, evs=EVS, shape=(16, 16)):
    """LDR frames of a flat field of linear radiance ``linear_rgb`` (medium units), camera gamma 2.24, 8 bit."""
    lin = np.broadcast_to(np.asarray(linear_rgb, np.float64), (*shape, 3))
    frames = [np.round(255 * np.clip(lin * 2.0 ** e, 0, 1) ** (1 / 2.24)) / 255 for e in evs]
    return np.stack(frames).astype(np.float32)


@pytest.fixture(scope="module")
def scene():
    return generate_scene(scene_seed(HELDOUT_SEED, 0), 64, 64)


@pytest.mark.parametrize("name", sorted(ALL_BASELINES))
def test_output_contract(name, scene):
    ldrs, evs, gt = scene
    before = ldrs.copy()
    out = ALL_BASELINES[name](ldrs, evs)
    assert out.shape == gt.shape and out.dtype == np.float32
    assert np.all(np.isfinite(out)) and out.min() >= 0
    np.testing.assert_array_equal(ldrs, before)  # inputs untouched
    # the interface has no way to receive the ground truth
    assert list(inspect.signature(ALL_BASELINES[name]).parameters) == ["ldrs", "evs"]
    assert 5 < psnr_mu(gt, out) < 80


def test_registry():
    assert list(BASELINES) == ["reference_frame", "debevec", "mertens", "radiance_merge", "consistent_merge"]
    assert set(ALL_BASELINES) == set(BASELINES) | {"debevec_calibrated"}


def test_radiance_merge_is_the_models_base_and_close_to_debevec(scene):
    from eapnet.baselines import debevec, radiance_merge
    from eapnet.metrics import psnr_mu

    ldrs, evs, gt = scene
    base = radiance_merge(ldrs, evs)
    assert base.shape == ldrs[1].shape and base.dtype == np.float32 and base.min() > 0
    assert abs(psnr_mu(gt, base) - psnr_mu(gt, debevec(ldrs, evs))) < 0.3


def test_reference_frame_is_the_medium_frame(scene):
    ldrs, evs, _ = scene
    np.testing.assert_array_equal(reference_frame(ldrs, evs), ldrs[1])


def test_known_response_is_the_challenge_gamma():
    r = known_response()
    assert r.shape == (256, 1, 3) and r.dtype == np.float32
    np.testing.assert_allclose(r[1:, 0, 1], (np.arange(1, 256) / 255) ** 2.24, rtol=1e-6)
    assert 0 < r[0, 0, 0] < r[1, 0, 0] and np.all(np.diff(r[:, 0, 0]) > 0)


@pytest.mark.parametrize("evs", [EVS, np.array([-3.0, 0.0, 1.0], np.float32)])
@pytest.mark.parametrize("lin", [[0.2, 0.08, 0.02], [3.0, 1.5, 1.2]], ids=["unclipped", "medium-clipped"])
def test_debevec_flat_field_recovers_radiance(evs, lin):
    # Radiance in medium-frame units: unclipped in every frame, or clipped in all channels of the medium
    # and long frames. (A pixel clipped in only some channels of a frame is not recovered: OpenCV
    # averages its hat weights over the channels, e.g. [0.5, 0.2, 0.03] comes back with R = 0.43.)
    lin = np.array(lin)
    out = debevec(_bracket(lin, evs), evs)
    np.testing.assert_allclose(out[0, 0] ** 2.24, lin, rtol=0.03)
    # absolute EVs (as stored by the challenge) mean the same exposures
    np.testing.assert_allclose(debevec(_bracket(lin, evs), evs + 1.0), out, rtol=1e-6)


def test_debevec_with_known_response_reaches_high_psnr_on_a_clean_scene():
    ldrs, evs, gt = generate_scene(scene_seed(HELDOUT_SEED, 0), 128, 128, CLEAN)
    out = debevec(ldrs, evs)
    ref = psnr_mu(gt, reference_frame(ldrs, evs))
    got = psnr_mu(gt, out)
    # measured: debevec 46.0 dB, reference frame 33.4 dB (clipped highlights)
    assert got > 40.0 and got > ref + 5.0, (got, ref)
    # pixels well exposed in all frames: linear radiance within quantisation (measured median 0.5 %)
    ok = ((ldrs > 0.05) & (ldrs < 0.95)).all(axis=(0, -1))
    assert ok.sum() > 1000
    rel = np.abs(out[ok] ** 2.24 / gt[ok] ** 2.24 - 1)
    assert np.median(rel) < 0.01 and np.percentile(rel, 95) < 0.04


def test_mertens_is_in_the_gt_domain(scene):
    ldrs, evs, _ = scene
    out = mertens(ldrs, evs)
    ok = ((ldrs[1] > 0.1) & (ldrs[1] < 0.9)).all(-1)
    ratio = out[ok] ** 2.24 / ldrs[1][ok] ** 2.24
    # per channel (a BGR/RGB mix-up or a missing linearisation would move these): measured within 3 %
    np.testing.assert_allclose(np.median(ratio, axis=0), 1.0, atol=0.06)


def test_mertens_keeps_colour_channels_in_rgb_order():
    lin = np.array([0.2, 0.05, 0.01])  # strongly red field, well exposed in the medium frame
    ldrs = _bracket(lin)
    out = mertens(ldrs, EVS)
    np.testing.assert_allclose(out[0, 0] / ldrs[1, 0, 0], 1.0, atol=0.2)


def test_baselines_validate_inputs(scene):
    ldrs, evs, _ = scene
    for f in ALL_BASELINES.values():
        with pytest.raises(ValueError, match="ldrs"):
            f(ldrs[:2], evs)
        with pytest.raises(ValueError, match="evs"):
            f(ldrs, evs[:2])
