"""The report's figures: accuracy against ε, training curves, example grids, certified accuracy, transfer.

Figures are drawn on :class:`matplotlib.figure.Figure` objects directly, never
through ``pyplot``, so no global figure state is touched, nothing needs a display
and nothing is left open after saving. :func:`plot_examples` and
:func:`plot_certified_accuracy` write one figure on their own (the ``attack`` and
``certify`` commands use them); :func:`_figures` renders every figure of a report.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from advlearn._io import atomic_write_bytes
from advlearn.evaluation import Examples, TransferMatrix
from advlearn.report.model import MAX_EXAMPLES, ModelReport
from advlearn.report.text import Escape, _format_eps, _format_threat, _pct
from advlearn.threat import Linf, ThreatModel

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

_DPI = 100
_WRONG = "#c62828"


def _figure(width: float, height: float) -> Figure:
    try:
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "advlearn.report draws its figures with matplotlib; install it with `pip install matplotlib`"
        ) from err
    return Figure(figsize=(width, height), dpi=_DPI, layout="constrained")


def _png(fig: Figure) -> bytes:
    """Render to PNG bytes. The figure belongs to no pyplot manager, so dropping it frees it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, metadata={"Software": None})
    fig.clear()
    return buffer.getvalue()


def _accuracy_axes(ax: Axes, xlabel: str, ylabel: str) -> None:
    """Style an accuracy-against-radius plot: percent scale on [0, 1], radii from 0, grid, legend."""
    from matplotlib.ticker import PercentFormatter

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlim(left=0.0)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.grid(True, alpha=0.35)
    ax.legend(loc="best", frameon=True)


def _plot_sweeps(models: Sequence[tuple[int, ModelReport]]) -> bytes:
    """Worst-case accuracy against ε, every model on one axis, with the evaluation radius dashed."""
    fig = _figure(6.4, 4.2)
    ax = fig.add_subplot()
    norms = {m.sweep.norm for _, m in models if m.sweep is not None}
    for index, m in models:
        assert m.sweep is not None
        order = np.argsort(m.sweep.eps, kind="stable")
        eps = np.asarray(m.sweep.eps, dtype=float)[order]
        acc = np.asarray(m.sweep.accuracy, dtype=float)[order]
        label = m.label if len(norms) == 1 else f"{m.label} ({m.sweep.norm.symbol})"
        ax.plot(eps, acc, marker="o", color=f"C{index}", label=label, clip_on=False, zorder=3)
    marked, starred = set(), False
    for index, m in models:
        assert m.sweep is not None
        threat, worst = m.evaluation.threat, m.evaluation.worst_case_accuracy
        if isinstance(threat.eps, Tensor) or threat.norm != m.sweep.norm:
            continue
        if m.evaluation.robust_accuracy:
            # The results table's worst case, so a sweep run with weaker attacks shows its gap.
            ax.plot(
                [threat.eps],
                [worst],
                marker="*",
                markersize=13,
                markeredgecolor="black",
                markeredgewidth=0.5,
                linestyle="none",
                color=f"C{index}",
                label="_",
                clip_on=False,
                zorder=4,
            )
            starred = True
        if threat.eps not in marked:
            marked.add(threat.eps)
            label = f"evaluation ε = {_format_eps(threat.eps)}"
            ax.axvline(threat.eps, color="0.35", linestyle="--", linewidth=1.0, label=label)
    if starred:  # one neutral legend entry for the stars of every colour
        ax.plot(
            [],
            [],
            marker="*",
            markersize=13,
            markerfacecolor="white",
            markeredgecolor="black",
            markeredgewidth=0.5,
            linestyle="none",
            label="results table (worst case)",
        )
    _accuracy_axes(ax, f"ε ({norms.pop().symbol})" if len(norms) == 1 else "ε", "worst-case accuracy")
    return _png(fig)


def _series(records: Sequence[Mapping[str, float]], key: str) -> tuple[list[float], list[float]]:
    """Epochs and values of ``key`` over the records that hold it (epochs count from 1 if unrecorded)."""
    pairs = [(float(r.get("epoch", i + 1)), float(r[key])) for i, r in enumerate(records) if key in r]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _plot_training(models: Sequence[tuple[int, ModelReport]]) -> bytes:
    """Train loss (left) and validation clean/robust accuracy (right) against epoch, one colour per model."""
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    fig = _figure(11.0, 4.0)
    loss_ax, acc_ax = fig.subplots(1, 2)
    for index, m in models:
        color = f"C{index}"
        x, y = _series(m.history, "train_loss")
        if x:
            loss_ax.plot(x, y, marker=".", color=color, label=m.label)
        x, y = _series(m.history, "val_clean_acc")
        if x:
            acc_ax.plot(x, y, marker="o", markersize=4, color=color, label=f"{m.label}, clean")
        x, y = _series(m.history, "val_robust_acc")
        if x:
            acc_ax.plot(
                x, y, marker="^", markersize=4, linestyle="--", color=color, label=f"{m.label}, robust"
            )
    loss_ax.set_title("training loss (each model's own objective)")
    loss_ax.set_ylabel("train loss")
    acc_ax.set_title("validation accuracy")
    acc_ax.set_ylabel("accuracy")
    acc_ax.set_ylim(0.0, 1.0)
    acc_ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    epochs = [
        e
        for _, m in models
        for e in _series(m.history, "train_loss")[0] + _series(m.history, "val_clean_acc")[0]
    ]
    for ax in (loss_ax, acc_ax):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        if epochs and min(epochs) == max(epochs):  # one epoch: keep the axis on whole numbers
            ax.set_xlim(epochs[0] - 1.0, epochs[0] + 1.0)
        ax.grid(True, alpha=0.35)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize="small")
    return _png(fig)


def _as_images(x: Tensor) -> np.ndarray[Any, np.dtype[np.float32]] | None:
    """``(N, C, H, W)`` with C ∈ {1, 3} (or ``(N, H, W)``) → ``(N, H, W)`` or ``(N, H, W, 3)``; else None."""
    x = x.detach().to("cpu", torch.float32)
    if x.dim() == 3:
        x = x.unsqueeze(1)  # (N, 1, H, W)
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        return None
    images: np.ndarray[Any, np.dtype[np.float32]] = x.permute(0, 2, 3, 1).numpy()  # (N, H, W, C)
    return images[..., 0] if images.shape[-1] == 1 else images


def _plot_examples(
    ex: Examples, threat: ThreatModel, class_names: Sequence[str] | None, max_examples: int = MAX_EXAMPLES
) -> bytes | None:
    """Clean row, adversarial row, perturbation row; titles give prediction and confidence, wrong in red.

    Returns None when the inputs are not ``(N, 1 or 3, H, W)`` images.
    """
    n = min(int(ex.x.shape[0]), max_examples)
    clean, adv = _as_images(ex.x[:n]), _as_images(ex.x_adv[:n])
    if n <= 0 or clean is None or adv is None:
        return None
    lo, hi = threat.box
    clean = np.clip((clean - lo) / (hi - lo), 0.0, 1.0)
    adv = np.clip((adv - lo) / (hi - lo), 0.0, 1.0)
    delta = (ex.x_adv[:n] - ex.x[:n]).detach().to("cpu", torch.float32)  # (n, C, H, W)
    delta_norms = threat.norm(delta)  # (n,)
    # Symmetric per-image scaling keeps δ = 0 at mid-gray and the largest |δ| at black or white.
    scale = delta.reshape(n, -1).abs().amax(dim=1).clamp_min(1e-12)  # (n,)
    shown = _as_images(0.5 + delta / (2.0 * scale.reshape(-1, *([1] * (delta.dim() - 1)))))
    assert shown is not None

    def name(k: int) -> str:
        if class_names is not None and 0 <= k < len(class_names):
            return str(class_names[k])
        return str(k)

    from matplotlib.patches import Rectangle

    # One axes per row showing a strip of n images: far cheaper to lay out than 3n axes.
    height, width = clean.shape[1:3]
    gap = max(1, round(0.12 * width))
    centers = [j * (width + gap) + (width - 1) / 2 for j in range(n)]
    cell = 1.45
    fig = _figure(max(cell * n, 4.0), 3 * cell * height / (width + gap) + 1.3)
    axes = fig.subplots(3, 1)
    symbol = threat.norm.symbol
    strips = [(clean, ex.pred_clean, ex.conf_clean), (adv, ex.pred_adv, ex.conf_adv), (shown, None, None)]
    for ax, (images, pred, conf), row_label in zip(
        axes, strips, ["clean", "adversarial", "perturbation"], strict=True
    ):
        ax.imshow(_strip(images, gap), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.spines[:].set_visible(False)
        ax.set_ylabel(row_label, fontsize=10)
        for j, x in enumerate(centers):
            frame = Rectangle(
                (x - width / 2, -0.5),
                width,
                height,
                fill=False,
                linewidth=0.6,
                edgecolor="0.6",
                clip_on=False,
            )
            ax.add_patch(frame)
            truth = int(ex.y[j])
            if pred is not None and conf is not None:
                k = int(pred[j])
                ax.text(
                    x,
                    1.03,
                    f"{name(k)} ({100.0 * float(conf[j]):.1f}%)",
                    transform=ax.get_xaxis_transform(),
                    ha="center",
                    va="bottom",
                    fontsize=9,
                    color=_WRONG if k != truth else "black",
                    fontweight="bold" if k != truth else "normal",
                )
            else:
                ax.text(
                    x,
                    -0.04,
                    f"label {name(truth)}\n‖δ‖{symbol[1:]} = {float(delta_norms[j]):.3g}",
                    transform=ax.get_xaxis_transform(),
                    ha="center",
                    va="top",
                    fontsize=8,
                )
    return _png(fig)


def _strip(images: np.ndarray[Any, np.dtype[np.float32]], gap: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    """``(n, H, W[, 3])`` images side by side, ``gap`` white columns apart: ``(H, n·W + (n−1)·gap[, 3])``."""
    n, height, width = images.shape[:3]
    canvas = np.ones((height, n * width + (n - 1) * gap, *images.shape[3:]), dtype=np.float32)
    for j in range(n):
        canvas[:, j * (width + gap) : j * (width + gap) + width] = images[j]
    return canvas


def plot_examples(
    examples: Examples,
    path: str | Path,
    *,
    class_names: Sequence[str] | None = None,
    threat: ThreatModel | None = None,
    max_examples: int = MAX_EXAMPLES,
) -> Path:
    """Write the grid of clean, adversarial and perturbation images of ``examples`` to the PNG ``path``.

    Top row: clean inputs; middle row: their adversarial versions; each titled
    with the predicted class and its confidence, e.g. ``7 (99.2%)``, in red
    where the prediction is wrong. Bottom row: the perturbation ``x_adv − x``,
    rescaled per image to [0, 1] for visibility (mid-gray is 0), with the true
    label and the perturbation's norm. This is the figure :func:`write_report`
    shows for each model.

    Args:
        examples: from :func:`advlearn.evaluation.adversarial_examples`; inputs
            ``(N, 1, H, W)`` or ``(N, 3, H, W)``.
        path: the PNG to write (atomically).
        class_names: names for the class indices.
        threat: supplies the input box to display and the norm to measure the
            perturbation in; default: inputs in [0, 1], ℓ∞.
        max_examples: how many examples to draw at most.

    Returns:
        ``path``.

    Raises:
        ValueError: if the inputs are not images of 1 or 3 channels, or there are none.
    """
    png = _plot_examples(examples, threat or ThreatModel(Linf(), 0.0), class_names, max_examples)
    if png is None:
        raise ValueError(
            f"examples.x has shape {tuple(examples.x.shape)}; plot_examples draws (N, 1, H, W) or "
            "(N, 3, H, W) images with N >= 1"
        )
    path = Path(path)
    atomic_write_bytes(path, png)
    return path


def _verified_vs_eps(models: Sequence[ModelReport]) -> tuple[bytes, list[list[str]]] | None:
    """IBP-verified accuracy (solid) beside every model's empirical sweep (dashed), and its table.

    ``None`` when no model certifies anything at a radius ε > 0. The table's rows are the certified
    radii: ε, each certifying model's verified accuracy, each swept model's empirical accuracy,
    and the gap (best empirical minus best verified, in points) where both were measured.
    """
    certified = [  # at ε = 0 every correct example is "verified": only a positive radius counts
        (i, m) for i, m in enumerate(models) if any(e > 0 and a > 0 for e, a in m.certified_sweep)
    ]
    if not certified:
        return None
    swept = [(i, m) for i, m in enumerate(models) if m.sweep is not None and len(m.sweep.eps) > 0]
    fig = _figure(6.4, 4.2)
    ax = fig.add_subplot()
    for index, m in certified:
        eps, acc = zip(*sorted(m.certified_sweep), strict=True)
        ax.plot(eps, acc, marker="s", color=f"C{index}", label=f"{m.label} verified (IBP)", clip_on=False)
    for index, m in swept:
        assert m.sweep is not None
        order = np.argsort(m.sweep.eps, kind="stable")
        eps_e = np.asarray(m.sweep.eps, dtype=float)[order]
        acc_e = np.asarray(m.sweep.accuracy, dtype=float)[order]
        ax.plot(eps_e, acc_e, marker="o", linestyle="--", color=f"C{index}", label=f"{m.label} empirical")
    _accuracy_axes(ax, "ε", "accuracy")
    header = ["ε", *(f"{m.label} verified" for _, m in certified)]
    header += [f"{m.label} empirical" for _, m in swept] + ["gap (points)"]
    rows = [header]
    for radius in sorted({e for _, m in certified for e, _ in m.certified_sweep}):
        verified = [dict(m.certified_sweep).get(radius) for _, m in certified]
        empirical = [
            dict(zip(m.sweep.eps, m.sweep.accuracy, strict=True)).get(radius) if m.sweep else None
            for _, m in swept
        ]
        known_v = [v for v in verified if v is not None]
        known_e = [v for v in empirical if v is not None]
        gap = f"{100.0 * (max(known_e) - max(known_v)):.1f}" if known_e and known_v else "—"
        cells = [_format_eps(radius), *("—" if v is None else _pct(v) for v in (*verified, *empirical))]
        rows.append([*cells, gap])
    return _png(fig), rows


def _plot_certified(curves: Mapping[str, Sequence[tuple[float, float]]], xlabel: str) -> bytes:
    fig = _figure(6.4, 4.2)
    ax = fig.add_subplot()
    for index, (label, curve) in enumerate(curves.items()):
        radii = [r for r, _ in curve]
        accuracy = [a for _, a in curve]
        ax.plot(radii, accuracy, color=f"C{index}", label=label)
    _accuracy_axes(ax, xlabel, "certified accuracy")
    return _png(fig)


def plot_certified_accuracy(
    curves: Mapping[str, Sequence[tuple[float, float]]], path: str | Path, *, xlabel: str = "radius"
) -> Path:
    """Write certified accuracy against the radius (one step curve per entry) to the PNG ``path``.

    Args:
        curves: by legend label, ``(radius, certified accuracy)`` pairs in increasing radius,
            e.g. from :func:`advlearn.certify.certified_accuracy`.
        path: the PNG to write (atomically).
        xlabel: the x axis, e.g. ``"ℓ2 radius"``.

    Returns:
        ``path``.
    """
    if not curves or any(len(c) == 0 for c in curves.values()):
        raise ValueError("curves must hold at least one non-empty curve of (radius, accuracy) pairs")
    path = Path(path)
    atomic_write_bytes(path, _plot_certified(curves, xlabel))
    return path


def _plot_transfer(matrix: TransferMatrix) -> bytes:
    """A heat map of the transfer matrix: sources in rows, targets in columns, each cell annotated."""
    from matplotlib.ticker import PercentFormatter

    k = len(matrix.names)
    acc = np.asarray(matrix.accuracy, dtype=float)  # (k, k)
    fig = _figure(max(5.0, 1.3 * k + 2.8), max(3.6, 1.1 * k + 1.8))
    ax = fig.add_subplot()
    image = ax.imshow(acc, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")  # fill the layout box
    ax.set_xticks(range(k), matrix.names, rotation=30 if k > 3 else 0)
    ax.set_yticks(range(k), matrix.names)
    ax.set_xlabel("target (evaluated)")
    ax.set_ylabel("source (attacked)")
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                _pct(float(acc[i, j])),
                ha="center",
                va="center",
                color="black" if acc[i, j] > 0.6 else "white",
                fontweight="bold" if i == j else "normal",
            )
    fig.colorbar(image, ax=ax, format=PercentFormatter(1.0), label="accuracy")
    return _png(fig)


def _transfer_figure(matrix: TransferMatrix) -> _Figure:
    caption = (
        f"Accuracy of each target model (columns) on adversarial examples crafted on each source model "
        f"(rows) with {matrix.attack}, on {matrix.num_examples:,} examples. The diagonal (bold) is the "
        "white-box robust accuracy; off the diagonal, the examples transfer (Goodfellow et al. 2015, §8): "
        "a target keeps more accuracy on examples from another model than on its own, unless its "
        "gradients are masked. An entry counts an example only if the target classifies it correctly both "
        "clean and after the attack."
    )
    return _Figure("transfer_matrix.png", _plot_transfer(matrix), "Transfer between models", caption)


def _slug(label: str) -> str:
    """A file-name-safe form of a label."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-.") or "model"


@dataclass(frozen=True)
class _Figure:
    """A rendered figure; an example figure takes its title and caption from its model's (escaped) strings."""

    file: str
    png: bytes
    title: str = ""
    caption: str = ""
    model: ModelReport | None = None
    table: Sequence[Sequence[str]] = ()  # header row first; rendered (escaped) under the figure

    def text(self, esc: Escape) -> tuple[str, str]:
        """Title and caption, the user's strings in them passed through ``esc``."""
        if self.model is None:
            return self.title, self.caption
        return esc(self.model.label), _examples_caption(self.model, esc)


def _examples_caption(m: ModelReport, esc: Escape) -> str:
    ex = m.examples
    assert ex is not None
    n = min(int(ex.x.shape[0]), MAX_EXAMPLES)
    threat = m.evaluation.threat
    delta = (ex.x_adv[:n] - ex.x[:n]).detach().to("cpu", torch.float32)  # (n, C, H, W)
    largest = float(threat.norm(delta).max())
    return (
        f"{n} examples for the {esc(m.label)} model, attacked with {esc(ex.attack)}; the evaluation's "
        f"threat model is {_format_threat(threat)}, and the largest perturbation shown has "
        f"{threat.norm.symbol} norm {largest:.3g}. Top row: clean inputs; middle row: adversarial "
        "inputs; each titled with the predicted class and its softmax confidence, red where the prediction "
        "is wrong. Bottom row: the perturbation x_adv − x, rescaled per image to [0, 1] for visibility "
        "(mid-gray is 0), with the true label and the perturbation's norm."
    )


#: the radii of the smoothing table, in multiples of σ (σ·Φ⁻¹(α^(1/n)) caps what n samples can certify)
_SMOOTHING_RADII = (0.0, 0.5, 1.0, 1.5, 2.0)


def _smoothing_figure(models: Sequence[ModelReport]) -> _Figure | None:
    """Certified accuracy against the ℓ2 radius of the models with smoothing certificates, and a table."""
    smoothed = [(m.label, m.smoothing) for m in models if m.smoothing is not None]
    if not smoothed:
        return None
    top = max(float(c.radii.max()) for _, c in smoothed)
    grid = np.linspace(0.0, max(top, 1e-6) * 1.05, 200)
    curves = {
        label: list(zip(grid.tolist(), c.certified_accuracy(grid.tolist()).tolist(), strict=True))
        for label, c in smoothed
    }
    settings = sorted({(c.sigma, c.n0, c.n, c.alpha, c.num_examples) for _, c in smoothed})
    sigma = settings[0][0]
    radii = [sigma * k for k in _SMOOTHING_RADII]
    rows = [("model", *(f"r = {r:g}" for r in radii), "abstained", "examples")]
    for label, c in smoothed:
        acc = c.certified_accuracy(radii).tolist()
        abstained = float((c.predictions < 0).double().mean())
        rows.append((label, *(_pct(a) for a in acc), _pct(abstained), f"{c.num_examples:,}"))
    said = "; ".join(
        f"σ = {s:g}, n0 = {n0}, n = {n:,}, α = {a:g} on {k:,} test examples" for s, n0, n, a, k in settings
    )
    caption = (
        "Randomized smoothing (Cohen et al. 2019): the share of test examples whose smoothed classifier "
        "(the model under Gaussian noise) is certified correct within each ℓ2 radius, each certificate "
        f"holding with probability at least 1 − α ({said}). The models were not trained under noise; "
        "a model that keeps its prediction under noise certifies larger radii. With n samples no radius "
        "beyond σ·Φ⁻¹(α^(1/n)) can be certified."
    )
    return _Figure(
        "certified_l2.png",
        _plot_certified(curves, "ℓ2 radius"),
        "Certified accuracy against the ℓ2 radius (randomized smoothing)",
        caption,
        table=tuple(rows),
    )


def _figures(models: Sequence[ModelReport], class_names: Sequence[str] | None) -> list[_Figure]:
    figures = []
    swept = [(i, m) for i, m in enumerate(models) if m.sweep is not None and len(m.sweep.eps) > 0]
    if swept:
        figures.append(
            _Figure(
                "accuracy_vs_eps.png",
                _plot_sweeps(swept),
                "Accuracy against ε",
                "Worst-case accuracy over the attacks at each radius ε (an example counts only if it is "
                "classified correctly clean and under every attack); the dashed line marks the radius of "
                "the results table, and the stars its worst-case accuracy there.",
            )
        )
    verified = _verified_vs_eps(models)
    if verified is not None:
        figures.append(
            _Figure(
                "verified_vs_eps.png",
                verified[0],
                "Verified accuracy against ε",
                "Solid: the share of examples that interval bound propagation proves robust at each radius "
                "(a lower bound on the model's robust accuracy); dashed: accuracy under the sweep's attack "
                "(an upper bound). The gap column is the best empirical accuracy minus the best verified "
                "accuracy over the models at that radius: the robustness observed but not proven.",
                table=verified[1],
            )
        )
    smoothing = _smoothing_figure(models)
    if smoothing is not None:
        figures.append(smoothing)
    trained = [(i, m) for i, m in enumerate(models) if len(m.history) > 0]
    if trained:
        figures.append(
            _Figure(
                "training_curves.png",
                _plot_training(trained),
                "Training",
                "Left: the training loss per epoch; each model minimizes its own objective (adversarial "
                "training measures it on attacked inputs), so the curves are not comparable across models. "
                "Right: validation accuracy, clean (solid) and under the validation attack (dashed).",
            )
        )
    used: set[str] = set()
    for m in models:
        if m.examples is None:
            continue
        png = _plot_examples(m.examples, m.evaluation.threat, class_names)
        if png is None:
            warnings.warn(
                f"the examples of model {m.label!r} have shape {tuple(m.examples.x.shape)}; only "
                "(N, 1, H, W) and (N, 3, H, W) images can be drawn, so their figure is left out",
                stacklevel=3,
            )
            continue
        stem, k = f"examples_{_slug(m.label)}", 1
        while stem in used:
            k += 1
            stem = f"examples_{_slug(m.label)}_{k}"
        used.add(stem)
        figures.append(_Figure(f"{stem}.png", png, model=m))
    return figures


__all__ = ["plot_certified_accuracy", "plot_examples"]
