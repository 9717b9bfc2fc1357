"""What ``advlearn evaluate`` and ``advlearn attack`` do with a saved model: load it (never
unpickling), evaluate or attack it on a dataset's test split, and write what a person reads."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np

from advlearn._io import atomic_write_bytes
from advlearn.attacks import Attack
from advlearn.checkpoint import check_input_shape, load_model
from advlearn.config import Named, with_key
from advlearn.data import DataSplit, load_dataset
from advlearn.evaluation import Evaluation, Examples, adversarial_examples, evaluate
from advlearn.report import plot_examples
from advlearn.threat import ThreatModel

__all__ = ["evaluate_saved", "write_adversarial_examples"]


def evaluate_saved(
    model_dir: str | Path,
    data: Named,
    threat: ThreatModel,
    attacks: dict[str, Attack],
    *,
    num_examples: int = 0,
    batch_size: int = 500,
    seed: int = 0,
    quiet: bool = False,
    smooth_sigma: float | None = None,
    smooth_n: int = 1000,
) -> Evaluation:
    """Load a saved model (never unpickling) and evaluate it on the test split of ``data``.

    Beside the attacks' (upper-bound) robust accuracy, the evaluation's ``certified`` holds the
    lower bounds that apply: IBP's verified accuracy when the model's layers allow it, and with
    ``smooth_sigma`` for an ℓ2 threat model, randomized smoothing's certified accuracy at radius ε
    (``smooth_n`` noise samples per example).
    """
    from advlearn.certify import certified_accuracies

    model, record = load_model(model_dir)
    split: DataSplit = with_key("--data", load_dataset, data.name, **data.options)
    check_input_shape(record, tuple(split.test.x.shape[1:]), "--data")  # H15a: one line, not a torch error
    test = split.test.subset(min(num_examples, len(split.test))) if num_examples else split.test
    evaluation = evaluate(
        model.eval(), (test.x, test.y), threat, attacks, batch_size=batch_size, seed=seed, quiet=quiet
    )
    certified = certified_accuracies(
        model, (test.x, test.y), threat, sigma=smooth_sigma, n=smooth_n, seed=seed, quiet=quiet
    )
    return dataclasses.replace(evaluation, certified=certified)


def write_adversarial_examples(
    model_dir: str | Path,
    data: Named,
    attack: Attack,
    out: str | Path,
    *,
    num_examples: int = 16,
    name: str = "",
    seed: int = 0,
) -> tuple[Examples, Path]:
    """Attack the first ``num_examples`` test inputs of ``data`` with a saved model.

    Writes ``out`` (a ``.npz`` with ``x``, ``x_adv``, ``y``, ``pred_clean``,
    ``pred_adv``, ``conf_adv``) and a PNG grid beside it; returns the examples and the PNG's path.
    """
    model, record = load_model(model_dir)
    split: DataSplit = with_key("--data", load_dataset, data.name, **data.options)
    check_input_shape(record, tuple(split.test.x.shape[1:]), "--data")  # H15a: one line, not a torch error
    n = min(num_examples, len(split.test))
    examples = adversarial_examples(model, split.test.x[:n], split.test.y[:n], attack, name=name, seed=seed)
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        x=examples.x.numpy(),
        x_adv=examples.x_adv.numpy(),
        y=examples.y.numpy(),
        pred_clean=examples.pred_clean.numpy(),
        pred_adv=examples.pred_adv.numpy(),
        conf_adv=examples.conf_adv.numpy(),
    )
    out = Path(out)
    atomic_write_bytes(out, buffer.getvalue())
    png = out.with_suffix(".png")
    plot_examples(examples, png, class_names=split.test.class_names)
    return examples, png
