"""``advlearn reproduce``: the classic texts' results, re-run one command each, beside the published figure.

:data:`EXPERIMENTS` is the registry, one small module per experiment (in the order they are
listed and run by ``all``). Each run writes ``OUT/reproduce-NAME/`` with ``results.json``,
``report.md``, a self-contained ``report.html`` and its PNGs; its main table has the columns
*published | ours | interval over seeds | verdict* (see :mod:`._common` for how the verdict
is decided).

Example:
    >>> from advlearn.experiments.reproduce import EXPERIMENTS
    >>> list(EXPERIMENTS)[:2]
    ['holder', 'table-62.1']
"""

from __future__ import annotations

import time
from pathlib import Path

from advlearn._checks import check_positive_int
from advlearn._registry import Registry
from advlearn.experiments.reproduce import (
    claim_head,
    claim_overfitting,
    claim_smoothing,
    claim_tradeoff,
    claim_unlabeled,
    figure_7_8,
    gan_theory,
    goodfellow,
    holder,
    madry_mnist,
    table_62_1,
    tsipras,
)
from advlearn.experiments.reproduce._common import Check, Comparison, Context, Experiment, Outcome, write_run
from advlearn.experiments.reproduce._mnist import check_data_dir

EXPERIMENTS: Registry[Experiment] = Registry("reproduce experiment")
for _module in (
    holder,
    table_62_1,
    tsipras,
    gan_theory,
    figure_7_8,
    goodfellow,
    madry_mnist,
    claim_tradeoff,
    claim_unlabeled,
    claim_head,
    claim_smoothing,
    claim_overfitting,
):
    EXPERIMENTS.register(_module.EXPERIMENT.name)(_module.EXPERIMENT)


def reproduce(
    name: str,
    *,
    quick: bool = False,
    seeds: int | None = None,
    data_dir: str | Path | None = None,
    out_dir: str | Path = "runs",
    quiet: bool = True,
) -> tuple[Experiment, Outcome, Path]:
    """Run experiment ``name`` and write ``out_dir/reproduce-NAME/``.

    Args:
        name: a registered experiment (``advlearn reproduce --list``).
        quick: the smoke-sized budget (under two minutes on two cores).
        seeds: how many seeds (``0 .. seeds-1``); default the experiment's own (quick or full).
        data_dir: a folder with the full MNIST IDX files, for the experiments that read one.
        out_dir: where the run folder goes.
        quiet: no progress bars.

    Returns:
        ``(experiment, outcome, run_dir)``.

    Raises:
        ValueError: for an unknown name (the message lists the known ones), ``seeds < 1``, or a
            ``data_dir`` given to an experiment that reads none.
        FileNotFoundError: if ``data_dir`` lacks the files the experiment looks for (named),
            before anything runs.
    """
    experiment: Experiment = EXPERIMENTS.lookup(name)
    count = experiment.seeds[0 if quick else 1] if seeds is None else check_positive_int("seeds", seeds)
    if data_dir is not None and not experiment.reads_data_dir:
        readers = ", ".join(n for n, e in EXPERIMENTS.items() if e.reads_data_dir) or "none"
        raise ValueError(
            f"experiment {name!r} runs on data it makes itself; --data-dir applies only to: {readers}"
        )
    if data_dir is not None:
        check_data_dir(data_dir)
    run_dir = Path(out_dir) / f"reproduce-{name}"
    context = Context(
        quick=quick,
        seeds=tuple(range(count)),
        data_dir=None if data_dir is None else Path(data_dir),
        run_dir=run_dir,
        quiet=quiet,
    )
    started = time.perf_counter()
    outcome = experiment.run(context)
    write_run(experiment, context, outcome, time.perf_counter() - started)
    return experiment, outcome, run_dir


__all__ = [
    "EXPERIMENTS",
    "Check",
    "Comparison",
    "Context",
    "Experiment",
    "Outcome",
    "check_data_dir",
    "reproduce",
]
