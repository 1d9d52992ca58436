"""Training throughput and full-frame inference time of the EAPNet variants, printed as figures.

    python bench/bench_model.py                         # this machine's CPU
    python bench/bench_model.py --device cuda           # GPU: fp32, bf16/fp16, with and without torch.compile
    python bench/bench_model.py --variants lightweight --train-batch 8 --train-patch 128 --repeats 3

Training: steps/s and samples/s of full optimizer steps (forward, 0.5/0.5 loss, backward, Adam) at
``--train-batch`` x ``--train-patch``^2 (paper: 32 x 256^2). Inference: seconds per 1920x1080 frame (the
paper pads 1900x1060 to that size; it reports 0.24 s standard and 0.15 s lightweight on a V100), median of
``--repeats`` runs after a warm-up. Figures are measured in one run so their ratios compare; the machine is
shared, so read single numbers with care. ``--out FILE`` also writes the rows as JSON (atomically).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eapnet import build_model, count_maccs  # noqa: E402
from eapnet.losses import EAPNetLoss  # noqa: E402

PAPER_V100_S = {"standard": 0.24, "lightweight": 0.15}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(fn, device, repeats: int) -> float:
    fn()  # warm-up (and compilation)
    _sync(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_train(name: str, device, batch: int, patch: int, repeats: int, amp_dtype, compile_: bool) -> float:
    model = build_model(name).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    net = torch.compile(model) if compile_ else model
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    crit = EAPNetLoss()
    x = torch.rand(batch, 3, 3, patch, patch, device=device)
    e = torch.tensor([[-2.0, 0.0, 2.0]] * batch, device=device)
    gt = torch.rand(batch, 3, patch, patch, device=device)

    def step():
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            pred = net(x, e)
        loss = crit(pred.float(), gt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return _time(step, device, repeats)


def bench_infer(name: str, device, repeats: int, amp_dtype, compile_: bool, h: int = 1080, w: int = 1920) -> float:
    model = build_model(name).to(device).eval()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    net = torch.compile(model) if compile_ else model
    x = torch.rand(1, 3, 3, h, w, device=device)
    e = torch.tensor([[-2.0, 0.0, 2.0]], device=device)

    def run():
        with torch.inference_mode(), torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            net(x, e)

    return _time(run, device, repeats)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", nargs="+", default=["standard", "lightweight"], choices=["standard", "lightweight"])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--train-batch", type=int, default=None, help="default: 32 on CUDA, 8 on CPU")
    p.add_argument("--train-patch", type=int, default=None, help="default: 256 on CUDA, 128 on CPU")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per figure (median reported)")
    p.add_argument("--skip-train", action="store_true", help="only time inference")
    p.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available here")
    batch = args.train_batch or (32 if device.type == "cuda" else 8)
    patch = args.train_patch or (256 if device.type == "cuda" else 128)
    modes = [("fp32", None, False)]
    if device.type == "cuda":
        half = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        hname = "bf16" if half == torch.bfloat16 else "fp16"
        modes += [(hname, half, False), ("fp32+compile", None, True), (f"{hname}+compile", half, True)]
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"# {where}, torch {torch.__version__}")
    rows = []
    for name in args.variants:
        gmaccs = count_maccs(build_model(name), 1080, 1920) / 1e9
        for mode, dtype, comp in modes:
            row = {"variant": name, "mode": mode, "gmaccs_1920x1080": round(gmaccs, 2)}
            if not args.skip_train:
                s = bench_train(name, device, batch, patch, args.repeats, dtype, comp)
                row.update(train_batch=batch, train_patch=patch, train_steps_per_s=1 / s,
                           train_samples_per_s=batch / s)
            row["infer_s_per_1920x1080"] = bench_infer(name, device, args.repeats, dtype, comp)
            row["paper_v100_s"] = PAPER_V100_S[name]
            rows.append(row)
            tr = (f"train {row['train_steps_per_s']:.3f} it/s ({row['train_samples_per_s']:.1f} samples/s, "
                  f"{batch}x{patch}^2)  " if "train_steps_per_s" in row else "")
            print(f"{name:<12} {mode:<14} {tr}infer {row['infer_s_per_1920x1080']:.3f} s/frame "
                  f"(paper V100: {PAPER_V100_S[name]:.2f} s)")
    if len(args.variants) == 2:
        a, b = (next(r for r in rows if r["variant"] == v and r["mode"] == "fp32") for v in args.variants)
        print(f"ratio {args.variants[0]}/{args.variants[1]} inference time (fp32): "
              f"{a['infer_s_per_1920x1080'] / b['infer_s_per_1920x1080']:.2f} "
              f"(MAcc ratio {a['gmaccs_1920x1080'] / b['gmaccs_1920x1080']:.2f}; paper V100 time ratio "
              f"{PAPER_V100_S[args.variants[0]] / PAPER_V100_S[args.variants[1]]:.2f})")
    if args.out:
        from eapnet.runs import atomic_write_json, package_versions

        atomic_write_json(args.out, {"device": where, "versions": package_versions(), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
