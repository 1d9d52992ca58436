"""Argument types shared by every command line (sizes, integer ranges, MAcc budgets) and YAML configs.

Each raises ``argparse.ArgumentTypeError`` with a message naming the bad text, so argparse prints
``error: argument --size: size must be HxW ...`` and exits 2.
"""
from __future__ import annotations

import argparse
from pathlib import Path


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


def yaml_config(defaults: str | Path, path: str | Path | None, what: str) -> dict:
    """The YAML mapping ``defaults`` updated by the YAML file ``path`` (safe-loaded); ValueError naming
    ``--config PATH`` for a missing file, a non-mapping or a key ``defaults`` does not have. ``what`` names
    the keys in messages (e.g. ``"training"``)."""
    import yaml

    with open(defaults) as f:
        cfg = yaml.safe_load(f)
    if path is None:
        return cfg
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--config {path}: no such file")
    with open(path) as f:
        user = yaml.safe_load(f) or {}
    if not isinstance(user, dict):
        raise ValueError(f"--config {path}: expected a YAML mapping of {what} keys, got {type(user).__name__}")
    unknown = sorted(set(user) - set(cfg))
    if unknown:
        raise ValueError(f"--config {path}: unknown keys {unknown}; known: {sorted(cfg)}")
    return {**cfg, **user}
