"""``madry-mnist``: PGD adversarial training at ℓ∞ ε = 0.3 and PGD's steps/restarts curve (Madry et al. 2018).

Madry et al. trained their MNIST network (:func:`~advlearn.models.small_cnn`) with PGD-AT on
60,000 digits and report (Table 1, white box, ε = 0.3): natural 98.8%, FGSM 95.6%, PGD 40
steps 93.2%, 100 steps 91.8%, 40 steps × 20 restarts 90.4%, 100 steps × 20 restarts 89.3%.
The point of the table is that the robust accuracy *flattens* as the attack grows: more steps
and restarts buy the attacker little against a robust model (against a gradient-masked model
the curve keeps falling). Here: a smaller ``small_cnn`` (16-32 channels, 256 hidden) trained
by :class:`~advlearn.training.PGDAT` on MNIST-5k (or full MNIST with ``--data-dir``), and a
standard model for contrast, evaluated by :class:`~advlearn.attacks.PGD` (step 0.01, random
start, early exit) at growing steps and restarts.

The **masked model** is the seed's standard model with its logits multiplied by
:data:`TEMPERATURE` (:class:`ScaledLogits`), the mechanism behind defensive distillation's
apparent robustness (Carlini & Wagner 2016). Its predictions, hence its true robustness, are
exactly the standard model's, but the softmax saturates: on a correctly classified input with
a logit margin above about 0.1 the cross-entropy's gradient underflows to exactly 0 in float32,
so FGSM and cross-entropy PGD stand still and report a robust accuracy near the clean one;
only random starts that happen to land on a wrong class count. The stronger attack is the
same PGD on the margin (CW) loss, whose gradient the scale does not kill: it takes the masked
model to the standard model's figure, while against the PGD-AT model it barely differs from
cross-entropy PGD.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import nn

from advlearn.attacks import FGSM, PGD, Attack
from advlearn.experiments.reproduce import _mnist
from advlearn.experiments.reproduce._common import Comparison, Context, Experiment, Outcome, percent_rows
from advlearn.models import small_cnn
from advlearn.report.page import Section, figure, png
from advlearn.threat import ThreatModel
from advlearn.training import PGDAT, Standard

EPS = 0.3
PUBLISHED = {
    "clean": 0.988,
    "FGSM": 0.956,
    "PGD-40x1": 0.932,
    "PGD-100x1": 0.918,
    "PGD-40x20": 0.904,
    "PGD-100x20": 0.893,
}

TEMPERATURE = 1000.0
"""The masked model's logit scale: margins above ~0.1 saturate float32's softmax (e^{−100} ≈ 0)."""


class ScaledLogits(nn.Module):
    """``T · model(x)``: the same predictions as ``model``, a cross-entropy gradient that underflows.

    Example:
        >>> base = torch.nn.Linear(2, 2)
        >>> x = torch.randn(4, 2)
        >>> bool((ScaledLogits(base, 1000.0)(x).argmax(1) == base(x).argmax(1)).all())
        True
    """

    def __init__(self, model: nn.Module, temperature: float) -> None:
        super().__init__()
        self.model, self.temperature = model, temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.temperature * self.model(x)  # type: ignore[no-any-return]


_model = partial(small_cnn, (1, 28, 28), 10, channels=(16, 32), hidden=256)

ARMS = ("pgd-at", "standard", "masked")


@dataclass(frozen=True)
class Budget:
    """One run's sizes: the training, PGD's grid, and the test digits each cell is scored on.

    Every cell is scored on a prefix of the test set, so two cells with different digit counts
    are compared on the smaller one's digits (:meth:`Cells.accuracy`).

    Attributes:
        epochs: PGD-AT's epochs (the standard model trains ``min(epochs, 4)``).
        train_steps: PGD-AT's attack steps (step 0.1).
        steps: the one-restart line's PGD steps.
        digits: the test digits of FGSM, the one-restart line and the margin attack.
        masked_digits: the masked model's digits (its cross-entropy attacks never exit early, so
            every step of every digit is paid).
        restarts: the restart line's restarts.
        restart_steps: the restart line's PGD steps.
        restart_digits: the restart line's digits (the first of ``digits``).
        restart_arms: the models the restart line is run on.
        strong: the margin-loss PGD's ``(steps, restarts)``.
    """

    epochs: int
    train_steps: int
    steps: tuple[int, ...]
    digits: int
    masked_digits: int
    restarts: int
    restart_steps: tuple[int, ...]
    restart_digits: int
    restart_arms: tuple[str, ...]
    strong: tuple[int, int]

    def digits_of(self, arm: str) -> int:
        return self.masked_digits if arm == "masked" else self.digits


QUICK = Budget(2, 2, (1, 10, 40), 200, 200, 2, (1, 10, 40), 200, ARMS, (40, 2))
"""``--quick``: every cell on 200 digits for all three models, in one evaluation each."""

FULL = Budget(8, 5, (1, 10, 40, 100), 500, 200, 20, (40, 100), 30, ("pgd-at",), (100, 1))
"""The full run, cut to fit 15 minutes of one thread (about 850k example passes for 3 seeds).

The published 20-restart cells on 30 digits of the PGD-AT model only: at 20 restarts × 100
steps a robust digit costs 2,000 passes, a masked one (which never exits early) the same.
"""


@dataclass
class Cells:
    """Per arm and measure, one ``(N,)`` flag tensor per seed: the digit was correct (clean, attacked)."""

    correct: dict[str, dict[str, list[torch.Tensor]]] = field(default_factory=dict)

    def add(self, arm: str, measure: str, flags: torch.Tensor) -> None:
        self.correct.setdefault(arm, {}).setdefault(measure, []).append(flags)

    def digits(self, arm: str, measure: str) -> int:
        return len(self.correct[arm][measure][0])

    def accuracy(self, arm: str, measure: str, digits: int | None = None) -> list[float]:
        """Per seed, the accuracy on the first ``digits`` digits (default: all it was scored on)."""
        n = self.digits(arm, measure) if digits is None else digits
        return [float(f[:n].float().mean()) for f in self.correct[arm][measure]]

    def mean(self, arm: str, measure: str, digits: int | None = None) -> float:
        return statistics.fmean(self.accuracy(arm, measure, digits))

    def scores(self) -> _mnist.Scores:
        return {a: {m: self.accuracy(a, m) for m in ms} for a, ms in self.correct.items()}


def _pgd(threat: ThreatModel, steps: int, restarts: int, loss: str = "ce") -> PGD:
    return PGD(threat, steps=steps, step_size=0.01, restarts=restarts, loss=loss, early_stop=True)


def run(context: Context) -> Outcome:
    split, described = _mnist.load(context)
    threat = ThreatModel("linf", EPS, (0.0, 1.0))
    budget = QUICK if context.quick else FULL
    steps, restarts = budget.steps, budget.restarts
    line = {f"PGD-{k}x1": _pgd(threat, k, 1) for k in steps}
    restart_line = {f"PGD-{k}x{restarts}": _pgd(threat, k, restarts) for k in budget.restart_steps}
    strong = f"PGD-{budget.strong[0]}x{budget.strong[1]} margin loss"
    cells = Cells()
    for seed in context.seeds:
        robust = _mnist.fit(
            _model,
            PGDAT(threat, steps=budget.train_steps, step_size=0.1, eps_warmup=min(5, budget.epochs // 2)),
            split.train,
            epochs=budget.epochs,
            seed=seed,
            lr=2e-3,
            schedule="onecycle",
            quiet=context.quiet,
        )
        standard = _mnist.fit(
            _model,
            Standard(),
            split.train,
            epochs=min(budget.epochs, 4),
            seed=seed,
            lr=2e-3,
            quiet=context.quiet,
        )
        scaled = ScaledLogits(standard, TEMPERATURE).eval()
        for arm, model in zip(ARMS, (robust, standard, scaled), strict=True):
            # each cell on its digit count; cells on the same count share one evaluation, in this order
            planned: list[tuple[str, Attack, int]] = [("FGSM", FGSM(threat), budget.digits_of(arm))]
            planned += [(name, attack, budget.digits_of(arm)) for name, attack in line.items()]
            if arm in budget.restart_arms:
                planned += [(name, attack, budget.restart_digits) for name, attack in restart_line.items()]
            planned.append((strong, _pgd(threat, *budget.strong, loss="cw"), budget.digits_of(arm)))
            for n in dict.fromkeys(n for _, _, n in planned):
                attacks = {name: attack for name, attack, m in planned if m == n}
                ev = _mnist.score({}, arm, model, split.test.x[:n], split.test.y[:n], threat, attacks, seed)
                for measure, flags in ev.correct.items():
                    if measure != "clean" or n == budget.digits_of(arm):
                        cells.add(arm, measure, flags)
    return _outcome(cells, budget, strong, described)


def _outcome(cells: Cells, budget: Budget, strong: str, described: str) -> Outcome:
    steps, restarts = budget.steps, budget.restarts
    biggest = f"PGD-{budget.restart_steps[-1]}x{restarts}"
    start = f"PGD-{steps[-2]}x1"
    longest = f"PGD-{steps[-1]}x1"
    n_big, n_line = cells.digits("pgd-at", biggest), cells.digits("pgd-at", longest)
    # more steps on every digit; then more restarts (and steps) on the restart cells' own digits
    step_drop = cells.mean("pgd-at", start) - cells.mean("pgd-at", longest)
    drop = cells.mean("pgd-at", start, n_big) - cells.mean("pgd-at", biggest)
    flat = step_drop < 0.05 and drop < 0.05
    parts = f"{start} to {longest} costs {100 * step_drop:.1f} points on {n_line} digits"
    if biggest != longest:
        parts += f", {start} to {biggest} {100 * drop:.1f} on the first {n_big}"
    curve = f"the curve flattens: {parts}" if flat else f"the curve still falls: {parts}"

    def mean(name: str) -> float:
        return cells.mean("pgd-at", name)

    claims = {
        "clean": (mean("clean") > 0.9, f"PGD-AT keeps {mean('clean'):.1%} clean accuracy"),
        "FGSM": (mean("FGSM") >= mean(f"PGD-{steps[-2]}x1"), "FGSM is weaker than PGD against it"),
    }
    data = "a smaller network and data than the paper's"

    def pgd_at_verdict(_arm: str, name: str) -> tuple[bool, str]:
        if name in PUBLISHED:
            holds, claim = claims.get(name, (flat, curve))
            return holds, f"{claim}; {data}."
        if name == strong:
            return True, f"the stronger attack: {strong.removesuffix(' margin loss')} on the margin loss."
        return True, "the steps/restarts grid beyond the published cells."

    def named(arm: str) -> dict[str, str]:
        return {m: f"{m} ({cells.digits(arm, m)} digits)" for m in cells.correct[arm]}

    scores = cells.scores()
    counts = {a: {m: cells.digits(a, m) for m in ms} for a, ms in cells.correct.items()}
    ours = named("pgd-at")
    # the published cells first (the quick grid lacks the 100-step and 20-restart ones), then the rest
    order = [*(n for n in PUBLISHED if n in ours), *(n for n in ours if n not in PUBLISHED)]
    comparisons = percent_rows(
        scores,
        ["pgd-at"],
        {n: ours[n] for n in order},
        pgd_at_verdict,
        count=counts["pgd-at"],
        quantity="PGD-AT: accuracy, {measure}",
        published=PUBLISHED,
    )
    top = {a: biggest if a in budget.restart_arms else f"PGD-{steps[-1]}x1" for a in ARMS}
    comparisons.append(
        Comparison(
            f"standard model: accuracy, {named('standard')[top['standard']]}",
            None,
            tuple(scores["standard"][top["standard"]]),
            holds=True,
            why="without adversarial training PGD at ε = 0.3 leaves almost nothing.",
            percent=True,
            count=counts["standard"][top["standard"]],
        )
    )
    unmasked = cells.mean("masked", top["masked"]) - cells.mean("masked", strong)
    exposed = unmasked > 0.2
    same_budget = f"PGD-{budget.strong[0]}x{budget.strong[1]}"
    kept = mean(same_budget) - mean(strong)

    def masked_verdict(_arm: str, name: str) -> tuple[bool, str]:
        if name == strong:
            why = (
                f"the margin loss's gradient survives the scale: {100 * unmasked:.1f} points below "
                f"cross-entropy {top['masked']}, the masking exposed"
                if exposed
                else f"the margin loss gains only {100 * unmasked:.1f} points over cross-entropy "
                f"{top['masked']}: the masking was not exposed here"
            )
        elif name == "clean":
            why = "the standard model's predictions, unchanged by the scale"
        else:
            why = "cross-entropy's gradient underflows on confident inputs, so the attack stands still"
        return exposed, f"{why}."

    masked_name = f"masked (standard × {TEMPERATURE:g} logits): accuracy, {{measure}}"
    comparisons += percent_rows(
        scores, ["masked"], named("masked"), masked_verdict, count=counts["masked"], quantity=masked_name
    )
    comparisons.append(
        Comparison(
            f"PGD-AT: accuracy lost from cross-entropy {same_budget} to the margin loss",
            None,
            tuple(a - b for a, b in zip(*(scores["pgd-at"][m] for m in (same_budget, strong)), strict=True)),
            holds=kept < 0.05,
            why=(
                "the robust model's figure does not depend on the loss the attack follows"
                if kept < 0.05
                else "the margin loss finds over 5 points the cross-entropy missed: not robust as measured"
            )
            + ".",
            spread="mean",
        )
    )
    fig = figure(6.4, 4.2)
    ax = fig.add_subplot()
    for label, style in (("pgd-at", "-"), ("masked", "--"), ("standard", ":")):
        lines = [(1, steps, cells.digits(label, f"PGD-{steps[0]}x1"))]
        if label in budget.restart_arms:
            lines.append((restarts, budget.restart_steps, cells.digits(label, biggest)))
        for i, (r, ks, n) in enumerate(lines):
            acc = [cells.mean(label, f"PGD-{k}x{r}") for k in ks]
            ax.plot(ks, acc, style, marker="o", color=f"C{i}", label=f"{label}, {r} restart(s), {n} digits")
        ax.plot(
            [budget.strong[0]], [cells.mean(label, strong)],
            "k" + ("*" if label == "masked" else "x"), markersize=9,
            label=f"{label}, {strong}" if label != "standard" else None,
        )  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("PGD steps")
    ax.set_ylabel("robust accuracy")
    ax.set_ylim(0, 1)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    section = Section(
        "Robust accuracy against PGD's steps and restarts",
        [
            f"Mean over seeds; ε = {EPS:g}, step 0.01, random start; each line's digits in its label "
            "(the first of the test set). Lines: cross-entropy PGD; black marks: the same PGD on the "
            f"margin loss. The masked model is the standard one with logits × {TEMPERATURE:g}: same "
            "predictions, so its true robustness is the standard model's."
        ],
        figures=[("madry-mnist.png", "robust accuracy vs PGD steps and restarts", png(fig))],
    )
    grid = "/".join(map(str, steps))
    restart_grid = "/".join(map(str, budget.restart_steps))
    masked = "" if budget.masked_digits == budget.digits else f" (the masked model: {budget.masked_digits})"
    header = (
        f"{described}; small_cnn 16-32 channels, 256 hidden; PGD-AT {budget.train_steps} steps (step 0.1), "
        f"{budget.epochs} epochs, Adam 2e-3 one-cycle; standard model {min(budget.epochs, 4)} epochs; "
        f"masked model: the standard one with logits × {TEMPERATURE:g}. Test digits per cell: FGSM, "
        f"PGD-{grid}x1 and {strong} on the first {budget.digits}{masked}; PGD-{restart_grid}x{restarts} "
        f"on the first {budget.restart_digits}, for {', '.join(budget.restart_arms)}."
    )
    return Outcome(header, comparisons, [], [section], {"accuracy": scores, "digits": counts})


EXPERIMENT = Experiment(
    name="madry-mnist",
    source="Madry et al. 2018 (ICLR), Table 1 (MNIST, ℓ∞ ε = 0.3)",
    claim="Against a PGD-trained model, robust accuracy flattens as PGD's steps and restarts grow; "
    "a gradient-masked model's figure collapses under a stronger attack.",
    cost="quick 60 s wall (quiet, 2 cores), 70 CPU-s on 1 thread; full (3 seeds, the cut budget of FULL) "
    "690 CPU-s on 1 thread",
    run=run,
    seeds=(1, 3),
    reads_data_dir=True,
)
