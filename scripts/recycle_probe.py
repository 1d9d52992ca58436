"""How fast do recycled ReLU channels die again? A short probe from a trained model.

    python scripts/recycle_probe.py --model standard --mode redo --steps 150      # ~10 min, 1 thread
    python scripts/recycle_probe.py --model standard --mode small --steps 150

Finds the dead channels of ``--model`` on the 8 probe scenes (``eapnet.diagnostics``), recycles them
(``eapnet.recycle``), then trains ``--steps`` steps of batch 8 on 128^2 synthetic patches with Adam at ``--lr``
(20-step warm-up, fresh moments) and prints, every 50 steps, how many channels are dead again, in total and in
each PDUB's ``enc2`` and ``dec2``. Modes:

- ``redo``: the training default: full He-scale incoming weights, zero outgoing weights where the channel
  can be isolated;
- ``small``: the earlier scheme: incoming weights at ``SMALL_SCALE`` of He, outgoing weights kept;
- ``--freeze-pdub-bias``: the PDUBs' biases get lr 0 (does bias drift kill the channels?).
"""
from __future__ import annotations

import json
import sys
import time

import torch
from torch.utils.data import DataLoader

from eapnet.cli import Parser, command, int_at_least


@command
def main(argv=None) -> int:
    from eapnet import load_model
    from eapnet.cpu import use_fast_depthwise
    from eapnet.diagnostics import dead_channels, probe_batches
    from eapnet.losses import EAPNetLoss
    from eapnet.recycle import find_dead, recycle
    from eapnet.training import SyntheticStream, train_step

    p = Parser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="standard", help="shipped name or checkpoint")
    p.add_argument("--mode", choices=("redo", "small"), default="redo")
    p.add_argument("--freeze-pdub-bias", action="store_true")
    p.add_argument("--steps", type=int_at_least(1), default=150)
    p.add_argument("--lr", type=float, default=8e-4)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    model = load_model(args.model).train()
    probe = [(x, e) for x, e, _ in probe_batches(8, 128)]
    dead = find_dead(model, probe)
    n = recycle(model, dead, generator=torch.Generator().manual_seed(args.seed),
                readers={} if args.mode == "small" else None)
    frozen = [p for k, p in model.named_parameters() if args.freeze_pdub_bias and k.startswith("blocks")
              and k.endswith("bias")]
    rest = [p for p in model.parameters() if all(p is not q for q in frozen)]
    opt = torch.optim.Adam([{"params": rest}] + ([{"params": frozen, "lr": 0.0}] if frozen else []), lr=args.lr)
    base_lr = [g["lr"] for g in opt.param_groups]
    model.to(memory_format=torch.channels_last)
    use_fast_depthwise(model)
    batches = iter(DataLoader(SyntheticStream(1234, 128), batch_size=8, num_workers=0))
    loss_fn = EAPNetLoss()

    def report(step):
        d = dead_channels(model, probe)
        row = {k: v[0] for k, v in d.items() if k.startswith("blocks") and k.endswith(("enc2", "dec2"))}
        print(json.dumps({"step": step, "dead": sum(v[0] for v in d.values()), **row}), flush=True)

    print(f"recycled {n} channels ({args.mode})", flush=True)
    report(0)
    t = time.time()
    for s in range(1, args.steps + 1):
        b = next(batches)
        for g, lr in zip(opt.param_groups, base_lr):
            g["lr"] = lr * min(1.0, s / 20)
        train_step(model, (b["ldrs"], b["evs"], b["gt"]), lambda pred, bt: loss_fn(pred, bt[2]), opt)
        if s % 50 == 0 or s == args.steps:
            report(s)
    print(f"{(time.time() - t) / args.steps:.2f} s/step", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
