"""``claim-head``: overview claim (c), adversarially fine-tuning only the head vs full adversarial training.

The overview weighs adversarially fine-tuning only the last layer (the head) of a
standard-pretrained network against full adversarial training: the head alone is cheaper to
train but cannot make the standard features robust. Here, on scikit-learn's 8×8 digits, a
64-256-256-10 MLP:

1. **standard** pretraining (:class:`~advlearn.training.Standard`), the starting point;
2. **head only**: the pretrained network with every parameter but the ``logits`` layer's frozen,
   fine-tuned by :class:`~advlearn.training.PGDAT` (ℓ∞ ε = :data:`EPS`) for half the epochs;
3. **full AT**: the same PGD-AT on every parameter from scratch, for the full epochs.

All by the library's Trainer. Cost is the process CPU time of each adversarial phase (the
attack still back-propagates to the input through the frozen body, so freezing saves only the
parameter gradients and optimizer updates) beside the trainable parameter count; robustness is
accuracy against PGD-20 at ε = :data:`EPS`. The claim has no published number on this data, so
the rows carry none.
"""

from __future__ import annotations

import statistics
import time
from functools import partial

import torch
from torch import nn

from advlearn.experiments.reproduce import _mnist
from advlearn.experiments.reproduce._common import Comparison, Context, Experiment, Outcome, percent_rows
from advlearn.models import mlp
from advlearn.report.page import Section
from advlearn.training import PGDAT, Standard, Trainer

EPS = 0.1
HEAD = "logits"

_model = partial(mlp, (1, 8, 8), 10, hidden=(256, 256))


def freeze_all_but(model: nn.Module, layer: str) -> int:
    """Freeze every parameter outside ``model.get_submodule(layer)``; return the trainable count."""
    keep = {id(p) for p in model.get_submodule(layer).parameters()}
    for parameter in model.parameters():
        parameter.requires_grad_(id(parameter) in keep)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def run(context: Context) -> Outcome:
    bench = _mnist.DigitsPGD.make(context, EPS)  # 8×8 digits, PGD-20 at EPS
    split, (x, y), threat, n_test = bench.split, bench.test, bench.threat, len(bench.test[0])
    epochs, steps = (10, 3) if context.quick else (30, 7)
    pgd_at = PGDAT(threat, steps=steps)
    names = ("standard (pretrained)", "head only", "full AT")
    scores: _mnist.Scores = {}
    seconds: dict[str, list[float]] = {k: [] for k in names[1:]}
    trainable: dict[str, int] = {}
    for seed in context.seeds:
        pretrained = _mnist.fit(
            _model, Standard(), split.train, epochs=epochs, seed=seed, quiet=context.quiet
        )
        models: dict[str, nn.Module] = {names[0]: pretrained}

        head = _model()
        head.load_state_dict(pretrained.state_dict())
        trainable[names[1]] = freeze_all_but(head, HEAD)
        trainer = Trainer(
            head,
            pgd_at,
            torch.optim.Adam([p for p in head.parameters() if p.requires_grad], lr=1e-3),
            device="cpu",
            seed=seed,
            quiet=context.quiet,
        )
        started = time.process_time()
        trainer.fit(split.train.loader(128, shuffle=True), epochs=max(1, epochs // 2))
        seconds[names[1]].append(time.process_time() - started)
        models[names[1]] = head.eval()

        started = time.process_time()
        models[names[2]] = _mnist.fit(
            _model, pgd_at, split.train, epochs=epochs, seed=seed, quiet=context.quiet
        )
        seconds[names[2]].append(time.process_time() - started)
        trainable[names[2]] = sum(p.numel() for p in models[names[2]].parameters())
        for name, model in models.items():
            _mnist.score(scores, name, model, x, y, threat, bench.attacks, seed)
    clean = {k: v["clean"] for k, v in scores.items()}
    robust = {k: v["PGD-20"] for k, v in scores.items()}

    def mean(values: list[float]) -> float:
        return statistics.fmean(values)

    cheaper = mean(seconds["head only"]) < mean(seconds["full AT"])
    weaker = mean(robust["head only"]) < mean(robust["full AT"])
    gained = mean(robust["head only"]) > mean(robust[names[0]])
    robustness_why = (
        "the head alone buys "
        + ("some" if gained else "no")
        + " robustness over the standard model"
        + (
            " but less than full AT: the frozen features stay non-robust"
            if weaker
            else ", as much as full AT"
        )
    )
    comparisons = percent_rows(
        scores, names, bench.measures, lambda *_: (weaker, f"{robustness_why}."), count=n_test
    )
    for name in names[1:]:
        comparisons.append(
            Comparison(
                f"{name}: CPU seconds of adversarial training ({trainable[name]:,} trainable parameters)",
                None,
                tuple(seconds[name]),
                holds=cheaper,
                why=(
                    "the head-only fine-tune is cheaper"
                    if cheaper
                    else "the head-only fine-tune is not cheaper here"
                )
                + f" (it runs {max(1, epochs // 2)} epochs against {epochs}; per epoch the attack, which "
                "back-propagates through the frozen body, dominates). Process CPU time, on a shared machine.",
                spread="mean",
            )
        )
    notes = Section(
        "Protocol",
        [
            f"Per seed: a standard MLP 64-256-256-10 (Adam 1e-3, {epochs} epochs); a copy with all but "
            f"its {HEAD!r} layer frozen, PGD-AT ({steps} steps, ε = {EPS:g}) for {max(1, epochs // 2)} "
            f"epochs; and the same PGD-AT on a fresh network for {epochs} epochs. CPU seconds are the "
            "process CPU time of each adversarial phase (the head-only figure excludes its pretraining)."
        ],
    )
    header = (
        f"8×8 digits (scikit-learn, {len(split.train)} train / {n_test} test), MLP 64-256-256-10; "
        f"PGD-AT ℓ∞ ε = {EPS:g} ({steps} steps) on the head only ({trainable.get('head only', 0):,} "
        f"parameters) of a standard-pretrained network vs on every parameter from scratch; evaluated "
        f"by PGD-20 at ε = {EPS:g}."
    )
    return Outcome(header, comparisons, [], [notes], {"clean": clean, "robust": robust, "seconds": seconds})


EXPERIMENT = Experiment(
    name="claim-head",
    source="Adversarial Learning chapter, overview claim (c) (adversarial fine-tuning of the head)",
    claim="Adversarially fine-tuning only the head of a standard-pretrained network is cheaper than "
    "full adversarial training but buys less robustness.",
    cost="quick 5 s wall (quiet, 2 cores); full (3 seeds) 38 CPU-s on 1 thread",
    run=run,
    seeds=(2, 3),
)
