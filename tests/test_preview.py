"""The light-ghost measure of the real full-size frame's preview: zero where the output follows the medium
frame, the stops it departs by where it takes the long frame's extra light (or darkens), nan without such
light."""
import numpy as np
import pytest

from eapnet.rendering import compose, light_ghosts

GAMMA = 2.24


def _triplet(lit_gain: float, h: int = 96, w: int = 128, seed: int = 0):
    rng = np.random.default_rng(seed)
    scene = np.exp(rng.uniform(np.log(0.02), np.log(0.15), (h, w, 1))) * np.ones((1, 1, 3))   # linear
    lit = np.zeros((h, w, 1))
    lit[30:60, 40:80] = 1.0
    evs = np.array([-2.0, 0.0, 2.0], np.float32)
    frames = [scene * 2.0 ** ev for ev in evs]
    frames[2] = frames[2] * (1.0 + (lit_gain - 1.0) * lit)            # a light on in the long frame only
    ldrs = np.stack([np.clip(f, 0, 1) ** (1 / GAMMA) for f in frames]).astype(np.float32)
    return ldrs, evs, scene, lit


def test_light_ghosts_measures_the_leaked_stops():
    ldrs, evs, scene, lit = _triplet(lit_gain=4.0)
    follows = scene ** (1 / GAMMA)                                   # the reference: the medium frame's light
    assert abs(light_ghosts(follows, ldrs, evs)) < 0.1
    leaked = (scene * (1.0 + 3.0 * lit)) ** (1 / GAMMA)              # the long frame's light kept: 2 stops
    assert light_ghosts(leaked, ldrs, evs) == pytest.approx(2.0, abs=0.2)
    darker = (scene * (1.0 - 0.5 * lit)) ** (1 / GAMMA)
    assert light_ghosts(darker, ldrs, evs) == pytest.approx(1.0, abs=0.2)      # dark blotches count too


def test_light_ghosts_without_a_changed_light_is_nan():
    ldrs, evs, scene, _ = _triplet(lit_gain=1.0)
    assert np.isnan(light_ghosts(scene ** (1 / GAMMA), ldrs, evs))


def test_a_crop_outside_the_frame_names_it_as_hxw():
    # the frame's size was printed WxH (20x30 read as 30x20) beside a crop given as y0:y1,x0:x1
    panels = {"medium": np.zeros((20, 30, 3), np.uint8)}
    with pytest.raises(ValueError) as e:
        compose(panels, (0, 25, 0, 10))
    assert str(e.value) == "crop 0:25,0:10 (y0:y1,x0:x1) lies outside the 20x30 (HxW) frame"


def test_preview_replaces_an_existing_file_only_with_overwrite(tmp_path, capsys):
    from eapnet.preview import main

    png = tmp_path / "existing.png"
    png.write_bytes(b"an earlier preview")
    with pytest.raises(SystemExit) as e:
        main(["--out", str(png)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"--out {png} already exists; pass --overwrite" in err, err
    assert png.read_bytes() == b"an earlier preview"
    # with --overwrite the file is no obstacle: the next check (the missing data folder) speaks
    with pytest.raises(SystemExit) as e:
        main(["--out", str(png), "--overwrite", "--data", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--data" in err and "no such folder" in err and "already exists" not in err, err
