"""``advlearn certify``: certify a saved model and write per-example results, a curve and a summary.

Two methods:

- ``smoothing``: randomized smoothing (Cohen et al. 2019) of the saved model at noise
  level σ; each example gets a label (or an abstention) and a certified ℓ2 radius
  that holds with probability ``1 − α``.
- ``ibp``: interval bound propagation (Gowal et al. 2018); each example gets the
  largest ε at which its label is verified over the ℓ∞ box (found by bisection,
  deterministic), and the verified accuracy at the requested ε is reported.

Files written into ``out``: ``certify.tsv`` (``idx, label, predict, radius, correct,
time``, one line per example, the format of Cohen et al.'s code), ``certified_accuracy.png``
(certified accuracy against the radius) and ``summary.json``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from advlearn._io import atomic_write_text
from advlearn.certify import Smooth, certify_dataset, check_ibp_supported, ibp_radius, verify
from advlearn.certify.smoothing import certified_accuracy
from advlearn.config import Named
from advlearn.evaluation import batches
from advlearn.experiments.saved_model import ModelSpec, load_model_and_data
from advlearn.models.loading import resolve_device
from advlearn.threat import L2, ThreatModel

METHODS = ("smoothing", "ibp")


@dataclass(frozen=True)
class CertifyRun:
    """What ``advlearn certify`` measured and where it wrote it.

    Attributes:
        method: ``"smoothing"`` or ``"ibp"``.
        labels, predictions, radii, seconds: per example (``predictions`` is −1 where smoothing abstained).
        curve: ``(radius, certified accuracy)`` pairs.
        summary: the settings and headline figures (also in ``summary.json``).
        out: the folder holding ``certify.tsv``, ``certified_accuracy.png`` and ``summary.json``.
    """

    method: str
    labels: torch.Tensor = field(repr=False)
    predictions: torch.Tensor = field(repr=False)
    radii: torch.Tensor = field(repr=False)
    seconds: torch.Tensor = field(repr=False)
    curve: list[tuple[float, float]]
    summary: dict[str, Any]
    out: Path

    @property
    def correct(self) -> torch.Tensor:
        return self.predictions == self.labels


def _curve_points(radii: torch.Tensor, top: float) -> list[float]:
    """A radius grid for the curve: 0 to the largest certified radius (or ``top``), 41 points."""
    largest = max(float(radii.max()) if radii.numel() else 0.0, top)
    return [largest * i / 40 for i in range(41)]


def _write_tsv(path: Path, run: CertifyRun) -> None:
    lines = ["idx\tlabel\tpredict\tradius\tcorrect\ttime"]
    for i in range(run.labels.numel()):
        lines.append(
            f"{i}\t{int(run.labels[i])}\t{int(run.predictions[i])}\t{float(run.radii[i]):.6g}\t"
            f"{int(run.correct[i])}\t{float(run.seconds[i]):.6f}"
        )
    atomic_write_text(path, "\n".join(lines) + "\n")


def certify_saved(
    model_dir: ModelSpec | str | Path,
    data: Named | None,
    *,
    split: str = "test",
    device: str | torch.device = "auto",
    method: str = "smoothing",
    sigma: float = 0.25,
    n0: int = 100,
    n: int = 10_000,
    alpha: float = 0.001,
    batch_size: int = 1000,
    threat: ThreatModel | None = None,
    num_examples: int = 100,
    seed: int = 0,
    out: str | Path | None = None,
    quiet: bool = False,
) -> CertifyRun:
    """Certify the first ``num_examples`` test examples of ``data`` with a saved model.

    Args:
        model_dir: a run folder, or any model :class:`~advlearn.experiments.saved_model.ModelSpec`
            describes (state dict + architecture, TorchScript, ``.pt2``, factory).
        data: the dataset (``None``: the one a run folder's model was trained on).
        split: ``"test"`` (default) or ``"train"``.
        device: ``"auto"`` (CUDA if present), ``"cpu"``, ``"cuda:N"`` or ``"mps"``.
        method: ``"smoothing"`` or ``"ibp"``.
        sigma, n0, n, alpha, batch_size: randomized smoothing's settings (``batch_size`` is
            also IBP's batch size).
        threat: for IBP, the ε to report verified accuracy at, the norm (ℓ2/ℓ1 use the
            enclosing ℓ∞ box) and the input bounds; for smoothing only its ε is used, to
            report the certified accuracy at that ℓ2 radius.
        num_examples: how many test examples (0: all).
        seed: seeds the smoothing noise.
        out: where to write; default ``<model_dir>/certify-<method>``.
        quiet: no progress bars.

    Raises:
        ValueError: for an unknown method, a model IBP cannot pass, or IBP without a threat model.
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not known; use one of {', '.join(map(repr, METHODS))}")
    target = resolve_device(device)
    model, record, test = load_model_and_data(
        model_dir, data, split=split, num_examples=num_examples, device=target, quiet=quiet
    )
    spec = model_dir if isinstance(model_dir, ModelSpec) else ModelSpec(path=model_dir)
    if out is not None:
        out_dir = Path(out)
    elif spec.path is not None and Path(spec.path).is_dir():
        out_dir = Path(spec.path) / f"certify-{method}"
    elif spec.path is not None:
        out_dir = Path(spec.path).with_name(f"{Path(spec.path).stem}-certify-{method}")
    else:
        out_dir = Path(f"certify-{method}")
    out_dir.mkdir(parents=True, exist_ok=True)
    device = target
    summary: dict[str, Any] = {
        "model": spec.label if spec.path is None else str(spec.path),
        "architecture": record["model"],
        "data": test.name,
        "split": split,
        "method": method,
        "num_examples": len(test),
        "device": str(device),
    }
    started = time.perf_counter()
    if method == "smoothing":
        smooth = Smooth(model, num_classes=test.num_classes, sigma=sigma)
        generator = torch.Generator(device=device).manual_seed(seed)
        result = certify_dataset(
            smooth,
            test.x,
            test.y,
            n0=n0,
            n=n,
            alpha=alpha,
            batch_size=batch_size,
            generator=generator,
            quiet=quiet,
        )
        labels, predictions, radii, seconds = result.labels, result.predictions, result.radii, result.seconds
        summary.update(sigma=sigma, n0=n0, n=n, alpha=alpha, norm=L2.name, seed=seed)
        summary["abstained"] = float((predictions == -1).double().mean())
        grid = _curve_points(radii, 4 * sigma)
    else:
        if threat is None:
            raise ValueError("IBP needs a threat model: pass --eps (and --norm, --lower, --upper)")
        check_ibp_supported(model)
        verification = verify(
            model, (test.x, test.y), threat, batch_size=batch_size, device=device, quiet=quiet
        )
        preds, rads, secs = [], [], []
        for x, y in batches((test.x, test.y), batch_size):
            x, y = x.to(device), y.to(device)
            tick = time.perf_counter()
            with torch.no_grad():
                pred = model(x).argmax(dim=1)
            rad = ibp_radius(model, x, y, threat)
            elapsed = time.perf_counter() - tick
            preds.append(pred.cpu())
            rads.append(rad.double().cpu())
            secs.append(torch.full((x.shape[0],), elapsed / x.shape[0], dtype=torch.float64))
        labels, predictions = test.y.cpu(), torch.cat(preds)
        radii = torch.where(predictions == labels, torch.cat(rads), torch.zeros(()).double())
        seconds = torch.cat(secs)
        summary.update(norm=str(threat.norm), eps=float(threat.eps), bounds=list(threat.box))
        summary["verified_accuracy"] = verification.verified_accuracy
        summary["clean_accuracy"] = verification.clean_accuracy
        grid = _curve_points(radii, float(threat.eps))
    correct = predictions == labels
    accuracy = certified_accuracy(radii, correct, grid)
    curve = [(r, float(a)) for r, a in zip(grid, accuracy, strict=True)]
    summary["seconds"] = time.perf_counter() - started
    summary["certified_accuracy_at_0"] = float(accuracy[0])
    if threat is not None and not isinstance(threat.eps, torch.Tensor):
        summary["certified_accuracy_at_eps"] = float(
            certified_accuracy(radii, correct, [float(threat.eps)])[0]
        )
    run = CertifyRun(
        method=method,
        labels=labels,
        predictions=predictions,
        radii=radii,
        seconds=seconds,
        curve=curve,
        summary=summary,
        out=out_dir,
    )
    _write_tsv(out_dir / "certify.tsv", run)
    from advlearn.report import plot_certified_accuracy

    if method == "smoothing":
        label, xlabel = f"smoothing σ = {sigma:g} (n = {n:,}, α = {alpha:g})", "ℓ2 radius"
    else:
        assert threat is not None
        symbol = threat.norm.symbol
        xlabel = f"ε ({symbol})" if threat.norm.ball_is_box else f"ε ({symbol}, bounded through the ℓ∞ box)"
        label = "IBP"
    plot_certified_accuracy({label: curve}, out_dir / "certified_accuracy.png", xlabel=xlabel)
    summary["curve"] = curve
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return run


__all__ = ["METHODS", "CertifyRun", "certify_saved"]
