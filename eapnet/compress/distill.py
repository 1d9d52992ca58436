"""Distilled fine-tuning of a compressed student from its float teacher (also the QAT loop).

The loss is ``weight`` * EAPNet loss(student, teacher output) + (1 - ``weight``) * EAPNet loss(student, ground
truth), Adam with a cosine-decayed lr, on a deterministic stream of training patches. Each step is
:func:`eapnet.training.train_step`, the step the float training uses; a float student on CPU trains in
channels_last with the fast dilated depthwise convs, as the float training does, and so does the teacher's
forward (:mod:`eapnet.cpu`).
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from eapnet.cpu import fast_cpu_training
from eapnet.losses import eapnet_loss
from eapnet.model import EAPNet
from eapnet.training import FolderStream, SyntheticStream, train_step


def patch_stream(data: str, seed: int, patch: int):
    """The fine-tune's sample stream: synthetic scenes (seed offset by 1000, so the fine-tune never replays the
    teacher's training samples in lockstep) or a folder's patches."""
    return SyntheticStream(seed + 1000, patch) if data == "synthetic" else FolderStream(data, seed, patch, patch)


def _batches(stream, batch: int, steps: int, start: int = 0):
    idx = range(start * batch, (start + steps) * batch)
    return DataLoader(Subset(stream, idx), batch_size=batch, shuffle=False, num_workers=0)


def distill(student, teacher: nn.Module, stream, *, steps: int, batch: int, lr: float, weight: float,
            device: torch.device, desc: str, progress: bool = True, start: int = 0,
            probe: tuple[int, Callable[[int], None]] | None = None) -> list[float]:
    """Train ``student`` (an nn.Module or a PT2E GraphModule) for ``steps`` steps from sample ``start * batch``
    of ``stream``; returns the losses. ``probe = (every, fn)`` calls ``fn(step)`` after every ``every``-th step
    (e.g. to score the student on held-out scenes; it must leave the student as it was)."""
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / max(steps, 1))))
    teacher.eval()

    def loss_fn(pred, b):
        ldrs, evs, gt = b
        with torch.no_grad():
            target = teacher(ldrs, evs)
        return weight * eapnet_loss(pred, target) + (1 - weight) * eapnet_loss(pred, gt)

    losses = []
    bar = tqdm(_batches(stream, batch, steps, start), total=steps, desc=desc, disable=not progress, unit="step")
    # on CPU, float EAPNets (a student, the teacher) run with the float trainer's fast paths (eapnet/cpu.py);
    # a PT2E graph (the QAT student) as it is
    float_nets = [m for m in (student, teacher) if isinstance(m, EAPNet)]
    fast = fast_cpu_training(*float_nets) if device.type == "cpu" and float_nets else contextlib.nullcontext()
    with fast:
        for b in bar:
            batch_t = tuple(b[k].to(device) for k in ("ldrs", "evs", "gt"))
            losses.append(train_step(student, batch_t, loss_fn, opt, params=params).item())
            sched.step()
            if probe and len(losses) % probe[0] == 0:
                probe[1](len(losses))
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.5f}")
    return losses
