"""The one checkpoint format and the one loader.

A checkpoint is a ``torch.save`` dict that holds everything needed to rebuild and resume:

- ``format`` / ``version``: identify our files (anything else is rejected as foreign);
- ``model``: ``{"kind": "eapnet" | "ahdr", "config": {...}}`` -- the architecture, rebuilt from the file alone;
- ``state_dict`` (raw weights) and ``ema_state_dict`` (the EMA weights: the training result);
- for resuming: ``optimizer``, ``scheduler``, ``step``, ``rng`` (torch CPU/CUDA and Python states),
  ``train_config`` (the resolved training config);
- ``metrics``: whatever the writer measured (validation PSNR, ...); ``extra``: e.g. the AMP grad-scaler state.

Files are written atomically and read with ``torch.load(weights_only=True)``: no code runs on load.

    model = eapnet.load_model("standard")        # shipped EMA weights, eval mode
    model = eapnet.load_model("runs/x/last.pt")  # any checkpoint this project wrote
"""
from __future__ import annotations

import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from eapnet.model import MAX_COUNT, MAX_WIDTH, EAPNet, EAPNetConfig
from eapnet.runs import atomic_path
from eapnet.ahdr import AHDR

FORMAT = "eapnet-checkpoint"
VERSION = 1
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SHIPPED = ("standard", "lightweight")


class CheckpointError(ValueError):
    """A file that is missing, corrupt, or not a checkpoint this project wrote; the message names it."""


def model_spec(model: nn.Module) -> dict:
    """``{"kind", "config"}`` describing ``model``'s architecture (unwraps DDP / torch.compile)."""
    model = unwrap(model)
    if isinstance(model, EAPNet):
        return {"kind": "eapnet", "config": model.config.to_dict()}

    if isinstance(model, AHDR):
        return {"kind": "ahdr", "config": {}}
    raise TypeError(f"cannot describe a {type(model).__name__} in a checkpoint")


def build_from_spec(spec: dict) -> nn.Module:
    kind = spec.get("kind")
    if kind == "eapnet":
        return EAPNet(EAPNetConfig.from_dict(dict(spec["config"])))
    if kind == "ahdr":
        return AHDR(**spec.get("config", {}))
    raise CheckpointError(f"unknown model kind {kind!r} in checkpoint")


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DistributedDataParallel and ``torch.compile`` wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": _to_lists(random.getstate())}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_to_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_lists(x):
    return [_to_lists(v) for v in x] if isinstance(x, (tuple, list)) else x


def _to_tuples(x):
    return tuple(_to_tuples(v) for v in x) if isinstance(x, list) else x


def save_checkpoint(path: str | Path, model: nn.Module, *, ema: nn.Module | None = None,
                    optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None, step: int = 0,
                    train_config: dict | None = None, metrics: dict | None = None,
                    extra: dict | None = None, with_rng: bool = True) -> Path:
    """Write a checkpoint atomically (temporary file, then rename) and return its path."""
    ckpt = {
        "format": FORMAT,
        "version": VERSION,
        "model": model_spec(model),
        "state_dict": {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()},
        "ema_state_dict": ({k: v.detach().cpu() for k, v in unwrap(ema).state_dict().items()}
                           if ema is not None else None),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "step": int(step),
        "rng": rng_state() if with_rng else None,
        "train_config": train_config or {},
        "metrics": metrics or {},
        "extra": extra or {},
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
    return path


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load and validate a checkpoint dict (``weights_only=True``). Raises :class:`CheckpointError`."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder, not a checkpoint file (a run folder holds "
                              "model.pt and last.pt)")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message goes on to suggest weights_only=False, i.e. running the file's code: never that
        with open(path, "rb") as f:
            head = f.read(2)
        pickled = head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")   # PROTO 2-5
        if not (zipfile.is_zipfile(path) or pickled):
            raise CheckpointError(f"{path} is not a PyTorch checkpoint (neither the zip archive torch.save "
                                  "writes nor a pickle): another kind of file, not loaded") from e
        raise CheckpointError(f"{path} holds objects that safe loading (weights_only) refuses: not a checkpoint "
                              "this project wrote, and not loaded") from e
    except Exception as e:   # a text file, a truncated zip, ...: torch raises KeyError, EOFError, RuntimeError
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise CheckpointError(f"{path} is not a readable checkpoint (corrupt, truncated or another kind of "
                              f"file: {type(e).__name__}{': ' + first if first else ''})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an EAPNet checkpoint (no format={FORMAT!r} field): a foreign file")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {ckpt.get('version')!r}; this code reads {VERSION}")
    for key in ("model", "state_dict", "step"):
        if key not in ckpt:
            raise CheckpointError(f"{path} lacks the {key!r} entry")
    check_spec(ckpt["model"], str(path))
    return ckpt


_AHDR_FIELDS = {"feat": MAX_WIDTH, "growth": MAX_WIDTH, "layers": MAX_COUNT, "blocks": MAX_COUNT}


def check_spec(spec, source: str) -> None:
    """CheckpointError naming ``source`` (the file) and the field when a model spec is not one this code can
    build within sane sizes (``eapnet.model.MAX_WIDTH`` channels, ``MAX_COUNT`` blocks or layers): checked
    before any weight is allocated, so a config of 65,536 channels is refused, not a 17 GB allocation."""
    if not isinstance(spec, dict) or not isinstance(spec.get("config", {}), dict):
        raise CheckpointError(f"{source}: model spec must be a mapping with a 'config' mapping, got {spec!r:.80}")
    kind, cfg = spec.get("kind"), spec.get("config", {})
    if kind == "eapnet":
        try:
            EAPNetConfig.from_dict(dict(cfg))
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{source}: model config: {e}") from None
    elif kind == "ahdr":
        for key, v in cfg.items():
            if key == "gamma":
                continue
            if key not in _AHDR_FIELDS:
                raise CheckpointError(f"{source}: model config: unknown AHDR field {key!r}; known: "
                                      f"{sorted(_AHDR_FIELDS) + ['gamma']}")
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= _AHDR_FIELDS[key]:
                raise CheckpointError(f"{source}: model config: AHDR {key} must be an int in "
                                      f"[1, {_AHDR_FIELDS[key]:,}], got {v!r}")
    else:
        raise CheckpointError(f"{source}: unknown model kind {kind!r} in checkpoint")


def model_from_checkpoint(ckpt: dict, ema: bool = True) -> nn.Module:
    """Rebuild the model from the checkpoint's own spec and load its EMA (or raw) weights; eval mode."""
    model = build_from_spec(ckpt["model"])
    state = ckpt.get("ema_state_dict") if ema and ckpt.get("ema_state_dict") is not None else ckpt["state_dict"]
    bad = [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"checkpoint weights hold NaN/inf values in {len(bad)} tensor(s), first {bad[0]!r}: "
                              "the run that wrote them diverged")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint weights do not fit its own model spec: {e}") from e
    return model.eval()


def shipped_path(name: str) -> Path:
    return WEIGHTS_DIR / f"{name}.pt"


def load_model(name_or_path: str | Path, device: str | torch.device = "cpu", ema: bool = True) -> nn.Module:
    """A trained model in eval mode: ``"standard"`` / ``"lightweight"`` (shipped EMA weights) or a path
    to any checkpoint this project wrote (its architecture is rebuilt from the file alone)."""
    if isinstance(name_or_path, str) and name_or_path in SHIPPED:
        path = shipped_path(name_or_path)
        if not path.is_file():
            raise CheckpointError(f"shipped weights for {name_or_path!r} are missing at {path}")
    else:
        path = Path(name_or_path)
        if not path.exists() and isinstance(name_or_path, str) and "/" not in name_or_path \
                and not path.suffix:
            raise CheckpointError(f"unknown model {name_or_path!r}: expected one of {SHIPPED} or a checkpoint path")
    return model_from_checkpoint(read_checkpoint(path), ema=ema).to(device)
