"""Argument types shared by every command line: sizes, integer ranges, MAcc budgets.

Each raises ``argparse.ArgumentTypeError`` with a message naming the bad text, so argparse prints
``error: argument --size: size must be HxW ...`` and exits 2.
"""
from __future__ import annotations

import argparse


def parse_size(text: str) -> tuple[int, int]:
    """``"1060x1900"`` -> ``(1060, 1900)`` (H x W, pixels, each >= 16); ValueError naming the text otherwise."""
    try:
        h, w = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise ValueError(f"size must be HxW in pixels, e.g. 1060x1900; got {text!r}") from None
    if h < 16 or w < 16:
        raise ValueError(f"size must be at least 16x16, got {text!r}")
    return h, w


def size_arg(text: str) -> tuple[int, int]:
    """argparse type for :func:`parse_size`."""
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def int_at_least(lo: int):
    """argparse type: an integer >= ``lo``."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {lo}, got {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"expected an integer >= {lo}, got {v}")
        return v
    return parse


def maccs_arg(text: str) -> int:
    """argparse type for a MAcc budget (``eapnet.macs.parse_maccs``: ``100G``, ``1.5e11``, ``150000M``)."""
    from eapnet.macs import parse_maccs

    try:
        return parse_maccs(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
