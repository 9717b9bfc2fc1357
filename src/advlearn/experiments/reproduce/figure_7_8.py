"""``figure-7.8``: the panda figure's shape on a digit (Goodfellow et al. 2015, Fig. 1).

The published figure: a panda classified "panda" with 57.7% confidence, plus 0.007 times the
sign of the loss gradient, is classified "gibbon" with 99.3% confidence. Here the same three
panels for an MNIST digit at Goodfellow et al.'s MNIST radius ε = 0.25, for a standard and an
FGSM-adversarially-trained maxout network (α = 0.5), both trained with the library's Trainer.
The digit shown is the first test digit the standard model gets right and FGSM fools (no search
over seeds); the table averages over every such digit and over training seeds.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from advlearn.attacks import FGSM
from advlearn.evaluation import adversarial_examples
from advlearn.experiments.reproduce import _mnist
from advlearn.experiments.reproduce._common import Comparison, Context, Experiment, Outcome
from advlearn.models import maxout
from advlearn.report.page import Section, figure, png
from advlearn.threat import ThreatModel
from advlearn.training import FGSMBlend, Standard

EPS = 0.25
PUBLISHED = {"clean confidence": 0.577, "adversarial confidence": 0.993}


def _model() -> nn.Module:
    return maxout((1, 28, 28), 10, hidden=(240, 240), pieces=5)


def _panel_row(fig_axes: np.ndarray, model: nn.Module, x: torch.Tensor, y: torch.Tensor, label: str) -> None:
    threat = ThreatModel("linf", EPS, (0.0, 1.0))
    ex = adversarial_examples(model, x, y, FGSM(threat), name="FGSM")
    delta = (ex.x_adv - ex.x)[0, 0].numpy()
    left, middle, right = fig_axes
    left.imshow(ex.x[0, 0].numpy(), cmap="gray", vmin=0, vmax=1)
    left.set_title(f"{label}: “{int(ex.pred_clean[0])}”, {float(ex.conf_clean[0]):.1%}", fontsize=9)
    middle.imshow(delta, cmap="gray", vmin=-EPS, vmax=EPS)
    middle.set_title(f"+ {EPS:g} × sign(∇ₓJ)", fontsize=9)
    right.imshow(ex.x_adv[0, 0].numpy(), cmap="gray", vmin=0, vmax=1)
    right.set_title(f"= “{int(ex.pred_adv[0])}”, {float(ex.conf_adv[0]):.1%}", fontsize=9)
    for ax in fig_axes:
        ax.set_axis_off()


def run(context: Context) -> Outcome:
    split, described = _mnist.load(context)
    train, test = split.train, split.test
    epochs = 2 if context.quick else 10
    n_test = 500 if context.quick else len(test)
    x, y = test.x[:n_test], test.y[:n_test]
    threat = ThreatModel("linf", EPS, (0.0, 1.0))
    fgsm = FGSM(threat)
    stats: dict[str, list[float]] = {k: [] for k in ("clean", "adv", "err", "at_adv", "at_err", "at_clean")}
    shown: tuple[nn.Module, nn.Module, int] | None = None
    for seed in context.seeds:
        standard = _mnist.fit(_model, Standard(), train, epochs=epochs, seed=seed, quiet=context.quiet)
        robust = _mnist.fit(
            _model, FGSMBlend(threat, alpha=0.5), train, epochs=epochs, seed=seed, quiet=context.quiet
        )
        ex = adversarial_examples(standard, x, y, fgsm)
        fooled = (ex.pred_clean == y) & (ex.pred_adv != y)
        stats["clean"].append(float(ex.conf_clean[fooled].mean()))
        stats["adv"].append(float(ex.conf_adv[fooled].mean()))
        stats["err"].append(float((ex.pred_adv != y).float().mean()))
        at = adversarial_examples(robust, x, y, fgsm)
        at_wrong = at.pred_adv != y
        stats["at_adv"].append(float(at.conf_adv[at_wrong].mean()) if bool(at_wrong.any()) else 0.0)
        stats["at_err"].append(float(at_wrong.float().mean()))
        stats["at_clean"].append(float((at.pred_clean != y).float().mean()))
        if shown is None:
            shown = (standard, robust, int(torch.nonzero(fooled)[0]))
    assert shown is not None
    standard, robust, index = shown
    fig = figure(7.5, 5.2)
    axes = fig.subplots(2, 3)
    xi, yi = x[index : index + 1], y[index : index + 1]
    _panel_row(axes[0], standard, xi, yi, "standard")
    _panel_row(axes[1], robust, xi, yi, "adv. trained")
    t = tuple
    comparisons = [
        Comparison(
            "standard model: confidence of the clean prediction, on digits FGSM fools",
            PUBLISHED["clean confidence"],
            t(stats["clean"]),
            holds=True,
            why="each digit is classified right before the attack, as the panda was, but a digit "
            "classifier is far surer of a clean digit than GoogLeNet was of the panda.",
            percent=True,
        ),
        Comparison(
            "standard model: confidence of the wrong label after FGSM",
            PUBLISHED["adversarial confidence"],
            t(stats["adv"]),
            holds=min(stats["adv"]) > 0.8,
            why=(
                "the wrong answer comes with high confidence, the figure's point"
                if min(stats["adv"]) > 0.8
                else f"after {epochs} epochs the model is less sure of its mistakes than GoogLeNet was"
            )
            + "; ours averages every fooled digit, the panda is one image.",
            percent=True,
        ),
        Comparison(
            f"standard model: error on FGSM examples at ε = {EPS:g}",
            None,
            t(stats["err"]),
            holds=True,
            why="how many digits the figure's attack turns.",
            percent=True,
            count=n_test,
        ),
        Comparison(
            f"adversarially trained: error on FGSM examples at ε = {EPS:g}",
            None,
            t(stats["at_err"]),
            holds=True,
            why="FGSM-blend training (α = 0.5) resists the same attack far better.",
            percent=True,
            count=n_test,
        ),
        Comparison(
            "adversarially trained: confidence of the wrong label after FGSM",
            None,
            t(stats["at_adv"]),
            holds=True,
            why="on the digits it still gets wrong.",
            percent=True,
        ),
        Comparison(
            "adversarially trained: clean error",
            None,
            t(stats["at_clean"]),
            holds=True,
            why="the clean cost of the defense.",
            percent=True,
            count=n_test,
        ),
    ]
    section = Section(
        "The panda figure on a digit",
        [
            f"Test digit {index} (the first the standard model gets right and FGSM fools), the FGSM "
            f"perturbation ε·sign(∇ₓJ) at ε = {EPS:g}, and the result, for the standard (top) and the "
            f"adversarially trained model (bottom), seed {context.seeds[0]}."
        ],
        figures=[("figure-7.8.png", "clean digit + ε·sign(gradient) = adversarial digit", png(fig))],
    )
    header = (
        f"{described}; maxout 240-240 (5 pieces), Adam 1e-3, {epochs} epochs, standard and FGSM-blend "
        f"(α = 0.5, ε = {EPS:g}); measured on {n_test} test digits. The published figure is GoogLeNet "
        "on one ImageNet photo at ε = 0.007."
    )
    return Outcome(header, comparisons, [], [section], {"digit": index})


EXPERIMENT = Experiment(
    name="figure-7.8",
    source="Goodfellow, Shlens & Szegedy 2015, Figure 1 (the panda)",
    claim="A sign-gradient perturbation turns a correctly classified input into a confident "
    "mistake; adversarial training blunts it.",
    cost="quick 9 s wall (quiet, 2 cores); full (3 seeds) 86 CPU-s on 1 thread",
    run=run,
    seeds=(1, 3),
    reads_data_dir=True,
)
