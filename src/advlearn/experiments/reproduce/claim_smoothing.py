"""``claim-smoothing``: overview claim (d), adversarial training enlarges radii under smoothing.

The overview states that adversarially trained base classifiers get larger certified ℓ2 radii
under randomized smoothing than standard ones (Salman et al. 2019 made the point with
SmoothAdv). Here, on scikit-learn's 8×8 digits, a 64-256-10 MLP trained by the library's
Trainer either with :class:`~advlearn.training.Standard` or with ℓ2
:class:`~advlearn.training.PGDAT` (ε = 0.5), each smoothed with σ = 0.25 and certified by
Cohen et al.'s CERTIFY (:func:`~advlearn.certify.certify_dataset`, α = 0.001). The claim has no
published number on this data, so the rows carry none; each says whether the claim holds.
"""

from __future__ import annotations

import statistics
from functools import partial

import numpy as np
import torch
from scipy.stats import norm as normal

from advlearn.certify import Smooth, certify_dataset
from advlearn.data import digits
from advlearn.experiments.reproduce import _mnist
from advlearn.experiments.reproduce._common import Comparison, Context, Experiment, Outcome
from advlearn.models import mlp
from advlearn.report.page import Section, figure, png
from advlearn.threat import ThreatModel
from advlearn.training import PGDAT, Standard

SIGMA, EPS = 0.25, 0.5
RADII = (0.0, 0.25, 0.5)  # below the ceiling σ·Φ⁻¹(α^(1/n)): 0.55 at n = 500, 0.67 at n = 2,000
ALPHA = 0.001

_model = partial(mlp, (1, 8, 8), 10, hidden=(256,))


def run(context: Context) -> Outcome:
    split = digits()
    epochs, n_test, samples = (15, 150, 500) if context.quick else (40, len(split.test), 2000)
    x, y = split.test.x[:n_test], split.test.y[:n_test]
    threat = ThreatModel("l2", EPS, (0.0, 1.0))
    objectives = {"standard": Standard(), "pgd-at": PGDAT(threat, steps=5)}
    ceiling = SIGMA * float(normal.ppf(ALPHA ** (1 / samples)))
    fine = np.linspace(0.0, ceiling, 25)
    curves: dict[str, list[list[float]]] = {k: [] for k in objectives}
    fine_curves: dict[str, list[list[float]]] = {k: [] for k in objectives}
    acr: dict[str, list[float]] = {k: [] for k in objectives}
    for seed in context.seeds:
        for label, objective in objectives.items():
            model = _mnist.fit(_model, objective, split.train, epochs=epochs, seed=seed, quiet=context.quiet)
            generator = torch.Generator().manual_seed(seed)
            certificates = certify_dataset(
                Smooth(model, 10, SIGMA), x, y, n0=100, n=samples, alpha=ALPHA, batch_size=1000,
                generator=generator, quiet=True,
            )  # fmt: skip
            curves[label].append(certificates.certified_accuracy(RADII).tolist())
            fine_curves[label].append(certificates.certified_accuracy(fine.tolist()).tolist())
            acr[label].append(float((certificates.radii * certificates.correct.double()).mean()))

    def at(label: str, i: int) -> tuple[float, ...]:
        return tuple(c[i] for c in curves[label])

    def mean(values: tuple[float, ...] | list[float]) -> float:
        return statistics.fmean(values)

    comparisons = []
    for i, r in enumerate(RADII):
        holds = mean(at("pgd-at", i)) > mean(at("standard", i)) if r > 0 else True
        for label in objectives:
            claim = (
                ("claim holds: the adversarially trained model certifies more"
                 if holds else "claim fails here: the standard model certifies as much or more")
                if r > 0
                else "at radius 0 this is the smoothed classifier's certified clean accuracy"
            )  # fmt: skip
            lo_at = Comparison("", None, at("pgd-at", i), True, "", percent=True, count=n_test).interval[0]
            hi_std = Comparison("", None, at("standard", i), True, "", percent=True, count=n_test).interval[1]
            if r > 0 and holds and lo_at <= hi_std:
                claim += " (the two intervals overlap: not significant with these seeds)"
            comparisons.append(
                Comparison(
                    f"{label}: certified accuracy at ℓ2 radius {r:g}",
                    None,
                    at(label, i),
                    holds=holds,
                    why=f"{claim}.",
                    percent=True,
                    count=n_test,
                )
            )
    acr_holds = mean(acr["pgd-at"]) > mean(acr["standard"])
    for label in objectives:
        comparisons.append(
            Comparison(
                f"{label}: average certified radius (0 when wrong or abstaining)",
                None,
                tuple(acr[label]),
                holds=acr_holds,
                why="claim holds: larger radii after adversarial training"
                if acr_holds
                else "claim fails here: adversarial training did not enlarge the radii",
                spread="mean",
            )
        )
    fig = figure(6.4, 4.2)
    ax = fig.add_subplot()
    for i, label in enumerate(objectives):
        values = np.array(fine_curves[label])  # (seeds, R)
        ax.plot(fine, values.mean(0), color=f"C{i}", label=label)
    ax.set_xlabel("ℓ2 radius")
    ax.set_ylabel("certified accuracy")
    ax.set_ylim(0, 1)
    ax.grid(True, alpha=0.3)
    ax.legend()
    section = Section(
        "Certified accuracy against radius",
        [f"Mean over seeds; σ = {SIGMA:g}, n = {samples:,}, α = {ALPHA:g}, {n_test} test digits."],
        figures=[("claim-smoothing.png", "certified accuracy vs radius, standard and PGD-AT", png(fig))],
    )
    header = (
        f"8×8 digits (scikit-learn, {len(split.train)} train / {n_test} test), MLP 64-256-10, Adam 1e-3, "
        f"{epochs} epochs, standard vs ℓ2 PGD-AT (ε = {EPS:g}, 5 steps); smoothing σ = {SIGMA:g}, "
        f"n0 = 100, n = {samples:,}, α = {ALPHA:g}: no radius above σ·Φ⁻¹(α^(1/n)) = {ceiling:.3f} "
        "can be certified."
    )
    return Outcome(header, comparisons, [], [section], {"curves": curves, "acr": acr})


EXPERIMENT = Experiment(
    name="claim-smoothing",
    source="Adversarial Learning chapter, overview claim (d) (Salman et al. 2019)",
    claim="Adversarially trained models get larger certified radii under randomized smoothing "
    "than standard ones.",
    cost="quick 6 s wall (quiet, 2 cores); full (3 seeds) 27 CPU-s on 1 thread",
    run=run,
    seeds=(2, 3),
)
