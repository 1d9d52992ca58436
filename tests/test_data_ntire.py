"""NTIRE layout: real-sample round trips, float views, and rejection of malformed files."""

from __future__ import annotations

import dataclasses
import os
import re
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from eapnet.data import SHARED_SAMPLES
from eapnet.data import ntire
from eapnet.data.errors import DataError, MissingFileError
from eapnet.data.ntire import (
    NtireSample,
    list_ntire_ids,
    load_ntire_sample,
    ntire_frame_size,
    read_ntire,
    save_ntire_sample,
    write_ntire,
)

SAMPLES = SHARED_SAMPLES
CROPS = SAMPLES / "crops256"
FULL = SAMPLES / "fullres_no_gt"
CROP_IDS = ["0000", "0001", "0002", "0003"]

needs_crops = pytest.mark.skipif(not CROPS.is_dir(), reason=f"real NTIRE crops not found at {CROPS}")
needs_full = pytest.mark.skipif(not FULL.is_dir(), reason=f"real NTIRE full-size sample not found at {FULL}")

FILES = ["short.png", "medium.png", "long.png", "exposures.npy", "gt.png", "alignratio.npy"]


def assert_same_files(src: Path, dst: Path, sid: str, with_gt: bool = True) -> None:
    """Decoded PNG pixels identical (independent cv2 decode); .npy identical values, dtype, bytes."""
    for suffix in FILES if with_gt else FILES[:4]:
        a, b = src / f"{sid}_{suffix}", dst / f"{sid}_{suffix}"
        assert b.is_file(), b
        if suffix.endswith(".png"):
            ia, ib = cv2.imread(str(a), cv2.IMREAD_UNCHANGED), cv2.imread(str(b), cv2.IMREAD_UNCHANGED)
            assert ia.dtype == ib.dtype and ia.shape == ib.shape, suffix
            assert np.array_equal(ia, ib), suffix
        else:
            na, nb = np.load(a), np.load(b)
            assert na.dtype == nb.dtype and na.shape == nb.shape, suffix
            assert np.array_equal(na, nb), suffix
            assert a.read_bytes() == b.read_bytes(), suffix


def make_sample(folder: Path, sid: str = "0007", h: int = 16, w: int = 20, gt: bool = True, seed: int = 0):
    rng = np.random.default_rng(seed)
    ldrs = rng.random((3, h, w, 3), dtype=np.float32)
    hdr = (rng.random((h, w, 3)) * 3).astype(np.float32) if gt else None
    return write_ntire(folder, sid, ldrs, np.array([-3, -1, 1]), hdr)


def write_png(path: Path, img: np.ndarray) -> None:
    assert cv2.imwrite(str(path), img)


def expect_error(exc_type, *words, sid_file: str | None = None):
    """Context manager: raises exc_type whose message contains sid_file and every word (case-insens.)."""

    class _Ctx:
        def __enter__(self):
            self._raises = pytest.raises(exc_type)
            self.info = self._raises.__enter__()
            return self.info

        def __exit__(self, *exc):
            handled = self._raises.__exit__(*exc)
            msg = str(self.info.value)
            if sid_file is not None:
                assert sid_file in msg, msg
            for word in words:
                assert re.search(word, msg, re.IGNORECASE), f"{word!r} not in {msg!r}"
            return handled

    return _Ctx()


# ------------------------------------------------------------------------------------------
# real samples
# ------------------------------------------------------------------------------------------


@needs_crops
def test_list_ids_real():
    assert list_ntire_ids(CROPS) == CROP_IDS


@needs_crops
@pytest.mark.parametrize("sid", CROP_IDS)
def test_raw_round_trip_bit_exact(sid, tmp_path):
    sample = load_ntire_sample(CROPS, sid)
    assert sample.exposures.dtype == np.int64 and sample.align_ratio.dtype == np.float64
    assert sample.frames[0].dtype == np.uint8 and sample.gt_png.dtype == np.uint16
    save_ntire_sample(tmp_path, sample)
    assert_same_files(CROPS, tmp_path, sid)
    assert sorted(os.listdir(tmp_path)) == sorted(f"{sid}_{s}" for s in FILES)  # no temp leftovers


@needs_crops
@pytest.mark.parametrize("sid", CROP_IDS)
def test_float_round_trip_bit_exact(sid, tmp_path):
    raw = load_ntire_sample(CROPS, sid)
    ldrs, evs, gt = read_ntire(CROPS, sid)
    write_ntire(tmp_path, sid, ldrs, raw.exposures, gt, align_ratio=raw.align_ratio)
    assert_same_files(CROPS, tmp_path, sid)
    # a plain Python float ratio and list exposures give the same files too
    other = tmp_path / "b"
    write_ntire(other, sid, ldrs, raw.exposures.tolist(), gt, align_ratio=float(raw.align_ratio))
    assert_same_files(CROPS, other, sid)


@needs_crops
@pytest.mark.parametrize("sid", CROP_IDS)
def test_float_views_real(sid):
    ldrs, evs, gt = read_ntire(CROPS, sid)
    assert ldrs.dtype == evs.dtype == gt.dtype == np.float32
    assert ldrs.shape == (3, 256, 256, 3) and gt.shape == (256, 256, 3)
    assert 0.0 <= ldrs.min() and ldrs.max() <= 1.0
    assert ldrs.max() > 0.25  # really /255, not /65535
    np.testing.assert_array_equal(evs, [-2.0, 0.0, 2.0])  # stored [-3, -1, 1], relative to medium
    assert gt.min() >= 0 and np.isfinite(gt).all()
    # frames are ordered by exposure: longer exposure is brighter on average
    means = ldrs.reshape(3, -1).mean(1)
    assert means[0] < means[1] < means[2]
    # RGB order and orientation: an independent decode, reversed to RGB, equals our frame
    bgr = cv2.imread(str(CROPS / f"{sid}_medium.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(np.round(ldrs[1] * 255).astype(np.uint8), bgr[..., ::-1])
    # gt is aligned to the medium frame: close where the medium frame is well exposed,
    # and clearly worse if channels were swapped or the image flipped
    med = ldrs[1]
    mask = (med > 0.05) & (med < 0.9)
    diff = np.abs(gt - med)[mask].mean()
    assert diff < 0.05, diff
    assert np.abs(gt[..., ::-1] - med)[mask].mean() > 3 * diff
    assert np.abs(gt[::-1] - med)[mask].mean() > 1.5 * diff
    assert np.abs(gt - ldrs[0])[mask].mean() > 3 * diff  # not aligned to the short frame


@needs_crops
def test_crops_carry_full_image_align_ratio(tmp_path):
    """The crops' ratio is not (2**16-1)/crop.max(): the organisers' formula alone can't reproduce them."""
    raw = load_ntire_sample(CROPS, "0000")
    ldrs, _, gt = read_ntire(CROPS, "0000")
    assert raw.gt_png.max() < 2**16 - 1
    fresh = write_ntire(tmp_path, "0000", ldrs, raw.exposures, gt)
    assert fresh.align_ratio_value != pytest.approx(raw.align_ratio_value)
    assert int(fresh.gt_png.max()) == 2**16 - 1


@needs_full
def test_fullres_no_gt():
    exposures = np.load(FULL / "0000_exposures.npy")
    assert exposures.dtype == np.int64 and exposures.tolist() == [-3, -1, 1]
    assert list_ntire_ids(FULL) == ["0000"]
    assert ntire_frame_size(FULL, "0000") == (1060, 1900)
    sample = load_ntire_sample(FULL, "0000")  # the one full-size decode (~0.3 s)
    assert sample.shape == (1060, 1900) and not sample.has_gt
    assert sample.gt is None and sample.align_ratio is None
    assert sample.ldrs.shape == (3, 1060, 1900, 3)
    np.testing.assert_array_equal(sample.evs, [-2, 0, 2])


# ------------------------------------------------------------------------------------------
# synthetic: writer semantics
# ------------------------------------------------------------------------------------------


def test_write_read_synthetic_and_organisers_formula(tmp_path):
    rng = np.random.default_rng(1)
    ldrs = rng.random((3, 9, 11, 3), dtype=np.float32)
    gt = (rng.random((9, 11, 3)) * 7.5).astype(np.float32)
    sample = write_ntire(tmp_path, "a1", ldrs, [-2.5, 0.5, 3.5], gt)
    assert sample.align_ratio_value == pytest.approx(65535 / float(gt.max()), rel=1e-12)
    assert np.load(tmp_path / "a1_alignratio.npy").dtype == np.float64
    assert np.load(tmp_path / "a1_exposures.npy").dtype == np.float64
    png = cv2.imread(str(tmp_path / "a1_gt.png"), cv2.IMREAD_UNCHANGED)
    assert png.dtype == np.uint16 and png.max() == 65535
    l2, e2, g2 = read_ntire(tmp_path, "a1")
    np.testing.assert_allclose(l2, ldrs, atol=0.5 / 255 + 1e-7)
    np.testing.assert_allclose(g2, gt, atol=0.5 / sample.align_ratio_value + 1e-6)
    np.testing.assert_array_equal(e2, [-3.0, 0.0, 3.0])
    # written BGR: the file's last channel is our first (R)
    short = cv2.imread(str(tmp_path / "a1_short.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(short[..., 2], np.round(ldrs[0, ..., 0] * 255).astype(np.uint8))


def test_write_without_gt_and_listing(tmp_path):
    make_sample(tmp_path, "0002", gt=False)
    make_sample(tmp_path, "0001")
    (tmp_path / "0003_short.png").write_bytes(b"x")  # incomplete triplet: not listed
    (tmp_path / ".0004_short.png.abc.tmp").write_bytes(b"x")  # temp file: ignored
    assert list_ntire_ids(tmp_path) == ["0001", "0002"]
    assert not (tmp_path / "0002_gt.png").exists()
    ldrs, evs, gt = read_ntire(tmp_path, "0002")
    assert gt is None and ldrs.shape == (3, 16, 20, 3)


def test_ldr_range_tolerance(tmp_path):
    ldrs = np.full((3, 4, 5, 3), 0.5, np.float32)
    ldrs[0, 0, 0, 0] = 1 + 0.4 / 255  # within rounding: clipped
    ldrs[0, 0, 1, 0] = -0.4 / 255
    s = write_ntire(tmp_path, "t", ldrs, [-2, 0, 2])
    assert s.frames[0][0, 0, 2] == 255 and s.frames[0][0, 1, 2] == 0
    for bad in (1 + 0.6 / 255, -0.01):
        ldrs[2, 1, 1, 1] = bad
        with expect_error(DataError, "range", sid_file="t_long.png"):
            write_ntire(tmp_path, "t", ldrs, [-2, 0, 2])


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_write_rejects_non_finite(tmp_path, value):
    ldrs = np.full((3, 4, 5, 3), 0.5, np.float32)
    ldrs[1, 2, 2, 0] = value
    with expect_error(DataError, "NaN/Inf", sid_file="s_medium.png"):
        write_ntire(tmp_path, "s", ldrs, [-2, 0, 2])
    ldrs[1, 2, 2, 0] = 0.5
    gt = np.ones((4, 5, 3), np.float32)
    gt[0, 0, 0] = value
    with expect_error(DataError, "NaN/Inf", sid_file="s_gt.png"):
        write_ntire(tmp_path, "s", ldrs, [-2, 0, 2], gt)
    with expect_error(DataError, "exposures", "finite"):
        write_ntire(tmp_path, "s", ldrs, [-2, value, 2])
    assert list(tmp_path.iterdir()) == []  # nothing written on rejected input


def test_write_rejects_bad_gt_and_ratio(tmp_path):
    ldrs = np.full((3, 4, 5, 3), 0.5, np.float32)
    gt = np.ones((4, 5, 3), np.float32)
    negative = gt.copy()
    negative[1, 1, 1] = -0.5
    with expect_error(DataError, "16-bit range", "negative", sid_file="s_gt.png"):
        write_ntire(tmp_path, "s", ldrs, [-2, 0, 2], negative)
    with expect_error(DataError, "16-bit range", sid_file="s_gt.png"):
        write_ntire(tmp_path, "s", ldrs, [-2, 0, 2], gt, align_ratio=70000.0)
    for ratio in (0.0, -3.0, np.nan, np.inf):
        with expect_error(DataError, "align ratio", "finite positive", sid_file="s_alignratio.npy"):
            write_ntire(tmp_path, "s", ldrs, [-2, 0, 2], gt, align_ratio=ratio)
    with expect_error(DataError, "all zero"):
        write_ntire(tmp_path, "s", ldrs, [-2, 0, 2], gt * 0)
    with expect_error(DataError, "size", sid_file="s_gt.png"):
        write_ntire(tmp_path, "s", ldrs, [-2, 0, 2], np.ones((4, 6, 3), np.float32))
    with expect_error(DataError, "strictly increasing"):
        write_ntire(tmp_path, "s", ldrs, [2, 0, -2])


def test_sample_is_frozen(tmp_path):
    sample = make_sample(tmp_path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        sample.sample_id = "x"
    with pytest.raises(ValueError):
        sample.frames[0][0, 0, 0] = 1  # read-only array


def test_failed_write_keeps_old_file(tmp_path, monkeypatch):
    make_sample(tmp_path, "0001")
    before = (tmp_path / "0001_exposures.npy").read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ntire.np, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        write_ntire(tmp_path, "0001", np.zeros((3, 16, 20, 3), np.float32), [-1, 0, 1])
    monkeypatch.undo()
    assert (tmp_path / "0001_exposures.npy").read_bytes() == before
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # temp file cleaned up


# ------------------------------------------------------------------------------------------
# synthetic: malformed folders are rejected with the file name and the problem
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["short.png", "medium.png", "long.png", "exposures.npy"])
def test_missing_file(tmp_path, missing):
    make_sample(tmp_path)
    (tmp_path / f"0007_{missing}").unlink()
    with expect_error(MissingFileError, "missing", sid_file=f"0007_{missing}"):
        read_ntire(tmp_path, "0007")
    with pytest.raises(FileNotFoundError):  # also catchable as the builtin
        read_ntire(tmp_path, "0007")


@pytest.mark.parametrize("missing,other", [("gt.png", "alignratio.npy"), ("alignratio.npy", "gt.png")])
def test_gt_without_ratio(tmp_path, missing, other):
    make_sample(tmp_path)
    (tmp_path / f"0007_{missing}").unlink()
    with expect_error(MissingFileError, "missing", sid_file=f"0007_{missing}"):
        read_ntire(tmp_path, "0007")


@pytest.mark.parametrize("content", [b"not a png at all", "truncated", b""])
def test_corrupt_image(tmp_path, content):
    make_sample(tmp_path)
    path = tmp_path / "0007_medium.png"
    if content == "truncated":
        content = path.read_bytes()[:200]
    path.write_bytes(content)
    with expect_error(DataError, "corrupt", sid_file="0007_medium.png"):
        read_ntire(tmp_path, "0007")


@pytest.mark.parametrize("damage, words", [
    ("cut", ["corrupt PNG", r"truncated: chunk IDAT at byte \d+ needs"]),
    ("no_iend", ["corrupt PNG", "truncated: no IEND chunk"]),
    ("flip", ["corrupt PNG", r"chunk IDAT at byte \d+ fails its CRC"]),
])
def test_a_damaged_png_is_one_clean_message_without_libpng_noise(tmp_path, capfd, damage, words):
    # libpng printed "libpng error: ..." (and OpenCV a WARN line) on stderr itself before the DataError
    make_sample(tmp_path)
    path = tmp_path / "0007_medium.png"
    data = bytearray(path.read_bytes())
    data = {"cut": data[: len(data) // 2], "no_iend": data[:-12], "flip": data}[damage]
    if damage == "flip":
        data[45] ^= 0xFF     # inside the first IDAT (IHDR ends at byte 33)
    path.write_bytes(bytes(data))
    capfd.readouterr()
    with expect_error(DataError, *words, sid_file="0007_medium.png"):
        read_ntire(tmp_path, "0007")
    assert capfd.readouterr().err == ""   # file descriptor 2: what the C libraries print too


def test_a_png_claiming_a_huge_frame_is_refused_before_decoding(tmp_path):
    # A valid 60000x60000 16-bit IHDR over a few bytes of image data: decoding would allocate 20 GiB first.
    make_sample(tmp_path)
    path = tmp_path / "0007_gt.png"
    data = bytearray(path.read_bytes())
    struct.pack_into(">II", data, 16, 60000, 60000)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    with expect_error(DataError, "claims 60000x60000 pixels", "20.1 GiB", sid_file="0007_gt.png"):
        read_ntire(tmp_path, "0007")


def test_frames_of_different_sizes(tmp_path):
    make_sample(tmp_path)
    write_png(tmp_path / "0007_long.png", np.zeros((8, 10, 3), np.uint8))
    with expect_error(DataError, "size", "16x20", "8x10", "0007_short.png", sid_file="0007_long.png"):
        read_ntire(tmp_path, "0007")
    with expect_error(DataError, "size", "0007_short.png", sid_file="0007_long.png"):
        ntire_frame_size(tmp_path, "0007")


def test_16bit_frame(tmp_path):
    make_sample(tmp_path)
    write_png(tmp_path / "0007_short.png", np.zeros((16, 20, 3), np.uint16))
    with expect_error(DataError, "16-bit", "expected 8-bit", sid_file="0007_short.png"):
        read_ntire(tmp_path, "0007")
    with expect_error(DataError, "16-bit", "expected 8-bit", sid_file="0007_short.png"):
        ntire_frame_size(tmp_path, "0007")


def test_8bit_gt(tmp_path):
    make_sample(tmp_path)
    write_png(tmp_path / "0007_gt.png", np.zeros((16, 20, 3), np.uint8))
    with expect_error(DataError, "8-bit", "expected 16-bit", sid_file="0007_gt.png"):
        read_ntire(tmp_path, "0007")


@pytest.mark.parametrize("file", ["medium.png", "gt.png"])
@pytest.mark.parametrize("channels", [1, 4])
def test_wrong_channels(tmp_path, file, channels):
    make_sample(tmp_path)
    dtype = np.uint16 if file == "gt.png" else np.uint8
    img = np.zeros((16, 20) if channels == 1 else (16, 20, channels), dtype)
    write_png(tmp_path / f"0007_{file}", img)
    with expect_error(DataError, f"{channels} channel", sid_file=f"0007_{file}"):
        read_ntire(tmp_path, "0007")


def test_gt_size_differs(tmp_path):
    make_sample(tmp_path)
    write_png(tmp_path / "0007_gt.png", np.zeros((16, 21, 3), np.uint16))
    with expect_error(DataError, "size", "16x21", sid_file="0007_gt.png"):
        read_ntire(tmp_path, "0007")


@pytest.mark.parametrize(
    "exposures,word",
    [
        (np.array([-3, -1]), "3 finite"),
        (np.array([-3, -1, 1, 3]), "3 finite"),
        (np.array([[-3, -1, 1]]), "shape"),
        (np.array([-3.0, np.nan, 1.0]), "NaN"),
        (np.array([-3.0, -1.0, np.inf]), "non-finite"),
        (np.array(["a", "b", "c"]), "dtype"),
        (np.array([1, -1, -3]), "strictly increasing"),
        (np.array([0, 0, 0]), "three different exposures"),
        (np.array([-300.0, 0.0, 300.0]), "300 stops"),
        (np.array([-2.0, 0.0, 10.5]), "at most 10"),
    ],
)
def test_bad_exposures(tmp_path, exposures, word):
    make_sample(tmp_path)
    np.save(tmp_path / "0007_exposures.npy", exposures)
    with expect_error(DataError, "exposures", word, sid_file="0007_exposures.npy"):
        read_ntire(tmp_path, "0007")


def test_corrupt_npy(tmp_path):
    make_sample(tmp_path)
    (tmp_path / "0007_exposures.npy").write_bytes(b"\x93NUMPY garbage")
    with expect_error(DataError, "corrupt", sid_file="0007_exposures.npy"):
        read_ntire(tmp_path, "0007")


@pytest.mark.parametrize("ratio", [0.0, -5.0, np.nan, np.inf])
def test_bad_align_ratio(tmp_path, ratio):
    make_sample(tmp_path)
    np.save(tmp_path / "0007_alignratio.npy", np.float64(ratio))
    with expect_error(DataError, "align ratio", "not a finite positive number", sid_file="0007_alignratio.npy"):
        read_ntire(tmp_path, "0007")


@pytest.mark.parametrize("ratio", [1e-300, 1e-3, 1e11])
def test_implausible_align_ratio(tmp_path, ratio):
    # 1e-300 once passed every reader and made the ground truth inf (and NaN scores much later)
    make_sample(tmp_path)
    np.save(tmp_path / "0007_alignratio.npy", np.float64(ratio))
    with expect_error(DataError, "align ratio", "outside", "peak", sid_file="0007_alignratio.npy"):
        read_ntire(tmp_path, "0007")


def test_jpeg_named_png_is_refused(tmp_path):
    make_sample(tmp_path)
    ok, buf = cv2.imencode(".jpg", np.full((16, 20, 3), 128, np.uint8))
    (tmp_path / "0007_medium.png").write_bytes(buf.tobytes())
    with expect_error(DataError, "not a PNG file", sid_file="0007_medium.png"):
        read_ntire(tmp_path, "0007")


def test_identical_frames_are_not_a_bracket(tmp_path):
    make_sample(tmp_path)
    for name in ("short", "long"):
        (tmp_path / f"0007_{name}.png").write_bytes((tmp_path / "0007_medium.png").read_bytes())
    with expect_error(DataError, "identical", "not an exposure bracket", sid_file="0007_short.png"):
        read_ntire(tmp_path, "0007")


def test_align_ratio_not_scalar(tmp_path):
    make_sample(tmp_path)
    np.save(tmp_path / "0007_alignratio.npy", np.array([1.0, 2.0]))
    with expect_error(DataError, "one real number", sid_file="0007_alignratio.npy"):
        read_ntire(tmp_path, "0007")


def test_missing_folder(tmp_path):
    with expect_error(MissingFileError, "missing", sid_file="nope"):
        list_ntire_ids(tmp_path / "nope")


def test_sample_constructor_validates():
    frames = tuple(np.zeros((4, 5, 3), np.uint8) for _ in range(3))
    NtireSample("ok", frames, np.array([-1, 0, 1]))
    with expect_error(DataError, "16-bit", sid_file="x_short.png"):
        NtireSample("x", (np.zeros((4, 5, 3), np.uint16),) + frames[1:], np.array([-1, 0, 1]))
    with expect_error(MissingFileError, "missing", sid_file="x_alignratio.npy"):
        NtireSample("x", frames, np.array([-1, 0, 1]), gt_png=np.zeros((4, 5, 3), np.uint16))
    with expect_error(DataError, "invalid sample id"):
        NtireSample("a/b", frames, np.array([-1, 0, 1]))


def _npy_header_only(path: Path, shape: tuple[int, ...], data: bytes = b"") -> None:
    """A ``.npy`` file whose header claims ``shape`` float64 values, followed by ``data`` only."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": shape})
        f.write(data)


@pytest.mark.parametrize("file, words", [
    ("exposures.npy", ["exposures must be 3 finite values", r"the header says shape \(1000000000,\)"]),
    ("alignratio.npy", ["align ratio must be one real number", r"the header says dtype float64 shape \(1000000000,\)"]),
])
def test_an_npy_header_is_checked_before_its_data_is_read(tmp_path, monkeypatch, file, words):
    # an exposures file whose header claimed 1e9 floats was read in full (8 GB) before its shape was checked
    make_sample(tmp_path)
    _npy_header_only(tmp_path / f"0007_{file}", (10**9,), bytes(64))
    real_load, loaded = np.load, []
    monkeypatch.setattr(np, "load", lambda p, *a, **k: loaded.append(Path(p).name) or real_load(p, *a, **k))
    with expect_error(DataError, *words, sid_file=f"0007_{file}"):
        read_ntire(tmp_path, "0007")
    assert f"0007_{file}" not in loaded


def test_an_npy_file_shorter_than_its_header_says_is_truncated(tmp_path):
    make_sample(tmp_path)
    _npy_header_only(tmp_path / "0007_exposures.npy", (3,), np.float64(-3.0).tobytes())
    with expect_error(DataError, r"truncated \.npy file \(exposures\): its header's float64 \(3,\) needs 152 bytes, "
                      "the file has 136", sid_file="0007_exposures.npy"):
        read_ntire(tmp_path, "0007")
