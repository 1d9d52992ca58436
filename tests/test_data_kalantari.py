"""Kalantari 2017 layout: synthetic scenes written with cv2 are read back in NTIRE conventions."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from eapnet.data import kalantari
from eapnet.data.errors import DataError, MissingFileError
from eapnet.data.kalantari import list_kalantari_scenes, read_kalantari

TIF_NAMES = ["262A0898.tif", "262A0899.tif", "262A0900.tif"]  # real-dataset style names


def radiance(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Linear RGB radiance in units of the EV-0 exposure; red > green > blue, a left-right ramp."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.02, 1.0, w)[None, :, None]
    scale = np.array([0.9, 0.5, 0.2])  # R, G, B
    return (ramp * scale * (0.8 + 0.4 * rng.random((h, w, 3)))).astype(np.float32)


def make_scene(folder: Path, evs=(-2, 0, 2), h: int = 12, w: int = 16, hdr: bool = True, seed: int = 0):
    """Kalantari-layout scene: ldr_i = (R * 2**ev_i) ** (1/2.2), 16-bit tif BGR; HDRImg.hdr = R."""
    folder.mkdir(parents=True, exist_ok=True)
    rad = radiance(h, w, seed)
    tifs = []
    # write in reverse order: the reader must sort by name, not trust creation order
    for name, ev in reversed(list(zip(TIF_NAMES, evs))):
        ldr = np.clip(rad * 2.0**ev, 0, 1) ** (1 / 2.2)
        tif = np.round(ldr * 65535).astype(np.uint16)
        assert cv2.imwrite(str(folder / name), tif[..., ::-1])
        tifs.insert(0, tif)
    (folder / "exposure.txt").write_text("".join(f"{e}\n" for e in evs))
    if hdr:
        assert cv2.imwrite(str(folder / "HDRImg.hdr"), rad[..., ::-1].copy())
    return rad, tifs


def check_error(exc_info, *words):
    msg = str(exc_info.value)
    for word in words:
        assert re.search(re.escape(word), msg, re.IGNORECASE), f"{word!r} not in {msg!r}"


@pytest.mark.parametrize("evs", [(-2, 0, 2), (0, 2, 4), (-3, 0, 3)])
def test_read_scene(tmp_path, evs):
    rad, tifs = make_scene(tmp_path / "001", evs)
    ldrs, rel, gt = read_kalantari(tmp_path / "001")
    assert ldrs.dtype == rel.dtype == gt.dtype == np.float32
    assert ldrs.shape == (3, 12, 16, 3) and gt.shape == (12, 16, 3)
    # tif / 65535, RGB, frames sorted by file name
    for i in range(3):
        np.testing.assert_array_equal(ldrs[i], tifs[i].astype(np.float32) / np.float32(65535))
    assert 0 <= ldrs.min() and ldrs.max() <= 1
    np.testing.assert_array_equal(rel, np.array(evs, np.float32) - evs[1])
    assert rel[1] == 0
    # gt = (HDR aligned to the medium frame) ** (1/2.24); RGBE keeps ~1 % precision
    expected = (rad.astype(np.float64) * 2.0 ** evs[1]) ** (1 / 2.24)
    np.testing.assert_allclose(gt, expected, rtol=0.02)
    # orientation/channels: red is the brightest channel and brightness grows to the right
    assert gt[..., 0].mean() > gt[..., 1].mean() > gt[..., 2].mean()
    assert gt[:, -1].mean() > gt[:, 0].mean()
    # consistency with the medium frame (which has gamma 2.2, not 2.24)
    med = ldrs[1].astype(np.float64)
    mask = (med > 0.05) & (med < 0.95)
    np.testing.assert_allclose(gt[mask], med[mask] ** (2.2 / 2.24), rtol=0.02)


def test_absolute_and_relative_exposures_give_same_gt(tmp_path):
    # Same medium exposure described two ways: HDR units differ by 2**2, gt must not.
    rad = radiance(12, 16)
    make_scene(tmp_path / "rel", (-2, 0, 2))
    make_scene(tmp_path / "abs", (0, 2, 4))
    # in the absolute scene the HDR is in units of the short frame: overwrite it accordingly
    cv2.imwrite(str(tmp_path / "abs" / "HDRImg.hdr"), (rad / 4)[..., ::-1].copy())
    _, _, g_rel = read_kalantari(tmp_path / "rel")
    _, _, g_abs = read_kalantari(tmp_path / "abs")
    np.testing.assert_allclose(g_abs, g_rel, rtol=0.02)


def test_no_hdr_gives_none(tmp_path):
    make_scene(tmp_path / "s", hdr=False)
    ldrs, evs, gt = read_kalantari(tmp_path / "s")
    assert gt is None and ldrs.shape == (3, 12, 16, 3)


def test_exposure_txt_formats(tmp_path):
    make_scene(tmp_path / "s", (-2, 0, 2))
    (tmp_path / "s" / "exposure.txt").write_text("\ufeff-2.0\r\n0.0\r\n2.0\r\n\r\n")  # BOM, CRLF, blank line
    _, evs, _ = read_kalantari(tmp_path / "s")
    np.testing.assert_array_equal(evs, [-2, 0, 2])


def test_list_scenes(tmp_path):
    for name in ["010", "002", "BarbequeDay"]:
        make_scene(tmp_path / name, h=4, w=4)
    (tmp_path / "notes").mkdir()  # no exposure.txt: not a scene
    (tmp_path / "readme.txt").write_text("x")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "exposure.txt").write_text("0\n1\n2\n")
    assert [p.name for p in list_kalantari_scenes(tmp_path)] == ["002", "010", "BarbequeDay"]
    with pytest.raises(MissingFileError) as e:
        list_kalantari_scenes(tmp_path / "nope")
    check_error(e, "nope", "missing")


# ------------------------------------------------------------------------------------------
# malformed scenes
# ------------------------------------------------------------------------------------------


def test_missing_tif(tmp_path):
    make_scene(tmp_path / "s")
    (tmp_path / "s" / TIF_NAMES[1]).unlink()
    with pytest.raises(MissingFileError) as e:
        read_kalantari(tmp_path / "s")
    check_error(e, str(tmp_path / "s"), "missing", "found 2")


def test_extra_tif(tmp_path):
    make_scene(tmp_path / "s")
    cv2.imwrite(str(tmp_path / "s" / "zzz.tif"), np.zeros((12, 16, 3), np.uint16))
    with pytest.raises(DataError) as e:
        read_kalantari(tmp_path / "s")
    check_error(e, "found 4", "extra", "zzz.tif")


def test_8bit_tif(tmp_path):
    make_scene(tmp_path / "s")
    cv2.imwrite(str(tmp_path / "s" / TIF_NAMES[2]), np.zeros((12, 16, 3), np.uint8))
    with pytest.raises(DataError) as e:
        read_kalantari(tmp_path / "s")
    check_error(e, TIF_NAMES[2], "8-bit", "expected 16-bit")


def test_grey_tif(tmp_path):
    make_scene(tmp_path / "s")
    cv2.imwrite(str(tmp_path / "s" / TIF_NAMES[0]), np.zeros((12, 16), np.uint16))
    with pytest.raises(DataError) as e:
        read_kalantari(tmp_path / "s")
    check_error(e, TIF_NAMES[0], "1 channel")


def test_corrupt_tif(tmp_path):
    make_scene(tmp_path / "s")
    (tmp_path / "s" / TIF_NAMES[0]).write_bytes(b"II*\x00garbage")
    with pytest.raises(DataError) as e:
        read_kalantari(tmp_path / "s")
    check_error(e, TIF_NAMES[0], "corrupt")


def test_tif_sizes_differ(tmp_path):
    make_scene(tmp_path / "s")
    cv2.imwrite(str(tmp_path / "s" / TIF_NAMES[1]), np.zeros((12, 15, 3), np.uint16))
    with pytest.raises(DataError) as e:
        read_kalantari(tmp_path / "s")
    check_error(e, TIF_NAMES[1], TIF_NAMES[0], "size", "12x15", "12x16")


def test_missing_exposure_txt(tmp_path):
    make_scene(tmp_path / "s")
    (tmp_path / "s" / "exposure.txt").unlink()
    with pytest.raises(MissingFileError) as e:
        read_kalantari(tmp_path / "s")
    check_error(e, "exposure.txt", "missing")


@pytest.mark.parametrize(
    "text,word",
    [
        ("-2\n0\n", "malformed"),
        ("-2\n0\n2\n4\n", "malformed"),
        ("-2\nzero\n2\n", "malformed"),
        ("-2\nnan\n2\n", "NaN"),
        ("-2\n0\ninf\n", "non-finite"),
        ("", "malformed"),
        ("2\n0\n-2\n", "strictly increasing"),
    ],
)
def test_malformed_exposure_txt(tmp_path, text, word):
    make_scene(tmp_path / "s")
    (tmp_path / "s" / "exposure.txt").write_text(text)
    with pytest.raises(DataError) as e:
        read_kalantari(tmp_path / "s")
    check_error(e, "exposure.txt", word)


def test_corrupt_hdr(tmp_path):
    make_scene(tmp_path / "s")
    path = tmp_path / "s" / "HDRImg.hdr"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(DataError) as e:
        read_kalantari(tmp_path / "s")
    check_error(e, "HDRImg.hdr", "corrupt")


def test_hdr_size_differs(tmp_path):
    make_scene(tmp_path / "s")
    cv2.imwrite(str(tmp_path / "s" / "HDRImg.hdr"), np.ones((11, 16, 3), np.float32))
    with pytest.raises(DataError) as e:
        read_kalantari(tmp_path / "s")
    check_error(e, "HDRImg.hdr", "size", "11x16")


@pytest.mark.parametrize("value,word", [(np.nan, "NaN"), (np.inf, "non-finite"), (-1.0, "negative")])
def test_hdr_non_finite_or_negative(tmp_path, monkeypatch, value, word):
    # Radiance RGBE cannot encode NaN/Inf/negatives, so corrupt the decoded array instead.
    make_scene(tmp_path / "s")
    real = kalantari._read_image

    def poisoned(path, dtype, what):
        img = real(path, dtype, what)
        if path.suffix == ".hdr":
            img = img.copy()
            img[3, 4, 1] = value
        return img

    monkeypatch.setattr(kalantari, "_read_image", poisoned)
    with pytest.raises(DataError) as e:
        read_kalantari(tmp_path / "s")
    check_error(e, "HDRImg.hdr", word)


def test_missing_scene_folder(tmp_path):
    with pytest.raises(MissingFileError) as e:
        read_kalantari(tmp_path / "gone")
    check_error(e, "gone", "missing")
