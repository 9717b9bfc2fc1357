"""``claim-unlabeled``: overview claim (b), pseudo-labelled unlabelled data buys robust accuracy.

The overview states that unlabelled data improves robust accuracy (robust self-training, Carmon
et al. 2019; Uesato et al. 2019): label the extra inputs with a standard model trained on the
labelled ones, then adversarially train on labelled + pseudo-labelled data. Here, on
scikit-learn's 8×8 digits, :data:`LABELED` training digits (stratified, per seed) keep their
labels and the rest of the training set loses them. Three 64-256-10 MLPs, all by the library's
Trainer:

1. a standard model on the labelled digits, whose predictions pseudo-label the rest;
2. :class:`~advlearn.training.TRADES` (ℓ∞ ε = :data:`EPS`, β = 6) on the labelled digits only;
3. the same TRADES on labelled + pseudo-labelled digits.

Both TRADES models take the same number of optimizer steps (the labelled-only one runs
proportionally more epochs), so the comparison is at equal labelled count and equal compute.
Each is evaluated clean and against PGD-20 at ε = :data:`EPS`. The claim has no published
number on this data, so the rows carry none.
"""

from __future__ import annotations

import math
import statistics
from functools import partial

import torch

from advlearn.data import Dataset
from advlearn.experiments.reproduce import _mnist
from advlearn.experiments.reproduce._common import Comparison, Context, Experiment, Outcome, percent_rows
from advlearn.models import mlp
from advlearn.report.page import Section
from advlearn.training import TRADES, Standard

EPS = 0.1
LABELED = 200
BATCH = 64

_model = partial(mlp, (1, 8, 8), 10, hidden=(256,))


def pseudo_labeled(train: Dataset, labeled: int, seed: int) -> tuple[Dataset, Dataset]:
    """A stratified ``(labelled, unlabelled)`` split of ``train`` with ``labeled`` labelled examples."""
    return _mnist.validation_split(train, len(train) - labeled, seed)


def run(context: Context) -> Outcome:
    bench = _mnist.DigitsPGD.make(context, EPS)  # 8×8 digits, PGD-20 at EPS
    split, (x, y), threat, n_test = bench.split, bench.test, bench.threat, len(bench.test[0])
    epochs, steps = (8, 3) if context.quick else (25, 7)
    trades = TRADES(threat, beta=6.0, steps=steps)
    names = ("labelled only", "labelled + pseudo-labelled")
    scores: _mnist.Scores = {}
    pseudo_accuracy: list[float] = []
    teacher_accuracy: list[float] = []
    unlabeled_count = labeled_count = 0
    for seed in context.seeds:
        labeled, unlabeled = pseudo_labeled(split.train, LABELED, seed)
        unlabeled_count, labeled_count = len(unlabeled), len(labeled)
        teacher = _mnist.fit(_model, Standard(), labeled, epochs=4 * epochs, seed=seed, quiet=context.quiet)
        with torch.no_grad():
            guesses = teacher(unlabeled.x).argmax(1)
            teacher_accuracy.append(float((teacher(x).argmax(1) == y).float().mean()))
        pseudo_accuracy.append(float((guesses == unlabeled.y).float().mean()))
        combined = Dataset(
            torch.cat([labeled.x, unlabeled.x]),
            torch.cat([labeled.y, guesses]),
            num_classes=10,
            name="digits+pseudo",
        )
        # the same optimizer steps for both: the smaller set runs proportionally more epochs
        per_epoch = {n: math.ceil(len(d) / BATCH) for n, d in zip(names, (labeled, combined), strict=True)}
        for name, data in zip(names, (labeled, combined), strict=True):
            runs = round(epochs * per_epoch[names[1]] / per_epoch[name])
            _mnist.fit_and_score(
                scores, name, _model, trades, data, bench.test, threat, bench.attacks,
                epochs=runs, seed=seed, batch_size=BATCH, quiet=context.quiet,
            )  # fmt: skip
    clean = {k: v["clean"] for k, v in scores.items()}
    robust = {k: v["PGD-20"] for k, v in scores.items()}

    def mean(values: list[float]) -> float:
        return statistics.fmean(values)

    gain = mean(robust[names[1]]) - mean(robust[names[0]])
    holds = gain > 0
    claim = (
        f"pseudo-labels add {100 * gain:.1f} points of robust accuracy"
        if holds
        else f"pseudo-labels do not help here ({100 * gain:+.1f} points of robust accuracy)"
    )
    gains = tuple(b - a for a, b in zip(robust[names[0]], robust[names[1]], strict=True))
    low = Comparison("", None, gains, True, "", spread="mean").interval[0]
    if holds and not low > 0:
        claim += " (the interval of the gain includes 0: not significant with these seeds)"
    why = f"{claim}, at {labeled_count} labelled digits and equal optimizer steps."
    arms = {n: f"TRADES on {n}" for n in names}
    comparisons = percent_rows(scores, arms, bench.measures, lambda *_: (holds, why), count=n_test)
    comparisons.append(
        Comparison(
            f"robust accuracy gained by the {unlabeled_count} pseudo-labelled digits",
            None,
            gains,
            holds=holds,
            why=f"{claim}; the interval is over seeds (paired by seed).",
            percent=False,
            spread="mean",
        )
    )
    comparisons.append(
        Comparison(
            "pseudo-labels' accuracy on the unlabelled digits",
            None,
            tuple(pseudo_accuracy),
            holds=True,
            why=f"the standard teacher's labels (its test accuracy: {mean(teacher_accuracy):.1%}).",
            percent=True,
            count=unlabeled_count,
        )
    )
    notes = Section(
        "Protocol",
        [
            f"Per seed: {labeled_count} labelled digits (stratified), the other {unlabeled_count} training "
            f"digits unlabelled. Teacher: standard training, {4 * epochs} epochs on the labelled digits. "
            f"TRADES (β = 6, {steps} PGD steps on the KL, ε = {EPS:g}), batch {BATCH}, Adam 1e-3; the "
            f"labelled + pseudo-labelled model {epochs} epochs, the labelled-only one as many optimizer "
            "steps. The gain row is the per-seed difference of robust accuracies.",
        ],
    )
    header = (
        f"8×8 digits (scikit-learn, {len(split.train)} train / {n_test} test): {labeled_count} labelled, "
        f"{unlabeled_count} pseudo-labelled; MLP 64-256-10; TRADES ℓ∞ ε = {EPS:g}, β = 6; evaluated by "
        f"PGD-20 at ε = {EPS:g}."
    )
    details = {"clean": clean, "robust": robust, "pseudo_accuracy": pseudo_accuracy}
    return Outcome(header, comparisons, [], [notes], details)


EXPERIMENT = Experiment(
    name="claim-unlabeled",
    source="Adversarial Learning chapter, overview claim (b) (Carmon et al. 2019, robust self-training)",
    claim="Pseudo-labelled unlabelled data improves the robust accuracy of adversarial training at "
    "equal labelled count.",
    cost="quick 5 s wall (quiet, 2 cores); full (3 seeds) 38 CPU-s on 1 thread",
    run=run,
    seeds=(2, 3),
)
