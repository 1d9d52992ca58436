"""The model family: configs, forward at odd sizes, purity, torch.export."""
import dataclasses

import pytest
import torch

from eapnet import LIGHTWEIGHT, STANDARD, VARIANTS, EAPNetConfig, build_model, load_model
from eapnet.model import EAPNet, consistent_merge, ev_align, pad_frames, radiance_merge, with_blocks
from eapnet.variants import ROWS


def _inputs(h, w, b=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, 3, h, w, generator=g), torch.tensor([[-2.0, 0.0, 2.0]] * b)


@pytest.mark.parametrize("name", ["standard", "lightweight", "ahdr"])
@pytest.mark.parametrize("hw", [(37, 53), (64, 64), (17, 130)])
def test_forward_odd_sizes(name, hw):
    torch.manual_seed(0)
    m = build_model(name).eval()
    ldrs, evs = _inputs(*hw, b=2)
    with torch.no_grad():
        y = m(ldrs, evs)
    assert y.shape == (2, 3, *hw)
    assert torch.isfinite(y).all() and (y >= 0).all()


@pytest.mark.parametrize("row", ROWS, ids=[r.key for r in ROWS])
def test_every_paper_row_runs(row):
    m = EAPNet(row.config()).eval()
    with torch.no_grad():
        y = m(*_inputs(19, 23))
    assert y.shape == (1, 3, 19, 23) and torch.isfinite(y).all()


def test_forward_is_pure_and_deterministic():
    m = build_model("standard").eval()
    ldrs, evs = _inputs(40, 56)
    state = {k: v.clone() for k, v in m.state_dict().items()}
    with torch.no_grad():
        a, b = m(ldrs, evs), m(ldrs, evs)
    assert torch.equal(a, b)
    assert all(torch.equal(state[k], v) for k, v in m.state_dict().items())
    assert torch.equal(ldrs, _inputs(40, 56)[0])  # inputs untouched


def test_batch_items_are_independent():
    m = build_model("lightweight").eval()
    ldrs, evs = _inputs(24, 40, b=2)
    evs[1] = torch.tensor([-1.0, 0.0, 3.0])
    with torch.no_grad():
        both = m(ldrs, evs)
        second = m(ldrs[1:], evs[1:])
    torch.testing.assert_close(both[1:], second, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["standard", "lightweight", "standard_merge", "lightweight_merge"])
def test_a_fresh_model_returns_its_base(name):
    # Zero-initialised output conv on top of the base: training starts from the classical merge (the shipped
    # configurations' de-ghosted one, the *_merge ones' plain one), or from the medium frame with base="reference".
    ldrs, evs = _inputs(32, 40)
    m = build_model(name).eval()
    assert m.config.base == ("merge" if name.endswith("_merge") else "consistent")
    base = radiance_merge if m.config.base == "merge" else consistent_merge
    ref = EAPNet(m.config.replace(base="reference")).eval()
    with torch.no_grad():
        torch.testing.assert_close(m(ldrs, evs), base(ldrs, evs), rtol=0, atol=0)
        torch.testing.assert_close(ref(ldrs, evs), ldrs[:, 1], rtol=0, atol=0)


@pytest.mark.parametrize("name", ["standard", "lightweight"])
def test_the_variant_table_is_what_ships(name):
    # build_model(name) and load_model(name) are the same network: the shipped checkpoint's config is the row
    assert load_model(name).config == build_model(name).config


def test_radiance_merge_is_debevec_with_the_known_response():
    import numpy as np

    from eapnet.baselines import debevec
    from eapnet.data.synthetic import generate_scene

    ldrs, evs, _ = generate_scene(3, 64, 80)
    ours = radiance_merge(torch.from_numpy(ldrs).permute(0, 3, 1, 2)[None].float(),
                          torch.tensor(evs, dtype=torch.float32)[None])[0].permute(1, 2, 0).numpy()
    cv = debevec(ldrs, evs)
    assert ours.shape == cv.shape and np.all(ours > 0)
    # Same formula; OpenCV's integer hat weights differ from ours by a fraction of a code value.
    assert np.median(np.abs(ours - cv)) < 2e-3
    assert np.mean(np.abs(ours - cv)) < 1e-2


def test_radiance_merge_of_consistent_frames_is_the_scene():
    # Three exposures of one linear scene, none clipped: the merge returns it (up to the hat weights'
    # averaging of identical values, exactly).
    lin = torch.linspace(0.01, 0.2, 40).reshape(1, 1, 1, 5, 8).expand(1, 1, 3, 5, 8)
    evs = torch.tensor([[-1.0, 0.0, 1.0]])
    ldrs = torch.cat([(lin * 2.0 ** e) ** (1 / 2.24) for e in evs[0]], 1)
    torch.testing.assert_close(radiance_merge(ldrs, evs), lin[:, 0] ** (1 / 2.24), rtol=1e-5, atol=1e-6)


def _exposures(lin, evs):
    return torch.cat([(lin * 2.0 ** e).clamp(0, 1) ** (1 / 2.24) for e in evs[0]], 1)


def test_consistent_merge_is_the_merge_where_frames_agree_and_the_medium_frame_where_they_do_not():
    torch.manual_seed(0)
    lin = (0.002 + 0.02 * torch.rand(1, 1, 1, 40, 48)).expand(1, 1, 3, 40, 48)
    evs = torch.tensor([[-1.0, 0.0, 1.0]])
    ldrs = _exposures(lin, evs)
    # consistent frames: every weight kept, the plain merge
    torch.testing.assert_close(consistent_merge(ldrs, evs), radiance_merge(ldrs, evs), rtol=1e-5, atol=1e-6)
    # a light on a 16x16 patch in the long frame only (4 stops brighter, unclipped): the plain merge ghosts
    # there, the consistent one follows the medium frame (the reference), and stays the plain merge far away
    lit = ldrs.clone()
    lit[:, 2, :, 12:28, 16:32] = (lin[:, 0, :, 12:28, 16:32] * 2 * 16) ** (1 / 2.24)
    plain, ours = radiance_merge(lit, evs), consistent_merge(lit, evs)
    medium = ldrs[:, 1]
    inside = (..., slice(16, 24), slice(20, 28))
    assert (plain[inside] - medium[inside]).abs().mean() > 0.05
    torch.testing.assert_close(ours[inside], medium[inside], rtol=0, atol=2e-3)
    torch.testing.assert_close(ours[..., :, :4], plain[..., :, :4], rtol=1e-5, atol=1e-6)


def test_consistent_merge_keeps_the_short_frame_where_the_medium_frame_clips():
    lin = torch.full((1, 1, 3, 24, 24), 0.05)
    lin[..., 8:16, 8:16] = 3.0            # a highlight: clipped in the medium and long frames, not the short
    evs = torch.tensor([[-2.0, 0.0, 2.0]])
    ldrs = _exposures(lin, evs)
    ours, plain = consistent_merge(ldrs, evs), radiance_merge(ldrs, evs)
    centre = (..., slice(10, 14), slice(10, 14))
    truth = 3.0 ** (1 / 2.24)             # the short frame's radiance; the medium and long frames read 1.0
    assert (ours[centre] - truth).abs().max() < 0.05 and (ours[centre] >= plain[centre]).all()


def test_consistent_base_is_a_config_choice():
    ldrs, evs = _inputs(32, 40)
    m = EAPNet(build_model("lightweight").config.replace(base="consistent")).eval()
    with torch.no_grad():
        torch.testing.assert_close(m(ldrs, evs), consistent_merge(ldrs, evs), rtol=0, atol=0)
    with pytest.raises(ValueError, match="base must be one of"):
        m.config.replace(base="median")


@pytest.mark.parametrize("name", ["standard", "lightweight"])
def test_torch_export_matches_eager(name):
    m = build_model(name).eval()
    ldrs, evs = _inputs(48, 72)
    ep = torch.export.export(m, (ldrs, evs))
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(ldrs, evs), m(ldrs, evs), rtol=1e-5, atol=1e-5)


def test_ev_alignment_is_eq2():
    ldrs, evs = _inputs(4, 5)
    x = ev_align(ldrs, evs, 2.24)
    assert [t.shape[1] for t in x] == [6, 6, 6]
    torch.testing.assert_close(x[0][:, 3:], ldrs[:, 0] ** 2.24 * 4.0)
    torch.testing.assert_close(x[2][:, :3], ldrs[:, 2])


def test_padding_is_replicate_and_to_the_multiple():
    ldrs, _ = _inputs(9, 10)
    p = pad_frames(ldrs, 8)
    assert p.shape[-2:] == (16, 16)
    assert torch.equal(p[..., :9, :10], ldrs) and torch.equal(p[..., 15, 3], ldrs[..., 8, 3])


def test_bad_inputs_are_named():
    m = build_model("lightweight")
    with pytest.raises(ValueError, match="ldrs must be"):
        m(torch.rand(1, 9, 8, 8), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="evs must be"):
        m(torch.rand(1, 3, 3, 8, 8), torch.zeros(1, 2))
    x, e = torch.rand(1, 3, 3, 16, 16), torch.tensor([[-2.0, 0.0, 2.0]])
    # wrong types fail at the door with what to do, not deep inside a conv
    with pytest.raises(TypeError, match=r"torch.uint8; 8-bit frames: ldrs.float\(\) / 255"):
        m((x * 255).to(torch.uint8), e)
    with pytest.raises(TypeError, match="float32.*got torch.float64"):
        m(x.double(), e)
    with pytest.raises(TypeError, match="must be a torch.Tensor, got ndarray"):
        m(x.numpy(), e)
    with pytest.raises(TypeError, match="evs must be float32"):
        m(x, torch.tensor([[-2, 0, 2]]))


def test_config_round_trip_and_validation():
    for cfg in VARIANTS.values():
        assert EAPNetConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="align"):
        STANDARD.replace(align="quarter")
    with pytest.raises(ValueError, match="pdub_widths"):
        STANDARD.replace(num_blocks=2)
    with pytest.raises(ValueError, match="unknown EAPNetConfig fields"):
        EAPNetConfig.from_dict({"widths": 3})
    with pytest.raises(dataclasses.FrozenInstanceError):
        STANDARD.num_blocks = 3
    with pytest.raises(ValueError, match="unknown model"):
        build_model("huge")


def test_with_blocks_and_pruned_widths_build():
    cfg = with_blocks(STANDARD, 2).replace(pdub_widths=((24, 16, 40), (8, 8, 8)), enc_channels=16,
                                           feat_channels=24, tail_channels=8)
    m = EAPNet(cfg).eval()
    assert len(m.blocks) == 2
    assert m.blocks[0].enc1.pw.out_channels == 24 and m.blocks[1].enc3.pw.out_channels == 8
    with torch.no_grad():
        assert m(*_inputs(16, 24)).shape == (1, 3, 16, 24)


def test_named_variants_structure_matches_the_paper():
    assert (STANDARD.num_blocks, STANDARD.align, STANDARD.upsample, STANDARD.share_weights) == \
        (4, "half", "conv", False)
    assert (LIGHTWEIGHT.num_blocks, LIGHTWEIGHT.align, LIGHTWEIGHT.upsample, LIGHTWEIGHT.share_weights) == \
        (3, "full", "bilinear", False)
    # Depthwise-separable everywhere but the first and the last conv.
    m = build_model("standard")
    full = [n for n, mod in m.named_modules() if isinstance(mod, torch.nn.Conv2d)
            and mod.groups == 1 and mod.kernel_size == (3, 3)]
    assert sorted(full) == sorted([f"encoders.{i}.conv0" for i in range(3)] + ["out"])
