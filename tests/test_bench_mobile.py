"""eapnet/bench/bench_mobile.py end to end on a tiny model: every runtime measured in its own process, ratios of its
own figures, .pte files reused while their source is unchanged, a report written. ``slow``: a dozen worker
processes and four XNNPACK lowerings, several minutes of CPU."""
import json

import pytest
import torch
from conftest import TINY
from torch import nn

from eapnet.checkpoint import save_checkpoint
from eapnet.model import EAPNet



@pytest.mark.slow
def test_bench_measures_every_runtime_and_reuses_artifacts(tmp_path):
    from eapnet.bench import bench_mobile

    torch.manual_seed(0)
    # half-resolution alignment: the tiny default (full alignment + multi-scale encoder) hits an int8 runtime
    # bug pinned by test_executorch_export.test_int8_multiscale_full_alignment_runs
    m = EAPNet(TINY.replace(align="half")).eval()
    nn.init.normal_(m.out.weight, std=0.05)
    save_checkpoint(tmp_path / "tiny.pt", m, step=0)
    out, arts = tmp_path / "report", tmp_path / "artifacts"
    argv = ["--models", str(tmp_path / "tiny.pt"), "--sizes", "32x48", "--runs", "2", "--threads", "1",
            "--artifacts", str(arts), "--out", str(out)]
    assert bench_mobile.main(argv) == 0
    (row,) = json.loads((out / "bench.json").read_text())["rows"]
    for rt in bench_mobile.RUNTIMES:
        r = row[rt]
        assert r["median_s"] > 0 and len(r["runs_s"]) == 2 and r["peak_rss_mb"] >= r["rss_before_mb"] > 0
    assert row["speedup_pte_int8"] == pytest.approx(row["eager fp32"]["median_s"] / row["pte int8"]["median_s"])
    # sizes are recorded (a tiny model's int8 file is the larger one: its quantization metadata outweighs weights)
    assert row["pte int8"]["file_mb"] > 0 and row["pte fp32"]["file_mb"] > 0
    assert "eager / pte int8" in (out / "bench.md").read_text()
    stamps = {p.name: p.stat().st_mtime_ns for p in arts.glob("*.pte")}
    assert len(stamps) == 2
    assert bench_mobile.main([*argv, "--overwrite", "--profile"]) == 0   # second run: the .pte files are reused
    assert {p.name: p.stat().st_mtime_ns for p in arts.glob("*.pte")} == stamps
    # --profile: both programs' ETDump profiles, and where each program's memory goes
    (row,) = json.loads((out / "bench.json").read_text())["rows"]
    for precision in ("fp32", "int8"):
        prof = row[f"profile {precision}"]
        assert prof["runs"] == 2 and prof["operator_ms"] > 0 and prof["table"]
        assert (prof["by_format_ms"]["int8"] > 0) == (precision == "int8")
        m = row[f"pte {precision}"]
        assert 0 < m["planned_mb"] < m["peak_rss_mb"]
    # the goal's ratio: both programs in one process, run in turns; the separate processes' ratio beside it
    pair = row["pte pair"]
    assert [p.split("_xnnpack_")[1] for p in pair["paths"]] == ["fp32_32x48.pte", "int8_32x48.pte"]
    assert [len(t) for t in pair["runs_s"]] == [2, 2] and len(pair["round_ratios"]) == 2
    assert row["int8_vs_fp32_pte"] == pytest.approx(pair["median_s"][0] / pair["median_s"][1])
    assert row["int8_vs_fp32_pte_apart"] == pytest.approx(row["pte fp32"]["median_s"] / row["pte int8"]["median_s"])
    md = (out / "bench.md").read_text()
    assert "## Where the time goes" in md and "## Where the memory goes" in md and "pte fp32 / int8" in md
    # --tile: the .pte files at the tile size run over the larger frame in overlapping tiles
    tiled_out = tmp_path / "tiled"
    assert bench_mobile.main(["--models", str(tmp_path / "tiny.pt"), "--sizes", "144x176", "--tile", "136",
                              "--runs", "1", "--threads", "1", "--artifacts", str(arts), "--out", str(tiled_out)]) == 0
    (row,) = json.loads((tiled_out / "bench.json").read_text())["rows"]
    assert row["tile"] == [136, 136] and row["tile_overlap"] == 64
    for rt in ("pte fp32 tiled", "pte int8 tiled"):
        assert row[rt]["median_s"] > 0 and row[rt]["peak_rss_mb"] > 0 and row[rt]["file_mb"] > 0
    assert {"tiny_xnnpack_fp32_136x136.pte", "tiny_xnnpack_int8_136x136.pte"} <= {p.name for p in arts.glob("*.pte")}
    assert "fp32 s: whole / tiled" in (tiled_out / "bench.md").read_text()


def test_bench_rejects_int8_without_a_single_model(capsys):
    from eapnet.bench import bench_mobile

    with pytest.raises(SystemExit):
        bench_mobile.main(["--int8", "x.pt2"])
    assert "exactly one --models" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench_mobile.main(["--tile", "100"])
    assert "--tile 100: must be a multiple of 8" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_mil_times_the_interpreter_against_eager(tmp_path, capsys):
    from eapnet.bench.bench_mil import main

    out = tmp_path / "mil"
    assert main(["--model", "lightweight", "--size", "32x48", "--runs", "1", "--precisions", "fp16",
                 "--out", str(out)]) == 0
    rows = json.loads((out / "bench.json").read_text())["rows"]
    assert [r["runtime"] for r in rows] == ["eager fp32 (PyTorch)", "MIL interpreter fp16"]
    assert all(r["median_s"] > 0 for r in rows) and rows[1]["ratio"] == rows[1]["median_s"] / rows[0]["median_s"]
    assert "x eager fp32" in (out / "bench.md").read_text()
