"""``benchmark(model, data, threat, out_dir=...)``: the full honest report for any model, in one call.

What RobustBench's ``benchmark`` and AutoAttack's ``run_standard_evaluation`` give (robust accuracy
under the standard ensemble), and what they do not: the gradient-masking checks beside the figure,
the ε sweep with its own checks, a certified lower bound where one applies, and an example grid,
written as the same ``report.html``/``report.md`` as ``advlearn run`` and a ``results.json`` a
script can read (versions, hardware, seed, per-example flags).

Layering: this module measures (it is part of :mod:`advlearn.evaluation`) and, at the end, hands
the measurements to :func:`advlearn.report.write_report`, which renders. That single import of the
report layer from the evaluation layer is declared in ``pyproject.toml`` (``ignore_imports`` of
the layers contract) and made inside the function, so ``import advlearn.evaluation`` does not load
the report (nor matplotlib).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from advlearn._io import atomic_write_text
from advlearn._version import __version__
from advlearn.attacks import Attack, AutoAttack
from advlearn.attacks._progress import silenced
from advlearn.attacks.ensemble import AutoAttackResult, recording
from advlearn.data import Data, batches
from advlearn.diagnostics import MaskingCheck, autoattack_checks
from advlearn.evaluation._progress import summary

#: The default ε sweep, as fractions of the evaluation ε.
SWEEP_FRACTIONS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)


def _tensors(data: Data, num_examples: int, batch_size: int) -> tuple[Tensor, Tensor]:
    """All (or the first ``num_examples``) examples of ``data`` as two CPU tensors."""
    xs, ys, n = [], [], 0
    for x, y in batches(data, batch_size):
        xs.append(x.cpu())
        ys.append(y.cpu())
        n += int(y.shape[0])
        if num_examples and n >= num_examples:
            break
    if not xs:
        raise ValueError("data yielded no examples")
    x, y = torch.cat(xs), torch.cat(ys)
    return (x[:num_examples], y[:num_examples]) if num_examples else (x, y)


def environment(device: torch.device, seed: int) -> dict[str, Any]:
    """Versions, hardware and seed, for ``results.json``."""
    import numpy as np

    hardware: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        hardware["gpu"] = torch.cuda.get_device_name(device)
    return {
        "advlearn_version": __version__,
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "python_version": sys.version.split()[0],
        "hardware": hardware,
        "seed": seed,
    }


def _autoattack_checks(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: Any,
    chosen: Mapping[str, Attack],
    records: list[tuple[AutoAttack, AutoAttackResult]],
    batch_size: int,
    device: torch.device,
    quiet: bool,
) -> dict[str, tuple[MaskingCheck, ...]]:
    """AutoAttack's own checks (:func:`~advlearn.diagnostics.autoattack_checks`) on each AutoAttack's
    result over all examples, keyed by the attack's name in the table; three forward passes per example."""
    out = {}
    for name, attack in chosen.items():
        mine = [result for who, result in records if who is attack]
        if not mine:
            continue
        result = AutoAttackResult.concat(mine)
        checks = autoattack_checks(model, x.to(device), y.to(device), threat, result, batch_size=batch_size)
        out[name] = checks
        summary(f"{name}'s own checks: " + ", ".join(f"{c.name} {c.status}" for c in checks), quiet)
    return out


def benchmark(
    model: nn.Module,
    data: Data,
    threat: Any,
    *,
    out_dir: str | os.PathLike[str],
    attacks: Mapping[str, Attack] | None = None,
    eps_sweep: Iterable[float] | None = None,
    num_examples: int = 0,
    batch_size: int = 256,
    diagnose_examples: int = 500,
    examples: int = 8,
    smooth_sigma: float | None = None,
    class_names: Iterable[str] | None = None,
    label: str = "model",
    device: torch.device | str | None = None,
    seed: int = 0,
    quiet: bool = False,
) -> Path:
    """Evaluate ``model`` as honestly as advlearn can and write the report into ``out_dir``.

    In order, each with its progress bar and summary line:

    1. robust accuracy under ``attacks`` (default: AutoAttack ``"standard"``, the strongest
       registered ensemble: APGD-CE, APGD-T, FAB-T, Square, each on what the previous left
       standing), with the per-example worst case;
    2. the certified lower bounds that apply (IBP when every layer has a bound rule: about two
       forward passes; randomized smoothing at ``smooth_sigma`` for an ℓ2 threat, ``n = 1000``);
    3. the ε sweep (default ε × ``SWEEP_FRACTIONS``) with APGD-CE + APGD-T at every nonzero
       radius (about 1,000 forward-backward passes per example and radius before early exit);
    4. the gradient-masking checks (:func:`~advlearn.evaluation.diagnose_masking`) on at most
       ``diagnose_examples`` examples (seconds to minutes), and each AutoAttack's own checks
       (:func:`~advlearn.diagnostics.autoattack_checks`: randomized outputs, probabilities for
       logits, Square beating the gradient members, ε/bounds) on its result, shown beside its
       figure (three forward passes per example);
    5. an example grid of ``examples`` inputs under the strongest attack.

    A transfer matrix needs two models or more, so a single-model benchmark has none.

    Files: ``results.json`` (the table, certified bounds, sweep, masking verdicts, per-example
    flags, versions, hardware and seed), ``report.html``, ``report.md`` and their PNGs.

    Cost of the defaults: dominated by AutoAttack (up to about 5,000 queries per example still
    standing after its gradient members) and the sweep; on a CPU, minutes for a small CNN on
    1,000 MNIST digits. Use ``num_examples`` for a first look.

    Args:
        model: the classifier (put in eval mode here; its parameters are left unchanged).
        data: a DataLoader (tuples, lists or dicts with ``"image"``/``"label"``), an ``(x, y)``
            pair or a :class:`~advlearn.data.Dataset`; read once into memory.
        threat: the :class:`~advlearn.threat.ThreatModel` (ε a float).
        out_dir: the report's folder (created).
        attacks, eps_sweep: replace the defaults above.
        num_examples: use the first this many examples (0: all).
        batch_size: examples per pass.
        diagnose_examples, examples, smooth_sigma: as above.
        class_names: names of the classes, for the example grid.
        label: the model's name in the table.
        device: where to run (default: the model's device).
        seed: seeds every attack's random draws.
        quiet: no progress bars or summary lines.

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: for data without examples, a per-example ε, or what the steps raise.

    Example:
        >>> import tempfile
        >>> from advlearn.threat import ThreatModel
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> x, y = torch.rand(16, 1, 2, 2), torch.randint(0, 3, (16,))
        >>> from advlearn.attacks import PGD
        >>> threat = ThreatModel("linf", 0.1)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     out = benchmark(net, (x, y), threat, out_dir=d, attacks={"PGD": PGD(threat, steps=5)},
        ...                     eps_sweep=[0.0, 0.1], diagnose_examples=16, quiet=True)
        ...     sorted(p.name for p in out.iterdir() if p.suffix in (".html", ".json"))
        ['report.html', 'results.json']
    """
    from advlearn.certify import certified_accuracies
    from advlearn.evaluation import (
        accuracy_vs_eps,
        adversarial_examples,
        diagnose_masking,
        evaluate,
    )
    from advlearn.report import ModelReport, write_report  # the one declared report import

    if isinstance(threat.eps, Tensor):
        raise ValueError("benchmark needs a float eps (one radius for every example), not a tensor")
    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = (
        torch.device(device)
        if device is not None
        else next((p.device for p in model.parameters()), torch.device("cpu"))
    )
    model.eval()
    x, y = _tensors(data, num_examples, batch_size)
    chosen: dict[str, Attack] = (
        dict(attacks) if attacks is not None else {"AutoAttack": AutoAttack(threat, version="standard")}
    )
    with recording() as records:
        evaluation = evaluate(
            model, (x, y), threat, chosen, batch_size=batch_size, device=target, seed=seed, quiet=quiet
        )
    aa_checks = _autoattack_checks(model, x, y, threat, chosen, records, batch_size, target, quiet)
    certified = certified_accuracies(
        model,
        (x.to(target), y.to(target)),
        threat,
        sigma=smooth_sigma,
        batch_size=batch_size,
        seed=seed,
        quiet=quiet,
    )
    import dataclasses

    evaluation = dataclasses.replace(evaluation, certified=certified)
    radii = list(eps_sweep) if eps_sweep is not None else [threat.eps * f for f in SWEEP_FRACTIONS]
    sweep = accuracy_vs_eps(model, (x, y), threat, radii, batch_size=batch_size, seed=seed, quiet=quiet)
    n_diag = min(len(y), diagnose_examples)
    diagnosis = diagnose_masking(model, (x, y), threat, num_examples=n_diag, batch_size=batch_size, seed=seed)
    summary(
        f"masking checks on {n_diag} examples: "
        + ", ".join(f"{c.name} {c.status}" for c in diagnosis.checks),
        quiet,
    )
    strongest_name, strongest = list(chosen.items())[-1]
    grid = None
    if examples:
        k = min(examples, len(y))
        with silenced(quiet):  # a grid of a few examples: no bars inside its attack when quiet
            grid = adversarial_examples(model, x[:k], y[:k], strongest, name=strongest_name, seed=seed)
    seconds = time.perf_counter() - started
    results = {
        **environment(target, seed),
        "label": label,
        "threat": {"norm": threat.norm.name, "eps": float(threat.eps), "bounds": list(threat.box)},
        "num_examples": evaluation.num_examples,
        "seconds": seconds,
        "table": evaluation.table(),
        "certified": evaluation.certified,
        "eps_sweep": sweep.to_dict(),
        "masking_diagnostics": diagnosis.table(),
        "autoattack_checks": {name: [dataclasses.asdict(c) for c in cs] for name, cs in aa_checks.items()},
        "per_example": {name: flags.tolist() for name, flags in evaluation.correct.items()},
    }
    atomic_write_text(out / "results.json", json.dumps(results, indent=2, allow_nan=True) + "\n")
    write_report(
        out,
        title=f"advlearn benchmark: {label}",
        models=[
            ModelReport(
                label,
                evaluation,
                sweep=sweep,
                examples=grid,
                diagnosis=diagnosis,
                autoattack_checks=aa_checks,
            )
        ],
        notes=[
            f"{evaluation.num_examples} examples, {threat}, seed {seed}; wall time {seconds:.0f} s on "
            f"{target} with torch {torch.__version__}. Per-example flags are in results.json."
        ],
        class_names=list(class_names) if class_names is not None else None,
    )
    summary(f"benchmark: wrote {out}/report.html and results.json ({seconds:.0f} s)", quiet)
    return out


__all__ = ["SWEEP_FRACTIONS", "benchmark", "environment"]
