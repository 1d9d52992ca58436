"""Evaluation CLI and library: report, output files, NTIRE submission format, tiling, argument errors."""
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import eapnet
from eapnet.checkpoint import load_model, save_checkpoint
from eapnet.data import SHARED_SAMPLES, DataError, Scene, write_ntire_hdr
from eapnet.data.synthetic import HELDOUT_SEED, generate_scene, scene_seed
from eapnet.evalreport import compare_margins, evaluate
from eapnet.evaluate import main
from eapnet.outputs import require_exr, tonemap_preview
from eapnet.inference import predict
from eapnet.metrics import psnr_l, psnr_mu

TINY = eapnet.EAPNetConfig(name="tiny", num_blocks=1, pdub_widths=((8, 8, 8),), enc_channels=4,
                           feat_channels=8, tail_channels=4)
CROPS = SHARED_SAMPLES / "crops256"
HAVE_CROPS = CROPS.is_dir()
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # The CPU is shared (e.g. with training runs): more torch threads than free cores makes the tiny
    # model 40x slower through OpenMP contention.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)  # seed 0: a random init whose output depends on the neighbourhood (tiling matters)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    model = eapnet.build_model(TINY).eval()
    # The output conv starts at zero (the model returns the reference frame); randomise it so that the
    # output depends on the network, as a trained model's does.
    torch.nn.init.normal_(model.out.weight, std=0.05)
    save_checkpoint(path, model, with_rng=False)
    return path


@pytest.fixture(scope="module")
def run(ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "run"
    assert main(["--models", str(ckpt), "--heldout", "2", "--size", "64", "--device", "cpu", "--quiet",
                 "--out", str(out)]) == 0
    return out, json.loads((out / "report.json").read_text())


def _scenes():
    scenes = {"heldout_synthetic": {f"{i:04d}": generate_scene(scene_seed(HELDOUT_SEED, i), 64, 64) for i in range(2)}}
    if HAVE_CROPS:
        from eapnet.data import list_ntire_ids, read_ntire

        scenes["real_crops"] = {i: read_ntire(CROPS, i) for i in list_ntire_ids(CROPS)}
    return scenes


# ---- NTIRE submission writer ---------------------------------------------------------------------


def test_write_ntire_hdr_round_trips_through_the_gt_formula(tmp_path):
    rng = np.random.default_rng(0)
    hdr = (rng.random((20, 30, 3)) ** 3 * 3.7).astype(np.float32)
    hdr[0, 0, 2] = 3.7  # the maximum sits in the blue channel: a BGR/RGB swap would show
    png_path = write_ntire_hdr(tmp_path, "0007", hdr)
    assert png_path == tmp_path / "0007.png"
    png = cv2.imread(str(png_path), cv2.IMREAD_UNCHANGED)
    ratio = np.load(tmp_path / "0007_alignratio.npy")
    assert png.dtype == np.uint16 and png.max() == 65535 and ratio.shape == ()
    np.testing.assert_allclose(float(ratio), 65535 / 3.7, rtol=1e-6)
    back = png[..., ::-1].astype(np.float32) / ratio.astype(np.float32)  # the scorer's formula
    assert np.abs(back - hdr).max() <= 0.5 / float(ratio) + 1e-6


@pytest.mark.parametrize("bad, match", [("nan", "NaN"), ("zeros", "all zero"), ("negative", "negative"),
                                        ("shape", "shape")])
def test_write_ntire_hdr_rejects_bad_images(tmp_path, bad, match):
    hdr = np.full((4, 4, 3), 0.5, np.float32)
    if bad == "nan":
        hdr[1, 1, 1] = np.nan
    elif bad == "zeros":
        hdr[:] = 0
    elif bad == "negative":
        hdr[2, 2, 0] = -0.1
    else:
        hdr = hdr[..., :2]
    with pytest.raises(DataError, match=match) as err:
        write_ntire_hdr(tmp_path, "x", hdr)
    assert "x.png" in str(err.value)
    assert list(tmp_path.iterdir()) == []


# ---- the CLI run: report ---------------------------------------------------------------------------


def test_report_lists_every_method_and_dataset(run, ckpt):
    out, report = run
    datasets = {"heldout_synthetic"} | ({"real_crops"} if HAVE_CROPS else set())
    assert set(report["datasets"]) == datasets
    assert list(report["methods"]) == ["tiny", "reference_frame", "debevec", "mertens", "radiance_merge",
                                       "consistent_merge"]
    tiny = report["methods"]["tiny"]
    assert tiny["kind"] == "model" and tiny["params"] == eapnet.count_params(eapnet.build_model(TINY))
    assert tiny["maccs"] == eapnet.count_maccs(eapnet.build_model(TINY))
    for d, per in report["results"].items():
        for r in per.values():
            assert list(r["per_scene"]) == report["datasets"][d]["ids"]
            assert r["psnr_mu"] == pytest.approx(np.mean([s["psnr_mu"] for s in r["per_scene"].values()]))
            assert r["psnr_l"] == pytest.approx(np.mean([s["psnr_l"] for s in r["per_scene"].values()]))
    assert report["datasets"]["heldout_synthetic"]["ids"] == ["0000", "0001"]
    assert set(report["margins"]["tiny"]) == datasets
    # de-ghosting: PSNR-mu inside the synthetic scenes' motion masks, for every method
    syn = report["results"]["heldout_synthetic"]
    assert all("psnr_mu_motion" in r for r in syn.values())
    assert "real_crops" not in report["results"] or "psnr_mu_motion" not in report["results"]["real_crops"]["tiny"]
    md = (out / "report.md").read_text()
    assert "PSNR-μ (moving)" in md
    for name in ("| tiny |", "| debevec (baseline) |", "| mertens (baseline) |", "heldout_synthetic PSNR-μ"):
        assert name in md
    args = json.loads((out / "run.json").read_text())["args"]
    assert args["heldout"] == 2 and args["models"] == {"tiny": str(ckpt)}


def test_scores_are_the_official_metrics_of_the_outputs(run, ckpt):
    _, report = run
    model = load_model(ckpt)
    from eapnet.baselines import debevec

    for d, scenes in _scenes().items():
        for sid, (ldrs, evs, gt) in scenes.items():
            hdr = predict(model, ldrs, evs)
            got = report["results"][d]["tiny"]["per_scene"][sid]
            assert got["psnr_mu"] == pytest.approx(psnr_mu(gt, hdr), abs=1e-9)
            assert got["psnr_l"] == pytest.approx(psnr_l(gt, hdr), abs=1e-9)
            b = debevec(ldrs, evs)
            assert report["results"][d]["debevec"]["per_scene"][sid]["psnr_mu"] == pytest.approx(psnr_mu(gt, b))


def test_output_files_hold_the_prediction_in_every_format(run, ckpt):
    out, _ = run
    model = load_model(ckpt)
    for d, scenes in _scenes().items():
        folder = out / d / "tiny"
        for sid, (ldrs, evs, gt) in scenes.items():
            hdr = predict(model, ldrs, evs)
            lin = (hdr.astype(np.float64) ** 2.24).astype(np.float32)
            exr = cv2.imread(str(folder / f"{sid}.exr"), cv2.IMREAD_UNCHANGED)
            assert exr.dtype == np.float32 and exr.shape == hdr.shape
            np.testing.assert_allclose(exr[..., ::-1], lin, rtol=1e-6, atol=1e-12)  # linear, float32 exact
            rad = cv2.imread(str(folder / f"{sid}.hdr"), cv2.IMREAD_UNCHANGED)[..., ::-1]
            # RGBE: 8-bit mantissas sharing the pixel's largest channel's exponent
            assert np.all(np.abs(rad - lin) <= lin.max(axis=-1, keepdims=True) / 128 + 1e-7)
            png = cv2.imread(str(folder / f"{sid}.png"), cv2.IMREAD_UNCHANGED)
            ratio = np.load(folder / f"{sid}_alignratio.npy").astype(np.float32)
            assert png.dtype == np.uint16
            assert np.abs(png[..., ::-1] / ratio - hdr).max() <= 0.5 / ratio + 1e-6
            preview = cv2.imread(str(folder / f"{sid}_preview.png"), cv2.IMREAD_UNCHANGED)
            np.testing.assert_array_equal(preview[..., ::-1], tonemap_preview(hdr, gt))
    # outputs only for models, and at most two folder levels below the run folder
    assert not (out / "heldout_synthetic" / "debevec").exists()
    assert max(len(p.relative_to(out).parts) for p in out.rglob("*") if p.is_dir()) <= 2


# ---- library: margins, tiling -----------------------------------------------------------------------


def _report(model_mu, base_mu):
    def per(vals):
        return {"psnr_mu": float(np.mean(vals)), "per_scene": {str(i): {"psnr_mu": v} for i, v in enumerate(vals)}}

    methods = {"net": {"kind": "model"}, **{b: {"kind": "baseline"} for b in base_mu}}
    results = {"d": {"net": per(model_mu), **{b: per(v) for b, v in base_mu.items()}}}
    return {"methods": methods, "results": results}


def test_compare_margins_against_the_best_baseline():
    r = _report([30.0, 20.0], {"a": [28.0, 21.0], "b": [29.0, 19.0]})  # means: net 25, a 24.5, b 24
    m = compare_margins(r)["net"]["d"]
    assert m["best_baseline"] == "a" and m["margin_db"] == pytest.approx(0.5) and m["beats_all"]
    assert m["scenes_won"] == 1 and m["worst_scene"] == {"id": "1", "margin_db": pytest.approx(-1.0)}
    only_b = compare_margins(r, against=["b"])["net"]["d"]
    assert only_b["best_baseline"] == "b" and only_b["margin_db"] == pytest.approx(1.0)
    assert compare_margins(_report([30.0], {"a": [31.0]}))["net"]["d"]["beats_all"] is False
    with pytest.raises(ValueError, match="net"):
        compare_margins(r, against=["net"])
    assert compare_margins(_report([30.0], {})) == {}


def test_tiled_inference_matches_whole_frame_within_the_stated_tolerance(ckpt):
    model = load_model(ckpt)
    ldrs, evs, _ = generate_scene(scene_seed(HELDOUT_SEED, 5), 128, 128)
    full = predict(model, ldrs, evs)
    # a tile covering the frame is the whole-frame path: identical
    np.testing.assert_array_equal(predict(model, ldrs, evs, tile=128, overlap=32), full)
    # real tiles: seams differ by the receptive field cut at tile borders. Measured with this tiny random
    # model on this scene (outputs 0-1.15): overlap 16 -> max 0.015, mean 4.7e-4; overlap 0 -> max 0.15.
    # (Seeds 0-2, scenes 5-6: overlap 16 max 0.006-0.026, mean 1e-4..1.1e-3.) A trained model's receptive
    # field is wider.
    d16 = np.abs(predict(model, ldrs, evs, tile=64, overlap=16) - full)
    d0 = np.abs(predict(model, ldrs, evs, tile=64, overlap=0) - full)
    assert d16.max() < 0.04 and d16.mean() < 2e-3
    assert d0.max() > 2 * d16.max()  # the overlap is what keeps seams small


def test_evaluate_passes_tiling_to_predict(ckpt, tmp_path):
    model = load_model(ckpt)
    ldrs, evs, gt = generate_scene(scene_seed(HELDOUT_SEED, 5), 128, 128)
    scenes = {"s": [Scene("a", ldrs, evs, gt)]}
    rep = evaluate({"net": model}, ["reference_frame"], scenes, tmp_path / "o", tile=64, overlap=16,
                   save_outputs=False, progress=False)
    tiled = psnr_mu(gt, predict(model, ldrs, evs, tile=64, overlap=16))
    whole = psnr_mu(gt, predict(model, ldrs, evs))
    assert tiled != whole
    assert rep["results"]["s"]["net"]["per_scene"]["a"]["psnr_mu"] == pytest.approx(tiled, abs=1e-12)
    assert rep["settings"]["tile"] == 64 and not list((tmp_path / "o").glob("s"))
    assert {p.name for p in (tmp_path / "o").iterdir()} == {"run.json", "report.json", "report.md"}
    with pytest.raises(ValueError, match="ground truth"):
        evaluate({}, ["reference_frame"], {"s": [Scene("a", ldrs, evs, None)]}, tmp_path / "p", progress=False)
    with pytest.raises(TypeError, match="s: item 0 is a tuple, not a scene source"):   # the old shape is gone
        evaluate({}, ["reference_frame"], {"s": [("a", ldrs, evs, gt)]}, tmp_path / "q", progress=False)


def test_cli_data_folder_scores_scenes_with_gt_and_skips_the_rest(tmp_path, capsys):
    from eapnet.data import write_ntire

    folder = tmp_path / "mine"
    for i, with_gt in (("a", True), ("b", False)):
        ldrs, evs, gt = generate_scene(scene_seed(HELDOUT_SEED, 9), 32, 32)
        write_ntire(folder, i, ldrs, evs, gt if with_gt else None)
    out = tmp_path / "o"
    assert main(["--models", "--baselines", "reference_frame", "--heldout", "0", "--no-real-crops",
                 "--data", str(folder), "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["datasets"]["mine"]["ids"] == ["a"] and "['b']" in report["datasets"]["mine"]["source"]
    with pytest.raises(SystemExit):
        main(["--models", "--data", str(folder / "nothing"), "--out", str(tmp_path / "p")])
    (folder / "a_gt.png").unlink()
    (folder / "a_alignratio.npy").unlink()
    with pytest.raises(SystemExit):
        main(["--models", "--heldout", "0", "--data", str(folder), "--out", str(tmp_path / "q")])
    assert "no scene with ground truth (2 without)" in capsys.readouterr().err


# ---- CLI errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["--baselines", "debevec", "nope"], "unknown baseline(s) nope"),
    (["--tile", "8"], "argument --tile: expected an integer >= 16"),
    (["--tile", "abc"], "expected an integer"),
    (["--tile", "64", "--overlap", "32"], "must be < tile/2 = 32"),
    (["--heldout", "-1"], "argument --heldout: expected an integer >= 0"),
    (["--models", "no/such/ckpt.pt"], "does not exist"),
    (["--data", "no/such/folder"], "no/such/folder"),
    (["--heldout", "0", "--no-real-crops"], "no scenes to evaluate"),
])
def test_cli_rejects_bad_arguments(args, message, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main(["--models", "--size", "32", "--out", str(out), *args])
    assert e.value.code != 0
    assert message in capsys.readouterr().err
    assert not out.exists()  # errors come before any output


def test_cli_names_the_missing_shipped_weights(tmp_path, monkeypatch, capsys):
    import eapnet.checkpoint as ckpt_mod

    monkeypatch.setattr(ckpt_mod, "WEIGHTS_DIR", tmp_path / "weights")
    with pytest.raises(SystemExit) as e:
        main(["--models", "standard", "--heldout", "1", "--size", "32", "--out", str(tmp_path / "o")])
    assert e.value.code != 0
    err = capsys.readouterr().err
    assert str(tmp_path / "weights" / "standard.pt") in err and "missing" in err


def test_exr_codec_is_enabled_here_and_a_clear_error_otherwise(ckpt, tmp_path):
    require_exr()  # this process: enabled by importing eapnet.outputs
    env = {**os.environ, "OPENCV_IO_ENABLE_OPENEXR": "0"}  # an explicit "off" is respected...
    r = subprocess.run([sys.executable, "-m", "eapnet.evaluate", "--models", str(ckpt), "--heldout", "1",
                        "--size", "16", "--no-real-crops", "--out", str(tmp_path / "o")], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120, check=False)
    # ... and reported before any work, naming the fix
    assert r.returncode == 2 and "OPENCV_IO_ENABLE_OPENEXR=1" in r.stderr and "--no-save-outputs" in r.stderr
    assert not (tmp_path / "o").exists()


def test_teacher_outputs_run_the_teacher_once_per_scene():
    from eapnet.evalsets import TeacherOutputs, heldout_synthetic, materialise, score

    torch.manual_seed(0)
    teacher, student = eapnet.build_model("lightweight").eval(), eapnet.build_model("lightweight").eval()
    torch.nn.init.normal_(student.out.weight, std=0.005)
    calls = []
    teacher.register_forward_hook(lambda *a: calls.append(1))
    scenes = materialise(heldout_synthetic(2, 64))
    ref = TeacherOutputs(teacher)
    a = score(student, scenes, teacher=ref, dataset="h")
    b = score(student, scenes, teacher=ref, dataset="h")
    assert len(calls) == 2 and a == b
    # the same figure as with the module itself, and a student equal to its teacher scores inf against it
    assert score(student, scenes, teacher=teacher, dataset="h") == a and len(calls) == 4
    assert score(teacher, scenes, teacher=ref, dataset="h")["psnr_mu_vs_teacher"] > 90


def test_per_scene_scores_are_the_figures_the_means_are_of():
    from eapnet.evalsets import heldout_synthetic, materialise, score

    model = eapnet.build_model("lightweight").eval()
    scenes = materialise(heldout_synthetic(3, 48))
    s = score(model, scenes, dataset="h", per_scene=True)
    assert list(s["per_scene"]) == [sc.id for sc in scenes]
    for k in ("psnr_mu", "psnr_l"):
        assert s[k] == pytest.approx(np.mean([r[k] for r in s["per_scene"].values()]))
    out = np.maximum(predict(model, scenes[1].ldrs, scenes[1].evs), 0)
    assert s["per_scene"]["0001"]["psnr_mu"] == pytest.approx(psnr_mu(scenes[1].gt, out))
    assert {k: v for k, v in s.items() if k != "per_scene"} == score(model, scenes, dataset="h")
