"""``claim-overfitting``: overview claim (e), single-step adversarial training collapses; the guard sees it.

The overview states that single-step adversarial training at a large ε can *catastrophically
overfit* (Wong, Rice & Kolter 2020, §5): within an epoch the model learns to defeat the one
FGSM step while its accuracy against multi-step PGD falls to about zero, and that a check of
PGD accuracy on held-out data catches it. Here, on MNIST-5k, a ``small_cnn`` (8-16 channels,
64 hidden) trained by the library's Trainer with :class:`~advlearn.training.FastAT` at ℓ∞
ε = :data:`EPS` in three arms:

1. **FGSM, guard warns only**: Fast-AT's step without its random start (``random_start=False``,
   step ε: plain FGSM training, Wong et al.'s "zero init" arm), ``fallback_steps=0``;
2. **FGSM, guard with fallback**: the same, but once the guard fires training continues with
   PGD-5 (``fallback_steps=5``);
3. **Fast-AT**: random start and step 1.25ε, the recipe Wong et al. found stable at this size.

``--quick`` runs the first arm only (the fallback's PGD-5 epochs cost six times an FGSM epoch).

The guard (:func:`~advlearn.training.overfitting.check_collapse`) measures FGSM and PGD-10
accuracy on the first 200 test digits after every epoch; every model is then scored on the
next :data:`N_TEST` test digits, clean, by FGSM and by PGD-20. The claim has no published
figure on this data, so the rows carry none.
"""

from __future__ import annotations

import statistics
import warnings
from functools import partial

import torch

from advlearn.attacks import FGSM, PGD
from advlearn.experiments.reproduce import _mnist
from advlearn.experiments.reproduce._common import Comparison, Context, Experiment, Outcome, percent_rows
from advlearn.models import small_cnn
from advlearn.report.page import Section, figure, png
from advlearn.threat import ThreatModel
from advlearn.training import FastAT, Trainer

EPS = 0.2
MONITOR = 200
N_TEST = 500

_model = partial(small_cnn, (1, 28, 28), 10, channels=(8, 16), hidden=64)

ARMS = {
    "FGSM, guard warns only": {"random_start": False, "step_ratio": 1.0, "fallback_steps": 0},
    "FGSM, guard with PGD-5 fallback": {"random_start": False, "step_ratio": 1.0, "fallback_steps": 5},
    "Fast-AT (random start, 1.25ε)": {"random_start": True, "step_ratio": 1.25, "fallback_steps": 0},
}


def run(context: Context) -> Outcome:
    split, described = _mnist.load(context)
    epochs = 10 if context.quick else 12
    arms = dict(list(ARMS.items())[:1]) if context.quick else ARMS  # quick: the guard watching, no fallback
    threat = ThreatModel("linf", EPS, (0.0, 1.0))
    monitor = split.test.subset(slice(0, MONITOR)).loader(MONITOR)
    x, y = split.test.x[MONITOR : MONITOR + N_TEST], split.test.y[MONITOR : MONITOR + N_TEST]
    attacks = {"FGSM": FGSM(threat), "PGD-20": PGD(threat, steps=20, early_stop=True)}
    records: dict[str, list[list[dict[str, float]]]] = {k: [] for k in arms}
    scores: _mnist.Scores = {}
    messages: list[str] = []
    for seed in context.seeds:
        for name, options in arms.items():
            torch.manual_seed(seed)
            model = _model()
            trainer = Trainer(
                model,
                FastAT(threat, **options),  # type: ignore[arg-type]
                torch.optim.Adam(model.parameters(), lr=2e-3),
                device="cpu",
                seed=seed,
                quiet=context.quiet,
            )
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", RuntimeWarning)
                history = trainer.fit(split.train.loader(64, shuffle=True), monitor, epochs=epochs)
            messages += [
                f"seed {seed}, {name}: {w.message}" for w in caught if "catastrophic" in str(w.message)
            ]
            records[name].append(history.records)
            _mnist.score(scores, name, model.eval(), x, y, threat, attacks, seed)

    def column(name: str, key: str) -> list[list[float]]:
        return [[r[key] for r in rs] for rs in records[name]]

    def detected(name: str) -> list[float]:
        """The epoch the guard fired in each seed (0: never)."""
        return [
            float(next((i + 1 for i, v in enumerate(c) if v > 0), 0)) for c in column(name, "co_detected")
        ]

    def collapsed(pgd: list[float], fgsm: list[float]) -> bool:
        """PGD accuracy below half its best while FGSM accuracy stays 30 points above it, at the end."""
        return pgd[-1] < 0.5 * max(pgd) and fgsm[-1] - pgd[-1] >= 0.3

    warn_only, fallback = list(ARMS)[:2]
    collapses = [
        collapsed(p, f)
        for p, f in zip(column(warn_only, "co_pgd_acc"), column(warn_only, "co_fgsm_acc"), strict=True)
    ]
    caught_all = all(d > 0 for d, c in zip(detected(warn_only), collapses, strict=True) if c)
    recovered = fallback in arms and (
        statistics.fmean(scores[fallback]["PGD-20"]) > statistics.fmean(scores[warn_only]["PGD-20"])
    )
    verdicts = {
        warn_only: (
            any(collapses),
            f"collapsed in {sum(collapses)} of {len(collapses)} seeds: FGSM accuracy high, PGD near 0."
            if any(collapses)
            else "no collapse in any seed within the epochs run.",
        ),
        fallback: (
            recovered,
            "after the guard's switch to PGD-5 the PGD accuracy is above the collapsed arm's."
            if recovered
            else "the fallback did not lift the PGD accuracy above the collapsed arm's.",
        ),
    }
    control = (True, "the control: random start and step 1.25ε.")
    named = f"{{arm}}: {{measure}} accuracy after {epochs} epochs"
    comparisons = []
    for name in arms:
        unguarded = name == warn_only
        verdict = verdicts.get(name, control)
        comparisons += percent_rows(
            scores, [name], ["clean", *attacks], lambda *_, v=verdict: v, count=len(x), quantity=named
        )
        comparisons.append(
            Comparison(
                f"{name}: epoch the guard fired (0: never)",
                None,
                tuple(detected(name)),
                holds=caught_all if unguarded else True,
                why=(
                    (
                        "the guard fired in every seed that collapsed"
                        if caught_all
                        else "the guard missed a collapse"
                    )
                    if unguarded
                    else "the guard's decision in this arm"
                )
                + ".",
                spread="mean",
            )
        )
    fig = figure(9.6, 3.8)
    for i, key in enumerate(("co_pgd_acc", "co_fgsm_acc")):
        ax = fig.add_subplot(1, 2, i + 1)
        for j, name in enumerate(arms):
            for k, curve in enumerate(column(name, key)):
                ax.plot(
                    range(1, len(curve) + 1), curve, color=f"C{j}", alpha=0.8, label=name if k == 0 else None
                )
            for epoch in detected(name):
                if epoch > 0:
                    ax.axvline(epoch, color=f"C{j}", linestyle=":", alpha=0.6)
        ax.set_xlabel("epoch")
        ax.set_ylabel(("PGD-10" if key == "co_pgd_acc" else "FGSM") + f" accuracy, ε = {EPS:g}")
        ax.set_ylim(0, 1)
        ax.grid(True, alpha=0.3)
    fig.axes[0].legend(fontsize=7)
    section = Section(
        "The guard's measurements per epoch",
        [
            f"One line per seed and arm, on the guard's {MONITOR} held-out digits; dotted verticals: the "
            "epoch the guard fired.",
            *(messages or ["The guard issued no warning."]),
        ],
        figures=[("claim-overfitting.png", "PGD and FGSM accuracy per epoch, each arm", png(fig))],
    )
    header = (
        f"{described}; small_cnn 8-16 channels, 64 hidden; Adam 2e-3, batch 64, {epochs} epochs; ℓ∞ "
        f"ε = {EPS:g}; guard: PGD-10 and FGSM on {MONITOR} test digits per epoch; scored on {len(x)} "
        "other test digits."
    )
    details = {"records": records, "scores": scores, "warnings": messages}
    return Outcome(header, comparisons, [], [section], details)


EXPERIMENT = Experiment(
    name="claim-overfitting",
    source="Adversarial Learning chapter, overview claim (e) (Wong, Rice & Kolter 2020, §5)",
    claim="Single-step adversarial training at a large ε overfits catastrophically, and the "
    "held-out PGD guard catches it.",
    cost="quick 43 s wall (quiet, 2 cores); full (3 seeds, 3 arms) 471 CPU-s on 1 thread, quiet "
    "(596 CPU-s on a shared machine)",
    run=run,
    seeds=(1, 3),
)
