"""The one checkpoint format: round trips, rebuilding from the file alone, clear errors."""
import json
import re

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


@pytest.mark.parametrize("blob", [b'{"hello": 1}', bytes(range(256)) * 4, b"\x89PNG\r\n\x1a\n" + bytes(64)])
def test_a_file_that_is_no_pickle_at_all_is_not_called_unsafe(tmp_path, blob):
    # torch's safe unpickler refuses these too; they were reported as holding objects safe loading refuses
    path = tmp_path / "other.pt"
    path.write_bytes(blob)
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(path)
    assert str(e.value) == (f"{path} is not a PyTorch checkpoint (neither the zip archive torch.save writes nor a "
                            "pickle): another kind of file, not loaded")


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


@pytest.mark.parametrize("field, value, words", [
    ("pdub_widths", [[65536, 8, 8], [8, 8, 8]],
     r"pdub_widths row \(65536, 8, 8\) has 65,536 channels, more than any sane variant uses \(at most 4,096\)"),
    ("enc_channels", 65536, r"enc_channels is 65,536, more than any sane variant uses \(at most 4,096\)"),
    ("num_blocks", 1000, r"num_blocks is 1,000, more than any sane variant uses \(at most 64\)"),
    ("tail_channels", "32", r"tail_channels must be a positive int, got '32'"),
])
def test_an_insane_config_is_refused_at_load_before_any_allocation(tmp_path, tiny_config, monkeypatch, field, value,
                                                                   words):
    # a config of 65,536 channels once made load_model allocate 17 GB
    import eapnet.checkpoint as checkpoint

    path = save_checkpoint(tmp_path / "huge.pt", build_model(tiny_config))
    ck = torch.load(path, weights_only=True)
    ck["model"]["config"][field] = value
    torch.save(ck, path)
    monkeypatch.setattr(checkpoint, "EAPNet", lambda cfg: pytest.fail("the model was built"))
    with pytest.raises(CheckpointError) as e:
        eapnet.load_model(path)
    assert re.fullmatch(rf"{re.escape(str(path))}: model config: EAPNetConfig\.{words}", str(e.value)), str(e.value)


def test_an_insane_ahdr_spec_is_refused_at_load(tmp_path, tiny_config):
    path = save_checkpoint(tmp_path / "ahdr.pt", build_model(tiny_config))
    ck = torch.load(path, weights_only=True)
    for config, words in (({"feat": 65536}, r"AHDR feat must be an int in \[1, 4,096\], got 65536"),
                          ({"width": 8}, "unknown AHDR field 'width'")):
        ck["model"] = {"kind": "ahdr", "config": config}
        torch.save(ck, path)
        with pytest.raises(CheckpointError, match=rf"ahdr\.pt: model config: {words}"):
            read_checkpoint(path)
