"""Compression: budget parsing, block dropping, channel pruning round trips, sensitivity and budget search."""
from pathlib import Path

import pytest
import torch
from torch import nn

from eapnet.compress.prune import (
    PruneError,
    drop_blocks,
    get_width,
    prune_to,
    set_width,
    width_knobs,
)
from eapnet.jobs.qat import parse_args
from eapnet.compress.search import (
    BudgetError,
    config_maccs,
    damage_fn,
    greedy_search,
    minimum_config,
    sensitivity,
    uniform_config,
)
from eapnet import EAPNetConfig, count_maccs
from eapnet.macs import format_maccs
from eapnet.checkpoint import load_model, save_checkpoint
from eapnet.data import SHARED_SAMPLES as SHARED
from eapnet.model import EAPNet

# Small enough for milliseconds, wide enough (multiples of 8 above the floor) for every knob to be prunable.
SMALL = EAPNetConfig(name="small", num_blocks=3, pdub_widths=((24, 16, 24),) * 3, enc_channels=16,
                     feat_channels=24, tail_channels=16, align="half", attention="half", upsample="conv",
                     base="merge")
RES = (64, 96)  # MAccs counted at this size in these tests


def _model(cfg=SMALL, seed=0) -> EAPNet:
    torch.manual_seed(seed)
    m = EAPNet(cfg).eval()
    with torch.no_grad():
        for p in m.parameters():  # trained-looking weights (the output conv starts at zero)
            p.normal_(0, 0.2)
    return m


def _inputs(b=2, h=32, w=40, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, 3, h, w, generator=g), torch.tensor([[-2.0, 0.0, 2.0]] * b)


# ------------------------------------------------------------------------------------------ arguments


@pytest.mark.parametrize("text,value", [("100G", 100 * 10**9), ("1.5e11", 150 * 10**9),
                                        ("150000M", 150 * 10**9)])
def test_target_maccs_parses(text, value):
    assert parse_args(["--target-maccs", text])[1].target_maccs == value


@pytest.mark.parametrize("text", ["lots", "-5G", "0", "100X", ""])
def test_bad_target_maccs_fails_clearly(text, capsys):
    with pytest.raises(SystemExit):
        parse_args([f"--target-maccs={text}"])
    err = capsys.readouterr().err
    assert "--target-maccs" in err and "MAcc budget" in err


def test_other_bad_arguments_name_the_problem(capsys, tmp_path):
    for argv, needle in [(["--patch", "30"], "--patch"), (["--steps", "1", "2", "3"], "--steps"),
                         (["--data", str(tmp_path / "nope")], "no such folder"),
                         (["--distill-weight", "2"], "--distill-weight"), (["--size", "big"], "HxW"),
                         (["--importance", "random"], "--importance"), (["--config", str(tmp_path / "c.yaml")], "--config"),
                         (["--tile", "100"], "--tile 100: must be a multiple of 8"), (["--tile", "8"], "--tile"),
                         (["--tile", "64", "--tile-overlap", "32"], "--tile-overlap 32: must be below half")]:
        with pytest.raises(SystemExit):
            parse_args(["--target-maccs", "100G", *argv])
        assert needle in capsys.readouterr().err
    assert parse_args(["--target-maccs", "1G", "--steps", "7"])[1].steps == (7, 7)
    (tmp_path / "c.yaml").write_text("lr: 0.001\npatch: 64\n")
    _, cfg = parse_args(["--target-maccs", "1G", "--config", str(tmp_path / "c.yaml"), "--patch", "32"])
    assert (cfg.lr, cfg.patch, cfg.model) == (0.001, 32, "standard")  # YAML, then flags, over the defaults


# ------------------------------------------------------------------------------------------ pruning


def test_pruning_nothing_gives_identical_outputs():
    m = _model()
    x = _inputs()
    with torch.no_grad():
        ref = m(*x)
        assert torch.equal(prune_to(m, SMALL)(*x), ref)
        assert torch.equal(drop_blocks(m, [0, 1, 2])(*x), ref)
        for imp in ("magnitude",):
            assert torch.equal(prune_to(m, SMALL, imp)(*x), ref)


def test_prune_to_reaches_the_target_config_and_keeps_the_most_important_channels():
    m = _model()
    target = set_width(set_width(SMALL, "pdub.1.w1", 8), "enc_channels", 8)
    # Make channels 3, 5, 7, 9, ... of block 1's first encoder level clearly the strongest.
    strong = [3, 5, 7, 9, 11, 13, 15, 17]
    with torch.no_grad():
        m.blocks[1].enc1.pw.weight.mul_(0.01)
        m.blocks[1].enc1.pw.weight[strong] *= 1000
    p = prune_to(m, target, "magnitude")
    assert isinstance(p, EAPNet) and p.config == target
    assert p.blocks[1].enc1.pw.weight.shape[0] == 8
    torch.testing.assert_close(p.blocks[1].enc1.pw.weight, m.blocks[1].enc1.pw.weight[strong])
    with torch.no_grad():
        y = p(*_inputs())
    assert y.shape == (2, 3, 32, 40) and torch.isfinite(y).all()
    assert count_maccs(p, *RES) == config_maccs(target, *RES) < count_maccs(m, *RES)


def test_config_maccs_reuses_a_structure_and_stays_the_one_counters_count():
    """config_maccs counts a config from the per-module factors of another with the same structure; widths
    that add or remove a layer (bilinear Up2's 1x1 conv appears only when its widths differ) and other
    structures must still give count_maccs' figure exactly."""
    import random

    from eapnet.model import STANDARD

    rng = random.Random(0)
    bases = [SMALL, SMALL.replace(upsample="bilinear", align="full", attention="full"),
             STANDARD.replace(num_blocks=2, pdub_widths=STANDARD.pdub_widths[:2]), STANDARD]
    for base in bases:
        for _ in range(4):
            widths = tuple(tuple(rng.choice((8, 16, 24)) for _ in range(3)) for _ in range(base.num_blocks))
            cfg = base.replace(pdub_widths=widths, feat_channels=rng.choice((8, 16, 24)),
                               enc_channels=rng.choice((8, 16)), tail_channels=rng.choice((8, 16)))
            for h, w in (RES, (37, 53)):
                assert config_maccs(cfg, h, w) == count_maccs(EAPNet(cfg), h, w), (cfg, h, w)


def test_frozen_weights_prune_like_trainable_ones():
    # a teacher has requires_grad=False; DepGraph traces autograd, so this once left layers unpruned
    m = _model()
    target = set_width(SMALL, "enc_channels", 8)
    a = prune_to(m, target)
    for p in m.parameters():
        p.requires_grad_(False)
    b = prune_to(m, target)
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())


def test_taylor_importance_prunes_and_needs_calibration():
    m = _model()
    target = set_width(SMALL, "pdub.0.w2", 8)
    with pytest.raises(PruneError, match="calibration"):
        prune_to(m, target, "taylor")
    ldrs, evs = _inputs()
    p = prune_to(m, target, "taylor", [(ldrs, evs, torch.rand(2, 3, 32, 40))])
    assert p.config == target and all(q.grad is None for q in m.parameters())


def test_prune_to_refuses_widening_and_structural_changes():
    m = _model()
    with pytest.raises(PruneError, match="exceeds"):
        prune_to(m, set_width(SMALL, "tail_channels", 32))
    with pytest.raises(PruneError, match="align"):
        prune_to(m, SMALL.replace(align="full"))
    with pytest.raises(PruneError, match="unknown width knob"):
        get_width(SMALL, "pdub.9.w1")


def test_drop_blocks_removes_a_block_and_its_fusion_columns():
    m = _model()
    d = drop_blocks(m, [0, 2])
    assert d.config.num_blocks == 2 and d.config.pdub_widths == (SMALL.pdub_widths[0], SMALL.pdub_widths[2])
    torch.testing.assert_close(d.blocks[1].enc1.pw.weight, m.blocks[2].enc1.pw.weight)
    F = SMALL.feat_channels
    torch.testing.assert_close(d.gff[0].weight, torch.cat([m.gff[0].weight[:, :F], m.gff[0].weight[:, 2 * F:]], 1))
    with pytest.raises(PruneError, match="increasing"):
        drop_blocks(m, [2, 0])


def test_a_pruned_checkpoint_rebuilds_from_its_config_alone(tmp_path):
    m = _model()
    target = set_width(set_width(SMALL, "pdub.2.w3", 8), "tail_channels", 8)
    p = prune_to(drop_blocks(m, [0, 2]), target.replace(num_blocks=2, pdub_widths=target.pdub_widths[:2]))
    save_checkpoint(tmp_path / "p.pt", p)
    q = load_model(tmp_path / "p.pt")
    assert q.config == p.config
    with torch.no_grad():
        assert torch.equal(q(*_inputs()), p(*_inputs()))


def test_width_knobs_cover_every_config_width():
    knobs = width_knobs(SMALL)
    assert len(knobs) == 3 + 3 * SMALL.num_blocks
    cfg = SMALL
    for i, k in enumerate(knobs):
        cfg = set_width(cfg, k, 8 + i)
    assert [get_width(cfg, k) for k in knobs] == [8 + i for i in range(len(knobs))]


# ------------------------------------------------------------------------------------------ search


@pytest.fixture(scope="module")
def sens():
    m = _model()
    return m, sensitivity(m, [_inputs(2, 32, 32)], progress=False)


def test_sensitivity_is_zero_unpruned_and_positive_when_pruned(sens):
    m, s = sens
    for knob in width_knobs(SMALL):
        pts = s.widths[knob]
        assert pts[get_width(SMALL, knob)] == 0.0
        assert all(d > 0 for w, d in pts.items() if w < get_width(SMALL, knob))
    assert set(s.blocks) == {0, 1, 2} and all(d > 0 for d in s.blocks.values())
    # the damage of the measured point is what damage_fn says of that pruned model
    f = damage_fn(m, [_inputs(2, 32, 32)])
    w = min(s.widths["feat_channels"])
    assert f(prune_to(m, set_width(SMALL, "feat_channels", w))) == pytest.approx(s.widths["feat_channels"][w])


def test_greedy_search_meets_the_budget_and_beats_uniform_scaling(sens):
    m, s = sens
    full = config_maccs(SMALL, *RES)
    target = int(full * 0.6)
    res = greedy_search(s, target, height=RES[0], width=RES[1])
    assert res.maccs <= target and res.steps
    kept = drop_blocks(m, res.kept_blocks)
    p = prune_to(kept, res.config)
    assert count_maccs(p, *RES) == res.maccs
    uni, scale = uniform_config(SMALL, target, height=RES[0], width=RES[1])
    assert config_maccs(uni, *RES) <= target and 0 < scale < 1
    f = damage_fn(m, [_inputs(2, 32, 32)])
    # the search exists to lose less than uniform scaling at the same budget (zero-shot, same data)
    assert f(p) < f(prune_to(m, uni))


def test_an_unreachable_budget_names_the_minimum(sens):
    _, s = sens
    floor = config_maccs(minimum_config(SMALL), *RES)
    with pytest.raises(BudgetError, match="below the smallest network") as e:
        greedy_search(s, floor - 1, height=RES[0], width=RES[1])
    assert format_maccs(floor) in str(e.value)
    assert greedy_search(s, floor, height=RES[0], width=RES[1]).maccs <= floor


def test_a_budget_above_the_model_needs_no_moves(sens):
    _, s = sens
    res = greedy_search(s, config_maccs(SMALL, *RES), height=RES[0], width=RES[1])
    assert res.config == SMALL and res.steps == []


def test_candidate_searches_fix_each_block_count_and_the_pipeline_keeps_the_least_measured_damage(sens):
    from eapnet.compress.search import candidate_searches

    m, s = sens
    target = int(config_maccs(SMALL, *RES) * 0.5)
    cands = candidate_searches(s, target, height=RES[0], width=RES[1])
    free = greedy_search(s, target, height=RES[0], width=RES[1])
    assert cands[0].config == free.config                      # the free search first
    assert all(c.maccs <= target for c in cands) and len({c.config for c in cands}) == len(cands)
    order = sorted(range(3), key=lambda j: -s.blocks[j])      # the PDUBs whose removal alone hurts most stay
    counts = {len(c.kept_blocks): c for c in cands[1:]}
    assert counts and all(c.kept_blocks == sorted(order[:k]) for k, c in counts.items())
    for c in cands[1:]:
        assert not any(st["move"].startswith("drop ") for st in c.steps)
    with pytest.raises(ValueError, match="PDUB indices"):
        greedy_search(s, target, height=RES[0], width=RES[1], keep=[5])
    # the pipeline measures every candidate and keeps the one that damages least
    _, st = _method_stage("search", target)
    tried = st["search"]["candidates"]
    assert len(tried) == len(cands) and sum(c["chosen"] for c in tried) == 1
    chosen = next(c for c in tried if c["chosen"])
    assert chosen["zero_shot_damage"] == min(c["zero_shot_damage"] for c in tried) == st["search"]["zero_shot_damage"]
    assert chosen["kept_blocks"] == st["search"]["kept_blocks"]


def _method_stage(method, target, **kw):
    from eapnet.compress.pipeline import CompressConfig, search_and_prune

    from eapnet.data.synthetic import generate_scene
    from eapnet.data import Scene

    m = _model()
    cfg = CompressConfig.load(target_maccs=target, method=method, size=list(RES), calib_scenes=2, **kw)
    calib = [Scene(f"{i}", *generate_scene(i, 32, 32)) for i in range(2)]
    return m, search_and_prune(m, cfg, calib, progress=False)


def test_the_baseline_methods_meet_the_budget_their_own_way():
    full = config_maccs(SMALL, *RES)
    # uniform: the bisected width scale, every PDUB kept, the magnitude-pruned weights
    target = int(full * 0.6)
    m, st = _method_stage("uniform", target)
    uni, scale = uniform_config(SMALL, target, height=RES[0], width=RES[1])
    assert st["model"].config.replace(name="x") == uni.replace(name="x") and st["model"].config.name == "small-" \
        f"{target / 1e9:g}G"
    assert st["search"]["method"] == "uniform" and st["search"]["width_scale"] == scale
    assert count_maccs(st["model"], *RES) <= target
    # blocks: every width kept, as many PDUBs as fit, and the ones whose removal hurts most stay
    two = config_maccs(SMALL.replace(num_blocks=2, pdub_widths=SMALL.pdub_widths[:2]), *RES)
    m, st = _method_stage("blocks", two)
    s = st["search"]
    assert st["model"].config.num_blocks == 2 and st["model"].config.feat_channels == SMALL.feat_channels
    dropped = ({0, 1, 2} - set(s["kept_blocks"])).pop()
    assert s["block_damage"][str(dropped)] == min(s["block_damage"].values())
    ldrs, evs = _inputs(1, 24, 40)
    with torch.no_grad():
        assert torch.equal(st["model"](ldrs, evs), drop_blocks(m, s["kept_blocks"])(ldrs, evs))
    with pytest.raises(BudgetError, match="one PDUB at full width"):
        _method_stage("blocks", int(full * 0.3))


def test_blocks_config_counts_the_blocks_it_keeps():
    from eapnet.compress.search import blocks_config

    # a wide block 0 and two narrow ones: which blocks fit depends on which are kept
    cfg = SMALL.replace(pdub_widths=((24, 16, 24), (8, 8, 8), (8, 8, 8)))
    one = {j: config_maccs(cfg.replace(num_blocks=1, pdub_widths=(cfg.pdub_widths[j],)), *RES) for j in range(3)}
    two_narrow = config_maccs(cfg.replace(num_blocks=2, pdub_widths=cfg.pdub_widths[1:]), *RES)
    assert two_narrow <= one[0]   # the budget of block 0 alone holds the two narrow blocks
    assert blocks_config(cfg, one[0], [1, 2, 0], height=RES[0], width=RES[1]) == [1, 2]
    assert blocks_config(cfg, one[0], [0, 1, 2], height=RES[0], width=RES[1]) == [0]  # 0 and 1: over budget
    assert blocks_config(cfg, one[1], height=RES[0], width=RES[1]) == [1]  # default: the cheapest first
    with pytest.raises(BudgetError, match="one PDUB at full width"):
        blocks_config(cfg, one[1] - 1, height=RES[0], width=RES[1])


def test_compare_uniform_needs_the_search():
    from eapnet.compress.pipeline import CompressConfig

    with pytest.raises(ValueError, match="compare_uniform: .*needs method search"):
        CompressConfig.load(target_maccs=1e9, method="uniform", compare_uniform=True)
    with pytest.raises(ValueError, match="method: must be one of"):
        CompressConfig.load(target_maccs=1e9, method="random")


# ------------------------------------------------------------------------------------------ the CLI


def _small_checkpoint(tmp_path):
    path = tmp_path / "small.pt"
    save_checkpoint(path, _model())
    return path


def _qat_run(tmp_path, *extra):
    from eapnet.jobs.qat import main

    out = tmp_path / "run"
    target = int(config_maccs(SMALL, *RES) * 0.7)
    rc = main(["--target-maccs", str(target), "--model", str(_small_checkpoint(tmp_path)), "--size",
               f"{RES[0]}x{RES[1]}", "--steps", "2", "2", "--calib-scenes", "2", "--heldout", "2", "--patch", "32",
               "--batch-size", "2", "--export-size", "48x64", "--parity-scenes", "1", "--out", str(out), "--quiet",
               *extra])
    return rc, out


def _fake_export_and_check(calls):
    """Stands in for ``eapnet.export.pipeline.export_and_check``: records its call, writes one artifact file and
    returns the summary shape the main job's report holds (one passing int8 .pte)."""
    def fake(run_dir, *, size, parity_scenes, which, tile, tile_overlap, runners, progress, log):
        calls.append({"run_dir": Path(run_dir), "size": size, "which": which, "tile": tile, "runners": runners,
                      "parity_scenes": parity_scenes, "compressed": (Path(run_dir) / "compressed.pt").is_file(),
                      "int8": (Path(run_dir) / "int8.pt2").is_file()})
        (Path(run_dir) / "export").mkdir()
        (Path(run_dir) / "export" / "x_xnnpack_int8_48x64.pte").write_bytes(b"program")
        art = {"file": "export/x_xnnpack_int8_48x64.pte", "bytes": 7, "executor": "fake", "passed": True,
               "psnr_mu_vs_float_min": 40.0, "psnr_mu": {"heldout": 20.0}, "float_psnr_mu": {"heldout": 20.1},
               "export_peak_rss_mb": 700, "precision": "int8", "gt_margin": 0.4}
        return ({"size": list(size), "passed": True, "failed": [], "artifacts": {"pte-int8": art},
                 "parity_peak_rss_mb": 900}, {"export": 1.0})
    return fake


def test_the_main_job_compresses_then_ships_with_a_fake_exporter(tmp_path, monkeypatch):
    """The main job's logic (compress into the run folder, then export and check what it wrote, then one report)
    on a small model, with the exporter faked: the real one is the slow end-to-end test below."""
    import json

    from eapnet.compress.quantize import load_quantized
    from eapnet.jobs import main_job

    calls = []
    monkeypatch.setattr(main_job, "export_and_check", _fake_export_and_check(calls))
    target = int(config_maccs(SMALL, *RES) * 0.7)
    rc, out = _qat_run(tmp_path, "--artifacts", "pte-int8")
    assert rc == 0
    # the exporter ran once, after compression had written both models, with the flags as given
    assert len(calls) == 1 and calls[0]["compressed"] and calls[0]["int8"]
    assert calls[0]["size"] == (48, 64) and calls[0]["which"] == ("pte-int8",) and calls[0]["parity_scenes"] == 1
    assert calls[0]["tile"] is None and calls[0]["runners"] == ()
    rep = json.loads((out / "report.json").read_text())
    assert rep["export"]["passed"] and list(rep["export"]["artifacts"]) == ["pte-int8"]
    assert rep["wall_s"]["export"] == 1.0 and set(rep["wall_s"]) >= {"search+prune", "finetune", "qat", "total"}
    # peak resident memory per stage: compression measured in this process, export and parity as reported
    assert rep["peak_rss_mb"]["export"] == 700 and rep["peak_rss_mb"]["parity"] == 900
    assert rep["fallback"] == {}        # 0.1 dB lost against ground truth: 0.4 of the 0.5 budget spare
    assert 100 < rep["peak_rss_mb"]["compress"] < 24_000
    md = (out / "report.md").read_text()
    assert "## Phone artifacts (64x48) and parity" in md and "`export/x_xnnpack_int8_48x64.pte`" in md
    assert "Peak resident memory per stage (MB; " in md and "export 700, parity 900" in md
    # the report's MAccs are the one counter's, at the requested resolution, and within the budget
    student = load_model(out / "compressed.pt")
    assert count_maccs(student, *RES) == rep["models"]["compressed (float)"]["maccs"] <= target
    assert rep["models"]["teacher (float)"]["maccs"] == config_maccs(SMALL, *RES)
    assert rep["pdub_count"] == student.config.num_blocks and rep["config"] == student.config.to_dict()
    for name in ("teacher (float)", "compressed (float)", "compressed (int8, xnnpack)"):
        assert rep["models"][name]["scores"]["heldout_synthetic"]["psnr_mu"] > 0
    # the fine-tune's held-out curve: a probe after step 1, then the fine-tuned model's report row
    assert [c["step"] for c in rep["finetune_curve"]["compressed"]] == [1, 2]
    run = json.loads((out / "run.json").read_text())
    assert run["args"]["target_maccs"] == target and "torch" in run["versions"]
    int8, meta = load_quantized(out / "int8.pt2")
    assert meta["maccs"] == rep["models"]["compressed (float)"]["maccs"]
    ldrs, evs = _inputs(1, 24, 40)
    with torch.no_grad():
        assert int8(ldrs, evs).shape == (1, 3, 24, 40)


def test_an_int8_artifact_short_of_its_margin_calls_for_the_fallback():
    from eapnet.export.parity import THRESHOLDS, gt_margin
    from eapnet.jobs.main_job import needs_fallback

    # parity's margin: the budget left on the worst dataset (calib: 0.3 of int8's 0.5 dB lost)
    summary = {"calib": {"gt_drop": 0.3}, "heldout": {"gt_drop": 0.1}, "fullres": {"scenes": 1}}
    assert gt_margin(summary, THRESHOLDS["int8"]) == pytest.approx(0.2)
    assert gt_margin({"fullres": {"scenes": 1}}, THRESHOLDS["int8"]) is None and gt_margin(summary, None) is None
    row = lambda margin, ok=True, precision="int8": {"precision": precision, "passed": ok,  # noqa: E731
                                                     "gt_margin": margin}
    assert needs_fallback(row(0.2)) is None and needs_fallback(row(None)) is None
    assert "0.040 dB of its ground-truth budget to spare" in needs_fallback(row(0.04))
    assert needs_fallback(row(0.2, ok=False)) == "it failed parity"
    assert needs_fallback(row(0.0, precision="fp32")) is None and needs_fallback(row(0.0, False, "fp16")) is None
    assert "to spare" in needs_fallback(row(0.04, precision="w8a8"))


def test_a_failing_artifact_fails_the_main_job(tmp_path, monkeypatch):
    # compression and export both faked: the job's verdict, report and exit status follow the parity summary
    from eapnet.compress.pipeline import CompressResult
    from eapnet.jobs import main_job

    def fake_compress(cfg, out_dir, **kw):
        save_checkpoint(Path(out_dir) / "compressed.pt", _model())
        (Path(out_dir) / "int8.pt2").write_bytes(b"program")
        row = {"maccs": 1e9, "params": 1e3, "scores": {"heldout_synthetic": {"psnr_mu": 20.0, "psnr_l": 30.0}}}
        return CompressResult(_model(), {"target_maccs": 1e9, "resolution": list(RES), "device": "cpu",
                                         "datasets": ["heldout_synthetic"], "models": {"compressed (float)": row},
                                         "wall_s": {"compress": 2.0}})

    calls = []
    fake = _fake_export_and_check(calls)

    def failing(run_dir, **kw):
        summary, wall = fake(run_dir, **kw)
        summary["artifacts"]["pte-int8"]["passed"] = summary["passed"] = False
        summary["failed"] = ["pte-int8"]
        return summary, wall

    rescued = []

    def no_rescue(run_dir, export, **kw):   # the fallback is tried on the failing artifact and finds no cure
        rescued.append([k for k, row in export["artifacts"].items() if main_job.needs_fallback(row)])
        return {}

    monkeypatch.setattr(main_job, "compress", fake_compress)
    monkeypatch.setattr(main_job, "export_and_check", failing)
    monkeypatch.setattr(main_job, "fallback_artifacts", no_rescue)
    rc, out = _qat_run(tmp_path, "--artifacts", "pte-int8")
    assert rc == 1 and len(calls) == 1 and calls[0]["compressed"] and calls[0]["int8"]
    assert rescued == [["pte-int8"]]
    md = (out / "report.md").read_text()
    assert "| `export/x_xnnpack_int8_48x64.pte` | 0.00 | fake | 40.00 | heldout 20.00 / 20.10 | **FAIL** |" in md
    rep = __import__("json").loads((out / "report.json").read_text())
    assert rep["export"]["failed"] == ["pte-int8"] and rep["wall_s"]["total"] >= 0


def test_a_fallback_over_the_latency_goal_keeps_the_fastest_set_that_meets_the_target(tmp_path, monkeypatch):
    from eapnet.compress.fallback import Fallback
    from eapnet.jobs import main_job

    # the fewest groups (a, b) cost x1.3; without a the search finds (b, c) at x1.05, without b (a, d) at x1.2
    sets = {(): ("a", "b"), ("a",): ("b", "c"), ("b",): ("a", "d")}
    ratios = {("a", "b"): 1.3, ("b", "c"): 1.05, ("a", "d"): 1.2}
    searched, exported, timed = [], [], []

    def fake_search(model, backend, batches, scenes, *, target, groups=None, memo=None, sensitivity=None, **kw):
        left_out = tuple(g for g in "abcd" if groups is not None and g not in groups)
        searched.append(left_out)
        assert memo is not None and (sensitivity is None) == (left_out == ())
        keep = sets[left_out]
        return Fallback(backend, target, keep, 0.6, 0.3, True, {g: 0.5 for g in "abcd"}, 1.0), keep

    def fake_export(ckpt, program, folder, *, size, which, **kw):   # the artifact of the program as it is now
        pte = Path(folder) / "x.pte"
        pte.write_text(Path(program).read_text())
        exported.append(pte.read_text())
        return {which[0]: pte}, {which[0]: {"seconds": 1.0}}

    def fake_compare(before, after, runs):
        timed.append(Path(after).read_text())
        return {"ratio": ratios[tuple(timed[-1].split(","))]}

    monkeypatch.setattr(main_job, "find_fallback", fake_search)
    monkeypatch.setattr(main_job, "layer_groups", lambda model: list("abcd"))
    monkeypatch.setattr(main_job, "save_quantized", lambda path, q, ex, meta: Path(path).write_text(",".join(q)))
    monkeypatch.setattr(main_job, "export_variant", fake_export)
    monkeypatch.setattr(main_job, "compare_pte", fake_compare)
    (tmp_path / "export").mkdir()
    before = tmp_path / "all-int8.pte"
    program, rec, (pte, made, lat) = main_job._fallback_program(
        tmp_path, None, "xnnpack", [], [], {}, "pte-int8", (64, 64), before, progress=False, log=lambda *a: None)
    assert searched == [(), ("a",), ("b",)]
    assert rec["float_groups"] == ["b", "c"] and program.read_text() == "b,c"
    assert [(s["float_groups"], s["latency_ratio"]) for s in rec["latency_search"]] == [
        (["a", "b"], 1.3), (["b", "c"], 1.05), (["a", "d"], 1.2)]
    # the shipped artifact is the fastest set's, exported again because (a, d) was tried after it, not timed again
    assert pte.read_text() == "b,c" and lat == {"ratio": 1.05} and made == {"seconds": 1.0}
    assert exported == ["a,b", "b,c", "a,d", "b,c"] and timed == ["a,b", "b,c", "a,d"]
    # within the goal: one search, one export, one timing, and that artifact is the one shipped
    ratios[("a", "b")] = 1.04
    for calls in (searched, exported, timed):
        calls.clear()
    program, rec, (pte, _, lat) = main_job._fallback_program(
        tmp_path, None, "xnnpack", [], [], {}, "pte-int8", (64, 64), before, progress=False, log=lambda *a: None)
    assert searched == [()] and exported == timed == ["a,b"] and pte.read_text() == "a,b" and lat["ratio"] == 1.04
    assert rec["float_groups"] == ["a", "b"] and "latency_search" not in rec
    # a Core ML artifact (no .pte to time): the program only
    program, rec, shipped = main_job._fallback_program(
        tmp_path, None, "coreml", [], [], {}, "coreml-w8a8", (64, 64), None, progress=False, log=lambda *a: None)
    assert shipped is None and program.name == "int8-coreml-fallback.pt2" and len(exported) == 1


def test_the_fallback_ships_the_artifact_it_timed_and_exports_the_others(tmp_path, monkeypatch):
    # the search and the exports faked: the all-int8 files move aside before the search times against them,
    # the timed .pte is not exported or timed again, the W8A8 package is exported from its own program
    from eapnet.jobs import main_job

    export_dir = tmp_path / "export"
    export_dir.mkdir()
    artifacts = {}
    for key, name in {"pte-int8": "m_xnnpack_int8_64x64.pte", "coreml-w8a8": "m_coreml_w8a8_64x64.mlpackage"}.items():
        (export_dir / name).write_text("all int8")
        (export_dir / (Path(name).stem + ".json")).write_text("{}")
        artifacts[key] = {"file": f"export/{name}", "precision": "int8", "passed": True, "gt_margin": 0.05,
                          "bytes": 8, "psnr_mu": 30.0, "float_psnr_mu": 30.2}
    export = {"size": [64, 64], "artifacts": artifacts}
    seen = {}

    def fake_program(run_dir, model, backend, batches, scenes, meta, base, size, before, **kw):
        seen[backend] = before
        if before is not None:
            assert before.parent.name == "rejected" and before.read_text() == "all int8"
            pte = export_dir / "m_xnnpack_int8_64x64.pte"
            pte.write_text("mixed")
            return run_dir / "int8-xnnpack-fallback.pt2", {"float_groups": ["a"]}, (pte, {"s": 1}, {"ratio": 1.02})
        return run_dir / f"int8-{backend}-fallback.pt2", {"float_groups": ["b"]}, None

    def fake_export(ckpt, program, out, *, size, which, **kw):
        assert which == ("coreml-w8a8",) and program.name == "int8-coreml-fallback.pt2"
        return {which[0]: out / "m_coreml_w8a8_64x64.mlpackage"}, {which[0]: {"s": 2}}

    def fake_check(run_dir, paths, made, **kw):
        return {"artifacts": {k: {"file": str(p.relative_to(run_dir)), "bytes": 5, "passed": True,
                                  "gt_margin": 0.2} for k, p in paths.items()}}, {}

    monkeypatch.setattr(main_job, "_fallback_program", fake_program)
    monkeypatch.setattr(main_job, "export_variant", fake_export)
    monkeypatch.setattr(main_job, "check_artifacts", fake_check)
    monkeypatch.setattr(main_job, "compare_pte", lambda *a, **k: pytest.fail("the timed .pte was timed again"))
    for name, value in {"load_model": None, "calibration": [], "read_quantized_meta": {}}.items():
        monkeypatch.setattr(main_job, name, lambda *a, _v=value, **k: _v)
    recs = main_job.fallback_artifacts(tmp_path, export, calib=None, calib_scenes=1, parity_scenes=1, tile_overlap=0,
                                       runners=(), progress=False, log=lambda *a: None)
    assert seen == {"xnnpack": export_dir / "rejected" / "m_xnnpack_int8_64x64.pte", "coreml": None}
    assert recs["pte-int8"]["latency"] == {"ratio": 1.02} and "latency" not in recs["coreml-w8a8"]
    assert recs["pte-int8"]["before"]["file"] == "export/rejected/m_xnnpack_int8_64x64.pte"
    assert (export_dir / "rejected" / "m_xnnpack_int8_64x64.json").is_file()
    assert export["artifacts"]["pte-int8"]["fallback"] == ["a"] and export["passed"]


def test_the_fallback_program_is_scored_as_the_shipped_int8_model(tmp_path, monkeypatch):
    from eapnet.evalsets import heldout_synthetic
    from eapnet.jobs import main_job

    q = _model()
    monkeypatch.setattr(main_job, "load_quantized", lambda path: (q, {"backend": "xnnpack",
                                                                       "float_groups": ["encoders.0", "attention.0"]}))
    monkeypatch.setattr(main_job, "standard_sets", lambda n: {"heldout_synthetic": heldout_synthetic(n, 32),
                                                              "real_crops": []})
    per = {"0000": {"psnr_mu": 20.0}, "0001": {"psnr_mu": 21.0}}
    rep = {"models": {"compressed (float)": {"maccs": 1e9, "params": 1e3, "scores": {
        "heldout_synthetic": {"psnr_mu": 20.5, "per_scene": per}}}},
        "fallback": {"pte-int8": {"program": "int8-xnnpack-fallback.pt2"},
                     "coreml-w8a8": {"program": "int8-xnnpack-fallback.pt2"}}}   # one program, two artifacts
    assert main_job.score_fallback_programs(tmp_path, rep, log=lambda *a: None)
    key = "shipped (int8, xnnpack, float: encoders.0, attention.0)"
    assert list(rep["models"]) == ["compressed (float)", key]
    row = rep["models"][key]
    assert row["program"] == "int8-xnnpack-fallback.pt2" and row["maccs"] == 1e9
    # the same scenes as the float model's (2 held-out ones), per scene, so that its change can be paired
    assert list(row["scores"]) == ["heldout_synthetic"] and list(row["scores"]["heldout_synthetic"]["per_scene"]) == [
        "0000", "0001"]
    assert not main_job.score_fallback_programs(tmp_path, rep, log=lambda *a: None)   # scored once
    assert not main_job.score_fallback_programs(tmp_path, {"models": rep["models"]}, log=lambda *a: None)


@pytest.mark.slow
def test_qat_cli_end_to_end_meets_the_budget(tmp_path):
    """The whole main job on a small model, with the int8 .pte (the artifact phones run) exported and
    checked; all four artifacts: test_qat_cli_exports_and_checks_all_four_artifacts."""
    import json

    target = int(config_maccs(SMALL, *RES) * 0.7)
    rc, out = _qat_run(tmp_path, "--artifacts", "pte-int8")
    assert rc == 0
    rep = json.loads((out / "report.json").read_text())
    # it ends with the int8 phone artifact, verified by the parity harness against the compressed float model
    ex = rep["export"]
    assert ex["passed"] and ex["size"] == [48, 64] and list(ex["artifacts"]) == ["pte-int8"]
    a = ex["artifacts"]["pte-int8"]
    assert (out / a["file"]).exists() and a["bytes"] > 0 and a["passed"]
    parity_rep = json.loads((out / "parity" / "parity.json").read_text())
    assert [r["precision"] for r in parity_rep["artifacts"]] == ["int8"]
    assert parity_rep["artifacts"][0]["float"]["path"].endswith("compressed.pt")
    assert sorted(p.suffix for p in (out / "export").iterdir() if p.suffix in (".pte", ".mlpackage")) == [".pte"]
    assert count_maccs(load_model(out / "compressed.pt"), *RES) <= target
    # the int8 model stays near the float one it was quantized from (a property, not a figure of one CPU)
    rows = rep["models"]
    for d, s in rows["compressed (float)"]["scores"].items():
        assert abs(rows["compressed (int8, xnnpack)"]["scores"][d]["psnr_mu"] - s["psnr_mu"]) < 1.0


@pytest.mark.slow
def test_qat_cli_exports_and_checks_all_four_artifacts(tmp_path):
    import json

    from eapnet.export.pipeline import ARTIFACTS

    rc, out = _qat_run(tmp_path, "--tile", "64", "--tile-overlap", "24")
    assert rc == 0
    ex = json.loads((out / "report.json").read_text())["export"]
    tiled = [f"{k}@64" for k in ARTIFACTS]
    assert ex["passed"] and list(ex["artifacts"]) == list(ARTIFACTS) + tiled
    for a in ex["artifacts"].values():
        assert (out / a["file"]).exists() and a["bytes"] > 0 and a["passed"]
    parity_rep = json.loads((out / "parity" / "parity.json").read_text())
    assert [r["precision"] for r in parity_rep["artifacts"]] == ["fp32", "int8", "fp16", "w8a8"] * 2
    assert all(r["float"]["path"].endswith("compressed.pt") for r in parity_rep["artifacts"])
    # --tile: the same four at 64x64, each also run tiled over the full-size frame and stitched
    for r in parity_rep["artifacts"][4:]:
        assert r["size"] == [64, 64]
        if (SHARED / "fullres_no_gt").is_dir():
            assert r["stitched"]["tile"] == [64, 64] and r["stitched"]["overlap"] == 24
            assert r["stitched"]["summary"]["fullres"]["scenes"] == 1
    for key in tiled:
        if (SHARED / "fullres_no_gt").is_dir():
            assert ex["artifacts"][key]["stitched_psnr_mu_vs_float_min"] >= 32.0


def test_export_workers_report_a_failure_in_the_parent(tmp_path):
    """Exports in worker processes: one that fails raises its own error here, and no file is left."""
    from eapnet.export.pipeline import export_variant

    from eapnet.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="nothing.pt does not exist"):
        export_variant(tmp_path / "nothing.pt", None, tmp_path / "export", size=(32, 32),
                       which=("pte-fp32", "coreml-fp16"), workers=2, log=lambda _m: None)
    assert not (tmp_path / "export").exists() or not any((tmp_path / "export").iterdir())


def test_qat_cli_refuses_an_unknown_artifact(tmp_path, capsys):
    from eapnet.jobs.qat import main

    with pytest.raises(SystemExit) as e:
        main(["--target-maccs", "1G", "--artifacts", "pte-int8,onnx", "--out", str(tmp_path / "x")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--artifacts" in err and "'pte-int8,onnx'" in err and "coreml-w8a8" in err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("argv, needle", [
    (["--threads", "-1"], "--threads: must be a CPU thread count from 0 to"),   # was torch's RuntimeError, exit 1
    (["--threads", "100000"], "(4 per core; 0 = torch's default)"),   # started the job with a 100,000-thread pool
    (["--no-export", "--artifacts", "pte-int8"], "--no-export makes no phone artifacts and checks none: --artifacts"),
    (["--no-export", "--tile", "64", "--parity-scenes", "2"], "none: --tile, --parity-scenes would be ignored"),
    (["--tile-overlap", "8"], "--tile-overlap sets the overlap of the --tile check: give --tile N too"),
])
def test_qat_cli_refuses_bad_and_conflicting_flags_in_one_line(argv, needle, tmp_path, capsys):
    from eapnet.jobs.qat import main

    with pytest.raises(SystemExit) as e:
        main(["--target-maccs", "100G", *argv, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_qat_cli_refuses_calibration_scenes_too_small_to_trace(tmp_path, capsys):
    # 1x1 scenes once ran the search (minutes) and then failed in torch.export's guard (AssertionError, exit 1)
    from eapnet.compress.pipeline import CompressConfig
    from eapnet.jobs.qat import main
    from eapnet.data import write_ntire
    from eapnet.data.synthetic import generate_scene

    tiny = tmp_path / "tiny"
    ldrs = torch.tensor([0.2, 0.5, 0.8]).view(3, 1, 1, 1).expand(3, 1, 1, 3).numpy()
    write_ntire(tiny, "0000", ldrs, [-2, 0, 2], gt=ldrs[1])
    with pytest.raises(SystemExit) as e:
        main(["--target-maccs", "100G", "--calib", str(tiny), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"--calib: scene 0000 of {tiny} is 1x1 (HxW); calibration scenes must be at least 16x16" in err
    assert not (tmp_path / "run").exists()
    ok = tmp_path / "ok"
    write_ntire(ok, "0000", *generate_scene(1, 16, 24))
    assert CompressConfig.load(target_maccs=10**9, calib=str(ok)).calib == str(ok)


def test_qat_cli_unreachable_budget_exits_with_the_minimum(tmp_path, capsys):
    from eapnet.jobs.qat import main

    rc = main(["--target-maccs", "1M", "--model", str(_small_checkpoint(tmp_path)), "--size", "64x96",
               "--calib-scenes", "1", "--out", str(tmp_path / "run"), "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "below the smallest network" in err and "target 1.00 M MAccs" in err and "at 64x96 (HxW): one PDUB" in err


def test_sweep_tabulates_every_budget_and_model(tmp_path, monkeypatch, capsys):
    import json

    from eapnet.jobs import budget_sweep, sweep
    from eapnet.compress.search import BudgetError

    calls = []

    def fake_main_job(cfg, run, **kw):  # one report per budget, as compress_and_ship writes it
        budget = int(cfg.target_maccs)
        calls.append(cfg)
        if budget < 50:
            raise BudgetError("below the smallest network")  # unreachable: recorded, the sweep fails at the end
        per = lambda mu, offs: {f"{i:04d}": {"psnr_mu": mu + o} for i, o in enumerate(offs)}  # noqa: E731
        scores = lambda mu: {"heldout_synthetic": {"psnr_mu": mu, "psnr_l": 40.0,  # noqa: E731
                                                   "per_scene": per(mu, [-0.1, 0.0, 0.1] if mu != 29.5 else
                                                                 [-1.0, 0.0, 1.0])},
                             "real_crops": {"psnr_mu": mu + 1, "psnr_l": 40.0}}
        rep = {"pdub_count": 3, "teacher": "standard", "teacher_file": "eapnet/weights/standard.pt",
               "teacher_sha256": "ab" * 32, "commit": "c0ffee", "target_maccs": budget, "models": {
            "teacher (float)": {"maccs": 200e9, "params": 5000, "scores": scores(30.0)},
            "compressed (float)": {"maccs": (budget - 1) * 1e9, "params": 3000, "scores": scores(29.8)},
            "compressed (int8, xnnpack)": {"maccs": (budget - 1) * 1e9, "params": 3000, "scores": scores(29.5)}},
            "export": None}
        if budget == 150:   # phone artifacts and parity, one of them failing
            art = lambda mu, ok: {"bytes": 2e6, "passed": ok, "psnr_mu": {"real": mu + 1, "heldout": mu},  # noqa
                                  "float_psnr_mu": {"real": 30.8, "heldout": 29.8}}
            rep["export"] = {"size": [64, 96], "passed": False, "failed": ["coreml-w8a8"], "artifacts": {
                "pte-fp32": art(29.8, True), "pte-int8": art(29.4, True), "coreml-fp16": art(29.8, True),
                "coreml-w8a8": art(27.0, False)}}
        (run / "report.json").write_text(json.dumps(rep))
        return rep

    monkeypatch.setattr(budget_sweep, "compress_and_ship", fake_main_job)
    rc = sweep.main(["--budgets", "100", "150", "10", "--out", str(tmp_path), "--bench-runs", "0", "--frame-runs", "0",
                     "--steps", "5"])
    assert rc == 1  # one budget unreachable, one with a parity failure
    assert [c.target_maccs for c in calls] == [150, 100, 10]
    assert all(c.steps == (5, 5) for c in calls)
    out = json.loads((tmp_path / "sweep.json").read_text())
    rows, summary = out["rows"], out["summary"]
    assert [(r["model"], r["gmaccs"]) for r in rows][2] == ("compressed (int8, xnnpack)", 149.0)
    assert rows[2]["heldout_synthetic_psnr_mu"] == 29.5 and len(rows) == 6
    assert [r["budget_g"] for r in summary] == [150 / 1e9, 100 / 1e9]
    first = summary[0]
    assert (first["real_float"], first["real_int8_eager"]) == (30.8, 30.5)      # whole scenes (evaluation)
    assert (first["real_parity_float"], first["real_pte_int8"], first["real_mlpackage_w8a8"]) == (30.8, 30.4, 28.0)
    assert first["parity"] == "FAIL: coreml-w8a8" and first["mb_pte_int8"] == 2.0 and "parity" not in summary[1]
    # the change against the teacher, paired over the same scenes: the float model's -0.2 dB on every scene is
    # resolved; the int8 model's -0.5 dB, whose scenes scatter by +-1 dB, is not; no per-scene figures: none
    fl, q = first["heldout_float_vs_teacher"], first["heldout_int8_eager_vs_teacher"]
    assert fl["mean"] == pytest.approx(-0.2) and fl["resolved"] and fl["n"] == 3
    assert q["mean"] == pytest.approx(-0.5) and q["lo"] < -0.5 < q["hi"] and not q["resolved"]
    assert "real_float_vs_teacher" not in first
    md = (tmp_path / "sweep.md").read_text()
    assert "| 30.80 / 30.50 |" in md and "30.80 / 30.40 / 28.00" in md and "FAIL: coreml-w8a8" in md
    assert "| **-0.20 [-0.20, -0.20]** / -0.50 [" in md and "the change is resolved" in md
    assert "budget unreachable for this method" in md
    assert (tmp_path / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "sweep.csv").read_text().count("\n") == 3
    # the tables can be rebuilt from the run folders alone (reports + bench.json), e.g. after a code change
    (tmp_path / "sweep.md").unlink()
    timing = lambda sec, mb: {"median_s": sec, "peak_rss_mb": mb}  # noqa: E731
    (tmp_path / "1.5e-07G" / "bench").mkdir()
    (tmp_path / "1.5e-07G" / "bench" / "bench.json").write_text(json.dumps({"rows": [{
        "eager fp32": timing(2.0, 1400.0), "pte fp32": timing(1.2, 800.0), "pte int8": timing(0.5, 480.0),
        "speedup_pte_int8": 4.0}]}))
    fig = lambda ms, mb: {"median_ms": ms, "peak_rss_mb": mb}  # noqa: E731
    (tmp_path / "1.5e-07G" / "bench" / budget_sweep.FRAME_BENCH).write_text(json.dumps({"rows": [
        {"precision": p, "io": "float", "frame": [1060, 1900], "whole": fig(w, wmb),
         "tiled": [{"tile": [568, 680], **fig(t, tmb), "tiles": 6}]}
        for p, w, wmb, t, tmb in (("fp32", 2800, 3700, 3300, 770), ("int8", 2300, 2300, 2700, 500))]}))
    assert sweep.main(["--retabulate", str(tmp_path)]) == 0
    md = (tmp_path / "sweep.md").read_text()
    assert "30.80 / 30.40 / 28.00" in md and "FAIL: coreml-w8a8" in md
    assert "| 2.80 / 3.30; 2.30 / 2.70 | 3700 / 770; 2300 / 500 |" in md   # the native runner on the whole frame
    assert json.loads((tmp_path / "sweep.json").read_text())["summary"][0]["frame_tile"] == [568, 680]
    assert "| 2.00 / 1.20 / 0.50 | 4.00x | 1400 / 800 / 480 |" in md     # latency and peak memory per runtime
    assert "1e-08G: budget unreachable for this method" in md and "1.5e-07G: a parity failure" in md
    # every row is of one teacher, recorded with the code that made it
    assert out["teacher"] == {"file": "eapnet/weights/standard.pt", "sha256": "ab" * 32}
    assert out["commits"] == {"1.5e-07G": "c0ffee", "1e-07G": "c0ffee"}
    assert f"Teacher: `eapnet/weights/standard.pt` (sha256 `{'ab' * 32}`); code: `c0ffee`." in md
    # and a run of another teacher is not merged into the tables
    other = tmp_path / "1e-07G" / "report.json"
    other.write_text(other.read_text().replace("ab" * 32, "cd" * 32))
    capsys.readouterr()
    assert sweep.main(["--retabulate", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"{other}: its teacher (eapnet/weights/standard.pt, sha256 {'cd' * 32}) is not the teacher of 1.5e-07G" in err
    assert "30.80 / 30.40 / 28.00" in (tmp_path / "sweep.md").read_text()      # the last good tables are kept
    with pytest.raises(SystemExit):
        sweep.main(["--budgets", "100", "--out", str(tmp_path / "x"), "--patch", "30"])


def test_frame_bench_times_the_shipped_programs_and_the_int8_program_they_came_from(tmp_path, monkeypatch):
    from eapnet.jobs import budget_sweep

    run = tmp_path / "100G"
    (run / "export").mkdir(parents=True)
    for name in ("m_xnnpack_fp32_568x680", "m_xnnpack_int8_568x680"):
        (run / "export" / f"{name}.pte").write_bytes(b"pte")
        (run / "export" / f"{name}.json").write_text("{}")
    (run / "int8-xnnpack-fallback.pt2").write_bytes(b"pt2")      # where the main job saves it
    rep = {"resolution": [1060, 1900], "files": {"compressed": "compressed.pt", "int8": "int8.pt2"},
           "export": {"artifacts": {"pte-fp32": {"file": "export/m_xnnpack_fp32_568x680.pte"},
                                    "pte-int8": {"file": "export/m_xnnpack_int8_568x680.pte"},
                                    "coreml-w8a8": {"file": "export/m_w8a8.mlpackage"}}},
           "fallback": {"pte-int8": {"program": "int8-xnnpack-fallback.pt2"}}}
    seen = {}

    def fake_bench_native(model, frames, **kw):
        seen.update(model=model, frames=frames, **kw)
        return [{"precision": "int8", "whole": {"median_ms": 2300.0, "peak_rss_mb": 2300.0},
                 "tiled": [{"tile": [568, 680], "median_ms": 2700.0, "peak_rss_mb": 500.0}]}]

    monkeypatch.setattr(budget_sweep, "bench_native", fake_bench_native)
    out = budget_sweep.frame_bench(run, rep, repeat=3, threads=2, log=lambda *a: None)
    # the whole frame and the shipped tiles, of the compressed model and of the int8 program the shipped .pte
    # was lowered from (the fallback's), with the shipped tile programs reused
    assert seen["model"] == str(run / "compressed.pt") and seen["frames"] == [(1060, 1900)]
    assert seen["int8"] == str(run / "int8-xnnpack-fallback.pt2") and seen["max_tiles"] == (680,)
    assert sorted(p.name for p in (run / "bench" / "programs").iterdir()) == [
        "m_xnnpack_fp32_568x680.json", "m_xnnpack_fp32_568x680.pte", "m_xnnpack_int8_568x680.json",
        "m_xnnpack_int8_568x680.pte"]
    assert budget_sweep._frame_columns(out) == {
        "frame_ms_int8_whole": 2300.0, "frame_mb_int8_whole": 2300.0, "frame_ms_int8_tiled": 2700.0,
        "frame_mb_int8_tiled": 500.0, "frame_tile": [568, 680]}
    del rep["fallback"]      # no fallback: the QAT program
    assert budget_sweep.int8_program(run, rep) == run / "int8.pt2"
    assert sorted(p.name for p in (run / "export").iterdir()) == [   # the shipped files are left as they were
        "m_xnnpack_fp32_568x680.json", "m_xnnpack_fp32_568x680.pte", "m_xnnpack_int8_568x680.json",
        "m_xnnpack_int8_568x680.pte"]


def test_sweep_runs_each_method_and_resumes_after_an_interruption(tmp_path, monkeypatch):
    import json

    from eapnet.jobs import budget_sweep, sweep
    from eapnet.compress.search import BudgetError

    calls, interrupt = [], {"at": (100, "uniform")}

    def fake_main_job(cfg, run, export=True, **kw):
        budget = round(cfg.target_maccs / 1e9)
        calls.append((budget, cfg.method, export, cfg.compare_uniform))
        (run / "compressed.pt").write_text("partial")
        if (budget, cfg.method) == interrupt["at"]:
            raise KeyboardInterrupt
        if cfg.method == "blocks" and budget < 150:
            raise BudgetError("one PDUB at full width is over budget")
        mu = {"search": 29.8, "uniform": 29.5, "blocks": 29.6}[cfg.method]
        scores = {"heldout_synthetic": {"psnr_mu": mu, "psnr_l": 40.0}, "real_crops": {"psnr_mu": mu, "psnr_l": 40.}}
        rep = {"pdub_count": 3, "teacher": "standard", "target_maccs": budget * 1e9, "search": {"method": cfg.method},
               "export": None, "models": {"teacher (float)": {"maccs": 200e9, "params": 5000, "scores": scores},
                                          "compressed (float)": {"maccs": (budget - 1) * 1e9, "params": 3000,
                                                                 "scores": scores}}}
        (run / "report.json").write_text(json.dumps(rep))
        return rep

    monkeypatch.setattr(budget_sweep, "compress_and_ship", fake_main_job)
    argv = ["--budgets", "100G", "150G", "--methods", "blocks", "search", "uniform", "--out", str(tmp_path),
            "--bench-runs", "0", "--frame-runs", "0", "--compare-uniform"]
    assert sweep.main(argv) == 130    # interrupted (Ctrl-C)
    # budgets from the largest, the search first; only the search exports, and only it compares uniform itself
    assert calls == [(150, "search", True, True), (150, "uniform", False, False), (150, "blocks", False, False),
                     (100, "search", True, True), (100, "uniform", False, False)]
    assert (tmp_path / "100G-uniform" / "compressed.pt").exists()
    calls.clear()
    interrupt["at"] = None
    assert sweep.main(["--resume", str(tmp_path)]) == 1   # blocks cannot reach 100 G
    assert calls == [(100, "uniform", False, False), (100, "blocks", False, False)]
    out = json.loads((tmp_path / "sweep.json").read_text())
    assert [(r["budget_g"], r["method"]) for r in out["summary"]] == [
        (150, "search"), (150, "uniform"), (150, "blocks"), (100, "search"), (100, "uniform")]
    assert out["failed"] == {"100G-blocks": 2}
    assert "100G-blocks: budget unreachable for this method." in (tmp_path / "sweep.md").read_text()
    assert list((tmp_path).glob("run-resume-*.json"))
    with pytest.raises(SystemExit):
        sweep.main(["--resume", str(tmp_path / "100G")])   # not a sweep folder


def test_publish_copies_a_finished_sweeps_records_and_refuses_an_unfinished_one(tmp_path, monkeypatch, capsys):
    import json

    from eapnet.jobs import budget_sweep, sweep

    def fake_main_job(cfg, run, export=True, **kw):
        budget = round(cfg.target_maccs / 1e9)
        (run / "compressed.pt").write_text("weights")
        (run / "bench" / "programs").mkdir(parents=True)
        (run / "bench" / "programs" / "x.json").write_text("{}")      # a bench's program copies: not published
        (run / "parity").mkdir()
        (run / "parity" / "parity.json").write_text(json.dumps({"artifacts": []}))
        scores = {"heldout_synthetic": {"psnr_mu": 29.0, "psnr_l": 40.0}}
        rep = {"pdub_count": 3, "teacher": "standard", "target_maccs": budget * 1e9, "search": {"method": cfg.method},
               "export": None, "models": {"teacher (float)": {"maccs": 200e9, "params": 5000, "scores": scores},
                                          "compressed (float)": {"maccs": (budget - 1) * 1e9, "params": 3000,
                                                                 "scores": scores}}}
        (run / "report.json").write_text(json.dumps(rep))
        if budget == 100 and cfg.method == "search":
            raise KeyboardInterrupt                   # its report is written, the uniform run is not
        return rep

    monkeypatch.setattr(budget_sweep, "compress_and_ship", fake_main_job)
    src, pub = tmp_path / "sweep", tmp_path / "reports" / "sweep"
    assert sweep.main(["--budgets", "150G", "100G", "--methods", "search", "uniform", "--out", str(src),
                       "--bench-runs", "0", "--frame-runs", "0"]) == 130
    with pytest.raises(SystemExit):
        sweep.main(["--publish", str(src), "--out", str(pub)])
    assert "1 of 4 runs not finished (100G-uniform)" in capsys.readouterr().err and not pub.exists()
    assert sweep.main(["--resume", str(src)]) == 0
    (src / "report_files").mkdir(exist_ok=True)
    (src / "report_files" / "old-picture.png").write_bytes(b"not shown by the page")
    assert sweep.main(["--publish", str(src), "--out", str(pub)]) == 0
    files = {str(p.relative_to(pub)) for p in pub.rglob("*") if p.is_file()}
    assert {"sweep.md", "sweep.json", "report.html", "run.json", "publish.json", "150G/report.json",
            "100G-uniform/parity/parity.json"} <= files
    assert not any(f.endswith(".pt") or "programs" in f or "old-picture" in f for f in files), files
    assert json.loads((pub / "sweep.json").read_text())["summary"] == json.loads((src / "sweep.json").read_text())[
        "summary"]
    assert not list(pub.parent.glob(".sweep.*"))    # no half copy left beside it
    with pytest.raises(SystemExit):   # published work is not replaced without --overwrite
        sweep.main(["--publish", str(src), "--out", str(pub)])
    assert "--overwrite" in capsys.readouterr().err
    assert sweep.main(["--publish", str(src), "--out", str(pub), "--overwrite"]) == 0


@pytest.mark.slow
def test_qat_cli_on_the_shipped_standard_model(tmp_path):
    # The README's main job with short stages (about 5 minutes on 2 cores): the budget is met by the one
    # counter at 1900x1060 and the int8 model stays close to its float form.
    import json

    from eapnet.jobs.qat import main

    out = tmp_path / "run"
    assert main(["--target-maccs", "100G", "--steps", "20", "10", "--calib-scenes", "8", "--heldout", "4",
                 "--out", str(out), "--quiet"]) == 0
    rep = json.loads((out / "report.json").read_text())
    f, q = rep["models"]["compressed (float)"], rep["models"]["compressed (int8, xnnpack)"]
    assert count_maccs(load_model(out / "compressed.pt")) == f["maccs"] <= 100 * 10**9
    assert abs(f["scores"]["heldout_synthetic"]["psnr_mu"] - q["scores"]["heldout_synthetic"]["psnr_mu"]) < 1.0


def test_qat_cli_refuses_bad_input_before_any_slow_step(tmp_path, capsys):
    from eapnet.jobs.qat import main
    from eapnet.data import write_ntire
    from eapnet.data.synthetic import generate_scene

    with pytest.raises(SystemExit) as e:       # a negative budget reaches its parser (not "expected one argument")
        main(["--target-maccs", "-5G"])
    assert e.value.code == 2 and "cannot parse MAcc budget '-5G'" in capsys.readouterr().err
    # a data folder with an incomplete sample fails before the search, naming the sample and the file
    data = tmp_path / "data"
    ldrs, evs, gt = generate_scene(1, 32, 32)
    write_ntire(data, "0000", ldrs, evs, gt)
    write_ntire(data, "0001", ldrs, evs, gt)
    (data / "0001_long.png").unlink()
    out = tmp_path / "run"
    rc = main(["--target-maccs", "1G", "--model", str(_small_checkpoint(tmp_path)), "--size", "64x96",
               "--data", str(data), "--calib-scenes", "1", "--out", str(out), "--quiet"])
    err = capsys.readouterr()
    assert rc == 2 and "0001: incomplete NTIRE sample, missing 0001_long.png" in err.err
    assert "sensitivity" not in err.out + err.err and not (out / "compressed.pt").exists()


def test_a_failed_run_sets_its_files_aside(tmp_path, monkeypatch):
    # a run that dies half-way leaves no compressed.pt that looks finished without its report
    from eapnet.compress.pipeline import CompressConfig
    from eapnet.jobs import main_job
    from eapnet.jobs.main_job import compress_and_ship

    def dies_after_writing(cfg, out_dir, **kw):
        (Path(out_dir) / "compressed.pt").write_bytes(b"weights")
        (Path(out_dir) / "int8.pt2").write_bytes(b"program")
        raise AssertionError("min nan should be less than max nan")

    monkeypatch.setattr(main_job, "compress", dies_after_writing)
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text("{}")
    with pytest.raises(AssertionError):
        compress_and_ship(CompressConfig.load(target_maccs=100e9), run)
    assert sorted(p.name for p in run.iterdir()) == ["incomplete", "run.json"]
    assert sorted(p.name for p in (run / "incomplete").iterdir()) == ["ERROR.txt", "compressed.pt", "int8.pt2"]
    assert "min nan" in (run / "incomplete" / "ERROR.txt").read_text()


def test_the_search_refuses_non_finite_scores():
    class Broken(nn.Module):
        def forward(self, ldrs, evs):
            return torch.full_like(ldrs[:, 1], float("nan"))

    with pytest.raises(ValueError, match="teacher's output on the calibration scenes holds NaN/inf"):
        damage_fn(Broken(), [_inputs(1, 16, 16)])
