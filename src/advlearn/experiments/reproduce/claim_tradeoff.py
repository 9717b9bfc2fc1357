"""``claim-tradeoff``: overview claim (a), robustness costs clean accuracy, along ε and along β.

The overview states that robustness and accuracy trade off (Tsipras et al. 2019; Zhang et al.
2019): the larger the training radius of PGD adversarial training, or the weight β of TRADES's
robust term, the higher the robust accuracy and the lower the clean one. Here, on scikit-learn's
8×8 digits, a 64-256-10 MLP trained by the library's Trainer with
:class:`~advlearn.training.PGDAT` at training radii :data:`TRAIN_EPS` (ε = 0 is
:class:`~advlearn.training.Standard`) and with :class:`~advlearn.training.TRADES` at ε =
:data:`EPS` over :data:`BETAS` (β = 0 is the same standard model), every model evaluated clean
and against PGD-20 at ℓ∞ ε = :data:`EPS`. The claim has no published number on this data, so
the rows carry none; each says whether the claim holds at its end of the curve.
"""

from __future__ import annotations

import statistics
from functools import partial

from advlearn.experiments.reproduce import _mnist
from advlearn.experiments.reproduce._common import Context, Experiment, Outcome, percent_rows
from advlearn.models import mlp
from advlearn.report.page import Section, figure, png
from advlearn.threat import ThreatModel
from advlearn.training import PGDAT, TRADES, Objective, Standard

EPS = 0.1
TRAIN_EPS = (0.0, 0.05, 0.1, 0.2)
BETAS = (0.0, 1.0, 6.0)
QUICK_TRAIN_EPS = (0.0, 0.1, 0.2)
QUICK_BETAS = (0.0, 6.0)

_model = partial(mlp, (1, 8, 8), 10, hidden=(256,))


def _arms(quick: bool, steps: int) -> dict[str, Objective]:
    """The curve's points by name: ``"eps=…"`` (PGD-AT) and ``"beta=…"`` (TRADES); 0 is standard."""
    arms: dict[str, Objective] = {"standard": Standard()}
    for eps in QUICK_TRAIN_EPS if quick else TRAIN_EPS:
        if eps > 0:
            arms[f"eps={eps:g}"] = PGDAT(ThreatModel("linf", eps, (0.0, 1.0)), steps=steps)
    for beta in QUICK_BETAS if quick else BETAS:
        if beta > 0:
            arms[f"beta={beta:g}"] = TRADES(ThreatModel("linf", EPS, (0.0, 1.0)), beta=beta, steps=steps)
    return arms


def run(context: Context) -> Outcome:
    bench = _mnist.DigitsPGD.make(context, EPS)  # 8×8 digits, PGD-20 at EPS
    split, threat, n_test = bench.split, bench.threat, len(bench.test[0])
    epochs, steps = (10, 3) if context.quick else (30, 7)
    arms = _arms(context.quick, steps)
    scores: _mnist.Scores = {}
    for seed in context.seeds:
        for label, objective in arms.items():
            _mnist.fit_and_score(
                scores, label, _model, objective, split.train, bench.test, threat, bench.attacks,
                epochs=epochs, seed=seed, quiet=context.quiet,
            )  # fmt: skip
    clean = {k: v["clean"] for k, v in scores.items()}
    robust = {k: v["PGD-20"] for k, v in scores.items()}

    def mean(values: list[float]) -> float:
        return statistics.fmean(values)

    claims: dict[tuple[str, str], tuple[bool, str]] = {}  # (arm, measure) -> (holds, why)
    kinds = {"standard": "PGD-AT"}  # the standard model's rows once, on the PGD-AT curve
    for kind, prefix, knob in (("PGD-AT", "eps=", "training ε"), ("TRADES", "beta=", "β")):
        curve = [k for k in arms if k.startswith(prefix)]
        top = curve[-1]
        falls = mean(clean[top]) < mean(clean["standard"])
        rises = mean(robust[top]) > mean(robust["standard"])
        for measure, holds, claim in (
            ("clean", falls, f"clean accuracy falls as {knob} grows"),
            ("PGD-20", rises, f"robust accuracy rises as {knob} grows"),
        ):
            why = f"{claim}: {'holds' if holds else 'fails'} from the standard model to {top}."
            for label in ["standard", *curve] if kind == "PGD-AT" else curve:
                claims[label, measure] = holds, why
                kinds.setdefault(label, kind)

    names = {k: f"{kinds[k]}, {k}" for k in arms} | {
        "standard": "standard (ε = 0, β = 0: both curves' origin)"
    }
    comparisons = percent_rows(scores, names, bench.measures, lambda a, m: claims[a, m], count=n_test)
    fig = figure(12.0, 3.8)
    frontier = fig.add_subplot(1, 3, 3)
    for i, (kind, prefix) in enumerate((("PGD-AT: training ε", "eps="), ("TRADES: β", "beta="))):
        curve = ["standard", *(k for k in arms if k.startswith(prefix))]
        knobs = [0.0, *(float(k.split("=")[1]) for k in curve[1:])]
        cleans, robusts = [mean(clean[k]) for k in curve], [mean(robust[k]) for k in curve]
        ax = fig.add_subplot(1, 3, i + 1)
        ax.plot(knobs, cleans, "-", marker="o", color=f"C{i}", label="clean")
        ax.plot(knobs, robusts, "--", marker="s", color=f"C{i}", label=f"PGD-20, ε = {EPS:g}")
        ax.set_xlabel(kind)
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        frontier.plot(robusts, cleans, marker="o", color=f"C{i}", label=kind.split(":")[0])
        for value, r, c in zip(knobs, robusts, cleans, strict=True):
            frontier.annotate(f"{value:g}", (r, c), textcoords="offset points", xytext=(4, 4), fontsize=8)
    frontier.set_xlabel(f"robust accuracy (PGD-20, ε = {EPS:g})")
    frontier.set_ylabel("clean accuracy")
    frontier.grid(True, alpha=0.3)
    frontier.legend(fontsize=8)
    section = Section(
        "The trade-off curves",
        [
            f"Mean over seeds; {n_test} test digits. Left and middle: clean (solid) and robust (dashed) "
            "accuracy against PGD-AT's training ε and TRADES's β. Right: the same points as clean "
            "against robust accuracy, each labelled by its ε or β."
        ],
        figures=[("claim-tradeoff.png", "clean and robust accuracy over training ε and β", png(fig))],
    )
    header = (
        f"8×8 digits (scikit-learn, {len(split.train)} train / {n_test} test), MLP 64-256-10, Adam 1e-3, "
        f"{epochs} epochs; PGD-AT ({steps} steps) at training ε ∈ "
        f"{{{', '.join(k.split('=')[1] for k in arms if k.startswith('eps='))}}}, TRADES ({steps} steps, "
        f"ε = {EPS:g}) at β ∈ {{{', '.join(k.split('=')[1] for k in arms if k.startswith('beta='))}}}, "
        f"the standard model as both curves' origin; evaluated clean and by PGD-20 at ℓ∞ ε = {EPS:g}."
    )
    return Outcome(header, comparisons, [], [section], {"clean": clean, "robust": robust})


EXPERIMENT = Experiment(
    name="claim-tradeoff",
    source="Adversarial Learning chapter, overview claim (a) (Tsipras et al. 2019; Zhang et al. 2019)",
    claim="Training for robustness trades clean accuracy for robust accuracy, along PGD-AT's ε and "
    "along TRADES's β.",
    cost="quick 8 s wall (quiet, 2 cores); full (3 seeds) 54 CPU-s on 1 thread",
    run=run,
    seeds=(2, 3),
)
