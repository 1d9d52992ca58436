"""Report pages (eapnet.jobs.report_page) built from run folders, rendered in headless Chromium (eapnet.browser):
every picture shows, no script fails, every plot has points; and the check finds each of those when broken."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from eapnet.browser import check_page, screenshot
from eapnet.export.parity import load_frame, save_frame
from eapnet.jobs.report_page import HEAT_MAX, crop_box, heat, run_frames, run_page, shipped_points, sweep_page

KEYS = (("pte-fp32", 1e-5), ("pte-int8", 0.02), ("coreml-fp16", 1e-3), ("coreml-w8a8", 0.03))


def _interval(mean, half, n=16):
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "n": n, "level": 0.95, "resolved": abs(mean) > half}


def _run_folder(run: Path, rng, shape=(120, 200)) -> dict:
    """A searched run's folder as the main job leaves it: report.json, parity.json and the kept frames (the
    artifacts' outputs the float model's with relative noise of the given size)."""
    frames = run / "parity" / "frames"
    frames.mkdir(parents=True)
    base = (rng.random((*shape, 3)) * 2).astype(np.float32)
    save_frame(frames / "float-x.fullres-0000.npy", base)
    arts, entries = {}, []
    for key, noise in KEYS:
        name = f"m_{key}.pte"
        save_frame(frames / f"{name}.fullres-0000.npy",
                   (base * (1 + noise * rng.standard_normal(base.shape))).astype(np.float32))
        arts[key] = {"file": f"export/{name}", "bytes": 4e5, "passed": key != "coreml-w8a8", "gt_margin": 0.2,
                     "psnr_mu_vs_float_min": 33.0, "failures": [] if key != "coreml-w8a8" else ["GT drop 0.6 dB"]}
        entries.append({"artifact": name, "stitched": {"tile": [64, 96], "overlap": 16, "frames": [
            {"dataset": "fullres", "id": "0000", "output": f"{name}.fullres-0000.npy",
             "float": "float-x.fullres-0000.npy"}]}})
    (run / "parity" / "parity.json").write_text(json.dumps({"artifacts": entries}))
    per = {f"{i:04d}": {"psnr_mu": 30.0 + 0.1 * i} for i in range(4)}
    scores = {"heldout_synthetic": {"psnr_mu": 30.1, "per_scene": per}}
    def models(offset):
        return {"scores": {"heldout_synthetic": {"psnr_mu": 30.1 + offset, "per_scene": {
            k: {"psnr_mu": v["psnr_mu"] + offset} for k, v in per.items()}}}}

    rep = {"config": {"name": "standard-100G"}, "target_maccs": 100e9, "resolution": list(shape),
           "command": "compress/qat.py --target-maccs 100G", "teacher_file": "eapnet/weights/standard.pt",
           "teacher_sha256": "ab" * 32, "commit": "c0ffee",
           "models": {"teacher (float)": {"maccs": 198e9, "params": 588e3, "scores": scores},
                      "compressed (float)": {"maccs": 99e9, "params": 400e3, **models(-0.2)},
                      "compressed (int8, xnnpack)": {"maccs": 99e9, "params": 400e3, **models(-0.9)},
                      "uniform (float)": {"maccs": 98e9, "params": 390e3, **models(-3.0)},
                      "shipped (int8, xnnpack, float: encoders.0)": {"maccs": 99e9, "params": 400e3,
                                                                     "program": "int8-xnnpack-fallback.pt2",
                                                                     **models(-0.4)}},
           "export": {"artifacts": arts},
           "fallback": {"pte-int8": {"why": "0.04 dB to spare", "program": "int8-xnnpack-fallback.pt2", "search": {"float_groups": ["encoders.0"],
                                                                            "drop_all_int8": 0.47, "drop": 0.32},
                                     "before": {"margin": 0.04, "bytes": 379276},
                                     "after": {"margin": 0.18, "bytes": 403212}, "latency": {"ratio": 1.03}}}}
    (run / "report.json").write_text(json.dumps(rep))
    return rep


def _sweep(out: Path) -> Path:
    rng = np.random.default_rng(0)
    rows, frames = [], {}
    for b in (150, 100):
        run = out / f"{b}G"
        _run_folder(run, rng)
        frames[run.name] = run_frames(run)
        for m, g in (("search", b - 1), ("uniform", b - 5), ("blocks", b - 20)):
            rows.append({"run": run.name if m == "search" else f"{b}G-{m}", "budget_g": b, "method": m, "gmaccs": g,
                         "k_params": 300, "pdubs": 3, "heldout_float_vs_teacher": _interval(-0.002 * (200 - b), 0.08),
                         "heldout_int8_eager_vs_teacher": _interval(-0.3, 0.1),
                         "real_float_vs_teacher": _interval(-0.2, 0.3, 4), "frame_ms_int8_tiled": 27 * b,
                         "frame_ms_fp32_tiled": 33 * b, "frame_tile": [568, 680], "parity": "pass"})
    return sweep_page(out, rows, {"file": "eapnet/weights/standard.pt", "sha256": "ab" * 32}, {"150G": "c0ffee"},
                      frames)


def test_sweep_page_renders_and_the_check_finds_what_is_broken(tmp_path):
    page = _sweep(tmp_path)
    res = check_page(page)
    # 2 budgets x (float crop, int8 crop, 4 heat maps) + the scale; accuracy vs MAccs (2 sets) and vs frame time
    assert res == {"problems": [], "images": 13, "plots": 3}
    html = page.read_text()
    assert "<script" not in html and not re.search(r'(src|href)="(https?:)?//', html)  # static, offline
    # a missing picture, a failing script and a plot whose series lost its points are each reported
    (tmp_path / "report_files" / "100G-pte-int8-error.jpg").unlink()
    start = html.index('<g id="series-real-')
    end = html.index("</svg>", start)
    first_plot = html.index("<svg")
    broken = html[:start] + html[start:end].replace("<use", "<x-use").replace("<path", "<x-path") + html[end:]
    broken = broken.replace("</body>", "<script>undefined_function()</script></body>")
    assert broken.index("<svg") == first_plot
    page.write_text(broken)
    problems = check_page(page)["problems"]
    assert any(p.startswith("failed to load: report_files/100G-pte-int8-error.jpg") for p in problems), problems
    assert any(p.startswith("image not shown: report_files/100G-pte-int8-error.jpg") for p in problems), problems
    assert any("script error" in p and "undefined_function" in p for p in problems), problems
    assert any(p.startswith("empty plot: number 2") for p in problems), problems
    assert len(problems) == 4, problems


def test_a_sweep_page_rebuilt_without_the_kept_frames_uses_the_recorded_pictures(tmp_path):
    _sweep(tmp_path)
    # rebuilt where the kept frames are not (a copy in reports/): the recorded pictures are used
    import shutil
    for b in ("150G", "100G"):
        shutil.rmtree(tmp_path / b / "parity" / "frames")
    rows = [{"run": f"{b}G", "budget_g": b, "method": "search", "gmaccs": b - 1, "parity": "pass",
             "heldout_float_vs_teacher": _interval(-0.1, 0.05)} for b in (150, 100)]
    page = sweep_page(tmp_path, rows, None)
    assert check_page(page) == {"problems": [], "images": 13, "plots": 1}
    (tmp_path / "report_files" / "100G-float.jpg").unlink()   # a picture lost: that budget shows none
    assert check_page(sweep_page(tmp_path, rows, None)) == {"problems": [], "images": 7, "plots": 1}


def test_run_page_shows_models_artifacts_fallback_and_frames(tmp_path):
    run = tmp_path / "run"
    rep = _run_folder(run, np.random.default_rng(1))
    page = run_page(run)
    assert check_page(page) == {"problems": [], "images": 7, "plots": 1}
    html = page.read_text()
    assert "FAIL: GT drop 0.6 dB" in html and "<code>encoders.0</code>" in html and "0.04 → 0.18 dB" in html
    assert "<b>-0.20 [-0.20, -0.20]</b>" in html     # the float model's change vs the teacher, resolved
    # the plot shows what ships: the float model and the fallback's int8 program (not the all-int8 QAT one,
    # not the uniform baseline), each with its own change
    (row,) = shipped_points(rep["models"], "int8-xnnpack-fallback.pt2")
    assert row["heldout_float_vs_teacher"]["mean"] == pytest.approx(-0.2)
    assert row["heldout_int8_eager_vs_teacher"]["mean"] == pytest.approx(-0.4)
    (qat,) = shipped_points(rep["models"], None)      # no fallback: the QAT program is what ships
    assert qat["heldout_int8_eager_vs_teacher"]["mean"] == pytest.approx(-0.9)
    shot = screenshot(page, tmp_path / "shot.png", width=900, height=1200)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_fallback_recheck_replaces_the_first_checks_frame(tmp_path):
    run = tmp_path / "run"
    _run_folder(run, np.random.default_rng(2))
    frames = run / "parity" / "frames"
    save_frame(frames / "m_pte-int8.pte.fullres-0000.fallback.npy", np.ones((120, 200, 3), np.float32))
    (run / "parity" / "parity-fallback.json").write_text(json.dumps({"artifacts": [{
        "artifact": "m_pte-int8.pte", "stitched": {"tile": [64, 96], "overlap": 16, "frames": [{
            "dataset": "fullres", "id": "0000", "output": "m_pte-int8.pte.fullres-0000.fallback.npy",
            "float": "float-x.fullres-0000.npy"}]}}]}))
    got = run_frames(run)
    assert sorted(got) == ["coreml-fp16", "coreml-w8a8", "pte-fp32", "pte-int8"]
    assert got["pte-int8"]["output"].name == "m_pte-int8.pte.fullres-0000.fallback.npy"
    assert (got["pte-fp32"]["dataset"], got["pte-fp32"]["id"], got["pte-fp32"]["tile"]) == ("fullres", "0000", [64, 96])


def test_crop_and_heat_scale():
    assert crop_box((1060, 1900)) == (600, 900, 760, 1240)      # the crowd below the stage, 1:1
    assert crop_box((120, 200)) == (0, 120, 0, 200) and crop_box((400, 1000)) == (50, 350, 260, 740)
    h = heat(np.array([[0.0, HEAT_MAX / 2, HEAT_MAX, 10 * HEAT_MAX]]))
    assert h.dtype == np.uint8 and h.shape == (1, 4, 3)
    assert h[0, 0].sum() < h[0, 1].sum() < h[0, 2].sum() and (h[0, 2] == h[0, 3]).all()   # clipped at the top


def test_kept_frames_are_checked_before_they_are_read(tmp_path):
    a = (np.random.default_rng(3).random((6, 8, 3)) * 100).astype(np.float32)
    save_frame(tmp_path / "f.npy", a)
    assert np.allclose(load_frame(tmp_path / "f.npy"), a, rtol=1e-3)
    np.save(tmp_path / "pickled.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    np.save(tmp_path / "gray.npy", np.zeros((6, 8), np.float16))
    (tmp_path / "short.npy").write_bytes((tmp_path / "f.npy").read_bytes()[:-10])
    with open(tmp_path / "huge.npy", "wb") as f:      # a header that claims 30 G values, and no data
        np.lib.format.write_array_header_1_0(f, {"descr": "<f2", "fortran_order": False,
                                                 "shape": (100_000, 100_000, 3)})
    (tmp_path / "text.npy").write_text("not a frame")
    for name, shape, order in (("negative", (-1, 4, 3), False), ("negatives", (-64, -64, 3), False),
                               ("fortran", (6, 8, 3), True)):
        with open(tmp_path / f"{name}.npy", "wb") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<f2", "fortran_order": order, "shape": shape})
            f.write(b"\0" * 6 * 8 * 3 * 2)
    (tmp_path / "long.npy").write_bytes(b"\x93NUMPY\x02\x00" + ((4 << 30) - 1).to_bytes(4, "little") + b"{}")
    for name, words in (("pickled", "got object"), ("gray", "(6, 8)"), ("short", "truncated"),
                        ("text", "not a .npy frame"), ("huge", "larger than"), ("negative", "positive sides"),
                        ("negatives", "positive sides"), ("fortran", "Fortran order"), ("long", "byte header"),
                        ("absent", "no such frame file")):
        with pytest.raises(ValueError, match=r"\.npy") as e:
            load_frame(tmp_path / f"{name}.npy")
        assert words in str(e.value) and f"{name}.npy" in str(e.value)


def test_full_size_frame_agreement_is_computed_once_and_recorded_per_teacher(tmp_path):
    from eapnet.jobs import budget_sweep
    from eapnet.metrics import psnr_mu

    run = tmp_path / "100G"
    _run_folder(run, np.random.default_rng(4))
    frames = run / "parity" / "frames"
    teacher = load_frame(frames / "float-x.fullres-0000.npy") * 1.01
    sha = "ab" * 32
    save_frame(tmp_path / "frames" / f"teacher-{sha[:12]}-64x96-o16.fullres-0000.npy", teacher)   # as cached
    (run / "report.html").write_text("<html><head></head><body></body></html>")
    state = {"teacher": {"file": "eapnet/weights/standard.pt", "sha256": sha}, "frames": {}}
    cols = budget_sweep._agreement_columns(run, state)
    want = psnr_mu(load_frame(tmp_path / "frames" / f"teacher-{sha[:12]}-64x96-o16.fullres-0000.npy"),
                   load_frame(frames / "float-x.fullres-0000.npy"))
    assert cols["fullres_float_vs_teacher"] == pytest.approx(want) and 30 < want < 60
    assert cols["fullres_pte_int8_vs_teacher"] < cols["fullres_float_vs_teacher"]
    assert sorted(state["frames"]["100G"]) == ["coreml-fp16", "coreml-w8a8", "pte-fp32", "pte-int8"]
    import shutil
    shutil.rmtree(frames)           # the record travels with the run's reports; the frames need not
    assert budget_sweep._agreement_columns(run, {"teacher": state["teacher"], "frames": {}}) == cols
    other = {"teacher": {"file": "eapnet/weights/standard.pt", "sha256": "cd" * 32}, "frames": {}}
    assert budget_sweep._agreement_columns(run, other) == {}   # another teacher's agreement is not reused
