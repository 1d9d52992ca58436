"""The block ablation tool: each ablation equals the model with that part removed by other means."""
import copy

import pytest
import torch
from torch import nn

from eapnet import build_model
from eapnet.ablate import main
from eapnet.ablation import ablation_table, ablations, block_identity, bypass, residual_off, table_markdown
from eapnet.model import radiance_merge


@pytest.fixture
def model(tiny_config):
    torch.manual_seed(0)
    m = build_model(tiny_config.replace(align="full"))
    for p in m.parameters():  # a "trained" model: every part, the output conv included, carries signal
        nn.init.normal_(p, 0, 0.3)
    return m.eval()


@pytest.fixture
def inputs():
    torch.manual_seed(1)
    return torch.rand(1, 3, 3, 32, 40), torch.tensor([[-2.0, 0.0, 2.0]])


def _run(m, inputs):
    with torch.no_grad():
        return m(*inputs)


@pytest.mark.parametrize("i", [0, 1])
def test_identity_block_equals_the_block_with_its_residual_branch_zeroed(model, inputs, i):
    zeroed = copy.deepcopy(model)
    nn.init.zeros_(zeroed.blocks[i].dec1.pw.weight)
    nn.init.zeros_(zeroed.blocks[i].dec1.pw.bias)
    out = _run(block_identity(model, [i]), inputs)
    torch.testing.assert_close(out, _run(zeroed, inputs))
    assert not torch.allclose(out, _run(model, inputs))  # and the block mattered
    assert len(model.blocks[i].dec1.pw.weight.nonzero()) > 0  # the original is untouched


def test_bypassed_attention_equals_gates_stuck_open(model, inputs):
    opened = copy.deepcopy(model)
    for per_frame in opened.attention:
        for att in per_frame:
            nn.init.zeros_(att.conv.pw.weight)
            nn.init.constant_(att.conv.pw.bias, 1e4)  # sigmoid = 1
    torch.testing.assert_close(_run(bypass(model, "attention"), inputs), _run(opened, inputs))


def test_bypassed_alignment_equals_zero_scale_and_bias(model, inputs):
    flat = copy.deepcopy(model)
    for per_frame in flat.alignment:
        for al in per_frame:
            nn.init.zeros_(al.conv.pw.weight)
            nn.init.zeros_(al.conv.pw.bias)
    torch.testing.assert_close(_run(bypass(model, "alignment"), inputs), _run(flat, inputs))


def test_residual_off_is_the_base(model, inputs):
    out = _run(residual_off(model), inputs)
    torch.testing.assert_close(out, torch.relu(radiance_merge(*inputs)) if model.config.base == "merge"
                               else inputs[0][:, 1])


def test_bypass_refuses_a_model_without_alignment(tiny_config):
    with pytest.raises(ValueError, match="no alignment"):
        bypass(build_model(tiny_config.replace(align="off")), "alignment")


def test_table_scores_every_ablation(model):
    from eapnet.data.synthetic import generate_scene_with_info
    from eapnet.data import Scene

    scenes = []
    for i in range(2):
        ldrs, evs, gt, info = generate_scene_with_info(100 + i, 32, 32)
        scenes.append(Scene(f"{i:04d}", ldrs, evs, gt, info["motion_mask"]))
    res = ablation_table(model, {"synthetic": scenes})
    labels = [r["ablation"] for r in res["rows"]]
    assert labels == list(ablations(model))
    assert {"pdub0 -> identity", "pdub1 -> identity", "all PDUBs -> identity", "attention bypassed",
            "alignment bypassed", "residual off (base only)"} <= set(labels)
    full = res["rows"][0]["synthetic"]["psnr_mu"]
    assert any(abs(r["synthetic"]["psnr_mu"] - full) > 1e-3 for r in res["rows"][1:])
    lines = table_markdown(res)
    assert len(lines) == 2 + len(labels)
    assert "(+" in "".join(lines) or "(-" in "".join(lines)


def test_cli_writes_its_table_and_refuses_a_used_folder(tmp_path, capsys):
    out = tmp_path / "abl"
    assert main(["--model", "lightweight", "--heldout", "1", "--size", "32", "--no-real-crops", "--quiet",
                 "--out", str(out)]) == 0
    md = (out / "ablation.md").read_text()
    assert "all PDUBs -> identity" in md and "alignment bypassed" in md
    with pytest.raises(SystemExit):
        main(["--model", "lightweight", "--out", str(out)])
    assert "already holds files" in capsys.readouterr().err
