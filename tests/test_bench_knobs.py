"""eapnet/bench/knobs.py: each probe variant computes what its docstring says (the fixed-kernel convs reproduce the
ops they replace), the swap is undone on exit, and (``slow``) every variant's int8 program lowers into one
XNNPACK subgraph and the probe times the programs that load."""
import json

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY
from torch import nn

import eapnet.model as M
from eapnet.bench import knobs
from eapnet.inference import example_inputs

HALF = TINY.replace(align="half", attention="half")   # the shipped variants' half-resolution gating


def _model(cfg=HALF):
    torch.manual_seed(0)
    m = M.EAPNet(cfg).eval()
    nn.init.normal_(m.out.weight, std=0.05)
    return m


def test_fixed_kernels_reproduce_the_ops_they_replace():
    x = torch.rand(1, 5, 12, 16)
    assert torch.allclose(knobs._pool_conv(x), F.avg_pool2d(x, 2), atol=1e-6)
    up = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
    # the transposed conv pads with zeros where bilinear clamps to the edge: equal one pixel in from the border
    assert torch.allclose(knobs._resize_conv(x)[..., 1:-1, 1:-1], up[..., 1:-1, 1:-1], atol=1e-6)
    assert not torch.allclose(knobs._resize_conv(x), up, atol=1e-3)
    assert torch.equal(knobs._nearest(x), F.interpolate(x, scale_factor=2.0, mode="nearest"))


def test_variants_change_only_what_they_name_and_are_undone():
    m, (ldrs, evs) = _model(), example_inputs((32, 48))
    saved = (M._up, M._conv_at, M.Attention.forward)
    with torch.no_grad():
        ref = m(ldrs, evs)
        outs = {}
        for v in knobs.VARIANTS:
            with knobs.patched(v):
                outs[v] = m(ldrs, evs)
            assert (M._up, M._conv_at, M.Attention.forward) == saved
    assert torch.equal(outs["base"], ref)
    assert torch.allclose(outs["pool-conv"], ref, atol=1e-5)       # the same values, other ops
    for v in ("hard-gate", "resize-conv", "nearest"):              # other values
        assert not torch.allclose(outs[v], ref, atol=1e-4), v
    with pytest.raises(ValueError, match="variant must be one of"):
        with knobs.patched("sigmoid"):
            pass


def test_cli_rejects_bad_arguments(capsys):
    from eapnet.bench import bench_knobs

    with pytest.raises(SystemExit) as e:
        bench_knobs.main(["--size", "100x96"])
    assert e.value.code == 2 and "multiples of 8" in capsys.readouterr().err


@pytest.mark.slow   # ten XNNPACK lowerings of a tiny model: several minutes on 2 cores
def test_every_variant_lowers_to_one_subgraph_and_is_timed(tmp_path):
    from eapnet.bench import bench_knobs
    from eapnet.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "tiny.pt", _model(), step=0)
    out = tmp_path / "report"
    argv = ["--model", str(tmp_path / "tiny.pt"), "--size", "32x48", "--runs", "2", "--threads", "1",
            "--artifacts", str(tmp_path / "arts"), "--out", str(out)]
    assert bench_knobs.main(argv) == 0
    rows = {r["variant"]: r for r in json.loads((out / "bench.json").read_text())["rows"]}
    for v in ("base", "hard-gate", "pool-conv", "resize-conv"):
        r = rows[v]
        assert r["fp32_s"] > 0 and r["int8_s"] > 0, v
        for prec in ("fp32", "int8"):
            d = r[f"{prec}_delegation"]
            assert d["delegated_subgraphs"] == 1 and d["non_delegated_nodes"] == 0, (v, prec)
    assert "| base |" in (out / "bench.md").read_text()
