"""Recycling dead ReLU channels (eapnet/recycle.py): revives them, touches nothing else, keeps the output."""
import csv
import json

import pytest
import torch

from eapnet import load_model
from eapnet.diagnostics import dead_channels, probe_batches
from eapnet.metrics import psnr_mu
from eapnet.recycle import find_dead, producer, recycle
from eapnet.train import main


@pytest.fixture(scope="module")
def scenes():
    return probe_batches(8, 64)


def _inputs(scenes):
    return [(x, e) for x, e, _ in scenes]


def _psnr(model, scenes) -> float:
    model.eval()
    with torch.no_grad():
        return sum(float(psnr_mu(model(x, e), gt)) for x, e, gt in scenes) / len(scenes)


def _with_dead_channels():
    """The shipped standard model with 40 channels killed the way training kills them (a large negative bias
    behind the ReLU): the test does not depend on how many the shipped weights happen to have."""
    model = load_model("standard")
    with torch.no_grad():
        for name in ("blocks.0.dec2", "blocks.1.enc2", "blocks.2.enc1", "merge"):
            model.get_submodule(name).pw.bias[:10] = -1e3
    return model


def test_recycling_revives_dead_channels_and_keeps_the_output(scenes):
    model = _with_dead_channels()
    dead = find_dead(model, _inputs(scenes))
    assert all(set(range(10)) <= set(dead.get(n, ())) for n in ("blocks.0.dec2", "blocks.1.enc2", "merge"))
    n_dead = sum(len(v) for v in dead.values())
    before = _psnr(model, scenes)
    ema = _with_dead_channels()
    assert recycle(model, dead, ema=ema, generator=torch.Generator().manual_seed(0)) == n_dead
    after = dead_channels(model, _inputs(scenes))
    assert sum(d for d, _ in after.values()) < 0.2 * n_dead, (n_dead, after)
    # new incoming weights are small: the picture changes by a small fraction of a dB
    assert abs(_psnr(model, scenes) - before) < 0.15
    for a, b in zip(model.state_dict().values(), ema.state_dict().values()):
        assert torch.equal(a, b)  # the EMA got the same rows


def test_recycling_touches_only_the_dead_rows_and_their_adam_state(scenes):
    model = _with_dead_channels().train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x, e, gt = scenes[0]
    (model(x, e) - gt).abs().mean().backward()
    opt.step()
    dead = find_dead(model, _inputs(scenes))
    name = max(dead, key=lambda k: len(dead[k]))
    conv = producer(model, name)
    old = {k: v.clone() for k, v in model.state_dict().items()}
    recycle(model, {name: dead[name]}, optimizer=opt, generator=torch.Generator().manual_seed(1))
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, old[k])}
    prefix = next(n for n, m in model.named_modules() if m is conv)
    assert changed == {f"{prefix}.weight", f"{prefix}.bias"}
    rows = torch.tensor(dead[name])
    keep = torch.ones(conv.out_channels, dtype=torch.bool)
    keep[rows] = False
    assert torch.equal(conv.weight[keep], old[f"{prefix}.weight"][keep])
    assert torch.all(conv.bias[rows] == 0)
    state = opt.state[conv.weight]
    assert torch.all(state["exp_avg"][rows] == 0) and torch.all(state["exp_avg_sq"][rows] == 0)
    assert state["exp_avg_sq"][keep].abs().sum() > 0


def test_recycling_is_reproducible_with_a_generator(scenes):
    a, b = _with_dead_channels(), _with_dead_channels()
    dead = find_dead(a, _inputs(scenes))
    recycle(a, dead, generator=torch.Generator().manual_seed(3))
    recycle(b, dead, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_training_recycles_and_logs_it(tmp_path, tiny_config):
    # PyTorch's default init leaves many channels dead: the run must find and recycle them
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(tiny_config.to_dict()))
    out = tmp_path / "run"
    assert main(["--model", str(cfg), "--init", "pytorch", "--steps", "4", "--recycle-every", "2",
                 "--cooldown", "0.5", "--batch-size", "2", "--patch", "32", "--val-scenes", "1", "--val-size",
                 "32", "--val-every", "0", "--health-every", "0", "--threads", "1", "--out", str(out)]) == 0
    with open(out / "log.csv") as f:
        rec = [(int(r["step"]), int(r["recycled"])) for r in csv.DictReader(f) if r["recycled"]]
    assert [s for s, _ in rec] == [2], rec  # step 4 lies in the final cool-down share: no recycling there
    assert rec[0][1] > 0
