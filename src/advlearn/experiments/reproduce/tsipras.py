"""``tsipras``: robustness may be at odds with accuracy (§62.2.2; Tsipras et al. 2019, §2.1).

The distribution (:func:`advlearn.data.tsipras`): ``y = ±1``, a robust feature ``x₁ = y`` with
probability ``p`` (else ``−y``) and ``d`` weak features ``N(ηy, 1)``; here ``p = 0.95``,
``η = 4/√d`` and the ℓ∞ adversary's ``ε = 2η``, which turns every weak feature's mean ``ηy``
into ``−ηy``. Closed forms:

- the weak-feature classifier ``sign(mean(x₂..x_{d+1}))``: ``Φ(η√d) = Φ(4)`` clean and
  ``Φ(−η√d) ≈ 0`` under attack;
- the robust-feature classifier ``sign(x₁)``: ``p`` clean, and ``p`` under attack as long as
  ``ε < 1`` (at d = 10, ``ε = 8/√10 ≈ 2.5`` flips ``x₁`` too, and it falls to 0).

Beside them, two trained models measured on samples: standard logistic regression and
adversarially trained logistic regression, the latter trained on the exact worst case in
closed form (:class:`advlearn.linear.AdversarialLogisticRegression` with ε = 2η), both with a
small weight decay that keeps the maximum-likelihood fit finite when ``d`` exceeds the sample
size. Both are attacked by FGSM, which is the exact worst case for a linear model.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from scipy.stats import norm as normal

from advlearn.attacks import fgsm
from advlearn.data import tsipras
from advlearn.experiments.reproduce._common import Check, Comparison, Context, Experiment, Outcome
from advlearn.linear import AdversarialLogisticRegression, Solver
from advlearn.report.page import Section, figure, png
from advlearn.threat import ThreatModel

P = 0.95
DIMS = (10, 100, 1_000, 10_000)
WEIGHT_DECAY = 1e-3


def eta(d: int) -> float:
    return 4.0 / math.sqrt(d)


def closed_forms(d: int) -> dict[str, float]:
    """The four closed-form accuracies at dimension ``d``."""
    eps = 2 * eta(d)
    return {
        "weak clean": float(normal.cdf(eta(d) * math.sqrt(d))),
        "weak robust": float(normal.cdf((eta(d) - eps) * math.sqrt(d))),
        "robust clean": P,
        "robust robust": P if eps < 1 else 0.0,
    }


def _accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).double().mean())


def _fit(threat: ThreatModel, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.nn.Module, bool]:
    # the robust fit's penalty ε‖w‖₁ has a kink at every zero weight: L-BFGS-B on w = u − v
    solver: Solver = "lbfgsb" if float(threat.eps) > 0 else "lbfgs"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        fitted = AdversarialLogisticRegression(
            threat, weight_decay=WEIGHT_DECAY, max_iter=500, solver=solver
        ).fit(x, y)
    return fitted.to_module().eval(), not caught


def _one(d: int, seed: int, n_train: int, n_test: int) -> dict[str, float]:
    split = tsipras(n_train=n_train, n_test=n_test, d=d, p=P, eta=eta(d), seed=seed)
    x, y = split.train.x.double(), split.train.y
    xt, yt = split.test.x.double(), split.test.y
    threat = ThreatModel("linf", 2 * eta(d), bounds=split.train.bounds)
    out: dict[str, float] = {}
    converged = True
    for label, train_threat in (("standard", threat.with_eps(0.0)), ("adversarial", threat)):
        model, ok = _fit(train_threat, x, y)
        converged &= ok
        out[f"{label} clean"] = _accuracy(model, xt, yt)
        out[f"{label} robust"] = _accuracy(model, fgsm(model, xt, yt, threat).x_adv, yt)
    out["converged"] = float(converged)
    return out


def monte_carlo_weak(d: int, n: int, seed: int) -> tuple[float, float]:
    """The weak-feature classifier on ``n`` fresh samples, clean and with every weak feature moved by −εy."""
    split = tsipras(n_train=1, n_test=n, d=d, p=P, eta=eta(d), seed=seed)
    x, sign = split.test.x.double(), 2 * split.test.y.double() - 1
    weak = x[:, 1:]
    clean = float(((weak.mean(1) * sign) > 0).double().mean())
    moved = weak - 2 * eta(d) * sign.unsqueeze(1)
    robust = float(((moved.mean(1) * sign) > 0).double().mean())
    return clean, robust


def run(context: Context) -> Outcome:
    n_train, n_test = (500, 1000) if context.quick else (1000, 2000)
    dims = DIMS[:3] if context.quick else DIMS
    measured = {d: [_one(d, seed, n_train, n_test) for seed in context.seeds] for d in dims}
    comparisons: list[Comparison] = []
    for d in dims:
        theory = closed_forms(d)
        runs = measured[d]

        def col(key: str, runs: list[dict[str, float]] = runs) -> tuple[float, ...]:
            return tuple(r[key] for r in runs)

        std_clean, std_rob = col("standard clean"), col("standard robust")
        at_clean, at_rob = col("adversarial clean"), col("adversarial robust")
        rows = [
            (
                f"d = {d:,}: weak-feature Φ(η√d) vs standard LR, clean",
                theory["weak clean"],
                std_clean,
                float(np.mean(std_clean)) > P,
                "the standard model leans on the weak features and beats the robust feature's p"
                if float(np.mean(std_clean)) > P
                else f"with {n_train} samples the standard model does not reach the weak features' accuracy",
            ),
            (
                f"d = {d:,}: weak-feature Φ(−η√d) vs standard LR, under attack",
                theory["weak robust"],
                std_rob,
                float(np.mean(std_rob)) < 0.5,
                "the attack moves every weak feature, and the standard model falls below chance",
            ),
            (
                f"d = {d:,}: robust-feature p vs adversarially trained LR, clean",
                theory["robust clean"],
                at_clean,
                float(np.mean(at_clean)) <= float(np.mean(std_clean)) + 0.01,
                "robustness costs clean accuracy: the robust model keeps only x₁"
                if d > 10
                else "at d = 10, ε > 1 so no feature survives and the robust fit degenerates",
            ),
            (
                f"d = {d:,}: robust-feature (p if ε < 1) vs adversarially trained LR, under attack",
                theory["robust robust"],
                at_rob,
                float(np.mean(at_rob)) >= float(np.mean(std_rob)),
                "the adversarially trained model keeps its accuracy under attack"
                if d > 10
                else "at d = 10, ε = 2.5 flips x₁ as well",
            ),
        ]
        comparisons += [
            Comparison(
                q,
                pub,
                vals,
                holds=bool(h),
                why=f"{why}.",
                percent=True,
                spread="mean",
                count=n_test,
            )
            for q, pub, vals, h, why in rows
        ]
    checks = []
    for d in (100, 1_000):
        n = 200_000 // max(1, d // 100)
        clean, robust = monte_carlo_weak(d, n, seed=12345)
        theory = closed_forms(d)
        for label, ours, ref in (
            ("clean", clean, theory["weak clean"]),
            ("robust", robust, theory["weak robust"]),
        ):
            sd = math.sqrt(max(ref * (1 - ref), 1 / n) / n)
            checks.append(
                Check(
                    f"d = {d:,}: weak-feature classifier, {label}, on {n:,} samples",
                    ours,
                    ref,
                    "closed form Φ(±η√d)",
                    tolerance=5 * sd,
                )
            )
    fig = figure(7.5, 4.6)
    ax = fig.add_subplot()
    xs = np.array(dims, dtype=float)
    for key, style, label in (
        ("weak clean", "C0--", "weak-feature classifier, clean (closed form)"),
        ("weak robust", "C0:", "weak-feature classifier, attacked (closed form)"),
        ("robust clean", "C3--", "robust-feature classifier, clean (closed form)"),
        ("robust robust", "C3:", "robust-feature classifier, attacked (closed form)"),
    ):
        ax.plot(xs, [closed_forms(d)[key] for d in dims], style, label=label)
    for key, marker, colour, label in (
        ("standard clean", "o", "C0", "standard LR, clean"),
        ("standard robust", "s", "C0", "standard LR, attacked"),
        ("adversarial clean", "o", "C3", "adversarially trained LR, clean"),
        ("adversarial robust", "s", "C3", "adversarially trained LR, attacked"),
    ):
        values = np.array([[r[key] for r in measured[d]] for d in dims])  # (D, seeds)
        ax.errorbar(
            xs,
            values.mean(1),
            yerr=values.std(1),
            fmt=marker,
            color=colour,
            mfc="none",
            label=label,
            capsize=3,
        )
    ax.set_xscale("log")
    ax.set_xlabel("d (number of weak features)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="center left")
    section = Section(
        "Accuracy against d",
        [
            f"Closed forms (lines) and trained models (markers, mean ± sd over seeds), p = {P}, "
            "η = 4/√d, ε = 2η."
        ],
        figures=[("tsipras.png", "accuracy vs d: closed forms and trained logistic regression", png(fig))],
    )
    header = (
        f"Tsipras et al.'s distribution, p = {P}, η = 4/√d, ℓ∞ ε = 2η, d ∈ {{{', '.join(map(str, dims))}}}; "
        f"{n_train} training and {n_test} test samples per seed; logistic regression (L-BFGS, float64, "
        f"weight decay {WEIGHT_DECAY:g}), adversarially trained in closed form."
    )
    details = {str(d): measured[d] for d in dims}
    return Outcome(header, comparisons, checks, [section], details)


EXPERIMENT = Experiment(
    name="tsipras",
    source="Adversarial Learning chapter, §62.2.2 (Tsipras et al. 2019, §2.1)",
    claim="The weak features give Φ(η√d) clean accuracy and nothing under attack; the robust "
    "feature gives p both ways; standard and adversarially trained logistic regression follow them.",
    cost="quick 6 s wall (quiet, 2 cores); full (3 seeds, d to 10,000) 53 CPU-s on 1 thread",
    run=run,
    seeds=(2, 3),
)
