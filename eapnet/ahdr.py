"""AHDR (Yan et al., CVPR 2019, "Attention-guided Network for Ghost-free HDR Imaging"): the NTIRE 2022 baseline.

Written from the paper's layer description: a shared 3x3 conv (6 -> 64) per frame; for the short and long
frame an attention branch of two 3x3 convs on concat(frame, reference) -> sigmoid gating; a 3x3 conv
fusing the three frames (192 -> 64); three dilated residual dense blocks (6 layers, growth 32, dilation 2,
1x1 fusion); global feature fusion (1x1 over the three block outputs, then 3x3); the long skip from the
reference features; two 3x3 convs to the output. All convs are standard convs with bias, LeakyReLU
activations. MAccs at 1900x1060 in the NTIRE convention: 2916.92 G, the challenge's published baseline.

Same interface as EAPNet: ``model(ldrs (B,3,3,H,W) in [0,1], evs (B,3))`` -> gamma-encoded HDR (B,3,H,W).
One deliberate change: the original ends in a sigmoid (HDR in [0, 1]); the challenge's ground truth exceeds
1, so we end in a ReLU. This changes no MAcc or parameter count.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from eapnet.model import GAMMA, ev_align


class _DRDB(nn.Module):
    """Dilated residual dense block: dense 3x3 convs (dilation 2), 1x1 fusion, residual."""

    def __init__(self, c: int = 64, growth: int = 32, layers: int = 6):
        super().__init__()
        self.dense = nn.ModuleList(
            nn.Conv2d(c + i * growth, growth, 3, padding=2, dilation=2) for i in range(layers))
        self.fuse = nn.Conv2d(c + layers * growth, c, 1)

    def forward(self, x):
        feats = x
        for conv in self.dense:
            feats = torch.cat([feats, F.relu(conv(feats))], 1)
        return x + self.fuse(feats)


class AHDR(nn.Module):
    """The AHDR baseline in the NTIRE interface (see module docstring)."""

    def __init__(self, feat: int = 64, growth: int = 32, layers: int = 6, blocks: int = 3,
                 gamma: float = GAMMA):
        super().__init__()
        self.gamma = gamma
        self.conv1 = nn.Conv2d(6, feat, 3, padding=1)  # shared by the three frames, as in AHDR
        self.att1 = nn.Sequential(nn.Conv2d(2 * feat, 2 * feat, 3, padding=1), nn.LeakyReLU(),
                                  nn.Conv2d(2 * feat, feat, 3, padding=1))
        self.att3 = nn.Sequential(nn.Conv2d(2 * feat, 2 * feat, 3, padding=1), nn.LeakyReLU(),
                                  nn.Conv2d(2 * feat, feat, 3, padding=1))
        self.conv2 = nn.Conv2d(3 * feat, feat, 3, padding=1)
        self.blocks = nn.ModuleList(_DRDB(feat, growth, layers) for _ in range(blocks))
        self.gff_1x1 = nn.Conv2d(blocks * feat, feat, 1)
        self.gff_3x3 = nn.Conv2d(feat, feat, 3, padding=1)
        self.conv_up = nn.Conv2d(feat, feat, 3, padding=1)
        self.conv3 = nn.Conv2d(feat, 3, 3, padding=1)
        self.act = nn.LeakyReLU()

    def forward(self, ldrs: torch.Tensor, evs: torch.Tensor) -> torch.Tensor:
        x1, x2, x3 = ev_align(ldrs, evs, self.gamma)
        f1, f2, f3 = (self.act(self.conv1(x)) for x in (x1, x2, x3))
        f1 = f1 * torch.sigmoid(self.att1(torch.cat([f1, f2], 1)))
        f3 = f3 * torch.sigmoid(self.att3(torch.cat([f3, f2], 1)))
        y = self.conv2(torch.cat([f1, f2, f3], 1))
        outs = []
        for block in self.blocks:
            y = block(y)
            outs.append(y)
        y = self.gff_3x3(self.gff_1x1(torch.cat(outs, 1))) + f2
        y = self.conv3(self.act(self.conv_up(y)))
        return F.relu(y)
