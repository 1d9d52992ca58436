"""Training: config handling, exact resume after a kill, DDP with two gloo processes."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from eapnet.checkpoint import read_checkpoint
from eapnet.train import main, parse_args
from eapnet.training import ema_decay_at, lr_factor

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--batch-size", "2", "--patch", "32", "--val-scenes", "1", "--val-size", "32", "--val-every", "0",
        "--log-every", "1", "--ema-every", "3", "--warmup-steps", "4", "--threads", "1"]


@pytest.fixture
def tiny_json(tmp_path, tiny_config):
    p = tmp_path / "tiny.json"
    p.write_text(json.dumps(tiny_config.to_dict()))
    return str(p)


def _env():
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return env


def _losses(run: Path) -> list[tuple[int, str]]:
    with open(run / "log.csv") as f:
        return [(int(r["step"]), r["loss"]) for r in csv.DictReader(f) if r["loss"]]


def test_paper_schedule():
    assert lr_factor(0, 1000, 100_000, 0.75) == pytest.approx(1e-3)
    assert lr_factor(999, 1000, 100_000, 0.75) == 1.0
    assert lr_factor(100_000, 1000, 100_000, 0.75) == 0.75
    assert lr_factor(250_000, 1000, 100_000, 0.75) == pytest.approx(0.75 ** 2)


def test_wsd_and_cosine_schedules():
    # wsd: flat after the warm-up, linear to min_lr over the last cooldown share
    f = [lr_factor(s, 10, 0, 1.0, "wsd", 100, 0.0, 0.2) for s in range(101)]
    assert f[0] == pytest.approx(0.1) and f[9:80] == [1.0] * 71
    assert f[90] == pytest.approx(0.5) and f[100] == 0.0
    assert all(a >= b for a, b in zip(f[80:], f[81:]))
    # extending a wsd run before its cool-down starts changes no past step
    g = [lr_factor(s, 10, 0, 1.0, "wsd", 200, 0.0, 0.2) for s in range(80)]
    assert g == f[:80]
    c = [lr_factor(s, 10, 0, 1.0, "cosine", 110, 0.1) for s in (10, 60, 110)]
    assert c == pytest.approx([1.0, 0.55, 0.1])


def test_ema_warmup_forgets_the_init():
    assert [ema_decay_at(n, 0.999, True) for n in (0, 90, 10**6)] == pytest.approx([0.1, 0.91, 0.999])
    assert ema_decay_at(0, 0.5, False) == 0.5


def test_defaults_are_the_paper_recipe():
    _, cfg, explicit = parse_args([])
    assert (cfg["lr"], cfg["batch_size"], cfg["patch"], cfg["stride"]) == (8e-4, 32, 256, 128)
    assert (cfg["warmup_steps"], cfg["lr_decay_every"], cfg["lr_decay"]) == (1000, 100_000, 0.75)
    assert (cfg["ema_every"], cfg["ema_decay"], cfg["loss_alpha"], cfg["loss_beta"]) == (5000, 0.5, 0.5, 0.5)
    assert explicit == set()


def test_yaml_and_flags_override(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("lr: 0.001\nsteps: 50\n")
    _, cfg, explicit = parse_args(["--config", str(y), "--steps", "7", "--no-compile"])
    assert cfg["lr"] == 0.001 and cfg["steps"] == 7 and explicit == {"steps", "compile"}


def test_synthetic_data_names_a_generator_config():
    from eapnet.data.synth.config import PRESETS
    from eapnet.training import SyntheticStream

    assert parse_args(["--data", "synthetic:stage"])[1]["data"] == "synthetic:stage"
    a, b = SyntheticStream(3, 32)[5], SyntheticStream(3, 32, "default")[5]
    assert torch.equal(a["ldrs"], b["ldrs"])            # "synthetic" is synthetic:default
    assert SyntheticStream(3, 32, "stage").preset == "stage" and "stage" in PRESETS


@pytest.mark.parametrize("argv,msg", [
    (["--steps", "0"], "steps must be positive"),
    (["--amp", "fp8"], "amp must be"),
    (["--model", "huge"], "model must be"),
    (["--data", "/no/such/folder"], "data must be"),
    (["--data", "synthetic:nope"], "configs are synthetic:default, synthetic:stage"),
    (["--patch", "100"], "multiple of 8"),
    (["--threads", "-1"], "threads must be an integer >= 0, got -1"),   # was torch's RuntimeError at step 0
])
def test_bad_config_is_rejected_clearly(argv, msg, capsys):
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert msg in capsys.readouterr().err


@pytest.mark.parametrize("text, msg", [
    ("lr: !!python/object/apply:os.system ['echo hacked']\n", "not a plain YAML mapping at line 1"),
    ("lr: [0.1\n", "not a plain YAML mapping"),
])
def test_a_bad_yaml_config_is_one_line(tmp_path, capsys, text, msg):
    y = tmp_path / "c.yaml"
    y.write_text(text)
    assert main(["--config", str(y), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert f"error: --config {y}: {msg}" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r").exists()


def test_cuda_asked_for_without_cuda_is_one_line_before_the_run_folder(tmp_path, capsys, monkeypatch):
    # was a RuntimeError from the training loop (exit 1), after the run folder was made
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["--device", "cuda", "--steps", "1", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "--device cuda: CUDA is not available on this machine" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r").exists()


def test_unknown_yaml_key(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("learning_rate: 1\n")
    with pytest.raises(ValueError, match="unknown keys"):
        parse_args(["--config", str(y)])


def test_short_run_writes_everything(tmp_path, tiny_json):
    out = tmp_path / "run"
    assert main(["--model", tiny_json, "--steps", "12", "--out", str(out), "--ckpt-every", "6", *FAST,
                 "--health-every", "6"]) == 0
    for name in ("run.json", "log.csv", "health.csv", "last.pt", "model.pt", "summary.json"):
        assert (out / name).is_file(), name
    with open(out / "health.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [1, 6, 12]  # the last step once
    ck = read_checkpoint(out / "last.pt")
    assert ck["step"] == 12 and ck["optimizer"] and ck["scheduler"] and ck["rng"]
    assert ck["train_config"]["steps"] == 12
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ranks_identical"] and summary["final"]["val_psnr_mu"] > 0
    assert len(_losses(out)) == 12


def test_training_fits_a_single_scene(tmp_path, tiny_json):
    # Overfitting one 32x32 scene (seen under its 8 flips/rotations) must lower the loss on it.
    from eapnet import EAPNetConfig, build_model
    from eapnet.data import write_ntire
    from eapnet.data.synthetic import generate_scene
    from eapnet.losses import EAPNetLoss

    ldrs, evs, gt = generate_scene(1, 32, 32)
    data = tmp_path / "one"
    write_ntire(data, "0000", ldrs, evs, gt)
    out = tmp_path / "run"
    assert main(["--model", tiny_json, "--data", str(data), "--steps", "60", "--out", str(out), *FAST,
                 "--batch-size", "4", "--lr", "2e-3", "--stride", "32"]) == 0
    x = torch.from_numpy(ldrs.transpose(0, 3, 1, 2).copy())[None]
    e = torch.from_numpy(evs)[None]
    y = torch.from_numpy(gt.transpose(2, 0, 1).copy())[None]
    torch.manual_seed(0)
    before = build_model(EAPNetConfig.from_dict(json.loads(Path(tiny_json).read_text())))
    after = build_model(before.config)
    after.load_state_dict(read_checkpoint(out / "last.pt")["state_dict"])
    with torch.no_grad():
        l0, l1 = EAPNetLoss()(before(x, e), y), EAPNetLoss()(after(x, e), y)
    assert l1 < 0.9 * l0, (l0, l1)


def test_resume_refuses_changing_the_run(tmp_path, tiny_json, capsys):
    out = tmp_path / "run"
    main(["--model", tiny_json, "--steps", "3", "--out", str(out), "--ckpt-every", "3", *FAST])
    assert main(["--resume", str(out), "--lr", "0.1"]) == 2
    assert "cannot change ['lr']" in capsys.readouterr().err
    assert main(["--resume", str(out)]) == 2  # already finished: needs a larger --steps
    assert main(["--resume", str(tmp_path / "nope")]) == 2


CPU_RECIPE = ["--config", str(ROOT / "eapnet/configs/cpu.yaml"), *FAST, "--ema-every", "1"]


@pytest.mark.parametrize("recipe", ["paper", "cpu"])
def test_killed_run_resumes_exactly(tmp_path, tiny_json, recipe):
    # killed at its first checkpoint (step 10), resumed through the warm-up's end, the cpu recipe's dead-channel
    # recycling (steps 20 and 40) and its cool-down (from step 48)
    steps = 60
    args = ["--model", tiny_json, "--steps", str(steps), "--ckpt-every", "10",
            *(CPU_RECIPE + ["--recycle-every", "20"] if recipe == "cpu" else FAST)]
    ref = tmp_path / "ref"
    subprocess.run([sys.executable, "-m", "eapnet.train", *args, "--out", str(ref)], env=_env(), check=True,
                   capture_output=True)
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "eapnet.train", *args, "--out", str(run)], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (run / "last.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = read_checkpoint(run / "last.pt")["step"]
    assert 0 < killed_at < steps, "the run finished before it could be killed"
    assert not (run / "model.pt").exists()
    done = subprocess.run([sys.executable, "-m", "eapnet.train", "--resume", str(run)], env=_env(),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _losses(run) == _losses(ref)  # the whole loss curve, including the steps re-run after the kill
    a, b = read_checkpoint(run / "model.pt"), read_checkpoint(ref / "model.pt")
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in b["state_dict"])
    assert (run / f"run-resume-{killed_at}.json").is_file() and (run / "run.json").is_file()
    if recipe == "cpu":
        with open(run / "log.csv") as f:
            assert [int(r["step"]) for r in csv.DictReader(f) if r["recycled"]] == [20, 40]


def test_ddp_two_gloo_processes_end_identical(tmp_path, tiny_json):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "eapnet.train", "--model", tiny_json, "--steps", "4", "--ckpt-every", "2", "--out", str(out),
           *FAST, "--batch-size", "4", "--device", "cpu"]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert len(summary["rank_weight_sha256"]) == 2 and summary["ranks_identical"]


def test_init_from_starts_from_a_checkpoints_ema_weights(tmp_path, tiny_json):
    first = tmp_path / "first"
    main(["--model", tiny_json, "--steps", "3", "--out", str(first), "--ckpt-every", "3", *FAST])
    second = tmp_path / "second"
    assert main(["--model", tiny_json, "--init-from", str(first / "model.pt"), "--steps", "1", "--out",
                 str(second), *FAST, "--lr", "1e-12", "--warmup-steps", "1"]) == 0
    a, b = read_checkpoint(first / "model.pt"), read_checkpoint(second / "last.pt")
    # one step at a negligible learning rate: the weights are (almost exactly) where the first run ended
    for k, v in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][k], v, rtol=0, atol=1e-6)
    assert b["step"] == 1
    # --base moves the weights onto another base: same weights, the checkpoint rebuilds on the new base
    third = tmp_path / "third"
    assert main(["--model", tiny_json, "--init-from", str(first / "model.pt"), "--base", "consistent", "--steps",
                 "1", "--out", str(third), *FAST, "--lr", "1e-12", "--warmup-steps", "1"]) == 0
    c = read_checkpoint(third / "last.pt")
    assert c["model"]["config"]["base"] == "consistent" and a["model"]["config"]["base"] != "consistent"
    for k, v in a["state_dict"].items():
        torch.testing.assert_close(c["state_dict"][k], v, rtol=0, atol=1e-6)
    with pytest.raises(SystemExit):
        main(["--model", tiny_json, "--base", "median", "--steps", "1", "--out", str(tmp_path / "x")])


def test_ahdr_baseline_trains_through_the_same_loop(tmp_path):
    out = tmp_path / "ahdr"
    assert main(["--model", "ahdr", "--steps", "1", "--out", str(out), *FAST, "--batch-size", "1",
                 "--patch", "16", "--val-size", "16"]) == 0
    ck = read_checkpoint(out / "model.pt")
    assert ck["model"]["kind"] == "ahdr" and ck["step"] == 1


def test_trains_from_an_ntire_layout_folder(tmp_path, tiny_json):
    from eapnet.data import write_ntire
    from eapnet.data.synthetic import generate_scene

    data = tmp_path / "ntire"
    for i in range(2):
        ldrs, evs, gt = generate_scene(i, 64, 48)
        write_ntire(data, f"{i:04d}", ldrs, evs, gt)
    out = tmp_path / "run"
    assert main(["--model", tiny_json, "--data", str(data), "--steps", "3", "--out", str(out), *FAST,
                 "--stride", "16"]) == 0
    assert read_checkpoint(out / "model.pt")["train_config"]["data"] == str(data)
    assert len(_losses(out)) == 3
