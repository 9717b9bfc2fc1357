"""PGD-10's per-step overhead in every norm: advlearn against the K-pass limit and torchattacks, one run.

What it measures
    PGD-10 (one random start, step 2.5*eps/10) in l-inf (eps 0.1), l2 (eps 2) and l1 (eps 10) on one
    batch of ``--batch`` (256) uniform 1x28x28 inputs, for the CNN of bench/attack_overhead.py
    (conv 32, conv 64, linear 128, linear 10) with its initial weights: without early exit PGD's cost
    does not depend on the weights, so no training (and no data) is needed. The limit is 10 forward
    passes, summed cross-entropy and ``torch.autograd.grad`` w.r.t. the input, eager fp32. torchattacks'
    PGD (l-inf) and PGDL2 (l2; it has no l1 PGD) run in the same rounds when installed. The opt-in fast
    path rows run advlearn's l-inf PGD through ``advlearn._precision.FastModel`` (bf16, channels_last,
    both; ``--compile`` adds a compiled row, its compile time excluded) and are reported against the
    same eager fp32 limit. Rounds rotate the order, every cell of a round gets the same seed; medians of
    ``--reps`` rounds after one warm-up round. bench/attack_overhead.py measures the same PGD-10 cells
    on trained models with MNIST digits, and more; this script is the quick check of the step alone.

Run
    pip install torchattacks --no-deps --target /tmp/bench13-pkgs   # or into any path; optional
    python bench/pgd_step.py --reps 3          # TORCHATTACKS_PATH=/tmp/bench13-pkgs by default
    Options: --batch, --threads (2), --compile, --out (JSON, default bench/results/pgd_step.json).

Evidence: see bench/README.md ("PGD's step") for the table this script printed, hardware and versions.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import advlearn as al
from advlearn._precision import FastModel

HERE = Path(__file__).resolve().parent


def make_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10),
    )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--compile", action="store_true", help="add a compiled l-inf row")
    p.add_argument("--out", type=Path, default=HERE / "results" / "pgd_step.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = make_cnn().eval()
    x, y = torch.rand(args.batch, 1, 28, 28), torch.randint(0, 10, (args.batch,))

    def limit() -> Tensor:
        for _ in range(10):
            xg = x.detach().requires_grad_(True)
            torch.autograd.grad(F.cross_entropy(model(xg), y, reduction="sum"), xg)
        return x

    fns: dict[str, Callable[[], Tensor]] = {"limit": limit}
    radii = {"linf": 0.1, "l2": 2.0, "l1": 10.0}
    for norm, eps in radii.items():
        attack = al.attacks.PGD(al.ThreatModel(norm, eps), steps=10, step_size=0.25 * eps)
        fns[f"advlearn {norm}"] = (lambda a: lambda: a(model, x, y))(attack)
    linf = al.attacks.PGD(al.ThreatModel("linf", 0.1), steps=10, step_size=0.025)
    fast = {
        "advlearn linf bf16": ({"precision": "bf16"}, x),
        "advlearn linf channels_last": (
            {"memory_format": "channels_last"},
            x.contiguous(memory_format=torch.channels_last),
        ),
        "advlearn linf bf16 + channels_last": (
            {"precision": "bf16", "memory_format": "channels_last"},
            x.contiguous(memory_format=torch.channels_last),
        ),
    }
    if args.compile:
        fast["advlearn linf compile"] = ({"compile": True}, x)
    compile_s = None
    for name, (options, xin) in fast.items():
        net = FastModel(copy.deepcopy(model), **options)  # type: ignore[arg-type]  # its own weights' layout
        if "compile" in options:
            t0 = time.perf_counter()
            linf(net, xin, y)
            compile_s = time.perf_counter() - t0
        fns[name] = (lambda n, xi: lambda: linf(n, xi, y))(net, xin)
    sys.path.insert(0, os.environ.get("TORCHATTACKS_PATH", "/tmp/bench13-pkgs"))
    try:
        import torchattacks

        ta = {
            "torchattacks linf": torchattacks.PGD(model, eps=0.1, alpha=0.025, steps=10),
            "torchattacks l2": torchattacks.PGDL2(model, eps=2.0, alpha=0.5, steps=10),
        }
        for name, attack in ta.items():
            fns[name] = (lambda a: lambda: a(x, y))(attack)
        ta_version = torchattacks.__version__
    except ImportError:
        ta_version = None
        print("torchattacks not installed: no torchattacks rows")
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    for rnd in range(args.reps + 1):
        shift = rnd % len(names)
        for name in names[shift:] + names[:shift]:
            torch.manual_seed(rnd)
            t0 = time.perf_counter()
            fns[name]()
            if rnd:
                times[name].append(time.perf_counter() - t0)
    lim = statistics.median(times["limit"])
    rows = [
        {"cell": n, "median_ms": 1e3 * statistics.median(t), "x_limit": statistics.median(t) / lim}
        for n, t in times.items()
    ]
    print("| cell | median ms | x limit |\n|---|---|---|")
    for r in rows:
        print(f"| {r['cell']} | {r['median_ms']:.1f} | {r['x_limit']:.3f} |")
    if compile_s is not None:
        print(f"(compile: {compile_s:.0f} s, excluded)")
    env = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchattacks": ta_version,
        "threads": args.threads,
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"environment": env, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
