"""Certified training on MNIST-5k: IBP (Gowal et al. 2018) and CROWN-IBP (Zhang et al. 2020), verified.

What it measures (accuracy, not a timing)
    Trains ibp_cnn (Gowal et al.'s "small" net, no BatchNorm) on 3,800 of the 4,000 MNIST-5k training
    digits (the other 200 are the Trainer's validation batch) with the chosen objective through the one
    Trainer: Adam, lr decayed x0.1 at 80% and 90% of training (--milestones; Gowal et al. decay twice),
    nominal warm-up steps, then eps and kappa ramped per step (kappa 1 -> 0.5; for CROWN-IBP also
    beta 1 -> 0), training eps above the test eps. Then on the 1,000 test digits: clean accuracy, the
    IBP- and CROWN-verified accuracy and PGD-40 (5 restarts... see --pgd-restarts) accuracy at each
    test eps: the certified lower bound beside the empirical upper bound.

Run
    python bench/certified_training.py --objective ibp --epochs 20 --eps-train 0.4
    python bench/certified_training.py --objective crown_ibp --epochs 20 --eps-train 0.4
    python bench/certified_training.py --quick          # smoke run, ~1 min, figures meaningless
    Options: --batch-size, --lr, --warmup-epochs, --ramp-epochs (converted to steps), --kappa,
    --beta-start/--beta-end (CROWN-IBP), --channels/--hidden (a wider ibp_cnn), --test-eps,
    --num-test, --threads (default 1: the machine is shared), --seed, --out.

Evidence
    bench/results/certified_training_<objective>.json: the settings, per-epoch records, and the table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Literal

import torch

import advlearn as al
from advlearn.attacks import PGD
from advlearn.certify import ibp_margin_bounds
from advlearn.certify.crown import crown_margin_bounds
from advlearn.data import load_dataset
from advlearn.evaluation import batches
from advlearn.models import build_model
from advlearn.training import CROWNIBPTraining, IBPTraining, Trainer, lr_schedule
from advlearn.training.certified import ibp_init

HERE = Path(__file__).resolve().parent


def verified(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, method: str) -> float:
    threat = al.ThreatModel("linf", eps)
    hits = 0
    with torch.no_grad():
        for xb, yb in batches((x, y), 100):
            if method == "ibp":
                margins = ibp_margin_bounds(model, xb, yb, threat)
            else:
                intermediate: Literal["crown", "ibp"] = "crown" if method == "crown-crown" else "ibp"
                margins = crown_margin_bounds(model, xb, yb, threat, intermediate=intermediate)
            hits += int((margins > 0).scatter(1, yb[:, None], True).all(1).sum())
    return hits / len(y)


def pgd_accuracy(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, restarts: int
) -> float:
    attack = PGD(al.ThreatModel("linf", eps), steps=40, restarts=restarts)
    hits = 0
    for xb, yb in batches((x, y), 250):
        with torch.no_grad():
            hits += int((model(attack(model, xb, yb)).argmax(1) == yb).sum())
    return hits / len(y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objective", choices=("ibp", "crown_ibp"), default="ibp")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eps-train", type=float, default=0.4)
    parser.add_argument("--warmup-epochs", type=float, default=1.0)
    parser.add_argument("--ramp-epochs", type=float, default=10.0)
    parser.add_argument("--kappa", type=float, default=0.5)
    parser.add_argument("--test-eps", type=float, nargs="+", default=[0.1, 0.2, 0.3])
    parser.add_argument("--num-test", type=int, default=1000)
    parser.add_argument("--pgd-restarts", type=int, default=1)
    parser.add_argument(
        "--crown",
        choices=("none", "ibp", "crown"),
        default="ibp",
        help="also verify with CROWN-IBP ('ibp') or full CROWN ('crown', slow)",
    )
    parser.add_argument(
        "--init",
        choices=("default", "ibp"),
        default="ibp",
        help="PyTorch's default init or Shi et al.'s IBP init",
    )
    parser.add_argument(
        "--milestones",
        type=float,
        nargs=2,
        default=(0.8, 0.9),
        help="fractions of training where the lr drops x0.1",
    )
    parser.add_argument("--channels", type=int, nargs=2, default=(16, 32), help="ibp_cnn's two conv widths")
    parser.add_argument("--hidden", type=int, default=100, help="ibp_cnn's hidden linear width")
    parser.add_argument("--beta-start", type=float, default=1.0, help="CROWN-IBP's beta at the ramp's start")
    parser.add_argument("--beta-end", type=float, default=0.0, help="CROWN-IBP's beta at the ramp's end")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.num_test, args.warmup_epochs, args.ramp_epochs = 2, 100, 0.2, 1.0
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    split = load_dataset("mnist5k")
    generator = torch.Generator().manual_seed(args.seed)
    order = torch.randperm(len(split.train.y), generator=generator)
    train_idx, val_idx = order[:3800], order[3800:]
    x_train, y_train = split.train.x[train_idx], split.train.y[train_idx]
    x_val, y_val = split.train.x[val_idx], split.train.y[val_idx]
    x_test, y_test = split.test.x[: args.num_test], split.test.y[: args.num_test]

    steps_per_epoch = math.ceil(len(y_train) / args.batch_size)
    warmup = round(args.warmup_epochs * steps_per_epoch)
    ramp = round(args.ramp_epochs * steps_per_epoch)
    threat = al.ThreatModel("linf", args.eps_train)
    common = {"kappa": args.kappa, "warmup_steps": warmup, "ramp_steps": ramp}
    objective = (
        IBPTraining(threat, **common)
        if args.objective == "ibp"
        else CROWNIBPTraining(threat, **common, beta_start=args.beta_start, beta_end=args.beta_end)
    )
    model = build_model(
        "ibp_cnn", in_shape=(1, 28, 28), num_classes=10, channels=tuple(args.channels), hidden=args.hidden
    )
    if args.init == "ibp":
        ibp_init(model, torch.Generator().manual_seed(args.seed))
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x_train, y_train),
        batch_size=args.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(args.seed),
    )
    val = [(x_val, y_val)]
    trainer = Trainer(
        model,
        objective,
        optimizer,
        schedule=lr_schedule("piecewise", milestones=tuple(args.milestones)),
        seed=args.seed,
        quiet=True,
    )
    started = time.perf_counter()
    history = trainer.fit(loader, val, epochs=args.epochs)
    train_seconds = time.perf_counter() - started
    for record in history.records:
        print({k: round(v, 4) for k, v in record.items()})
    model.eval()
    with torch.no_grad():
        clean = float((model(x_test).argmax(1) == y_test).float().mean())
    rows = []
    for eps in args.test_eps:
        row = {"eps": eps, "ibp_verified": verified(model, x_test, y_test, eps, "ibp")}
        if args.crown != "none":
            row[f"crown_{args.crown}_verified"] = verified(model, x_test, y_test, eps, f"crown-{args.crown}")
        row["pgd40"] = pgd_accuracy(model, x_test, y_test, eps, args.pgd_restarts)
        rows.append(row)
        print(row)
    result = {
        "settings": vars(args)
        | {
            "out": str(args.out),
            "warmup_steps": warmup,
            "ramp_steps": ramp,
            "steps_per_epoch": steps_per_epoch,
            "model": f"ibp_cnn {tuple(args.channels)}, hidden {args.hidden}",
        },
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "threads": args.threads,
            "note": "2 vCPUs shared with other processes (load average at the start: "
            f"{os.getloadavg()[0]:.1f})",
        },
        "train_seconds": train_seconds,
        "clean": clean,
        "rows": rows,
        "records": history.records,
    }
    print(f"clean {clean:.3f}, trained in {train_seconds:.0f} s")
    out = args.out or HERE / "results" / f"certified_training_{args.objective}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
