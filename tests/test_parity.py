"""Parity harness: packing of scenes onto fixed-size canvases, thresholds that fail, localisation of drift,
and the CLI (eapnet.export.check_parity) end to end on tiny exported artifacts: the true files pass, a
deliberately corrupted ``.pte`` and a corrupted ``.mlpackage`` make it exit non-zero, the result is written back
into the artifacts."""
import json
import os
import shutil

import numpy as np
import pytest
import torch
from conftest import TINY
from torch import nn

from eapnet.compress.quantize import convert, prepare_ptq
from eapnet.checkpoint import save_checkpoint
from eapnet.data import Scene
from eapnet.model import EAPNet
from eapnet.export import canvas, check_parity, localise, parity
from eapnet.export.backends import artifact_sha256, check_stamp, open_artifact
from eapnet.export.common import file_sha256, load_source

CFG = TINY.replace(base="merge")
SIZE = (96, 128)   # canvas: calibration scenes (128²) are centre-cropped onto it; multiples of 8: no-op crop (alias)
DATA = ["calib", "heldout"]


def _model() -> EAPNet:
    torch.manual_seed(0)
    m = EAPNet(CFG).eval()
    nn.init.normal_(m.out.weight, std=0.05)      # the output conv starts at zero: let the network show
    nn.init.normal_(m.out.bias, std=0.01)
    return m


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny float checkpoint and its fp32 .pte and fp32 .mlpackage, in one folder."""
    from eapnet.export.coreml_export import export_mlpackage
    from eapnet.export.executorch_export import export_pte

    d = tmp_path_factory.mktemp("parity")
    ckpt = d / "tiny.pt"
    save_checkpoint(ckpt, _model(), step=0)
    src = load_source(ckpt)
    return {"dir": d, "ckpt": ckpt, "pte": export_pte(src, d, size=SIZE),
            "mlpackage": export_mlpackage(src, d, precision="fp32", size=SIZE)}


def _scene(dataset, sid, h, w, evs=(-2.0, 0.0, 2.0), gt=True, seed=0):
    rng = np.random.default_rng(seed)
    return Scene(sid, rng.random((3, h, w, 3), dtype=np.float32), np.asarray(evs, np.float32),
                 rng.random((h, w, 3), dtype=np.float32) if gt else None, dataset=dataset)


# ------------------------------------------------------------------------------------------ packing


def test_pack_places_scenes_apart_and_recovers_them():
    scenes = [_scene("a", str(i), 40, 50, seed=i) for i in range(5)] + [_scene("b", "x", 30, 30, (-1, 0, 1))]
    canvases = canvas.pack(scenes, (100, 200), gutter=6)
    assert [len(c.places) for c in canvases] == [3, 2, 1]       # cells 52x62: 1 row of 3 per canvas; 5 = 3 + 2
    assert [tuple(c.evs) for c in canvases] == [(-2, 0, 2)] * 2 + [(-1, 0, 1)]
    for c in canvases:
        assert c.ldrs.shape == (3, 100, 200, 3)
        boxes = []
        for s, y, x in c.places:
            h, w = s.ldrs.shape[1:3]
            assert np.array_equal(c.ldrs[:, y:y + h, x:x + w], s.ldrs)        # the scene itself, unchanged
            assert np.array_equal(c.ldrs[:, y - 1, x:x + w], s.ldrs[:, 0])     # gutter = replicated edge
            boxes.append((y - 6, x - 6, y + h + 6, x + w + 6))
        for i, a in enumerate(boxes):                                          # cells never overlap
            for b in boxes[i + 1:]:
                assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]


def test_pack_crops_a_scene_larger_than_the_canvas():
    big = _scene("fullres", "0", 120, 300, gt=False)
    (c,) = canvas.pack([big], (100, 200), gutter=16)
    s, y, x = c.places[0]
    assert (y, x) == (0, 0) and s.cropped_from == (120, 300)
    assert np.array_equal(c.ldrs, big.ldrs[:, 10:110, 50:250])


def test_scenes_share_one_exposure_triple_unless_asked_for_all():
    # Each extra exposure triple costs a full-size canvas per artifact: by default every dataset contributes
    # scenes of the first dataset's most common triple (calib: [-2, 0, 2]), and the small ones share a canvas.
    shared, _ = canvas.load_scenes(("calib", "heldout"), limit=4)
    assert [s.dataset for s in shared] == ["calib"] * 4 + ["heldout"] * 4
    assert {tuple(s.evs) for s in shared} == {(-2.0, 0.0, 2.0)}
    assert len(canvas.pack(shared, (1060, 1900))) == 1
    every, _ = canvas.load_scenes(("calib", "heldout"), limit=4, shared_exposures=False)
    assert [s.id for s in every if s.dataset == "calib"] == ["0000", "0001", "0002", "0003"]
    assert len({tuple(s.evs) for s in every}) > 1 and len(canvas.pack(every, (1060, 1900))) > 1


def test_pack_rejects_negative_gutter():
    with pytest.raises(ValueError, match="gutter"):
        canvas.pack([_scene("a", "0", 8, 8)], (16, 16), gutter=-1)


# ------------------------------------------------------------------------------------------ thresholds


def _rows(vs_float, max_abs, psnr, float_psnr, dataset="real"):
    return [{"dataset": dataset, "id": "0", "psnr_mu_vs_float": vs_float, "max_abs_vs_float": max_abs,
             "psnr_mu": psnr, "psnr_l": psnr, "float_psnr_mu": float_psnr, "float_psnr_l": float_psnr}]


def test_check_passes_and_names_each_breach():
    t = parity.THRESHOLDS["fp32"]
    assert parity.check("fp32", _rows(120.0, 1e-6, 30.0, 30.0)) == []
    low = parity.check("fp32", _rows(t.min_psnr_mu_vs_float - 1, 1e-6, 30.0, 30.0))
    assert len(low) == 1 and "PSNR-mu vs float" in low[0] and "real/0" in low[0]
    assert "max abs" in parity.check("fp32", _rows(120.0, 2 * t.max_abs, 30.0, 30.0))[0]
    drop = parity.check("int8", _rows(40.0, 0.1, 29.0, 30.0))
    assert len(drop) == 1 and "1.000 dB below" in drop[0]
    assert parity.check("int8", _rows(40.0, 0.1, 29.6, 30.0)) == []          # 0.4 dB: within int8's 0.5
    assert "NaN" in parity.check("fp16", [{"dataset": "a", "id": "1", "error": "artifact output holds NaN/inf"}])[0]
    assert parity.check("fp32", []) == ["no scenes were compared"]
    assert "no threshold" in parity.check("bf8", _rows(120.0, 0.0, 1.0, 1.0))[0]




def test_int8_floor_follows_the_float_models_own_error_on_scenes_with_ground_truth():
    t = parity.THRESHOLDS["int8"]
    assert t.floor(None) == t.floor(40.0) == t.min_psnr_mu_vs_float == 32.0
    assert t.floor(19.5) == pytest.approx(19.5 + t.scene_margin)
    # a dark scene the float model gets wrong (19.5 dB vs GT): 28 dB from float is the same picture
    assert parity.check("int8", _rows(28.0, 0.1, 19.2, 19.5, dataset="calib")) == []
    # but not 24 dB, and the message says why the floor is where it is
    fail = parity.check("int8", _rows(24.0, 0.1, 19.2, 19.5, dataset="calib"))
    assert len(fail) == 1 and "24.00 dB < 25.50 dB" in fail[0] and "19.50 dB vs ground truth" in fail[0]
    # a scene without ground truth (the full-size frame) keeps the absolute floor
    no_gt = [{"dataset": "fullres", "id": "0", "psnr_mu_vs_float": 28.0, "max_abs_vs_float": 0.1}]
    assert "28.00 dB < 32.00 dB" in parity.check("int8", no_gt)[0]
    # fp32 has no margin: its floor never moves
    assert parity.THRESHOLDS["fp32"].floor(10.0) == parity.THRESHOLDS["fp32"].min_psnr_mu_vs_float
def test_the_diagnosed_scene_is_the_one_furthest_below_its_own_floor():
    def scene(dataset, gt):
        z = np.zeros((3, 8, 8, 3), np.float32)
        return Scene("0", z, np.array([-2, 0, 2], np.float32), z[0] if gt else None, dataset=dataset)

    dark, frame = scene("calib", True), scene("fullres", False)
    rows = [{"dataset": "calib", "id": "0", "psnr_mu_vs_float": 28.0, "float_psnr_mu": 19.5},   # floor 25.5: passes
            {"dataset": "fullres", "id": "0", "psnr_mu_vs_float": 31.0}]                        # floor 32: fails
    assert parity._worst_scene([dark, frame], rows, parity.THRESHOLDS["int8"]).dataset == "fullres"
    assert parity._worst_scene([dark, frame], rows).dataset == "calib"        # without a threshold: furthest


@pytest.mark.parametrize("precision", sorted(parity.THRESHOLDS))
def test_each_precision_is_judged_by_its_own_floor(precision):
    # a scene without ground truth just above / below the precision's floor (its max abs bound met): the artifact
    # passes / fails on that floor alone, whichever precision's table entry it is
    t = parity.THRESHOLDS[precision]
    row = lambda db: [{"dataset": "fullres", "id": "0", "psnr_mu_vs_float": db, "max_abs_vs_float": 0.0}]  # noqa: E731
    assert parity.check(precision, row(t.min_psnr_mu_vs_float + 0.01)) == []
    fail = parity.check(precision, row(t.min_psnr_mu_vs_float - 0.01))
    assert len(fail) == 1 and fail[0].startswith("fullres/0: PSNR-mu vs float")


# ------------------------------------------------------------------------------------------ localisation


def test_localise_names_the_first_jumps():
    rows = [{"layer": n, "rel_err": e} for n, e in
            [("a", 0.002), ("b", 0.003), ("c", 0.02), ("d", 0.021), ("e", 0.3), ("f", 0.1)]]
    loc = localise.localise(rows)
    assert [j["layer"] for j in loc["first_jumps"]] == ["a", "c", "e"]
    assert loc["worst"]["layer"] == "e" and loc["layers"] == 6
    assert localise.localise([{"layer": "a", "rel_err": 1e-5}])["first_jumps"] == []   # below the floor


def test_layer_errors_match_every_conv_of_an_int8_model():
    from eapnet.inference import example_inputs

    model = _model()
    q = convert(prepare_ptq(model, "xnnpack", [example_inputs((32, 32), batch=2)]))
    x, e = example_inputs((32, 32))
    rows = localise.layer_errors(model, q, x, e)
    convs = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    # every conv but the depthwise ones that range equalisation rescales (each is followed by its pointwise)
    assert sorted(r["layer"] for r in rows) == sorted(c for c in convs if not c.endswith(".dw"))
    assert all(0 < r["rel_err"] < 1 for r in rows)
    # a broken layer is found: scale one conv's weights in the float model only
    broken = _model()
    with torch.no_grad():
        broken.tail.pw.weight.mul_(3.0)
    loc = localise.localise(localise.layer_errors(broken, q, x, e))
    assert loc["worst"]["layer"] == "tail.pw"
    assert "tail.pw" in [j["layer"] for j in loc["first_jumps"]]


@pytest.mark.slow   # one lowering of a tiny int8 program with every conv as an output: ~60 s
def test_program_gaps_read_every_conv_from_the_pte_and_find_a_tampered_one(monkeypatch):
    """program_gaps pairs each conv's int8 output in the runtime with the eager program's; a .pte whose
    tail.pw weights were altered during lowering is localised there, the layers before it stay faithful."""
    from eapnet.inference import example_inputs
    from eapnet.export import executorch_export as ee

    model = _model()
    q = convert(prepare_ptq(model, "xnnpack", [example_inputs((64, 64), batch=2)]))
    real_lower = ee.lower

    def tampered(ep, **kw):   # double the int8 weight scales of tail.pw inside the program only
        conv = next(n for n in ep.graph.nodes if n.target == torch.ops.aten.conv2d.default
                    and list(n.meta["nn_module_stack"].values())[-1][0] == "tail.pw")
        scales = conv.args[1].args[1]
        sig = ep.graph_signature
        key = (sig.inputs_to_lifted_tensor_constants.get(scales.name) or sig.inputs_to_buffers.get(scales.name)
               or sig.inputs_to_parameters.get(scales.name))
        store = ep.constants if key in ep.constants else ep.state_dict
        store[key] = store[key] * 2
        return real_lower(ep, **kw)

    monkeypatch.setattr(ee, "lower", tampered)
    x, e = example_inputs((64, 64))
    rows, hdr = localise.program_gaps(q, x, e)
    assert tuple(hdr.shape) == (1, 3, 64, 64)
    names = [r["layer"] for r in rows]
    convs = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert names[-1] == "<output>" and sorted(names[:-1]) == sorted(c for c in convs if c != "out")  # float head
    assert rows[0]["max_steps"] < 1.01 and rows[0]["rel_err"] < 1e-3   # the first conv: at most rounding flips
    before = rows[:names.index("tail.pw")]
    assert max(r["rel_err"] for r in before) < 0.05   # rounding differences only (XNNPACK requantizes in fixed point)
    loc = localise.localise(rows)
    assert loc["worst"]["layer"] == "tail.pw" and loc["worst"]["rel_err"] > 0.3
    assert "tail.pw" in [j["layer"] for j in loc["first_jumps"]]


# ------------------------------------------------------------------------------------------ end to end


def test_true_artifacts_pass_and_record_parity(exported, tmp_path):
    from eapnet.export.coreml_export import read_metadata

    pte, pkg = tmp_path / exported["pte"].name, tmp_path / exported["mlpackage"].name
    shutil.copy(exported["pte"], pte)
    shutil.copy(exported["pte"].with_suffix(".json"), pte.with_suffix(".json"))
    shutil.copytree(exported["mlpackage"], pkg)
    shutil.copy(exported["ckpt"], tmp_path / "tiny.pt")    # found beside the artifacts, sha256 checked
    out = tmp_path / "report"
    rc = check_parity.main([str(pte), str(pkg), "--data", *DATA, "--scenes", "2", "--out", str(out), "--quiet"])
    assert rc == 0
    rep = json.loads((out / "parity.json").read_text())
    assert [r["passed"] for r in rep["artifacts"]] == [True, True]
    for r in rep["artifacts"]:   # the budget left on the worst dataset with ground truth
        drops = [d["gt_drop"] for d in r["summary"].values() if "gt_drop" in d]
        assert r["gt_margin"] == pytest.approx(r["threshold"]["max_gt_drop"] - max(drops))
    by_kind = {r["kind"]: r for r in rep["artifacts"]}
    assert by_kind["pte"]["executor"].startswith("ExecuTorch")
    assert "reference-executed" in by_kind["mlpackage"]["executor"]
    for r in rep["artifacts"]:
        assert r["float"]["path"].endswith("tiny.pt")
        assert {row["dataset"] for row in r["scenes"]} == set(DATA) and len(r["scenes"]) == 4
        assert r["summary"]["calib"]["psnr_mu_vs_float_min"] > parity.THRESHOLDS["fp32"].min_psnr_mu_vs_float
        assert abs(r["summary"]["calib"]["gt_drop"]) < 0.01
    assert "| pass |" in (out / "parity.md").read_text()
    assert json.loads((out / "run.json").read_text())["args"]["scenes"] == 2
    recorded = json.loads(read_metadata(pkg)["parity"])
    assert recorded["passed"] is True and recorded["summary"]["heldout"]["scenes"] == 2
    assert json.loads(pte.with_suffix(".json").read_text())["parity"]["passed"] is True
    for path, stamp in ((pkg, recorded), (pte, json.loads(pte.with_suffix(".json").read_text())["parity"])):
        # the stamp names the file it measured and the reference it used: the export's own source
        assert stamp["artifact_sha256"] == artifact_sha256(path) and "warnings" not in stamp
        assert stamp["reference"]["sha256"] == file_sha256(exported["ckpt"])
        assert stamp["reference_is_export_source"] is True
    assert all(r["stamp"] == "verified" and r["warnings"] == [] for r in rep["artifacts"])


def test_a_tile_program_is_also_checked_stitched_over_the_full_size_frame(exported, monkeypatch, tmp_path):
    """A tile program runs tiled over the full-size frame, as an app runs it; the stitched frame is scored against
    the float model over the very same tiles at the precision's thresholds, and a failure names the tiling."""
    from eapnet.data.synthetic import generate_scene

    ldrs, evs, _ = generate_scene(5, 160, 224)
    frame = Scene("0000", ldrs, evs, None, dataset="fullres")
    monkeypatch.setattr(parity, "load_scenes", lambda *a, **k: ([frame], {}))
    plain = parity.run_parity([exported["pte"]], float_spec=str(exported["ckpt"]), write_back=False,
                              progress=False, log=lambda *_: None)
    assert "stitched" not in plain["artifacts"][0]                  # only tile programs are stitched
    wide = parity.run_parity([exported["pte"]], float_spec=str(exported["ckpt"]), stitch=True, tile_overlap=48,
                             write_back=False, progress=False, log=lambda *_: None)
    assert "stitched" not in wide["artifacts"][0] and wide["passed"]   # 96x128 cannot tile with 48 px overlap
    tiled = []
    real_predict = parity.predict
    monkeypatch.setattr(parity, "predict", lambda m, l, e, **kw: tiled.append((type(m).__name__, kw)) or
                        real_predict(m, l, e, **kw))
    rep = parity.run_parity([exported["pte"]], float_spec=str(exported["ckpt"]), stitch=True, tile_overlap=32,
                            write_back=False, progress=False, log=lambda *_: None, keep_frames=tmp_path / "frames")
    art = rep["artifacts"][0]
    st = art["stitched"]
    assert st["tile"] == list(SIZE) and st["overlap"] == 32 and [r["id"] for r in st["scenes"]] == ["0000"]
    # the stitched frame and its float reference are kept, whole, for report pages
    (kept,) = st["frames"]
    out, ref = (parity.load_frame(tmp_path / "frames" / kept[k]) for k in ("output", "float"))
    assert (kept["dataset"], kept["id"]) == ("fullres", "0000") and out.shape == ref.shape and out.shape[0] > SIZE[0]
    assert art["artifact_sha256"][:12] in kept["output"]
    assert parity.psnr_mu(ref, out) > 60      # fp32 program vs float model, to float16 storage
    # the float reference and the program both ran over the whole frame in the program's tiles
    on_frame = [(name, kw) for name, kw in tiled if kw]
    assert sorted(name for name, _ in on_frame) == ["EAPNet", "ProgramModule"]
    assert all(kw == {"tile": tuple(SIZE), "overlap": 32} for _, kw in on_frame)
    # so an fp32 program meets fp32's own thresholds on it (it differs from the float model by rounding only)
    floor = parity.THRESHOLDS["fp32"]
    assert st["scenes"][0]["psnr_mu_vs_float"] >= floor.min_psnr_mu_vs_float
    assert st["scenes"][0]["max_abs_vs_float"] <= floor.max_abs and art["passed"]
    assert "Tile programs run tiled" in parity.report_markdown(rep)
    # a floor the stitched frame cannot meet fails it, naming the tiling (no ground truth: absolute floor)
    fail = parity.check("fp32", st["scenes"], parity.Threshold(parity.PSNR_CAP + 1, 0.5, None))
    assert len(fail) == 1 and fail[0].startswith("fullres/0000: PSNR-mu vs float")
    monkeypatch.setattr(parity, "THRESHOLDS", {**parity.THRESHOLDS, "fp32": parity.Threshold(parity.PSNR_CAP + 1,
                                                                                              0.5, None)})
    rep = parity.run_parity([exported["pte"]], float_spec=str(exported["ckpt"]), stitch=True, tile_overlap=32,
                            write_back=False, progress=False, log=lambda *_: None)
    assert not rep["passed"]
    assert any(f.startswith("stitched 96x128 tiles (overlap 32): fullres/0000") for f in rep["artifacts"][0]["failures"])


def _corrupt(path, model, scale=-3.0):
    """Scale the output conv's fp32 weights where they sit in ``path`` (a .pte's delegate constants, an fp32
    .mlpackage's weight.bin): a file that still loads and runs, and computes the wrong picture."""
    w = model.out.weight.detach()
    data = bytearray(path.read_bytes())
    for layout in (w, w.permute(0, 2, 3, 1)):      # OIHW (Core ML), OHWI (XNNPACK packs for NHWC)
        w_np = layout.contiguous().numpy().astype(np.float32).ravel()
        at = data.find(w_np.tobytes())
        if at >= 0:
            w = w_np
            break
    assert at >= 0, f"the conv's weights are stored in neither layout in {path.name}"
    data[at:at + w.nbytes] = (w * scale).tobytes()
    path.write_bytes(bytes(data))


def test_corrupted_pte_fails_and_is_diagnosed(exported, tmp_path, capsys):
    pte = tmp_path / exported["pte"].name
    shutil.copy(exported["pte"], pte)
    shutil.copy(exported["pte"].with_suffix(".json"), pte.with_suffix(".json"))
    _corrupt(pte, _model())
    out = tmp_path / "report"
    rc = check_parity.main([str(pte), "--model", str(exported["ckpt"]), "--data", "calib", "--scenes", "2",
                            "--out", str(out), "--quiet", "--no-write-back"])
    assert rc == 1
    assert "parity failed" in capsys.readouterr().err
    (r,) = json.loads((out / "parity.json").read_text())["artifacts"]
    assert not r["passed"] and any("PSNR-mu vs float" in f for f in r["failures"])
    d = r["diagnosis"]
    assert "drift comes from the artifact itself" in d.get("verdict", d)
    # judged like for like: the artifact on the scene alone drifts too, the eager program does not
    assert d["artifact_alone_psnr_mu_vs_float"] < d["eager_psnr_mu_vs_float"] - 10
    worst = min(r["scenes"], key=lambda row: row["psnr_mu_vs_float"])    # the scene that failed is diagnosed
    assert r["diagnosis"]["scene"].split(" ")[0] == f"{worst['dataset']}/{worst['id']}"
    assert "**FAIL**" in (out / "parity.md").read_text()
    assert "parity" not in json.loads(pte.with_suffix(".json").read_text())     # --no-write-back


@pytest.mark.slow   # int8 export, parity and a second lowering with every conv tapped: ~4 min
def test_corrupted_int8_pte_is_localised_inside_the_artifact(exported, tmp_path):
    """An int8 .pte whose float head was altered after export: the eager program is within budget, the artifact
    is not, and lowering the program again with every conv tapped is faithful: the file is to blame."""
    from eapnet.export.executorch_export import export_pte

    from eapnet.evalsets import calibration_batches

    pte = export_pte(load_source(exported["ckpt"]), tmp_path, size=SIZE, precision="int8",
                     calib=calibration_batches(limit=4))
    shutil.copy(exported["ckpt"], tmp_path / "tiny.pt")
    _corrupt(pte, _model())
    out = tmp_path / "report"
    rc = check_parity.main([str(pte), "--model", str(tmp_path / "tiny.pt"), "--data", "calib", "--scenes", "2",
                            "--out", str(out), "--quiet", "--no-write-back"])
    assert rc == 1
    (r,) = json.loads((out / "parity.json").read_text())["artifacts"]
    d = r["diagnosis"]
    assert "drift comes from the artifact itself" in d["verdict"], d
    a = d["artifact_layers"]   # the file was damaged, not the lowering: a fresh lowering is faithful
    assert a["first_jumps"] == [] and a["relowered_psnr_mu_vs_float"] > d["artifact_alone_psnr_mu_vs_float"] + 10
    assert "the shipped file is not what this program lowers to" in a["verdict"]
    md = (out / "parity.md").read_text()
    assert "Inside the .pte" in md and "a damaged file" in md


def test_corrupted_mlpackage_fails(exported, tmp_path):
    pkg = tmp_path / exported["mlpackage"].name
    shutil.copytree(exported["mlpackage"], pkg)
    (blob,) = pkg.rglob("weight.bin")
    _corrupt(blob, _model())
    rc = check_parity.main([str(pkg), "--model", str(exported["ckpt"]), "--data", "calib", "--scenes", "1",
                            "--quiet", "--no-write-back"])
    assert rc == 1


def _copy_pte(pte, folder, name=None):
    dst = folder / (name or pte.name)
    shutil.copy(pte, dst)
    shutil.copy(pte.with_suffix(".json"), dst.with_suffix(".json"))
    return dst


def test_a_pte_swapped_in_beside_the_real_sidecar_is_not_stamped_as_its_source(exported, tmp_path, capsys):
    """The .pte of an untrained model under the real artifact's name, beside the real sidecar: its recorded
    source is not trusted (fails without --model); with --model untrained.pt it is checked, said loudly, and the
    stamp names untrained.pt and this file, never the recorded source."""
    from eapnet.export.executorch_export import export_pte

    torch.manual_seed(1)
    untrained = save_checkpoint(tmp_path / "other" / "untrained.pt", EAPNet(CFG).eval(), step=0)
    swapped = export_pte(load_source(untrained), tmp_path / "other", size=SIZE)
    pte = _copy_pte(exported["pte"], tmp_path)
    shutil.copy(swapped, pte)
    shutil.copy(exported["ckpt"], tmp_path / "tiny.pt")     # the recorded source is right there: still not used
    side = pte.with_suffix(".json")
    before = json.loads(side.read_text())
    args = [str(pte), "--data", "calib", "--scenes", "1", "--quiet"]

    assert check_parity.main(args + ["--out", str(tmp_path / "plain")]) == 1
    (r,) = json.loads((tmp_path / "plain" / "parity.json").read_text())["artifacts"]
    assert r["stamp"] == "mismatch" and r["warnings"][0].startswith(f"STAMP MISMATCH {pte.name}")
    assert "recorded source is not trusted; pass --model" in r["failures"][0]
    assert f"WARNING STAMP MISMATCH {pte.name}" in capsys.readouterr().out
    assert json.loads(side.read_text()) == before                     # nothing written back

    assert check_parity.main(args + ["--model", str(untrained), "--out", str(tmp_path / "forced")]) == 0
    (r,) = json.loads((tmp_path / "forced" / "parity.json").read_text())["artifacts"]
    assert r["passed"] and r["float"]["is_export_source"] is False
    assert r["warnings"][1].startswith(f"REFERENCE IS NOT THE EXPORT SOURCE {pte.name}")
    assert f"WARNING REFERENCE IS NOT THE EXPORT SOURCE {pte.name}" in capsys.readouterr().out
    assert "pass (vs --model, not its source)" in (tmp_path / "forced" / "parity.md").read_text()
    after = json.loads(side.read_text())
    stamp = after.pop("parity")
    assert after == before                                            # the export's claims are left as they were
    assert stamp["passed"] is True and stamp["reference_is_export_source"] is False
    assert stamp["reference"] == {"path": str(untrained), "sha256": file_sha256(untrained)}
    assert stamp["artifact_sha256"] == file_sha256(swapped) != before["artifact_sha256"]
    assert open_artifact(pte).stamp == "mismatch"                     # and the next reader is told again


def test_a_reference_other_than_the_recorded_source_is_named(exported, tmp_path):
    """A --model with the same weights but other bytes (sha256) than the recorded source: the verdict stands,
    and it is recorded as a verdict against that model; the recorded source itself passed as --model is not."""
    pte = _copy_pte(exported["pte"], tmp_path)
    twin = save_checkpoint(tmp_path / "twin.pt", _model(), step=7)
    same = tmp_path / "elsewhere" / "tiny.pt"
    same.parent.mkdir()
    shutil.copy(exported["ckpt"], same)
    quiet = {"datasets": ["calib"], "limit": 1, "progress": False, "log": lambda *a: None}
    rep = parity.run_parity([pte], float_spec=str(twin), **quiet)
    (r,) = rep["artifacts"]
    assert r["passed"] and r["stamp"] == "verified" and r["float"]["is_export_source"] is False
    assert len(r["warnings"]) == 1 and f"the export recorded {exported['ckpt']} (sha256" in r["warnings"][0]
    stamp = json.loads(pte.with_suffix(".json").read_text())["parity"]
    assert stamp["reference"]["sha256"] == file_sha256(twin) != r["export_source"]["sha256"]
    assert stamp["reference_is_export_source"] is False and stamp["warnings"] == r["warnings"]
    (r,) = parity.run_parity([pte], float_spec=str(same), write_back=False, **quiet)["artifacts"]
    assert r["float"]["is_export_source"] is True and r["warnings"] == []


@pytest.mark.parametrize("kind", ["pte", "mlpackage"])
def test_an_artifact_changed_after_export_is_flagged_and_unattributed(exported, tmp_path, kind):
    """Weights rescaled after export, the sidecar / metadata untouched: the recorded hash no longer matches, the
    recorded source (found beside it) is not used, and the artifact fails with the reason."""
    if kind == "pte":
        path = _copy_pte(exported["pte"], tmp_path)
        blob = path
    else:
        path = tmp_path / exported["mlpackage"].name
        shutil.copytree(exported["mlpackage"], path)
        (blob,) = path.rglob("weight.bin")
    shutil.copy(exported["ckpt"], tmp_path / "tiny.pt")
    recorded = open_artifact(path).meta["artifact_sha256"]
    assert recorded == artifact_sha256(path) == artifact_sha256(exported[kind])
    _corrupt(blob, _model(), scale=2.0)
    art = open_artifact(path)
    assert art.stamp == "mismatch" and art.sha256 != recorded
    assert art.warnings[0].startswith(f"STAMP MISMATCH {path.name}") and recorded[:12] in art.warnings[0]
    with pytest.raises(ValueError, match="recorded source is not trusted; pass --model"):
        parity.resolve_float(art)
    (r,) = parity.run_parity([path], datasets=["calib"], limit=1, progress=False, log=lambda *a: None)["artifacts"]
    assert not r["passed"] and "pass --model" in r["failures"][0] and r["stamp"] == "mismatch"


def test_stamps_without_a_hash_or_from_another_file_are_warned_about(exported):
    pte = exported["pte"]
    meta = json.loads(pte.with_suffix(".json").read_text())
    sha = artifact_sha256(pte)
    assert check_stamp(pte, meta, sha) == ("verified", [])
    state, lines = check_stamp(pte, {k: v for k, v in meta.items() if k != "artifact_sha256"}, sha)
    assert state == "unrecorded" and "no artifact sha256 recorded" in lines[0]
    state, lines = check_stamp(pte, {**meta, "parity": {"artifact_sha256": "0" * 64, "measured": "2026-01-01"}})
    assert state == "verified" and lines[0].startswith(f"STALE PARITY {pte.name}")
    assert check_stamp(pte, {**meta, "parity": "pending"}, sha) == ("verified", [])   # .mlpackage before parity


def test_unreadable_or_unresolvable_artifacts_fail_clearly(exported, tmp_path, capsys):
    junk = tmp_path / "junk.pte"
    junk.write_bytes(b"not a program")
    junk.with_suffix(".json").write_text(json.dumps({"precision": "fp32", "source": "tiny.pt"}))
    lonely = tmp_path / exported["pte"].name      # its source is neither recorded at a reachable path nor beside
    shutil.copy(exported["pte"], lonely)
    meta = json.loads(exported["pte"].with_suffix(".json").read_text())
    lonely.with_suffix(".json").write_text(json.dumps({**meta, "source": "elsewhere/tiny.pt"}))
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    rep = parity.run_parity([junk, lonely, tmp_path / "missing.pte", tmp_path / "model.onnx"], datasets=["calib"],
                            limit=1, progress=False, write_back=False, log=lambda *a: None)
    fails = [r["failures"][0] for r in rep["artifacts"]]
    assert not rep["passed"]
    assert "not an ExecuTorch program (no ET<nn> flatbuffer identifier" in fails[0]
    assert "pass --model" in fails[1]
    assert "no artifact at" in fails[2]
    assert "want one of .pte, .mlpackage" in fails[3]


def test_damaged_programs_fail_one_row_each_and_the_run_completes(exported, tmp_path, capsys):
    # Random bytes once aborted the whole process inside ExecuTorch's loader (SIGABRT): now the header is
    # checked first and the program is loaded in a child process before this one touches it.
    good = tmp_path / exported["pte"].name
    shutil.copy(exported["pte"], good)
    shutil.copy(exported["pte"].with_suffix(".json"), good.with_suffix(".json"))
    shutil.copy(exported["ckpt"], tmp_path / "tiny.pt")
    meta = json.loads(exported["pte"].with_suffix(".json").read_text())
    data = exported["pte"].read_bytes()
    rng = np.random.default_rng(0)
    damaged = {"random.pte": rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(),
               "body.pte": data[:32] + rng.integers(0, 256, len(data) - 32, dtype=np.uint8).tobytes()}
    for name, blob in damaged.items():
        (tmp_path / name).write_bytes(blob)
        (tmp_path / name).with_suffix(".json").write_text(json.dumps(meta))
    (tmp_path / "badside.pte").write_bytes(data)
    (tmp_path / "badside.json").write_text("{not json")
    out = tmp_path / "report"
    rc = check_parity.main([str(tmp_path / "random.pte"), str(good), str(tmp_path / "body.pte"),
                            str(tmp_path / "badside.pte"), "--data", "calib", "--scenes", "1", "--out", str(out),
                            "--quiet"])
    assert rc == 1
    rep = json.loads((out / "parity.json").read_text())
    assert [r["passed"] for r in rep["artifacts"]] == [False, True, False, False]
    fails = [r["failures"][0] for r in rep["artifacts"] if not r["passed"]]
    assert "random.pte is not an ExecuTorch program" in fails[0]
    assert "body.pte is not a loadable ExecuTorch program (RuntimeError" in fails[1]
    assert "badside.json: not valid JSON" in fails[2]
    assert json.loads(good.with_suffix(".json").read_text())["parity"]["passed"] is True
    assert "parity" not in json.loads((tmp_path / "body.json").read_text())


def test_an_aborted_run_marks_no_artifact(exported, tmp_path, monkeypatch):
    # the verdicts are written back only when every artifact has one
    good = tmp_path / exported["pte"].name
    shutil.copy(exported["pte"], good)
    shutil.copy(exported["pte"].with_suffix(".json"), good.with_suffix(".json"))
    shutil.copy(exported["ckpt"], tmp_path / "tiny.pt")
    second = tmp_path / "second.pte"
    shutil.copy(good, second)
    shutil.copy(good.with_suffix(".json"), second.with_suffix(".json"))
    real_open, calls = parity.open_artifact, []

    def open_or_stop(path, **kw):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_open(path, **kw)

    monkeypatch.setattr(parity, "open_artifact", open_or_stop)
    with pytest.raises(KeyboardInterrupt):
        parity.run_parity([good, second], datasets=["calib"], limit=1, progress=False, log=lambda *a: None)
    assert "parity" not in json.loads(good.with_suffix(".json").read_text())


def test_a_truncated_mlpackage_weight_file_is_named(exported, tmp_path):
    from eapnet.export.mil_interp import load_program

    pkg = tmp_path / exported["mlpackage"].name
    shutil.copytree(exported["mlpackage"], pkg)
    (weights,) = list(pkg.rglob("weight.bin"))
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    with pytest.raises(ValueError, match="weight.bin: cannot read .* damaged or truncated"):
        load_program(pkg)


def test_cli_rejects_an_unknown_device(capsys):
    with pytest.raises(SystemExit) as e:
        check_parity.main(["x.pte", "--device", "tpu"])
    assert e.value.code == 2
    assert "--device: device 'tpu': must be" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["x.pte", "--scenes", "0"], "--scenes"),
    (["x.pte", "--data", "imagenet"], "invalid choice"),
    ([], "required"),
])
def test_cli_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        check_parity.main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["afile"], "afile: not an exported artifact (want one of .pte, .mlpackage)"),
    (["a.pte", "--model", "int8.pt2"], "--model int8.pt2: the reference must be a float model, one of standard, "
                                       "lightweight or a .pt checkpoint (a .pt2 is an int8 program)"),
    (["a.pte", "--model", "missing.pt"], "--model missing.pt: no such file"),
    (["a.pte", "--tile-overlap", "8"], "--tile-overlap sets the overlap of --stitch: give --stitch too, or drop it"),
    (["a.mlpackage", "--threads", "2"], "--threads sets XNNPACK's threads for .pte files: none among the artifacts"),
    (["missing.pte"], "missing.pte: no such artifact"),
    (["a.pte", "./a.pte"], "./a.pte: given twice (also as a.pte)"),
    (["a.pte", "--threads", "100000"], "argument --threads: 100000 threads is more than 4 per core of this "
                                       f"machine's {os.cpu_count()} cores (at most {4 * os.cpu_count()})"),
])
def test_cli_refuses_what_is_not_an_artifact_or_a_float_reference_in_one_line(argv, message, tmp_path, capsys,
                                                                               monkeypatch):
    # each was accepted and failed per artifact after the scenes were loaded (exit 1), or was silently ignored;
    # int8.pt2 (never created) is refused by its name: nothing is loaded
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.pte").write_bytes(b"")
    (tmp_path / "a.mlpackage").mkdir()
    out = [] if "missing.pte" in argv else ["--out", "report"]   # a missing artifact is named after --out's check
    with pytest.raises(SystemExit) as e:
        check_parity.main([*argv, *out])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err == f"eapnet-parity: error: {message}\n", err
    assert not (tmp_path / "report").exists()


def test_an_int8_source_may_name_its_float_model_only_beside_itself(tmp_path):
    """The .pt2's metadata names the float checkpoint parity compares with: a path would lead anywhere."""
    import zipfile

    from eapnet.export.backends import Artifact

    pt2 = tmp_path / "run" / "int8.pt2"
    pt2.parent.mkdir()
    with zipfile.ZipFile(pt2, "w") as z:
        z.writestr("int8/extra/eapnet_quant.json", json.dumps({"float": "../../elsewhere/model.pt"}))
    (tmp_path / "elsewhere").mkdir()
    art = Artifact(path=tmp_path / "run" / "x.pte", kind="pte", precision="int8", size=(16, 16), executor="-",
                   meta={"source": str(pt2), "source_sha256": file_sha256(pt2)}, stamp="verified")
    with pytest.raises(ValueError, match=r"names float checkpoint '../../elsewhere/model.pt', not a file name"):
        parity._export_float(art)


def test_the_native_runner_check_agrees_and_fails_a_runner_that_differs(exported, monkeypatch):
    """``runners=("native",)``: the host runner runs the same canvases and the stitched frame (its C++ tiler) and
    agrees with the Python runtime to the bit; the machines are in the report, the sidecar and the manifest. A
    runner whose output is off by more than float rounding fails the artifact, naming the machine."""
    from eapnet.data.synthetic import generate_scene
    from eapnet.export import native_check
    from eapnet.export.manifest import read_manifest

    ldrs, evs, _ = generate_scene(5, 160, 224)
    frame = Scene("0000", ldrs, evs, None, dataset="fullres")
    monkeypatch.setattr(parity, "load_scenes", lambda *a, **k: ([frame], {}))
    quiet = {"float_spec": str(exported["ckpt"]), "progress": False, "log": lambda *_: None}
    rep = parity.run_parity([exported["pte"]], stitch=True, tile_overlap=32, runners=("native",), **quiet)
    art = rep["artifacts"][0]
    (py, nat) = art["machines"]
    assert py["runner"] == "python" and nat["runner"] == "native" and nat["passed"]
    assert nat["max_abs_vs_x86"] == 0.0 and nat["stitched_max_abs_vs_x86"] == 0.0 and nat["stitched_scenes"] == 1
    assert "through the native runner" in parity.report_markdown(rep)
    assert read_manifest(exported["pte"])["parity"]["machines"][1]["runner"] == "native"

    real = native_check.native.run_native
    monkeypatch.setattr(native_check.native, "run_native",
                        lambda *a, **k: (lambda out, stats: (out + 1e-3, stats))(*real(*a, **k)))
    rep = parity.run_parity([exported["pte"]], runners=("native",), write_back=False, **quiet)
    art = rep["artifacts"][0]
    assert not art["passed"] and not art["machines"][1]["passed"]
    assert any("native runner's output differs from the Python runtime's" in f for f in art["failures"])
