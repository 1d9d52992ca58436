"""Recycling dead ReLU channels (eapnet/recycle.py): revives them, touches nothing else, keeps the output."""
import csv
import json

import pytest
import torch

from eapnet import load_model
from eapnet.diagnostics import dead_channels, probe_batches, relu_modules
from eapnet.metrics import psnr_mu
from eapnet.model import EAPNet
from eapnet.recycle import find_dead, outgoing, producer, recycle
from eapnet.train import main

from conftest import TINY


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
    # isolated channels (zero outgoing weights) change nothing; merge's (on the residual stream) get small
    # incoming weights: the picture changes by a small fraction of a dB
    assert abs(_psnr(model, scenes) - before) < 0.15
    for a, b in zip(model.state_dict().values(), ema.state_dict().values()):
        assert torch.equal(a, b)  # the EMA got the same values


def test_isolated_channels_come_back_at_full_scale_without_changing_the_output(scenes):
    model = _with_dead_channels().eval()
    # the channels killed outright (a "dead" channel may still fire on 0.1 % of pixels: recycling one of those
    # drops that trace, so only these leave the output exactly unchanged)
    dead = {n: list(range(10)) for n in ("blocks.0.dec2", "blocks.1.enc2", "blocks.2.enc1")}
    readers = outgoing(model, dead)
    assert all(r is not None for r in readers.values())
    with torch.no_grad():
        ref = [model(x, e) for x, e, _ in scenes]
    recycle(model, dead, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for (x, e, _), r in zip(scenes, ref):
            torch.testing.assert_close(model(x, e), r, rtol=0, atol=1e-5)
    conv = producer(model, "blocks.0.dec2")
    he = (2 / conv.in_channels) ** 0.5
    with torch.no_grad():
        assert 0.8 * he < float(conv.weight[:10].std()) < 1.2 * he  # full He scale
        for name, rows in dead.items():
            for reader, dim, mapping in readers[name]:
                w = model.get_submodule(reader).weight
                assert torch.all(w.index_select(dim, torch.tensor([mapping[i] for i in rows])) == 0)


def test_outgoing_names_exactly_the_weights_that_isolate_a_channel():
    """For every ReLU of two tiny models: once the weights ``outgoing`` names are zero, driving the channel
    hard with new incoming weights leaves the output unchanged; where it answers None, the channel still
    reaches the output."""
    x = torch.rand(1, 3, 3, 32, 32)
    e = torch.tensor([[-2.0, 0.0, 2.0]])
    for cfg in (TINY, TINY.replace(upsample="conv", align="half", attention="half", base="merge")):
        torch.manual_seed(0)
        base = EAPNet(cfg).eval()
        with torch.no_grad():
            base.out.weight.normal_(0, 0.1)  # the zero-initialised output conv would hide everything
        readers = outgoing(base, relu_modules(base))
        assert set(readers) == set(relu_modules(base))
        assert sum(r is None for r in readers.values()) < len(readers) / 2
        for name, rd in readers.items():
            m = EAPNet(cfg).eval()
            m.load_state_dict(base.state_dict())
            with torch.no_grad():
                for reader, dim, mapping in rd or []:
                    m.get_submodule(reader).weight.index_fill_(dim, torch.tensor([mapping[0]]), 0.0)
                ref = m(x, e)
                conv = producer(m, name)
                conv.weight[0].normal_(0, 1.0)
                conv.bias[0] = 5.0
                changed = not torch.allclose(m(x, e), ref, atol=1e-6)
            assert changed == (rd is None), (cfg.upsample, name, rd)


def test_recycling_touches_only_the_dead_rows_their_readers_and_their_adam_state(scenes):
    model = _with_dead_channels().train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x, e, gt = scenes[0]
    (model(x, e) - gt).abs().mean().backward()
    opt.step()
    name = "blocks.1.enc2"
    rows = find_dead(model, _inputs(scenes))[name]
    conv = producer(model, name)
    old = {k: v.clone() for k, v in model.state_dict().items()}
    recycle(model, {name: rows}, optimizer=opt, generator=torch.Generator().manual_seed(1))
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, old[k])}
    # enc2 feeds enc3 (depthwise) and, through the skip concatenation after up3(dec3), dec2 (depthwise)
    assert changed == {"blocks.1.enc2.pw.weight", "blocks.1.enc2.pw.bias", "blocks.1.enc3.dw.weight",
                       "blocks.1.dec2.dw.weight"}
    idx = torch.tensor(rows)
    keep = torch.ones(conv.out_channels, dtype=torch.bool)
    keep[idx] = False
    assert torch.equal(conv.weight[keep], old["blocks.1.enc2.pw.weight"][keep])
    assert torch.all(conv.bias[idx] == 0)
    w3 = model.blocks[1].dec3.pw.out_channels
    assert torch.all(model.blocks[1].enc3.dw.weight[idx] == 0)
    assert torch.all(model.blocks[1].dec2.dw.weight[idx + w3] == 0)
    for p in (conv.weight, model.blocks[1].dec2.dw.weight):
        state = opt.state[p]
        at = idx if p is conv.weight else idx + w3
        rest = torch.ones(p.shape[0], dtype=torch.bool)
        rest[at] = False
        assert torch.all(state["exp_avg"][at] == 0)
        # second moments of revived entries: the mean of the others (usual step sizes), not zero
        v = state["exp_avg_sq"]
        assert float(v[rest].mean()) > 0
        torch.testing.assert_close(v[at], torch.full_like(v[at], float(v[rest].mean())))


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
