"""The one checkpoint format: round trips, rebuilding from the file alone, clear errors."""
import json

import pytest
import torch

import eapnet
from eapnet import build_model
from eapnet.checkpoint import CheckpointError, load_model, read_checkpoint, save_checkpoint


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("name", ["lightweight", "ahdr"])
def test_round_trip_rebuilds_from_the_file_alone(tmp_path, name):
    torch.manual_seed(0)
    model = build_model(name)
    path = save_checkpoint(tmp_path / "m.pt", model, step=7, metrics={"psnr_mu": 30.0})
    loaded = eapnet.load_model(path, ema=False)
    assert type(loaded) is type(model) and not loaded.training
    assert _same_weights(model, loaded)
    assert read_checkpoint(path)["step"] == 7


def test_pruned_config_survives(tmp_path, tiny_config):
    model = build_model(tiny_config)
    loaded = eapnet.load_model(save_checkpoint(tmp_path / "t.pt", model))
    assert loaded.config == tiny_config and _same_weights(model, loaded)


def test_ema_weights_are_what_load_model_returns(tmp_path, tiny_config):
    torch.manual_seed(0)
    model, ema = build_model(tiny_config), build_model(tiny_config)
    path = save_checkpoint(tmp_path / "e.pt", model, ema=ema)
    assert _same_weights(eapnet.load_model(path), ema)
    assert _same_weights(eapnet.load_model(path, ema=False), model)


def test_full_training_state_round_trips(tmp_path, tiny_config):
    model = build_model(tiny_config)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, 5)
    x = torch.rand(1, 3, 3, 16, 16)
    model(x, torch.zeros(1, 3)).mean().backward()
    opt.step()
    sched.step()
    rng = torch.get_rng_state()
    ck = read_checkpoint(save_checkpoint(tmp_path / "s.pt", model, optimizer=opt, scheduler=sched, step=3,
                                         train_config={"lr": 1e-3}))
    opt2 = torch.optim.Adam(build_model(tiny_config).parameters(), lr=1e-3)
    opt2.load_state_dict(ck["optimizer"])
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert ck["scheduler"]["last_epoch"] == 1 and ck["train_config"] == {"lr": 1e-3}
    assert torch.equal(ck["rng"]["torch"], rng)


def test_missing_corrupt_and_foreign_files_are_named(tmp_path, tiny_config):
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "nope.pt")
    good = save_checkpoint(tmp_path / "good.pt", build_model(tiny_config))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated.pt is not a readable checkpoint"):
        read_checkpoint(truncated)
    garbage = tmp_path / "garbage.pt"
    garbage.write_text(json.dumps({"hello": 1}))
    with pytest.raises(CheckpointError, match="garbage.pt"):
        read_checkpoint(garbage)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="foreign file"):
        read_checkpoint(foreign)
    text = tmp_path / "notes.pt"
    text.write_text("e" * 200)      # a text file once gave a raw 'KeyError: 101'
    with pytest.raises(CheckpointError, match="notes.pt is not a readable checkpoint"):
        read_checkpoint(text)
    with pytest.raises(CheckpointError, match="is a folder, not a checkpoint file"):
        read_checkpoint(tmp_path)


def test_nan_weights_are_refused_at_load(tmp_path, tiny_config):
    model = build_model(tiny_config)
    with torch.no_grad():
        model.tail.pw.weight[0, 0] = float("nan")
    path = save_checkpoint(tmp_path / "diverged.pt", model)
    with pytest.raises(CheckpointError, match="NaN/inf values in 1 tensor.*'tail.pw.weight'"):
        load_model(path)


def test_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("ran code on load",))

    path = tmp_path / "evil.pt"
    torch.save({"format": "eapnet-checkpoint", "version": 1, "x": Evil()}, path)
    with pytest.raises(CheckpointError, match="weights_only") as e:
        read_checkpoint(path)
    assert "weights_only=False" not in str(e.value)   # never advise running a file's code


def test_weights_that_do_not_fit_the_spec(tmp_path, tiny_config):
    path = save_checkpoint(tmp_path / "w.pt", build_model(tiny_config))
    ck = read_checkpoint(path)
    ck["model"]["config"]["feat_channels"] = 16
    torch.save(ck, path)
    with pytest.raises(CheckpointError, match="do not fit"):
        eapnet.load_model(path)


def test_unknown_name():
    with pytest.raises(CheckpointError, match="unknown model"):
        eapnet.load_model("huge")
