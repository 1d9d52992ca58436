"""EAPNet for phones: the model family, NTIRE-convention MAcc counting, metrics, data and losses.

Public API::

    eapnet.build_model("standard" | "lightweight" | "ahdr" | EAPNetConfig)   # fresh weights
    eapnet.load_model("standard" | "lightweight" | "path/to/checkpoint.pt")  # trained, eval mode
    eapnet.count_maccs(model, height=1060, width=1900)   # MAccs, NTIRE 2022 convention
    eapnet.count_params(model)
    eapnet.metrics.psnr_mu(ref, res), eapnet.metrics.psnr_l(ref, res)
    eapnet.data.read_ntire(folder, sample_id)
"""
from __future__ import annotations

from eapnet import console as _console

_console.install()   # before torch, torchao, coremltools and tqdm are imported: they log at import time

from torch import nn  # noqa: E402

from eapnet.ahdr import AHDR
from eapnet.checkpoint import load_model as _load
from eapnet.macs import count_maccs, count_params, parse_maccs
from eapnet.model import LIGHTWEIGHT, STANDARD, VARIANTS, EAPNet, EAPNetConfig

__all__ = ["build_model", "load_model", "count_maccs", "count_params", "parse_maccs", "EAPNet", "EAPNetConfig",
           "STANDARD", "LIGHTWEIGHT", "VARIANTS", "MODEL_NAMES"]

MODEL_NAMES = ("standard", "lightweight", "ahdr")


def build_model(name_or_config: str | EAPNetConfig) -> nn.Module:
    """A freshly initialised model: ``"standard"``, ``"lightweight"``, ``"ahdr"`` or any EAPNetConfig."""
    if isinstance(name_or_config, EAPNetConfig):
        return EAPNet(name_or_config)
    if name_or_config == "ahdr":
        return AHDR()
    if isinstance(name_or_config, str) and name_or_config in VARIANTS:
        return EAPNet(VARIANTS[name_or_config])
    raise ValueError(f"unknown model {name_or_config!r}: expected one of {MODEL_NAMES} or an EAPNetConfig")


def load_model(name_or_path, device="cpu", ema: bool = True) -> nn.Module:
    """Trained weights in eval mode: the shipped ``"standard"``/``"lightweight"`` EMA models, or any checkpoint
    this project wrote (its architecture is rebuilt from the file alone). See eapnet/checkpoint.py."""
    return _load(name_or_path, device=device, ema=ema)
