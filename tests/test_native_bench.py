"""The native bench's tile planner and its report (:mod:`eapnet.export.native_bench`); the measurement itself is
``eapnet/bench/bench_native.py`` (``reports/bench-native``), which needs exported full-size programs."""
import math
from pathlib import Path

import numpy as np
import pytest

from eapnet.export import native_bench
from eapnet.export.native_bench import bench_native, report_markdown
from eapnet.inference import TILE_OVERLAP, _starts, plan_tile, ship_tile
from eapnet.macs import FRAME_SIZE


def test_the_shipped_tile_is_the_plan_for_the_challenge_frame():
    # the tile the README, the docs and reports/main-job name: six 568x680 tiles over 1060x1900
    assert ship_tile(FRAME_SIZE) == plan_tile(FRAME_SIZE, 680, TILE_OVERLAP) == (568, 680)
    assert ship_tile((256, 384)) == (256, 384)
    assert [len(_starts(n, t, TILE_OVERLAP)) for n, t in zip(FRAME_SIZE, (568, 680))] == [2, 3]


@pytest.mark.parametrize("frame", [(1060, 1900), (3024, 4032), (1080, 1920), (300, 5000), (64, 64)])
@pytest.mark.parametrize("max_tile", [256, 512, 1024])
def test_plan_tile_is_the_fewest_even_tiles(frame, max_tile):
    overlap = 64
    tile = plan_tile(frame, max_tile, overlap)
    for n, side in zip(frame, tile):
        assert side <= n
        if n <= max_tile:
            assert side == n
            continue
        fewest = math.ceil((n - overlap) / (max_tile - overlap))
        assert side % 8 == 0 and side <= max_tile + 7
        # the predict tiler covers the side with exactly that many tiles, so no tile is wasted
        assert len(_starts(n, side, overlap)) == fewest
        # and one tile fewer of at most max_tile pixels cannot cover it
        assert (fewest - 1) * (max_tile - overlap) + overlap < n


def _fig(ms, peak, **kw):
    return {"median_ms": ms, "peak_rss_mb": peak, "file_mb": 0.4, "tiles": 1, **kw}


def test_report_states_the_goal_per_int8_tile_plan():
    # rows as bench_native writes them, without the verdict: the report judges each plan against GOAL itself
    rows = [{"precision": "int8", "io": io, "frame": [1060, 1900], "overlap": 64,
             "whole": _fig(3000, 2400, **({"max_abs_vs_float": 0.0} if io == "app" else {})),
             "tiled": [{"tile": [568, 984], **_fig(ms, peak, tiles=4), "over_whole": ms / 3000,
                        **({"max_abs_vs_float": 1.5e-7} if io == "app" else {})}]}
            for io, ms, peak in (("float", 3600, 700), ("app", 3600, 1100))]
    md = report_markdown(rows, "m", 3, None, "cpu")
    assert "max diff vs float" in md and "| 1.5e-07 |" in md
    assert "met by 1 of 2 int8 tile plans" in md
    assert "1900x1060 float with 568x984 tiles (1.20x, 700 MB, meets it)" in md
    assert "1900x1060 app with 568x984 tiles (1.20x, 1100 MB)" in md      # over the memory goal
    rows[0]["tiled"][0]["over_whole"] = 1.31                                  # over the time goal
    assert "met by 0 of 2" in report_markdown(rows, "m", 3, None, "cpu")
    # one io: no comparison column
    assert "max diff" not in report_markdown(rows[:1], "m", 3, None, "cpu")


def test_bench_pairs_conventions_and_scales_frames_it_cannot_run_whole(monkeypatch, tmp_path):
    # the runner and the exporter faked: an app program's output differs from the float one's by 0.5 on the
    # 8x8 frame's whole program only; time is 1 ms per program pixel per tile, plus 10 ms per tile
    exported = []

    def fake_pte(model, precision, size, folder, int8, log, io="float"):
        exported.append((precision, tuple(size), io))
        path = tmp_path / f"{precision}_{io}_{size[0]}x{size[1]}.pte"
        path.write_bytes(b"x" * 10)
        return path

    def fake_measure(pte, ldrs, evs, repeat, threads, overlap):
        precision, io, size = Path(pte).stem.split("_")
        h, w = map(int, size.split("x"))
        frame = ldrs.shape[1:3]
        tiles = len(_starts(frame[0], h, overlap)) * len(_starts(frame[1], w, overlap))
        hdr = np.zeros((*frame, 3), np.float32) + (0.5 if io == "app" and (h, w) == (8, 8) else 0)
        return hdr, {"median_ms": tiles * (h * w + 10), "peak_rss_mb": h * w, "tiles": tiles, "file_mb": 1e-5}

    monkeypatch.setattr(native_bench, "_frames",
                        lambda size: (np.zeros((3, *size, 3), np.uint8), np.array([-2, 0, 2], np.float32)))
    monkeypatch.setattr(native_bench, "cached_pte", fake_pte)
    monkeypatch.setattr(native_bench, "_measure", fake_measure)
    rows = bench_native("m", [(20, 20), (8, 8)], precisions=("int8",), ios=("float", "app"), max_tiles=(12,),
                        overlap=4, whole_max_pixels=64, log=lambda _m: None)
    # smaller frame first; one row per io; the 20x20 frame (above whole_max_pixels) has no whole program
    assert [(r["frame"], r["io"]) for r in rows] == [([8, 8], "float"), ([8, 8], "app"),
                                                     ([20, 20], "float"), ([20, 20], "app")]
    assert (("int8", (20, 20), "float")) not in exported and ("int8", (8, 8), "app") in exported
    assert rows[1]["whole"]["max_abs_vs_float"] == 0.5 and "max_abs_vs_float" not in rows[0]["whole"]
    big = rows[2]
    assert big["whole"] == {"median_ms": (64 + 10) / 64 * 400, "scaled_from": [8, 8]}
    (t,) = big["tiled"]
    # two tiles a side of at most 12 + 4 shared pixels: 12, rounded up to EAPNet's padding multiple, 16
    assert t["tile"] == [16, 16] and t["tiles"] == 4 and t["median_ms"] == 4 * (256 + 10)
    assert t["over_whole"] == pytest.approx(4 * 266 / (74 / 64 * 400)) and rows[3]["tiled"][0]["max_abs_vs_float"] == 0
