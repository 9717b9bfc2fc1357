"""Training protocols around the Trainer: pick the epoch count, refit on all data; repeat over seeds.

Goodfellow et al. (2015, §6) chose the number of epochs by early stopping on the
*adversarial* validation error, then retrained on training plus validation data
for that many epochs, and reported results over five seeds.
:func:`early_stop_then_refit` and :func:`multi_seed` are those two steps.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from advlearn._checks import check_positive_int
from advlearn.attacks import Attack
from advlearn.training.objectives import Objective
from advlearn.training.optim import Schedule
from advlearn.training.trainer import History, Trainer, seed_everything


class Labeled(Protocol):
    """Anything holding inputs ``x`` and labels ``y`` (an :class:`advlearn.data.Dataset`)."""

    @property
    def x(self) -> Tensor: ...

    @property
    def y(self) -> Tensor: ...


# training imports nothing from advlearn.data (a lower layer): a Dataset is taken by its x and y.
Data = Labeled | tuple[Tensor, Tensor]


def _tensors(data: Data, name: str) -> tuple[Tensor, Tensor]:
    if not isinstance(data, (tuple, list)) and isinstance(getattr(data, "x", None), Tensor):
        data = (data.x, data.y)
    if (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and all(isinstance(t, Tensor) for t in data)
        and data[0].dim() >= 1
        and data[1].dim() == 1
        and data[0].shape[0] == data[1].shape[0]
        and data[0].shape[0] > 0
    ):
        return data[0], data[1]
    raise ValueError(
        f"{name} must be an advlearn.data.Dataset or a pair (x, y) of tensors with the same non-zero "
        "number of examples and y of shape (N,)"
    )


def _loader(x: Tensor, y: Tensor, batch_size: int, shuffle: bool) -> DataLoader[tuple[Tensor, ...]]:
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle, num_workers=0)


@dataclass(frozen=True)
class RefitResult:
    """What :func:`early_stop_then_refit` produced.

    Attributes:
        model: the refit model, trained from scratch on train + validation for ``best_epochs``.
        best_epochs: the epoch count chosen on the adversarial validation error (1-based).
        search: the history of the early-stopping run (its validation metrics per epoch).
        refit: the history of the refit (training loss only: no validation data is left).
    """

    model: nn.Module
    best_epochs: int
    search: History
    refit: History


def early_stop_then_refit(
    make_model: Callable[[], nn.Module],
    make_optimizer: Callable[[nn.Module], torch.optim.Optimizer],
    objective: Objective,
    train_data: Data,
    val_data: Data,
    *,
    max_epochs: int,
    patience: int,
    val_attack: Attack | None,
    batch_size: int = 128,
    schedule: str | Schedule = "constant",
    device: str | torch.device = "auto",
    seed: int = 0,
    quiet: bool = True,
) -> RefitResult:
    """Choose the epoch count by early stopping on adversarial validation error, then refit on all data.

    1. Seed everything with ``seed``, build a model and train it on ``train_data`` for up to
       ``max_epochs``, validating after every epoch under ``val_attack``; stop once the robust
       validation accuracy has not improved for ``patience`` epochs. The best epoch ``E`` is the
       first one with the highest robust validation accuracy (clean accuracy if ``val_attack`` is
       ``None``).
    2. Seed again, build a fresh model with ``make_model`` and train it on ``train_data`` and
       ``val_data`` together for exactly ``E`` epochs, with the same objective, optimizer
       recipe and batch size. A progress-based ``schedule`` is laid over the ``E`` epochs.

    Args:
        make_model: builds an untrained model; called once per phase, after seeding.
        make_optimizer: builds the optimizer for a model.
        objective: what both phases minimize.
        train_data: a :class:`~advlearn.data.Dataset` or a pair ``(x, y)``.
        val_data: the validation examples, the same kind of inputs.
        max_epochs: the most epochs the search may run.
        patience: epochs without improvement before the search stops.
        val_attack: the attack of the adversarial validation error (``early_stop=True``
            makes it cheaper); ``None`` falls back to the clean validation error.
        batch_size: examples per step in both phases (the training order is shuffled).
        schedule: the learning-rate schedule of both phases.
        device: where to train.
        seed: seeds the model initializations, the shuffling and the objectives' randomness.
        quiet: no progress bars.

    Returns:
        A :class:`RefitResult` with the refit model and both histories.

    Raises:
        ValueError: for non-positive counts, data that is not a dataset or an ``(x, y)``
            pair, or training and validation inputs of different shapes.

    References:
        Goodfellow, Shlens & Szegedy. Explaining and harnessing adversarial examples.
        ICLR 2015, §6.
    """
    check_positive_int("max_epochs", max_epochs)
    check_positive_int("patience", patience)
    check_positive_int("batch_size", batch_size)
    x_train, y_train = _tensors(train_data, "train_data")
    x_val, y_val = _tensors(val_data, "val_data")
    if x_train.shape[1:] != x_val.shape[1:]:
        raise ValueError(
            f"train_data and val_data hold inputs of different shapes: {tuple(x_train.shape[1:])} "
            f"and {tuple(x_val.shape[1:])}"
        )

    def trainer(model: nn.Module, **options: object) -> Trainer:
        return Trainer(
            model, objective, make_optimizer(model), schedule=schedule, device=device, seed=seed,
            quiet=quiet, **options,  # type: ignore[arg-type]
        )  # fmt: skip

    seed_everything(seed)
    search = trainer(make_model(), val_attack=val_attack, early_stopping=patience).fit(
        _loader(x_train, y_train, batch_size, shuffle=True),
        _loader(x_val, y_val, batch_size, shuffle=False),
        epochs=max_epochs,
    )
    if search.best_epoch is None:  # a validation loader always records a metric
        raise RuntimeError("the search recorded no validation metric")

    seed_everything(seed)
    model = make_model()
    x_all = torch.cat([x_train, x_val.to(device=x_train.device, dtype=x_train.dtype)])
    y_all = torch.cat([y_train, y_val.to(y_train.device)])
    refit = trainer(model).fit(_loader(x_all, y_all, batch_size, shuffle=True), epochs=search.best_epoch)
    return RefitResult(model=model, best_epochs=search.best_epoch, search=search, refit=refit)


# ----------------------------------------------------------------------------- seeds


@dataclass(frozen=True)
class SeedSummary:
    """Metrics over several seeds: every run, and the mean and sample standard deviation per metric.

    Attributes:
        seeds: the seeds, in the order run.
        runs: the metrics each seed returned.
        mean: the mean of each metric over the seeds.
        std: the sample standard deviation (``ddof = 1``) of each metric; NaN for one seed.
    """

    seeds: tuple[int, ...]
    runs: tuple[dict[str, float], ...]
    mean: dict[str, float]
    std: dict[str, float]

    def format(self, digits: int = 4) -> str:
        """One line per metric, ``name: mean ± std (n seeds)``."""
        n = len(self.seeds)
        return "\n".join(
            f"{key}: {self.mean[key]:.{digits}f} ± {self.std[key]:.{digits}f} ({n} seeds)"
            for key in self.mean
        )

    def __str__(self) -> str:
        return self.format()


def multi_seed(
    fn: Callable[[int], Mapping[str, float]], seeds: Sequence[int] = (0, 1, 2, 3, 4)
) -> SeedSummary:
    """Run ``fn(seed)`` for each seed and summarize every metric as mean ± sample std.

    Before each call Python's, NumPy's and torch's global generators are seeded with the seed
    (:func:`~advlearn.training.seed_everything`), so an ``fn`` that builds and trains a model
    is reproducible even if it does not seed itself. Goodfellow et al. (2015) reported their
    maxout results over five seeds, the default here.

    Args:
        fn: trains and evaluates one model; returns ``{metric name: value}``, the same names
            for every seed.
        seeds: distinct integers.

    Returns:
        A :class:`SeedSummary`.

    Raises:
        ValueError: for no seeds, repeated or non-integer seeds, a result that is not a
            mapping of names to finite numbers, or metric names that differ between seeds.

    Example:
        >>> summary = multi_seed(lambda seed: {"acc": 0.9 + 0.01 * seed}, seeds=[0, 1, 2])
        >>> print(summary)
        acc: 0.9100 ± 0.0100 (3 seeds)
    """
    seeds = tuple(seeds)
    if not seeds:
        raise ValueError("seeds must hold at least one seed, e.g. seeds=range(5)")
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seeds must be integers, got {seed!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {list(seeds)}")

    runs: list[dict[str, float]] = []
    for seed in seeds:
        seed_everything(seed)
        result = fn(seed)
        if not isinstance(result, Mapping):
            raise ValueError(
                f"fn({seed}) returned {type(result).__name__}; return a dict of metric name -> number"
            )
        run: dict[str, float] = {}
        for key, value in result.items():
            if isinstance(value, Tensor) and value.numel() == 1:
                value = value.item()
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"fn({seed}) returned {key}={value!r}; metrics must be finite numbers")
            run[str(key)] = float(value)
        if runs and set(run) != set(runs[0]):
            raise ValueError(
                f"fn({seed}) returned metrics {sorted(run)} but fn({seeds[0]}) returned {sorted(runs[0])}; "
                "return the same metrics for every seed"
            )
        runs.append(run)

    keys = list(runs[0])
    mean = {k: statistics.fmean(r[k] for r in runs) for k in keys}
    std = {k: statistics.stdev([r[k] for r in runs]) if len(runs) > 1 else math.nan for k in keys}
    return SeedSummary(seeds=seeds, runs=tuple(runs), mean=mean, std=std)


__all__ = ["RefitResult", "SeedSummary", "early_stop_then_refit", "multi_seed"]
