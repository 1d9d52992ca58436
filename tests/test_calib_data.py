"""eapnet.calib: the shipped calibration set loads and verifies, rebuilds to the same values, builds from an
NTIRE folder, rejects bad arguments, and never shares a seed with training or held-out data."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest

from eapnet.calib import DEFAULT, MANIFEST, load_calibration, verify
from eapnet.calib.build import get_args_parser, main
from eapnet.calib.generate import CALIB_SEED, CATEGORY_CYCLE
from eapnet.data import DataError, MissingFileError, read_ntire, write_ntire
from eapnet.data.synthetic import HELDOUT_SEED, TRAIN_SEED, generate_scene, scene_seed


def manifest(folder: Path) -> dict:
    return json.loads((folder / MANIFEST).read_text())


@pytest.fixture(scope="module")
def rebuilt3(tmp_path_factory) -> Path:
    """The first 3 scenes of the shipped set, rebuilt with the shipped command's arguments but --n 3."""
    out = tmp_path_factory.mktemp("calib") / "set"
    args = shlex.split(manifest(DEFAULT)["command"])[3:]
    parsed = get_args_parser().parse_args(args)
    assert main(["--out", str(out), "--n", "3", "--size", str(parsed.size), "--seed", str(parsed.seed),
                 "--data", parsed.source, "--quiet"]) == 0
    return out


def test_shipped_set_loads():
    scenes = load_calibration()
    assert [s.id for s in scenes] == [f"{i:04d}" for i in range(32)]
    assert scenes[0].origin == f"calib:{DEFAULT}/0000" and {s.dataset for s in scenes} == {"calib"}
    for s in scenes:
        ldrs, evs, gt = s.ldrs, s.evs, s.gt
        assert ldrs.shape == (3, 128, 128, 3) and ldrs.dtype == np.float32
        assert evs.shape == (3,) and evs[1] == 0 and evs[0] < 0 < evs[2]
        assert gt.shape == (128, 128, 3) and gt.dtype == np.float32
        assert 0 <= ldrs.min() and ldrs.max() <= 1
        assert gt.min() >= 0 and np.isfinite(gt).all() and gt.max() > 0
    assert [s.id for s in load_calibration(limit=5)] == ["0000", "0001", "0002", "0003", "0004"]


def test_shipped_set_verifies_and_is_small():
    m = manifest(DEFAULT)
    assert verify() == len(m["files"]) == 32 * 6
    assert sum(f.stat().st_size for f in DEFAULT.iterdir()) < 8e6
    cats = [s["category"] for s in m["scenes"]]
    assert cats == [CATEGORY_CYCLE[j % 8] for j in range(32)]
    assert cats.count("photo") == 8 and cats.count("low_key") == 12
    assert all(s["kind"] == "photo" for s in m["scenes"] if s["category"] == "photo")
    assert m["command"] == ("python -m eapnet.calib.build --out eapnet/calib/default --data synthetic --n 32 "
                            f"--size 128 --seed {CALIB_SEED} --force")


def test_rebuild_matches_the_shipped_set(rebuilt3):
    # The promise: the same scenes and files on every machine, pixels equal within a stated tolerance. Bytes
    # are identical only on one machine (tests/test_synthetic.py checks that): floating point differs across
    # CPUs (SIMD paths, libm), and a 16-bit GT PNG records a rounding step of that difference.
    shipped, new = manifest(DEFAULT), manifest(rebuilt3)
    assert new["scenes"] == shipped["scenes"][:3]
    assert set(new["files"]) == {k for k in shipped["files"] if k[:4] in {"0000", "0001", "0002"}}
    assert verify(rebuilt3) == 18
    for sid in ("0000", "0001", "0002"):
        (l0, e0, g0), (l1, e1, g1) = read_ntire(DEFAULT, sid), read_ntire(rebuilt3, sid)
        assert np.array_equal(e0, e1)
        # LDRs: 8-bit codes, at most one code apart on at most 0.1 % of the values
        d = np.abs(l0.astype(np.float64) - l1)
        assert d.max() <= 1.5 / 255 and (d > 0.5 / 255).mean() <= 1e-3, (sid, d.max())
        # GT (linear HDR): within 1e-3 of the scene's peak everywhere, 1e-5 on average
        dg = np.abs(g0.astype(np.float64) - g1) / g0.max()
        assert dg.max() <= 1e-3 and dg.mean() <= 1e-5, (sid, dg.max(), dg.mean())
    assert not list(rebuilt3.parent.glob(".*"))  # no temporary folder left behind


def test_verify_names_the_changed_file(rebuilt3, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(rebuilt3, copy)
    (copy / "0001_gt.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="0001_gt.png: sha256"):
        verify(copy)
    (copy / "0001_gt.png").unlink()
    with pytest.raises(MissingFileError, match="0001_gt.png: missing"):
        verify(copy)
    with pytest.raises(MissingFileError, match="manifest"):
        verify(tmp_path)


def test_load_errors(tmp_path):
    with pytest.raises(MissingFileError, match="calibration folder missing"):
        load_calibration(tmp_path / "nope")
    with pytest.raises(DataError, match="no calibration scenes"):
        load_calibration(tmp_path)


def test_calibration_seeds_never_train_or_heldout():
    assert CALIB_SEED not in (TRAIN_SEED, HELDOUT_SEED)
    used = {s["scene_seed"] for s in manifest(DEFAULT)["scenes"]}
    assert used == {scene_seed(CALIB_SEED, s["stream_index"]) for s in manifest(DEFAULT)["scenes"]}
    others = {scene_seed(base, i) for base in (TRAIN_SEED, HELDOUT_SEED) for i in range(5000)}
    assert not used & others


def test_build_from_ntire_folder(tmp_path):
    src = tmp_path / "ntire"
    scenes = {"a": generate_scene(scene_seed(CALIB_SEED, 0), 40, 48),
              "b": generate_scene(scene_seed(CALIB_SEED, 1), 32, 32)}
    for sid, (ldrs, evs, gt) in scenes.items():
        write_ntire(src, sid, ldrs, evs - 1, gt=gt)  # absolute EVs, as the challenge stores them
    write_ntire(src, "c", *scenes["a"][:2])  # no ground truth: skipped
    out = tmp_path / "out"
    assert main(["--out", str(out), "--data", str(src), "--n", "5", "--size", "16", "--seed", "7", "--quiet"]) == 0
    m = manifest(out)
    assert [s["source_scene"] for s in m["scenes"]] == ["a", "a", "a", "b", "b"]
    for rec in m["scenes"]:
        ldrs, evs, gt = read_ntire(out, rec["id"])
        src_ldrs, src_evs, src_gt = scenes[rec["source_scene"]]
        y, x = rec["crop_yx"]
        np.testing.assert_array_equal(ldrs, src_ldrs[:, y:y + 16, x:x + 16])
        np.testing.assert_array_equal(evs, src_evs)
        np.testing.assert_allclose(gt, src_gt[y:y + 16, x:x + 16], rtol=0, atol=2e-3 * src_gt.max())
    assert len({tuple(r["crop_yx"]) for r in m["scenes"][:3]}) == 3
    assert verify(out) == 30 and len(load_calibration(out)) == 5


@pytest.mark.parametrize("argv, message", [
    (["--size", "20"], "--size must be a multiple of 8, got 20"),
    (["--n", "0"], "--num must be >= 1"),
    (["--data", "MISSING"], "no such folder"),
    (["--data", "EMPTY"], "unrecognised layout"),
    (["--seed", str(HELDOUT_SEED)], "held-out seed"),
    (["--out", "EXISTING"], "exists and is not empty; pass --overwrite"),
    (["--out", "NOT_A_SET", "--force"], "is not a calibration set"),
])
def test_bad_args(argv, message, tmp_path, capsys):
    (tmp_path / "EMPTY").mkdir()
    for name in ("EXISTING", "NOT_A_SET"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "keep.txt").write_text("x")
    (tmp_path / "EXISTING" / MANIFEST).write_text("{}")
    argv = [str(tmp_path / a) if a.isupper() else a for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exc:
        main(argv + ["--quiet"])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert (tmp_path / "NOT_A_SET" / "keep.txt").is_file() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("size, message", [
    ("5000", "eapnet-calib: error: --size must be at most 4096"),   # this command's own limit
    ("100000", "eapnet-calib: error: argument --size: size must be at most 16384"),   # every size argument's
])
def test_a_huge_size_is_one_line_before_any_allocation(tmp_path, capsys, size, message):
    # was OpenCV's "error: error: ... Failed to allocate ... bytes" (exit 1)
    with pytest.raises(SystemExit) as exc:
        main(["--size", size, "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert message in err and size in err
    assert not (tmp_path / "out").exists()


def test_force_replaces_a_calibration_set(rebuilt3, tmp_path):
    out = tmp_path / "set"
    shutil.copytree(rebuilt3, out)
    assert main(["--out", str(out), "--n", "1", "--size", "16", "--force", "--quiet"]) == 0
    assert sorted(manifest(out)["files"]) == [f"0000_{k}" for k in
                                             ("alignratio.npy", "exposures.npy", "gt.png", "long.png",
                                              "medium.png", "short.png")]
    assert verify(out) == 6 and [p.name for p in tmp_path.iterdir()] == ["set"]
