"""Print the recorded MAccs and parameters of every rebuilt paper configuration beside the paper's figures.

    python -m eapnet.paper_table              # the record (eapnet/variants.py), as a Markdown table
    python -m eapnet.paper_table --measure    # re-count every row (torchinfo, one 1900x1060 scene)
"""
from __future__ import annotations

import argparse
import sys

from eapnet.cli import Parser, command
from eapnet.macs import count_maccs, count_params
from eapnet.model import EAPNet
from eapnet.variants import ROWS, table_markdown


def get_args_parser() -> argparse.ArgumentParser:
    p = Parser(prog="eapnet-variants", description=__doc__.split("\n")[0])
    p.add_argument("--measure", action="store_true", help="re-measure every row instead of printing the record")
    return p


@command
def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    if args.measure:
        for r in ROWS:
            m = EAPNet(r.config())
            print(f"{r.key:<14} {count_maccs(m):>16,d} MAccs {count_params(m):>9,d} params")
        return 0
    print(table_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
