"""The native bench's tile planner and its report (:mod:`mobile_export.native_bench`); the measurement itself is
``bench/bench_native.py`` (``reports/bench-native``), which needs exported full-size programs."""
import math

import pytest

from eapnet.inference import _starts
from mobile_export.native_bench import GOAL, plan_tile, report_markdown


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
    rows = [{"precision": "int8", "io": io, "frame": [1060, 1900], "overlap": 64,
             "whole": _fig(3000, 2400, **({"max_abs_vs_float": 0.0} if io == "app" else {})),
             "tiled": [{"tile": [568, 984], **_fig(ms, peak, tiles=4), "over_whole": ms / 3000,
                        "meets_goal": ms / 3000 <= GOAL["tiled_over_whole_per_pixel"] and peak <= GOAL["peak_mb"],
                        **({"max_abs_vs_float": 1.5e-7} if io == "app" else {})}]}
            for io, ms, peak in (("float", 3600, 700), ("app", 4200, 700))]
    md = report_markdown(rows, "m", 3, None, "cpu")
    assert "max diff vs float" in md and "| 1.5e-07 |" in md
    assert "met by 1 of 2 int8 tile plans" in md
    assert "1900x1060 float with 568x984 tiles (1.20x, 700 MB, meets it)" in md
    assert "1900x1060 app with 568x984 tiles (1.40x, 700 MB)" in md
    # one io: no comparison column
    assert "max diff" not in report_markdown(rows[:1], "m", 3, None, "cpu")
