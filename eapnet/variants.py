"""Recorded MAccs and parameters of every rebuilt paper configuration, beside the paper's figures.

torchvision-style: ``tests/test_variants.py`` rebuilds each row and fails when the code's count drifts
from the recorded one, and checks the two named variants against the paper (5 % MAccs, 10 % params).
MAccs in the NTIRE 2022 convention at 1900x1060 (see eapnet/macs.py). Print the table:
:mod:`eapnet.paper_table` (``eapnet-variants``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from eapnet.model import LIGHTWEIGHT, STANDARD, EAPNetConfig, with_blocks


@dataclass(frozen=True)
class PaperRow:
    key: str
    description: str
    config: Callable[[], EAPNetConfig]
    maccs: int                 # measured by eapnet.count_maccs, recorded here
    params: int                # measured by eapnet.count_params
    paper_gmaccs: float        # the paper's figure (G = 1e9 MAccs)
    paper_kparams: float | None = None


_L = LIGHTWEIGHT
ROWS: tuple[PaperRow, ...] = (
    PaperRow("standard", "Table 1 exp. 8*: 4 PDUBs, half align+attention, conv-up",
             lambda: STANDARD, 197_974_751_744, 588_515, 198.38, 576.23),
    PaperRow("lightweight", "Table 1 exp. 6*: 3 PDUBs, full alignment, bilinear",
             lambda: LIGHTWEIGHT, 147_038_147_872, 394_723, 146.28, 393.73),
    PaperRow("table1_exp1", "naive encoder, DRDB, shared weights, no alignment",
             lambda: _L.replace(name="exp1", multi_scale=False, block="drdb", share_weights=True, align="off"),
             162_672_794_000, 206_851, 152.11),
    PaperRow("table1_exp2", "MS encoder, DRDB, shared, no alignment",
             lambda: _L.replace(name="exp2", block="drdb", share_weights=True, align="off"),
             143_306_170_000, 216_131, 137.66),
    PaperRow("table1_exp3", "MS, PDUB, shared, no alignment",
             lambda: _L.replace(name="exp3", share_weights=True, align="off"),
             122_727_875_872, 358_307, 121.03),
    PaperRow("table1_exp4", "MS, PDUB, shared, full alignment",
             lambda: _L.replace(name="exp4", share_weights=True),
             147_038_147_872, 367_907, 146.28),
    PaperRow("table1_exp5", "MS, PDUB, not shared, no alignment",
             lambda: _L.replace(name="exp5", align="off"),
             122_727_875_872, 375_523, 121.03),
    PaperRow("table1_exp7", "MS, PDUB, not shared, half alignment + attention",
             lambda: _L.replace(name="exp7", align="half", attention="half"),
             118_473_578_272, 394_723, 126.43),
    PaperRow("table2_2pdub", "lightweight with 2 PDUBs",
             lambda: with_blocks(_L, 2), 125_298_180_672, 290_307, 128.25),
    PaperRow("table2_4pdub", "lightweight with 4 PDUBs",
             lambda: with_blocks(_L, 4), 168_778_115_072, 499_139, 164.31),
    PaperRow("table2_5pdub", "lightweight with 5 PDUBs",
             lambda: with_blocks(_L, 5), 190_518_082_272, 603_555, 182.34),
)

# The NTIRE 2022 baseline, counted the same way (eapnet/ahdr.py). The paper's Table 5 prints 1141.28 k
# parameters; the published layer description gives 1441.28 k (one digit apart: most likely a typo there).
AHDR_MACCS = 2_916_922_522_000
AHDR_PARAMS = 1_441_283


def table_markdown() -> str:
    """The rows as a Markdown table: ours vs the paper, with relative differences."""
    lines = ["| row | what | GMAccs (ours) | GMAccs (paper) | diff | k params (ours) | k params (paper) |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in ROWS:
        g = r.maccs / 1e9
        pk = f"{r.paper_kparams:.2f}" if r.paper_kparams else "–"
        lines.append(f"| {r.key} | {r.description} | {g:.2f} | {r.paper_gmaccs:.2f} | "
                     f"{100 * (g / r.paper_gmaccs - 1):+.1f} % | {r.params / 1e3:.2f} | {pk} |")
    lines.append(f"| ahdr | NTIRE 2022 baseline (AHDR) | {AHDR_MACCS / 1e9:.2f} | 2916.92 | "
                 f"{100 * (AHDR_MACCS / 2916.92e9 - 1):+.1f} % | {AHDR_PARAMS / 1e3:.2f} | 1141.28 |")
    return "\n".join(lines)
