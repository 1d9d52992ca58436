"""The one scene type and its sources: a Scene validates itself once, naming its origin in one line; every source's
``size()`` is its scene's and reads no pixels; the old shapes of a scene are gone from the code."""
from __future__ import annotations

import ast
import dataclasses
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from eapnet.data import (
    DataError,
    KalantariSource,
    NtireSource,
    Scene,
    SceneSource,
    SyntheticSource,
    as_sources,
    scene_sources_from_folder,
    write_ntire,
)
from eapnet.data import kalantari, ntire, synthetic

ROOT = Path(__file__).resolve().parents[1]


def arrays(h: int = 6, w: int = 7, seed: int = 0):
    rng = np.random.default_rng(seed)
    return (rng.random((3, h, w, 3), dtype=np.float32), np.array([-2, 0, 2], np.float32),
            rng.random((h, w, 3), dtype=np.float32) * 3)


def kalantari_folder(folder: Path, h: int = 10, w: int = 12, hdr: bool = True) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a.tif", "b.tif", "c.tif"):
        assert cv2.imwrite(str(folder / name), (rng.random((h, w, 3)) * 65535).astype(np.uint16))
    (folder / "exposure.txt").write_text("-2\n0\n2\n")
    if hdr:
        assert cv2.imwrite(str(folder / "HDRImg.hdr"), rng.random((h, w, 3)).astype(np.float32))
    return folder


# ------------------------------------------------------------------------------------------ validation


def _bad(kind: str):
    ldrs, evs, gt = arrays()
    motion = None
    if kind == "ldrs ndim":
        ldrs = ldrs[0]
    elif kind == "ldrs channels":
        ldrs = np.concatenate([ldrs, ldrs[..., :1]], axis=-1)
    elif kind == "ldrs frames":
        ldrs = ldrs[:2]
    elif kind == "ldrs dtype":
        ldrs = (ldrs * 255).astype(np.uint8)
    elif kind == "ldrs nan":
        ldrs[1, 2, 3, 0] = np.nan
    elif kind == "ldrs range":
        ldrs[0, 0, 0, 0] = 1.5
    elif kind == "gt shape":
        gt = gt[:, :-1]
    elif kind == "gt dtype":
        gt = gt.astype(np.int32)
    elif kind == "gt inf":
        gt[0, 0, 0] = np.inf
    elif kind == "gt negative":
        gt[0, 0, 0] = -0.1
    elif kind == "evs order":
        evs = np.array([2, 0, -2], np.float32)
    elif kind == "evs equal":
        evs = np.zeros(3, np.float32)
    elif kind == "evs shape":
        evs = np.array([-2, 0], np.float32)
    elif kind == "evs nan":
        evs = np.array([-2, 0, np.nan], np.float32)
    elif kind == "evs span":
        evs = np.array([-300, 0, 300], np.float32)
    elif kind == "evs absolute":
        evs = np.array([-3, -1, 1], np.float32)
    elif kind == "motion dtype":
        motion = np.zeros(ldrs.shape[1:3], np.float32)
    elif kind == "motion shape":
        motion = np.zeros((2, 2), bool)
    return ldrs, evs, gt, motion


@pytest.mark.parametrize("kind, words", [
    ("ldrs ndim", "ldrs shape"), ("ldrs channels", "ldrs shape"), ("ldrs frames", "ldrs shape"),
    ("ldrs dtype", "ldrs dtype uint8"), ("ldrs nan", "ldrs contains NaN"), ("ldrs range", r"out of range \[0, 1\]"),
    ("gt shape", "gt shape .* differs from the frame shape"), ("gt dtype", "gt dtype int32"),
    ("gt inf", "gt contains NaN/Inf"), ("gt negative", "gt has negative values"),
    ("evs order", "not strictly increasing"), ("evs equal", "three different exposures"),
    ("evs shape", r"shape \(3,\)"), ("evs nan", "NaN/Inf"), ("evs span", "300 stops from the medium one"),
    ("evs absolute", r"not relative to the medium frame"), ("motion dtype", "motion mask float32"),
    ("motion shape", "motion mask bool"),
])
def test_a_bad_scene_is_refused_in_one_line_naming_it(kind, words):
    ldrs, evs, gt, motion = _bad(kind)
    with pytest.raises(DataError, match=words) as e:
        Scene("0007", ldrs, evs, gt, motion, origin="ntire:/data/x/0007")
    msg = str(e.value)
    assert msg.startswith("scene '0007' (ntire:/data/x/0007): ") and "\n" not in msg, msg


def test_id_and_origin_must_be_given():
    ldrs, evs, gt = arrays()
    with pytest.raises(DataError, match="empty scene id"):
        Scene("", ldrs, evs, gt)
    with pytest.raises(DataError, match="empty origin"):
        Scene("a", ldrs, evs, gt, origin="")


def test_arrays_become_contiguous_float32_and_fields_stay():
    ldrs, evs, gt = arrays()
    s = Scene(7, ldrs.astype(np.float64), evs.astype(np.int64), np.asfortranarray(gt))
    assert s.id == "7" and s.origin == "array" and s.dataset == "" and s.motion is None
    for a in (s.ldrs, s.evs, s.gt):
        assert a.dtype == np.float32 and a.flags.c_contiguous
    np.testing.assert_array_equal(s.gt, gt)
    same = Scene("a", ldrs, evs, gt)                       # already float32 and contiguous: not copied
    assert same.ldrs is ldrs and same.gt is gt
    with pytest.raises(dataclasses.FrozenInstanceError):
        same.gt = None
    assert repr(same).startswith("Scene(id='a', 6x7, origin='array'")  # the scene, not its pixels


def test_a_scene_is_its_own_source_and_crops():
    ldrs, evs, gt = arrays(8, 10)
    motion = np.zeros((8, 10), bool)
    motion[2, 3] = True
    s = Scene("a", ldrs, evs, gt, motion, origin="synthetic:1@8x10")
    assert isinstance(s, SceneSource) and s.load() is s and s.size() == (8, 10) and s.has_gt()
    c = s.crop(1, 2, 4, 5)
    assert c.size() == (4, 5) and c.cropped_from == (8, 10) and c.origin == s.origin and c.id == "a"
    np.testing.assert_array_equal(c.ldrs, ldrs[:, 1:5, 2:7])
    np.testing.assert_array_equal(c.gt, gt[1:5, 2:7])
    assert c.motion[1, 1] and c.motion.sum() == 1
    assert c.crop(0, 0, 2, 2).cropped_from == (8, 10)      # the original size, not the crop's
    assert s.crop(0, 0, 8, 10) is s
    with pytest.raises(ValueError, match="not inside its 8x10 frame"):
        s.crop(5, 0, 4, 4)


def test_only_scene_sources_are_accepted():
    s = Scene("a", *arrays())
    assert as_sources([s]) == [s]
    with pytest.raises(TypeError, match="val: item 1 is a tuple, not a scene source"):
        as_sources([s, ("a", s.ldrs, s.evs, s.gt)], "val")


# ------------------------------------------------------------------------------------------ sources


def test_ntire_source_size_comes_from_the_png_headers(tmp_path):
    ldrs, evs, gt = arrays(9, 13)
    write_ntire(tmp_path, "a", ldrs, np.array([-3, -1, 1]), gt)
    write_ntire(tmp_path, "b", ldrs, np.array([-3, -1, 1]))
    a, b = scene_sources_from_folder(tmp_path, dataset="set")
    assert a == NtireSource(tmp_path, "a", "set") and a.origin == f"ntire:{tmp_path}/a" and isinstance(a, SceneSource)
    scene = a.load()
    assert a.size() == scene.size() == (9, 13) and scene.origin == a.origin and scene.dataset == "set"
    np.testing.assert_array_equal(scene.evs, [-2, 0, 2])   # relative to the medium frame
    assert a.has_gt() and scene.gt is not None and not b.has_gt() and b.load().gt is None
    # the pixels after each frame's IHDR chunk are gone: size() still answers, load() names the broken file
    for name in ("short", "medium", "long"):
        path = tmp_path / f"a_{name}.png"
        path.write_bytes(path.read_bytes()[:33])           # signature (8) + IHDR chunk (25)
    assert a.size() == (9, 13)
    with pytest.raises(DataError, match="a_short.png: corrupt PNG"):
        a.load()


def test_kalantari_source_size_comes_from_one_tif_header(tmp_path, monkeypatch):
    src = KalantariSource(kalantari_folder(tmp_path / "s1"))
    assert (src.id, src.origin) == ("s1", f"kalantari:{tmp_path / 's1'}") and isinstance(src, SceneSource)
    scene = src.load()
    assert src.size() == scene.size() == (10, 12) and scene.origin == src.origin and src.has_gt()
    assert not KalantariSource(kalantari_folder(tmp_path / "s2", hdr=False)).has_gt()

    def no_decoding(*a, **k):
        raise AssertionError("size() decoded an image")

    monkeypatch.setattr(ntire.cv2, "imdecode", no_decoding)
    assert src.size() == (10, 12)


@pytest.mark.parametrize("order, kind", [("<", 3), ("<", 4), (">", 3), (">", 4)])
def test_tif_header_sizes_in_both_byte_orders(tmp_path, order, kind):
    fmt = "H2x" if kind == 3 else "I"
    entries = [struct.pack(order + "HHI", 256, kind, 1) + struct.pack(order + fmt, 1900),
               struct.pack(order + "HHI", 257, kind, 1) + struct.pack(order + fmt, 1060)]
    head = (b"II*\0" if order == "<" else b"MM\0*") + struct.pack(order + "I", 8)
    path = tmp_path / "x.tif"
    path.write_bytes(head + struct.pack(order + "H", 2) + b"".join(entries) + b"\0\0\0\0")
    assert kalantari._tif_size(path) == (1060, 1900)
    path.write_bytes(b"GIF89a" + bytes(20))
    with pytest.raises(DataError, match="not a TIFF file"):
        kalantari._tif_size(path)


def test_synthetic_source_carries_the_motion_mask_and_knows_its_size(monkeypatch):
    src = SyntheticSource(7, 32, 48, id="0000", dataset="heldout_synthetic")
    assert (src.origin, src.has_gt(), isinstance(src, SceneSource)) == ("synthetic:7@32x48", True, True)
    scene = src.load()
    ldrs, evs, gt, info = synthetic.generate_scene_with_info(7, 32, 48)
    assert src.size() == scene.size() == (32, 48) and scene.id == "0000" and scene.dataset == "heldout_synthetic"
    np.testing.assert_array_equal(scene.ldrs, ldrs)
    np.testing.assert_array_equal(scene.motion, info["motion_mask"])
    assert SyntheticSource(7, 32, 48).id == "7"

    def no_generation(*a, **k):
        raise AssertionError("size() generated the scene")

    monkeypatch.setattr(synthetic, "generate_scene_with_info", no_generation)
    assert src.size() == (32, 48)


# ------------------------------------------------------------------------------------------ one shape left


def _trees(*folders: str):
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            yield path.relative_to(ROOT), ast.parse(path.read_text(), str(path))


def test_the_old_shapes_of_a_scene_are_gone():
    bad = []
    for rel, tree in _trees("eapnet", "tests"):
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.name == "Scene" and str(rel) != "eapnet/data/scene.py":
                bad.append(f"{rel}:{node.lineno}: another class Scene")
            if isinstance(node, ast.ClassDef) and any(getattr(b, "id", getattr(b, "attr", "")) == "NamedTuple"
                                                      for b in node.bases) and "scene" in node.name.lower():
                bad.append(f"{rel}:{node.lineno}: a NamedTuple scene")
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(isinstance(t, ast.Name) and t.id == "Scene" for t in targets):
                    bad.append(f"{rel}:{node.lineno}: Scene = ... (a type alias)")
            if isinstance(node, ast.Compare) and any(isinstance(op, (ast.Is, ast.IsNot)) for op in node.ops) and (
                    (isinstance(node.left, ast.Attribute) and node.left.attr == "func")
                    or (isinstance(node.left, ast.Call) and getattr(node.left.func, "id", "") == "getattr"
                        and any(getattr(a, "value", None) == "func" for a in node.left.args))):
                bad.append(f"{rel}:{node.lineno}: a source told apart by its .func")
            if isinstance(node, ast.Attribute) and node.attr == "partial" and getattr(node.value, "id", "") \
                    == "functools" and str(rel).startswith("eapnet/"):
                bad.append(f"{rel}:{node.lineno}: functools.partial in the library (sources are objects)")
            if isinstance(node, ast.ImportFrom) and node.module in ("eapnet.evalsets", "eapnet.export.canvas") \
                    and any(a.name == "Scene" for a in node.names):
                bad.append(f"{rel}:{node.lineno}: Scene imported from {node.module}")
            if isinstance(node, ast.Attribute) and node.attr == "Scene" and getattr(node.value, "id", "") \
                    in ("evalsets", "canvas"):
                bad.append(f"{rel}:{node.lineno}: {node.value.id}.Scene")
            if isinstance(node, ast.FunctionDef) and node.name in ("load_scene", "_source_name", "_cheap_size",
                                                                   "_validate_scene"):
                bad.append(f"{rel}:{node.lineno}: {node.name}() (the protocol replaces it)")
    assert not bad, bad


def test_each_rule_is_defined_once():
    defined: dict[str, list[str]] = {}
    for rel, tree in _trees("eapnet"):
        for node in tree.body:
            names = [node.name] if isinstance(node, (ast.FunctionDef, ast.ClassDef)) else \
                [t.id for t in getattr(node, "targets", [getattr(node, "target", None)]) if isinstance(t, ast.Name)]
            for n in names:
                if n in ("check_exposures", "EV_SPAN", "ALIGN_RATIO_RANGE", "_PNG_SIGNATURE", "SceneSource"):
                    defined.setdefault(n, []).append(f"{rel}:{node.lineno}")
    assert {n: len(v) for n, v in defined.items()} == dict.fromkeys(
        ["check_exposures", "EV_SPAN", "ALIGN_RATIO_RANGE", "_PNG_SIGNATURE", "SceneSource"], 1), defined
    assert defined["check_exposures"][0].startswith("eapnet/data/scene.py")
