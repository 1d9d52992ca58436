"""MAcc counter: the NTIRE organisers' calibration points, transposed convs, the budget parser."""
import pytest
import torch
from torch import nn

from eapnet import build_model, count_maccs, count_params
from eapnet.macs import format_maccs, macc_breakdown, parse_maccs
from eapnet.variants import AHDR_MACCS, AHDR_PARAMS


class OrganisersToy(nn.Module):
    """The NTIRE 2022 organisers' example: a shared 6->16 3x3 conv per frame, 48->16, 16->3, all with bias."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(6, 16, 3, padding=1)
        self.c2 = nn.Conv2d(48, 16, 3, padding=1)
        self.c3 = nn.Conv2d(16, 3, 3, padding=1)

    def forward(self, ldrs, evs):
        feats = []
        for i in range(3):
            x = ldrs[:, i]
            feats.append(self.c1(torch.cat([x, x ** 2.24 / torch.exp2(evs[:, i]).view(-1, 1, 1, 1)], 1)))
        return self.c3(self.c2(torch.cat(feats, 1)))


def test_organisers_toy_model_calibration_point():
    m = OrganisersToy()
    assert count_maccs(m) == 20_146_042_000
    assert count_params(m) == 8243


def test_ahdr_is_the_published_baseline():
    m = build_model("ahdr")
    maccs = count_maccs(m)
    assert round(maccs / 1e9, 2) == 2916.92
    assert maccs == AHDR_MACCS
    assert count_params(m) == AHDR_PARAMS


class _One(nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, ldrs, evs):
        return self.layer(ldrs[:, 1])


@pytest.mark.parametrize("h,w", [(1060, 1900), (64, 48), (17, 33)])
def test_conv_counts_weights_and_bias_times_output_pixels(h, w):
    conv = nn.Conv2d(3, 5, 3, padding=1, stride=2)
    oh, ow = (h + 1) // 2, (w + 1) // 2
    assert count_maccs(_One(conv), h, w) == (3 * 5 * 9 + 5) * oh * ow


def test_transposed_conv_is_counted_by_output_pixels():
    up = nn.ConvTranspose2d(3, 4, 2, stride=2)
    h, w = 30, 20
    assert count_maccs(_One(up), h, w) == (3 * 4 * 4 + 4) * (2 * h) * (2 * w)


def test_counting_does_not_touch_the_model():
    m = build_model("lightweight")
    before = {k: v.clone() for k, v in m.state_dict().items()}
    count_maccs(m, 64, 64)
    after = m.state_dict()
    assert all(after[k].device.type == "cpu" and torch.equal(before[k], after[k]) for k in before)


def test_breakdown_sums_to_total():
    m = build_model("standard")
    rows = macc_breakdown(m, 128, 96, depth=1)
    assert sum(rows.values()) == count_maccs(m, 128, 96)
    assert "blocks" in rows and rows["blocks"] > 0


def test_shared_parameters_are_counted_once():
    conv = nn.Conv2d(2, 2, 1)
    seq = nn.Sequential(conv, conv)
    assert count_params(seq) == 6


@pytest.mark.parametrize("text,expected", [
    ("100G", 100 * 10**9), ("100g", 100 * 10**9), ("1.5e11", 150 * 10**9), ("150000M", 150 * 10**9),
    ("2.5T", 2_500 * 10**9), ("198.38G", 198_380_000_000), (" 75 G ", 75 * 10**9), ("100GMAccs", 10**11),
    (5e10, 5 * 10**10), (123456, 123456),
])
def test_parse_maccs_accepts(text, expected):
    assert parse_maccs(text) == expected


@pytest.mark.parametrize("text", ["", "G", "abc", "-100G", "0", "0G", "100X", "1e", "nan", "inf", "1..2G",
                                  float("nan"), -5, True])
def test_parse_maccs_rejects_clearly(text):
    with pytest.raises(ValueError) as e:
        parse_maccs(text)
    assert "budget" in str(e.value)


def test_format_maccs():
    assert format_maccs(198_380_000_000) == "198.38 G"
    assert format_maccs(57_643_600) == "57.64 M" and format_maccs(1000) == "1.00 K" and format_maccs(12) == "12"


def test_breakdown_cli(capsys):
    from eapnet.breakdown import main

    assert main(["--model", "lightweight", "--size", "64x96", "--depth", "1"]) == 0
    out = capsys.readouterr().out
    assert "blocks" in out and "total" in out
    with pytest.raises(SystemExit):
        main(["--model", "nope"])


def test_the_fast_counter_is_torchinfos_count():
    """count_maccs applies torchinfo's rule in hooks; torchinfo itself (macc_breakdown's engine) must agree
    on every table variant, a pruned-looking config, AHDR and the organisers' toy, at two sizes."""
    from eapnet.macs import _summary
    from eapnet.model import EAPNet
    from eapnet.model import STANDARD
    from eapnet.variants import ROWS

    models = [build_model("ahdr"), OrganisersToy()] + [EAPNet(row.config()) for row in ROWS]
    models.append(EAPNet(STANDARD.replace(pdub_widths=((96, 8, 16), (40, 24, 8), (160, 72, 160), (8, 8, 8)),
                                          tail_channels=16, share_weights=True)))
    for m in models:
        for h, w in ((1060, 1900), (37, 53)):
            assert count_maccs(m, h, w) == int(_summary(m, h, w).total_mult_adds), (type(m).__name__, h, w)
