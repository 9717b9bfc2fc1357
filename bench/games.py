"""Adversarial games: DANN target accuracy over seeds, and each GAN loss's coverage and Fréchet distance.

What it measures
    DANN: ``advlearn.experiments.games.run_dann`` for seeds 0, 1, 2 (MNIST-5k → MNIST-M style,
    the default 10 epochs per model, Adam 1e-3, batch 64): target test accuracy of the
    source-only network and of DANN (same initialization, same batches), their mean ± sample
    standard deviation, the domain separability of each one's features (held-out accuracy of a
    linear probe telling the domains apart), the domain classifier's training accuracy in the last
    epoch, target accuracy per epoch, and wall and CPU times. With ``--dann-batchnorm on`` the
    source-only network is also scored after AdaBN (target statistics from the unlabelled target
    images), the fair baseline for that network. Ganin et al. (2016, Table 2) report
    0.5225 → 0.7666 on the real MNIST-M.

    GAN: ``run_gan`` on the 8×8 digits (MLP players, the default 2,000 generator steps, batch 64)
    for each loss (minimax, nonsaturating, wgan-gp with 5 critic steps per generator step) and
    each seed: classes covered (of 10) by 1,000 samples and the Fréchet distance in the monitor
    classifier's feature space, against the floor set by real training vs real test images.

    These are accuracies, not timings; wall times are reported too, but on a shared machine
    they are only indicative.

Run
    python bench/games.py                     # DANN 3 seeds + 3 GAN losses × 1 seed
    python bench/games.py --gan-seeds 3       # 3 seeds per GAN loss as well
    python bench/games.py --quick             # a smoke run (seconds), writes games-quick.json
    python bench/games.py --skip-gan --epochs 30 --threads 1 --out /tmp/dann30.json   # DANN trained longer
    python bench/games.py --skip-gan --dann-batchnorm on --epochs 30 --threads 1       # BatchNorm per domain
    python bench/games.py --skip-gan --dann-optimizer sgd                            # Ganin's SGD, lr 0.01
    python bench/games.py --skip-gan --dann-domain-hidden 1024 1024   # a larger domain classifier

Results go to bench/results/games.json (or games-quick.json); run folders to a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

import advlearn
from advlearn.experiments.games import PAPER_DANN, PAPER_SOURCE_ONLY, DANNConfig, run_dann, run_gan
from advlearn.games.gan import GAN_LOSSES, GANConfig, ModeCollapseWarning


def _commit() -> dict[str, Any]:
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, check=True
        )
        return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny settings: a smoke run")
    parser.add_argument("--dann-seeds", type=int, default=3)
    parser.add_argument(
        "--first-seed", type=int, default=0, help="DANN seeds first-seed .. first-seed+dann-seeds-1"
    )
    parser.add_argument(
        "--dann-batchnorm",
        choices=["on", "off"],
        default="off",
        help="domain-specific batch normalization in both DANN networks (default off: the paper's network)",
    )
    parser.add_argument(
        "--dann-optimizer",
        choices=["adam", "sgd"],
        default="adam",
        help="adam (constant lr, default) or sgd (Ganin et al.'s momentum 0.9 and lr annealing)",
    )
    parser.add_argument(
        "--dann-lr", type=float, help="DANN learning rate (default 1e-3 for adam, 0.01 for sgd)"
    )
    parser.add_argument(
        "--dann-domain-hidden",
        type=int,
        nargs="+",
        default=[100],
        help="hidden widths of DANN's domain classifier (default 100, the paper's; e.g. 1024 1024)",
    )
    parser.add_argument("--gan-seeds", type=int, default=1)
    parser.add_argument("--epochs", type=int, help="DANN epochs (default 10; 1 with --quick)")
    parser.add_argument("--steps", type=int, help="GAN generator steps (default 2000; 40 with --quick)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--skip-dann", action="store_true")
    parser.add_argument("--skip-gan", action="store_true")
    parser.add_argument("--out", help="results JSON (default bench/results/games[-quick].json)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    epochs = args.epochs or (1 if args.quick else 10)
    dann_lr = args.dann_lr or (1e-3 if args.dann_optimizer == "adam" else 0.01)
    steps = args.steps or (40 if args.quick else 2000)
    out = Path(
        args.out or Path(__file__).parent / "results" / ("games-quick.json" if args.quick else "games.json")
    )
    results: dict[str, Any] = {
        "script": "bench/games.py",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick,
        "advlearn": advlearn.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads {args.threads}",
        "load_average_at_start": os.getloadavg(),
        **_commit(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_dann:
            runs = []
            for seed in range(args.first_seed, args.first_seed + args.dann_seeds):
                config = DANNConfig(
                    epochs=epochs,
                    seed=seed,
                    lr=dann_lr,
                    optimizer=args.dann_optimizer,
                    batchnorm=args.dann_batchnorm == "on",
                    domain_hidden=tuple(args.dann_domain_hidden),
                    max_examples=256 if args.quick else None,
                )
                cpu = time.thread_time()
                run = run_dann(config, name=f"dann-{seed}", out_dir=tmp, quiet=True)
                so, da = run.source_only, run.dann
                runs.append(
                    {
                        "seed": seed,
                        "source_only": so,
                        "dann": da,
                        "gain": da["target_acc"] - so["target_acc"],
                        "gain_over_adabn": (
                            da["target_acc"] - so["target_acc_adabn"] if "target_acc_adabn" in so else None
                        ),
                        "domain_acc_last_epoch": run.histories["DANN"].records[-1]["domain_acc"],
                        "target_acc_per_epoch": {
                            label: [r["target_acc"] for r in h.records] for label, h in run.histories.items()
                        },
                        "seconds": run.seconds,
                        "thread_seconds": time.thread_time() - cpu,
                    }
                )
                adabn = f", {so['target_acc_adabn']:.3f} after AdaBN" if "target_acc_adabn" in so else ""
                print(
                    f"DANN seed {seed}: target acc {so['target_acc']:.3f} (source only{adabn}) -> "
                    f"{da['target_acc']:.3f} (DANN), gain {100 * runs[-1]['gain']:+.1f} pt; probe "
                    f"{so['domain_separability']:.3f} -> {da['domain_separability']:.3f}; domain classifier "
                    f"{runs[-1]['domain_acc_last_epoch']:.3f} in the last epoch; {run.seconds:.0f} s wall, "
                    f"{runs[-1]['thread_seconds']:.0f} s CPU",
                    flush=True,
                )
            results["dann"] = {
                "epochs": epochs,
                "batchnorm": args.dann_batchnorm == "on",
                "optimizer": args.dann_optimizer,
                "lr": dann_lr,
                "domain_hidden": args.dann_domain_hidden,
                "runs": runs,
                "gain": _spread([r["gain"] for r in runs]),
                "source_only_target_acc": _spread([r["source_only"]["target_acc"] for r in runs]),
                "dann_target_acc": _spread([r["dann"]["target_acc"] for r in runs]),
                "source_only_domain_separability": _spread(
                    [r["source_only"]["domain_separability"] for r in runs]
                ),
                "dann_domain_separability": _spread([r["dann"]["domain_separability"] for r in runs]),
                "paper_mnist_m": {"source_only": PAPER_SOURCE_ONLY, "dann": PAPER_DANN},
            }
            if all(r["gain_over_adabn"] is not None for r in runs):
                results["dann"]["source_only_adabn_target_acc"] = _spread(
                    [r["source_only"]["target_acc_adabn"] for r in runs]
                )
                results["dann"]["gain_over_adabn"] = _spread([r["gain_over_adabn"] for r in runs])
        if not args.skip_gan:
            gan: dict[str, Any] = {"data": "digits", "arch": "mlp", "steps": steps, "losses": {}}
            for loss in GAN_LOSSES:
                runs = []
                for seed in range(args.gan_seeds):
                    config = GANConfig(loss=loss, steps=steps, eval_every=max(1, steps // 4), seed=seed)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", ModeCollapseWarning)  # recorded as the coverage
                        run = run_gan(
                            config, data="digits", name=f"gan-{loss}-{seed}", out_dir=tmp, quiet=True
                        )
                    runs.append(
                        {
                            "seed": seed,
                            "covered": run.result.coverage.covered,
                            "counts": list(run.result.coverage.counts),
                            "frechet": run.result.frechet,
                            "real_frechet_floor": run.real_frechet,
                            "monitor_accuracy": run.monitor_accuracy,
                            "train_seconds": run.result.seconds,
                            "evaluations": run.result.evaluations,
                        }
                    )
                    print(
                        f"GAN {loss} seed {seed}: {run.result.coverage.covered}/10 classes, Fréchet "
                        f"{run.result.frechet:.3g} (real floor {run.real_frechet:.3g}), "
                        f"{run.result.seconds:.0f} s",
                        flush=True,
                    )
                gan["losses"][loss] = {
                    "d_steps": 5 if loss == "wgan-gp" else 1,
                    "runs": runs,
                    "covered": _spread([float(r["covered"]) for r in runs]),
                    "frechet": _spread([r["frechet"] for r in runs]),
                }
            results["gan"] = gan
    results["load_average_at_end"] = os.getloadavg()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
