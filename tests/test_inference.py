"""The one inference path: whole-frame vs tiled."""
import numpy as np
import pytest
import torch

from eapnet import build_model
from eapnet.data.synthetic import generate_scene
from eapnet.inference import predict, to_batch


@pytest.fixture(scope="module")
def scene():
    return generate_scene(3, 96, 136)


def test_predict_shape_and_domain(scene, tiny_config):
    ldrs, evs, _ = scene
    hdr = predict(build_model(tiny_config).eval(), ldrs, evs)
    assert hdr.shape == (96, 136, 3) and hdr.dtype == np.float32 and (hdr >= 0).all()


def test_tile_covering_the_frame_is_whole_frame(scene, tiny_config):
    ldrs, evs, _ = scene
    m = build_model(tiny_config).eval()
    np.testing.assert_array_equal(predict(m, ldrs, evs, tile=256), predict(m, ldrs, evs))


def test_tiled_matches_whole_frame_within_tolerance(scene):
    # Seams differ only through the receptive field; overlapping tiles blended with ramps keep the error
    # bounded. Measured (lightweight at init with a random output conv, this scene, HDR ~0-2.3, corrections
    # up to 1.3): tiles of 64, overlap 24: max |diff| 0.131, mean 0.0165; overlap 8: 0.208 / 0.0194;
    # overlap 0: 0.376 / 0.0228. Every unit is live at init, so the receptive field (PDUB levels at 1/8
    # resolution, dilated) is far wider than 64-px tiles.
    ldrs, evs, _ = scene
    torch.manual_seed(0)
    m = build_model("lightweight").eval()
    torch.nn.init.normal_(m.out.weight, std=0.005)  # zero at init: make the output depend on the network
    whole = predict(m, ldrs, evs)
    assert np.abs(whole - ldrs[1]).max() > 0.01
    tiled = predict(m, ldrs, evs, tile=64, overlap=24)
    assert tiled.shape == whole.shape
    d24, d0 = np.abs(tiled - whole), np.abs(predict(m, ldrs, evs, tile=64, overlap=0) - whole)
    assert d24.mean() < 0.025 and d24.max() < 0.25
    assert d0.max() > 1.5 * d24.max()  # the overlap is what keeps seams small


class _LocalNet(torch.nn.Module):
    """Three 3x3 convs (receptive-field radius 3 px) behind the challenge interface."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Conv2d(9, 16, 3, padding=1), torch.nn.ReLU(),
                                       torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU(),
                                       torch.nn.Conv2d(16, 3, 3, padding=1))

    def forward(self, ldrs, evs):
        return self.net(ldrs.flatten(1, 2)) + evs[:, :1, None, None]


def test_stitched_equals_whole_frame_when_the_receptive_field_fits_the_overlap(scene):
    ldrs, evs, _ = scene
    m = _LocalNet().eval()
    whole = predict(m, ldrs, evs)
    for tile, overlap in ((32, 12), ((40, 56), 12), (48, 16)):   # radius 3 <= overlap // 4
        np.testing.assert_allclose(predict(m, ldrs, evs, tile=tile, overlap=overlap), whole, atol=1e-5)
    # every tile has the tile's size, so a program exported at that size runs them all
    sizes = set()
    m.register_forward_hook(lambda mod, args, out: sizes.add(tuple(args[0].shape[-2:])))
    predict(m, ldrs, evs, tile=(40, 56), overlap=12)
    assert sizes == {(40, 56)}
    # too small an overlap for the receptive field: seams show
    assert np.abs(predict(m, ldrs, evs, tile=32, overlap=4) - whole).max() > 1e-3


def test_bad_tiles_and_inputs(scene, tiny_config):
    ldrs, evs, _ = scene
    m = build_model(tiny_config).eval()
    with pytest.raises(ValueError, match="overlap"):
        predict(m, ldrs, evs, tile=32, overlap=20)
    with pytest.raises(ValueError, match="tile must be"):
        predict(m, ldrs, evs, tile=8, overlap=0)
    with pytest.raises(ValueError, match="ldrs must be"):
        to_batch(ldrs[0], evs)
    with pytest.raises(ValueError, match="evs must"):
        to_batch(ldrs, evs[:2])


@pytest.mark.parametrize("change, message", [
    (lambda l, e: ((l * 255).astype(np.uint8), e), r"got dtype uint8 \(8-bit codes: divide by 255\)"),
    (lambda l, e: (l * 255, e), r"must be in \[0, 1\].*8-bit codes\? divide by 255"),
    (lambda l, e: (np.where(np.arange(l.size).reshape(l.shape) == 5, np.nan, l), e), "ldrs contain NaN/inf"),
    (lambda l, e: (l, np.array([-2.0, np.nan, 2.0])), "evs: exposures contain NaN/Inf"),
    (lambda l, e: (l, np.array([0.0, 0.0, 0.0])), "strictly increasing"),
    (lambda l, e: (l, np.array([-300.0, 0.0, 300.0])), "300 stops from the medium one; at most 10"),
])
def test_the_inference_path_refuses_what_the_model_cannot_use(scene, tiny_config, change, message):
    # each of these once gave an all-NaN image or an output 5000x too bright, without a word
    ldrs, evs, _ = scene
    m = build_model(tiny_config).eval()
    bad_l, bad_e = change(ldrs, evs)
    with pytest.raises(ValueError, match=message):
        predict(m, bad_l, bad_e)


def test_float64_and_lists_are_accepted_by_the_inference_path(scene, tiny_config):
    ldrs, evs, _ = scene
    m = build_model(tiny_config).eval()
    ref = predict(m, ldrs, evs)
    np.testing.assert_array_equal(predict(m, ldrs.astype(np.float64), list(map(float, evs))), ref)


def test_resolve_device_reads_every_device_flag_one_way():
    from eapnet.inference import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("tpu", "cudax", "cuda:", "gpu"):
        with pytest.raises(ValueError, match="must be auto, cpu, cuda or cuda:N"):
            resolve_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_cpu_inference_runs_channels_last_and_restores_the_model(scene):
    """predict runs a float model on CPU in channels_last (faster kernels) and gives the weights back in their
    layout; the output equals the contiguous model's to float rounding."""
    from eapnet.cpu import cpu_channels_last

    ldrs, evs, _ = scene
    torch.manual_seed(0)
    m = build_model("lightweight").eval()
    torch.nn.init.normal_(m.out.weight, std=0.005)
    x, e = to_batch(ldrs, evs)
    with torch.no_grad():
        ref = m(x, e)[0].permute(1, 2, 0).numpy()
    conv = m.out
    seen = []
    h = conv.register_forward_pre_hook(lambda mod, a: seen.append(mod.weight.is_contiguous(
        memory_format=torch.channels_last) and not mod.weight.is_contiguous()))
    out = predict(m, ldrs, evs)
    h.remove()
    assert seen == [True]   # the 3x3 output conv ran with channels_last weights
    assert all(p.is_contiguous() for p in m.parameters())
    np.testing.assert_allclose(out, ref, atol=1e-5)
    # a model already in channels_last stays so; a model without nn.Conv2d modules is left alone
    m.to(memory_format=torch.channels_last)
    with cpu_channels_last(m):
        pass
    assert not conv.weight.is_contiguous()
    lin = torch.nn.Linear(3, 3)
    with cpu_channels_last(lin):
        assert lin.weight.is_contiguous()


@pytest.mark.parametrize("kwargs, message", [
    ({"tile": 16.5}, r"tile must be an integer N or a pair \(H, W\) of integers, in pixels; got 16\.5"),
    ({"tile": (16,)}, r"tile must be an integer N or a pair \(H, W\) .* got \(16,\)"),
    ({"tile": (32, 32, 32)}, r"tile must be .* got \(32, 32, 32\)"),
    ({"tile": (32, 40.0)}, r"tile must be .* got \(32, 40\.0\)"),
    ({"tile": "512"}, r"tile must be .* got '512'"),
    ({"tile": True}, r"tile must be .* got True"),
    ({"tile": (64, 8)}, r"tile must be at least 16 pixels, got 64x8"),
    ({"tile": 64, "overlap": 12.5}, r"overlap must be an integer number of pixels >= 0, got 12\.5"),
    ({"tile": 64, "overlap": -1}, r"overlap must be an integer number of pixels >= 0, got -1"),
    ({"amp": "int4"}, r"amp must be one of \(None, 'off', 'bf16', 'fp16'\), got 'int4'"),
])
def test_predict_names_the_argument_it_cannot_use(scene, tiny_config, kwargs, message):
    # these failed inside the library ("cannot unpack non-iterable float", a slice of floats) or, for amp,
    # ran without a word (any unknown amp was fp16 on CUDA and fp32 on CPU)
    ldrs, evs, _ = scene
    m = build_model(tiny_config).eval()
    with pytest.raises(ValueError, match=message):
        predict(m, ldrs, evs, **kwargs)


@pytest.mark.parametrize("shape", [(3, 0, 0, 3), (3, 0, 8, 3), (3, 8, 0, 3)])
def test_an_empty_frame_is_named(tiny_config, shape):
    # a 0x0 frame failed in NumPy ("zero-size array to reduction operation minimum which has no identity")
    m = build_model(tiny_config).eval()
    with pytest.raises(ValueError, match=rf"ldrs: the frame is {shape[1]}x{shape[2]} pixels \(HxW\); need at least 1x1"):
        predict(m, np.zeros(shape, np.float32), np.array([-2.0, 0.0, 2.0]))


def test_a_tile_larger_than_the_frame_is_clamped_to_it(scene):
    """Documented choice: a tile side at least the frame's runs that side whole (one tile setting serves a
    dataset of mixed sizes); the other side is still tiled at the tile's size."""
    ldrs, evs, _ = scene   # 96x136
    m = _LocalNet().eval()
    sizes = []
    m.register_forward_hook(lambda mod, args, out: sizes.append(tuple(args[0].shape[-2:])))
    whole = predict(m, ldrs, evs)
    sizes.clear()
    np.testing.assert_allclose(predict(m, ldrs, evs, tile=(64, 4096), overlap=16), whole, atol=1e-5)
    assert set(sizes) == {(64, 136)} and len(sizes) == 2
    sizes.clear()
    np.testing.assert_array_equal(predict(m, ldrs, evs, tile=4096), whole)
    assert sizes == [(96, 136)]
