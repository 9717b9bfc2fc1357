"""PGD-K adversarial training: epoch time as a multiple of a standard epoch.

What it measures
    One epoch of PGD-K adversarial training (advlearn's ``PGDAT`` objective run
    by the ``Trainer``) divided by one epoch of standard training, for
    K = 1, 3, 7, 10, on MNIST-5k (4,000 training digits, batch 128) with the
    main job's ``small_cnn`` (channels 16/32, hidden 256), CPU,
    ``torch.set_num_threads(2)``. A PGD-K step costs K forward+backward passes
    for the attack plus the training step's own, so the limit is K + 1 standard
    steps; the goal is at most 1.05·(K + 1). (A pass for the attack computes
    the gradient w.r.t. the input only and skips the weight gradients, so it is
    cheaper than a training pass: ratios below K + 1 are possible.)

How
    Epoch types are interleaved (standard, K=1, 3, 7, 10, standard, ...) so
    drift in machine load hits them alike; each is repeated ``--reps`` times
    after a warm-up epoch and the median is reported, with the spread.

Run
    python bench/training_overhead.py               # about 10 minutes on 2 cores
    python bench/training_overhead.py --quick       # a smoke run

Evidence: see bench/README.md for the table this script printed, with its hardware and versions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

import advlearn as al
from advlearn.data import mnist5k
from advlearn.models import build_model
from advlearn.training import PGDAT, Objective, Standard, Trainer


def epoch_seconds(
    objective: Objective, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int
) -> float:
    """Wall time of one training epoch of ``objective`` on a fresh model."""
    torch.manual_seed(seed)
    model = build_model("small_cnn", in_shape=(1, 28, 28), num_classes=10, channels=(16, 32), hidden=256)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    trainer = Trainer(model, objective, optimizer, device="cpu", quiet=True, seed=seed)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=batch_size, shuffle=True
    )
    started = time.perf_counter()
    trainer.fit(loader, epochs=1)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="timed epochs per type (default 5)")
    parser.add_argument("--quick", action="store_true", help="500 examples, 2 reps: a smoke run")
    parser.add_argument("--out", default="bench/results/training_overhead.json")
    args = parser.parse_args()
    torch.set_num_threads(2)

    train = mnist5k().train
    n = 500 if args.quick else len(train)
    reps = 2 if args.quick else args.reps
    x, y = train.x[:n], train.y[:n]
    threat = al.ThreatModel("linf", 0.3)
    objectives: dict[str, Objective] = {"standard": Standard()}
    objectives.update({f"PGD-{k}": PGDAT(threat, steps=k) for k in (1, 3, 7, 10)})

    for objective in objectives.values():  # warm-up
        epoch_seconds(objective, x[:256], y[:256], 128, seed=0)
    times: dict[str, list[float]] = {name: [] for name in objectives}
    for rep in range(reps):
        for name, objective in objectives.items():
            times[name].append(epoch_seconds(objective, x, y, 128, seed=rep))

    base = statistics.median(times["standard"])
    rows = []
    print(
        f"\nMNIST-5k ({n} examples, batch 128), small_cnn 16/32/256, CPU x{torch.get_num_threads()} threads"
    )
    print(f"median of {reps} epochs each, interleaved\n")
    print("| objective | epoch s (median) | spread (min-max) | x standard | limit K+1 | ratio to limit |")
    print("|---|---|---|---|---|---|")
    for name, values in times.items():
        k = 0 if name == "standard" else int(name.split("-")[1])
        median = statistics.median(values)
        ratio = median / base
        rows.append({"objective": name, "k": k, "seconds": values, "median": median, "x_standard": ratio})
        print(
            f"| {name} | {median:.2f} | {min(values):.2f}-{max(values):.2f} | {ratio:.2f} | {k + 1} "
            f"| {ratio / (k + 1):.3f} |"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "date": datetime.now(timezone.utc).isoformat(),
        "torch": torch.__version__,
        "advlearn": al.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "examples": n,
        "reps": reps,
    }
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
