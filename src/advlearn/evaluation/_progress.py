"""Progress that tells the truth: bars counted in examples (with a total, so tqdm shows an ETA),
and a one-line summary left in the log when a phase ends.

A bar disappears when its phase ends (``leave=False``); the summary line, written to stderr with
``tqdm.write`` (so it does not tear a bar still running) and logged at INFO, stays. Both are
silenced by ``quiet``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from typing import Any

from torch import Tensor
from tqdm.auto import tqdm

from advlearn.data import Data, batches

logger = logging.getLogger("advlearn.evaluation")


def count_examples(data: Data) -> int | None:
    """How many examples ``data`` holds, if that can be known without iterating it (else ``None``).

    Tensors and datasets with ``.x`` know; a DataLoader knows through ``len(loader.dataset)``
    unless its dataset is iterable-style.
    """
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], Tensor):
        return int(data[0].shape[0])
    x = getattr(data, "x", None)
    if isinstance(x, Tensor):
        return int(x.shape[0])
    dataset = getattr(data, "dataset", None)
    try:
        return len(dataset) if dataset is not None else None  # type: ignore[arg-type]
    except TypeError:
        return None


def example_bar(total: int | None, desc: str, quiet: bool) -> Any:
    """A tqdm bar counting examples (``unit="ex"``); with ``total`` it shows an ETA."""
    return tqdm(total=total, desc=desc, unit="ex", disable=quiet, leave=False, dynamic_ncols=True)


def counted(data: Data, batch_size: int, bar: Any) -> Iterator[tuple[Tensor, Tensor]]:
    """The batches of ``data``; each is counted on ``bar`` once the consumer asks for the next one
    (so the bar advances when a batch's work is done, not when it starts)."""
    for x, y in batches(data, batch_size):
        yield x, y
        bar.update(int(y.shape[0]))


def summary(line: str, quiet: bool) -> None:
    """Leave ``line`` behind when a phase ends: logged at INFO, and printed unless ``quiet``."""
    logger.info(line)
    if not quiet:
        tqdm.write(line, file=sys.stderr)  # stderr, beside the bars: stdout keeps the tables


__all__ = ["count_examples", "counted", "example_bar", "summary"]
