"""Shipping a run's EMA weights with a model card."""
from pathlib import Path

import pytest

import eapnet
from eapnet.checkpoint import read_checkpoint
from eapnet.ship import main
from eapnet.shipping import _run_commit, wall_time_s
from eapnet.train import main as train_main


def test_wall_time_sums_resumed_segments(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("step,loss,seconds\n10,1,5.0\n20,1,10.0\n,,\n30,1,4.0\n40,1,8.5\n")
    assert wall_time_s(log) == pytest.approx(18.5)


def test_the_card_names_the_commit_of_each_resume_that_changed_it(tmp_path):
    import json

    (tmp_path / "run.json").write_text(json.dumps({"git_commit": "aaa"}))
    (tmp_path / "run-resume-900.json").write_text(json.dumps({"git_commit": "bbb"}))
    (tmp_path / "run-resume-400.json").write_text(json.dumps({"git_commit": "aaa"}))
    (tmp_path / "run-resume-1200.json").write_text(json.dumps({"git_commit": "bbb"}))
    assert _run_commit(tmp_path) == "aaa; resumed with code at commit bbb from step 900"


@pytest.mark.slow
def test_ship_a_short_lightweight_run(tmp_path):
    run = tmp_path / "run"
    assert train_main(["--model", "lightweight", "--steps", "2", "--batch-size", "1", "--patch", "32",
                       "--val-scenes", "1", "--val-size", "32", "--val-every", "0", "--threads", "1",
                       "--out", str(run)]) == 0
    weights = tmp_path / "weights"
    weights.mkdir()
    assert main(["--run", str(run), "--name", "lightweight", "--heldout", "2", "--size", "32",
                 "--weights-dir", str(weights), "--preview-dir", str(tmp_path)]) == 0
    ck = read_checkpoint(weights / "lightweight.pt")
    assert ck["optimizer"] is None and ck["step"] == 2
    card = (weights / "lightweight.md").read_text()
    assert "python -m eapnet.train" in card and "reference_frame" in card and "Margin" in card
    for section in ("## Training curve", "## What each part adds", "all PDUBs -> identity", "## Live units",
                    "PSNR-μ (moving)", "samples seen"):
        assert section in card, section
    model = eapnet.load_model(weights / "lightweight.pt")
    assert model.config.name == "lightweight"
    # a run continued from another (--init-from) is shipped with the whole history: steps, samples, commands
    more = tmp_path / "more"
    assert train_main(["--model", "lightweight", "--init-from", str(run / "model.pt"), "--steps", "3",
                       "--batch-size", "1", "--patch", "32", "--val-scenes", "1", "--val-size", "32",
                       "--threads", "1", "--out", str(more)]) == 0
    assert main(["--run", str(more), "--name", "lightweight", "--heldout", "2", "--size", "32",
                 "--weights-dir", str(weights), "--preview-dir", str(tmp_path), "--overwrite"]) == 0
    card = (weights / "lightweight.md").read_text()
    assert "Steps: 5 in all (3 in this run)" in card and f"Continues `{run}` (2 steps of 1, seed 0;" in card
    assert "5 samples seen" in card and card.count("python -m eapnet.train") == 2
    assert f"| `{more}` | 3 | 5 |" in card      # the curve counts samples from the first run on


def test_ship_refuses_a_mismatched_name(tmp_path, tiny_config):
    run = tmp_path / "run"
    import json

    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(tiny_config.to_dict()))
    train_main(["--model", str(cfg), "--steps", "1", "--batch-size", "1", "--patch", "32", "--val-scenes", "1",
                "--val-size", "32", "--val-every", "0", "--threads", "1", "--out", str(run)])
    with pytest.raises(SystemExit):
        main(["--run", str(run), "--name", "standard", "--weights-dir", str(tmp_path)])
    assert not (tmp_path / "standard.pt").exists()


def test_lineage_follows_a_shipped_file_to_the_run_it_came_from(tmp_path, tiny_config):
    from eapnet.checkpoint import save_checkpoint
    from eapnet.shipping import lineage

    model = eapnet.build_model(tiny_config)
    first = tmp_path / "runs" / "first"
    first.mkdir(parents=True)
    (first / "log.csv").write_text("step,seconds\n10,30.0\n20,60.0\n")
    from eapnet.training import load_config

    base = {**load_config(Path(eapnet.__file__).parent / "configs" / "cpu.yaml"), "seed": 0}
    shipped = tmp_path / "weights" / "tiny.pt"   # shipped from runs/first: its folder is not a run
    shipped.parent.mkdir()
    save_checkpoint(shipped, model, step=20, train_config=dict(base),
                    metrics={"source": str(first / "model.pt")}, with_rng=False)
    chain = lineage({**base, "seed": 1, "init_from": str(shipped)}, tmp_path / "runs" / "second", 5)
    assert [(c["run"], c["steps"], c["seed"], c["wall_s"]) for c in chain] == [
        (first, 20, 0, 60.0), (tmp_path / "runs" / "second", 5, 1, None)]   # None: no log of its own


def test_lineage_recorded_in_the_shipped_file_outlives_the_run_folders(tmp_path, tiny_config):
    """A shipped file records its whole history: a run continued from it keeps that history when every run
    folder before it is gone, and re-shipping the same run takes the earlier history from the file it wrote."""
    from eapnet.checkpoint import save_checkpoint
    from eapnet.shipping import lineage
    from eapnet.training import load_config

    model = eapnet.build_model(tiny_config)
    base = {**load_config(Path(eapnet.__file__).parent / "configs" / "cpu.yaml"), "seed": 0}
    record = [{"run": "runs/zero", "steps": 10, "batch_size": 8, "seed": 0, "recipe": "r0", "wall_s": 5.0,
               "commands": ["train zero"], "curve": [[10, 25.0, None]]},
              {"run": "runs/first", "steps": 20, "batch_size": 8, "seed": 1, "recipe": "r1", "wall_s": 7.0,
               "commands": ["train first"], "curve": [[20, 26.0, 24.0]]}]
    shipped = tmp_path / "weights" / "tiny.pt"
    shipped.parent.mkdir()
    save_checkpoint(shipped, model, step=20, train_config={**base, "init_from": "runs/zero/model.pt"},
                    metrics={"source": "runs/first/model.pt", "lineage": record}, with_rng=False)
    second = tmp_path / "runs" / "second"
    chain = lineage({**base, "seed": 2, "init_from": str(shipped)}, second, 5)
    assert [(str(c["run"]), c["steps"], c["wall_s"], c["curve"]) for c in chain] == [
        ("runs/zero", 10, 5.0, [[10, 25.0, None]]), ("runs/first", 20, 7.0, [[20, 26.0, 24.0]]),
        (str(second), 5, None, [])]
    # the file shipped over from "second", whose own run continued the earlier version: re-shipping keeps it
    save_checkpoint(shipped, model, step=5, train_config={**base, "seed": 2, "init_from": str(shipped)},
                    metrics={"source": str(second / "model.pt"), "lineage": [*record, {**record[1], "run": str(second)}]},
                    with_rng=False)
    again = lineage({**base, "seed": 2, "init_from": str(shipped)}, second, 5)
    assert [str(c["run"]) for c in again] == ["runs/zero", "runs/first", str(second)]


def test_lineage_finds_the_version_of_a_shipped_file_a_run_started_from(tmp_path, tiny_config):
    """Runs 2 and 3 both continued the file weights/tiny.pt, shipped over after each: the walk takes each
    run's parent from the file's committed versions instead of stopping at the loop."""
    import subprocess

    from eapnet.checkpoint import save_checkpoint
    from eapnet.shipping import lineage
    from eapnet.training import load_config

    model = eapnet.build_model(tiny_config)
    base = {**load_config(Path(eapnet.__file__).parent / "configs" / "cpu.yaml"), "seed": 0}
    shipped = tmp_path / "weights" / "tiny.pt"
    shipped.parent.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    runs = [tmp_path / "runs" / f"r{i}" for i in (1, 2, 3)]
    for i, run in enumerate(runs):   # r1 from scratch; r2, r3 from the file as shipped just before them
        cfg = {**base, "seed": i, "init_from": str(shipped) if i else None}
        run.mkdir(parents=True)
        save_checkpoint(run / "model.pt", model, step=10 * (i + 1), train_config=cfg, with_rng=False)
        save_checkpoint(shipped, model, step=10 * (i + 1), train_config=cfg,
                        metrics={"source": str(run / "model.pt")}, with_rng=False)
        subprocess.run([*git, "add", "-A"], check=True)
        subprocess.run([*git, "commit", "-qm", f"ship r{i + 1}"], check=True)
    chain = lineage({**base, "seed": 3, "init_from": str(shipped)}, tmp_path / "runs" / "r4", 5)
    assert [(c["run"], c["steps"], c["seed"]) for c in chain] == [
        (runs[0], 10, 0), (runs[1], 20, 1), (runs[2], 30, 2), (tmp_path / "runs" / "r4", 5, 3)]


def test_ship_replaces_shipped_weights_and_card_only_with_overwrite(tmp_path, tiny_config, monkeypatch, capsys):
    import json

    import eapnet.ship as ship_cli

    cfg = tmp_path / "lightweight.json"      # a tiny model under the shipped name, so that the name check passes
    cfg.write_text(json.dumps(tiny_config.replace(name="lightweight").to_dict()))
    run = tmp_path / "run"
    assert train_main(["--model", str(cfg), "--steps", "1", "--batch-size", "1", "--patch", "32", "--val-scenes",
                       "1", "--val-size", "32", "--val-every", "0", "--threads", "1", "--out", str(run)]) == 0
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "lightweight.pt").write_bytes(b"the weights shipped before")
    (weights / "lightweight.md").write_text("their card")
    calls = []
    card = weights / "lightweight.md"
    monkeypatch.setattr(ship_cli, "ship", lambda *a, **k: calls.append(k) or ([], card, card))   # no measuring
    argv = ["--run", str(run), "--name", "lightweight", "--weights-dir", str(weights), "--preview-dir", str(tmp_path)]
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"{weights / 'lightweight.pt'} already exists" in err and "--overwrite" in err, err
    assert (weights / "lightweight.pt").read_bytes() == b"the weights shipped before" and not calls
    (weights / "lightweight.pt").unlink()
    with pytest.raises(SystemExit):           # the card alone is enough to refuse
        main(argv)
    assert (weights / "lightweight.md").read_text() == "their card" and not calls
    assert main([*argv, "--overwrite"]) == 0 and len(calls) == 1
