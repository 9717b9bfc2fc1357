"""Adversarial games: DANN target accuracy over seeds, and each GAN loss's coverage and Fréchet distance.

What it measures
    DANN: ``advlearn.experiments.games.run_dann`` for seeds 0, 1, 2 (MNIST-5k → MNIST-M style,
    the default 10 epochs per model, Adam 1e-3, batch 64): target test accuracy of the
    source-only network and of DANN (same initialization, same batches), their mean ± sample
    standard deviation, the domain separability of each one's features (held-out accuracy of a
    linear probe telling the domains apart), and wall times. Ganin et al. (2016, Table 2) report
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
                    batchnorm=args.dann_batchnorm == "on",
                    max_examples=256 if args.quick else None,
                )
                run = run_dann(config, name=f"dann-{seed}", out_dir=tmp, quiet=True)
                runs.append(
                    {
                        "seed": seed,
                        "source_only": run.source_only,
                        "dann": run.dann,
                        "seconds": run.seconds,
                    }
                )
                print(
                    f"DANN seed {seed}: target acc {run.source_only['target_acc']:.3f} (source only) -> "
                    f"{run.dann['target_acc']:.3f} (DANN), {run.seconds:.0f} s",
                    flush=True,
                )
            results["dann"] = {
                "epochs": epochs,
                "batchnorm": args.dann_batchnorm == "on",
                "runs": runs,
                "source_only_target_acc": _spread([r["source_only"]["target_acc"] for r in runs]),
                "dann_target_acc": _spread([r["dann"]["target_acc"] for r in runs]),
                "source_only_domain_separability": _spread(
                    [r["source_only"]["domain_separability"] for r in runs]
                ),
                "dann_domain_separability": _spread([r["dann"]["domain_separability"] for r in runs]),
                "paper_mnist_m": {"source_only": PAPER_SOURCE_ONLY, "dann": PAPER_DANN},
            }
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
