"""SmoothAdv vs Gaussian augmentation: certified l2 accuracy of randomized smoothing on MNIST-5k.

What it measures
    small_cnn (16, 32, 256) trained on the 3,800 MNIST-5k training digits (E epochs of Adam, lr 1e-3,
    batch 128, seed 0) with advlearn.training.GaussianAugment(sigma) and with
    advlearn.training.SmoothAdv(eps, sigma, steps, num_noise, eps_warmup) at the same sigma (Salman et
    al. 2019), then Smooth.certify on the first N test digits (certify_dataset, n0, n, alpha = 0.001):
    certified accuracy at l2 radii 0, 0.125, 0.25, 0.375, 0.5, the average certified radius (ACR: the mean
    radius over the examples certified correct, 0 elsewhere), the abstention rate, and each training's
    CPU time as a multiple of Gaussian augmentation's (process time; the machine may be shared).

Run
    python bench/smoothing.py                 # defaults below: ~3 min of CPU on one quiet core
    python bench/smoothing.py --quick         # smoke run: 1 epoch, 20 digits, n = 200
    Options: --sigma, --eps, --steps, --num-noise, --eps-warmup, --epochs, --num-examples, --n, --n0,
    --threads, --out.

Evidence
    bench/results/smoothing.json (written by the last run): the table, the settings and the environment.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from advlearn.certify import Smooth, certify_dataset
from advlearn.data import load_dataset
from advlearn.models import build_model
from advlearn.training import GaussianAugment, Objective, SmoothAdv

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "smoothing.json"
RADII = (0.0, 0.125, 0.25, 0.375, 0.5)  # n = 1,000, sigma 0.25: at most 0.25·Φ⁻¹(0.001^(1/n)) = 0.61
SEED = 0


def train(objective: Objective, epochs: int, x: Tensor, y: Tensor) -> tuple[nn.Module, float]:
    torch.manual_seed(SEED)
    model = build_model("small_cnn", in_shape=(1, 28, 28), num_classes=10, channels=(16, 32), hidden=256)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    started = time.process_time()
    model.train()
    for epoch in range(epochs):
        step = objective.at_epoch(epoch, epochs)
        for idx in torch.randperm(len(x)).split(128):
            step.train_step(model, x[idx], y[idx], optimizer)
    return model.eval(), time.process_time() - started


def row(
    label: str, model: nn.Module, seconds: float, x: Tensor, y: Tensor, args: argparse.Namespace
) -> dict[str, Any]:
    smooth = Smooth(model, num_classes=10, sigma=args.sigma)
    started = time.process_time()
    certs = certify_dataset(
        smooth, x, y, n0=args.n0, n=args.n, alpha=0.001, batch_size=1000,
        generator=torch.Generator().manual_seed(SEED), quiet=True,
    )  # fmt: skip
    with torch.no_grad():
        noisy = x + args.sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
        base_noisy = float((model(noisy).argmax(1) == y).double().mean())
    return {
        "objective": label,
        "train_cpu_s": seconds,
        "certify_cpu_s": time.process_time() - started,
        "base_accuracy_under_noise": base_noisy,
        "certified_accuracy": dict(
            zip(map(str, RADII), certs.certified_accuracy(RADII).tolist(), strict=True)
        ),
        "acr": float((certs.radii * certs.correct).mean()),
        "abstained": float((certs.predictions < 0).double().mean()),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="smoke run: 1 epoch, 20 digits, n = 200")
    p.add_argument("--sigma", type=float, default=0.25, help="noise level for training and certifying (0.25)")
    p.add_argument("--eps", type=float, default=0.5, help="SmoothAdv's l2 radius (0.5)")
    p.add_argument("--steps", type=int, default=1, help="SmoothAdv's PGD steps (1)")
    p.add_argument("--num-noise", type=int, default=2, help="SmoothAdv's noise draws m (2)")
    p.add_argument("--eps-warmup", type=int, default=2, help="SmoothAdv's eps ramp in epochs (2)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs of both (5; quick 1)")
    p.add_argument("--num-examples", type=int, default=None, help="test digits certified (100; quick 20)")
    p.add_argument("--n", type=int, default=None, help="estimation samples (1000; quick 200)")
    p.add_argument("--n0", type=int, default=50, help="selection samples (50)")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (1)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default {DEFAULT_OUT})")
    args = p.parse_args(argv)
    for name, full, quick in (("epochs", 5, 1), ("num_examples", 100, 20), ("n", 1000, 200)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    split = load_dataset("mnist5k")
    x_train, y_train = split.train.x, split.train.y
    x, y = split.test.x[: args.num_examples], split.test.y[: args.num_examples]
    objectives: dict[str, Objective] = {
        f"gaussian_noise(sigma={args.sigma:g})": GaussianAugment(sigma=args.sigma),
        f"smooth_adv(eps={args.eps:g}, steps={args.steps}, m={args.num_noise})": SmoothAdv(
            eps=args.eps, sigma=args.sigma, steps=args.steps, num_noise=args.num_noise,
            eps_warmup=args.eps_warmup,
        ),
    }  # fmt: skip
    rows = []
    for label, objective in objectives.items():
        model, seconds = train(objective, args.epochs, x_train, y_train)
        rows.append(row(label, model, seconds, x, y, args))
        print(json.dumps(rows[-1]), flush=True)
    base = rows[0]["train_cpu_s"]
    head = [
        "objective",
        *(f"r = {r:g}" for r in RADII),
        "ACR",
        "abstained",
        "base acc. under noise",
        "train x GA",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["objective"], *(f"{100 * a:.1f}%" for a in r["certified_accuracy"].values())]
        cells += [
            f"{r['acr']:.3f}",
            f"{100 * r['abstained']:.1f}%",
            f"{100 * r['base_accuracy_under_noise']:.1f}%",
        ]
        cells.append(f"{r['train_cpu_s'] / base:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    tbl = "\n".join(lines)
    print(f"\nsigma = {args.sigma}, n0 = {args.n0}, n = {args.n}, alpha = 0.001, {len(y)} test digits, "
          f"{args.epochs} epochs\n{tbl}")  # fmt: skip
    report = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "rows": rows,
        "table": tbl,
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cpu": platform.processor(),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
