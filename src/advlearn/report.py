"""What a person looks at: one HTML page and one Markdown file per run, with their figures.

:func:`write_report` turns the measurements of :mod:`advlearn.evaluation` (and
the per-epoch records of :class:`~advlearn.training.trainer.History`) into

- ``report.html``: self-contained — the figures are embedded as base64 PNGs,
  the CSS is inline, there is no script and no external resource, so the file
  can be mailed or archived on its own;
- ``report.md``: the same content for a repository or a terminal, linking the
  PNG files written beside it;
- ``accuracy_vs_eps.png``, ``training_curves.png`` and ``examples_<label>.png``.

Every number in the text is generated from the measurements and carries the
count it was measured on; an ε sweep that contradicts itself or the results
table is flagged as a warning. :func:`format_table` is the one table
formatter: the CLI prints it and ``report.md`` embeds it. :func:`plot_examples`
draws one example grid on its own (the ``attack`` command uses it).

Figures are drawn on :class:`matplotlib.figure.Figure` objects directly, never
through ``pyplot``, so no global figure state is touched, nothing needs a display
and nothing is left open after saving.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from advlearn._io import atomic_write_bytes, atomic_write_text
from advlearn.evaluation import EpsSweep, Evaluation, Examples, MaskingDiagnosis, TransferMatrix
from advlearn.threat import Linf, Norm, ThreatModel

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_EXAMPLES = 8
_DPI = 100
_WRONG = "#c62828"


@dataclass(frozen=True)
class ModelReport:
    """Everything the report shows about one model.

    Attributes:
        label: the model's name in tables, legends and file names, e.g. ``"standard"`` or ``"pgd-at"``.
        evaluation: its clean and robust accuracy (:func:`advlearn.evaluation.evaluate`).
        history: per-epoch records (``History.records``: ``epoch``, ``train_loss``,
            ``val_clean_acc``, optionally ``val_robust_acc``); empty for a model that was loaded, not trained.
        sweep: accuracy against ε (:func:`advlearn.evaluation.accuracy_vs_eps`), if measured.
        examples: clean and adversarial inputs with predictions
            (:func:`advlearn.evaluation.adversarial_examples`), if recorded.
        diagnosis: the gradient-masking checks (:func:`advlearn.evaluation.diagnose_masking`), if run.
    """

    label: str
    evaluation: Evaluation
    history: Sequence[Mapping[str, float]] = ()
    sweep: EpsSweep | None = None
    examples: Examples | None = None
    diagnosis: MaskingDiagnosis | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.label, str) or not self.label.strip():
            raise ValueError(f"label must be a non-empty string, got {self.label!r}")


# ----------------------------------------------------------------------------- formatting


def _pct(value: float) -> str:
    """``0.851`` → ``"85.1%"``; NaN (nothing to average) → ``"—"``."""
    return "—" if math.isnan(value) else f"{100.0 * value:.1f}%"


def _format_eps(eps: float | Tensor) -> str:
    """``0.3`` → ``"0.3"``; ``8/255`` → ``"0.03137 (8/255)"``; a per-example tensor → its range.

    The ``k/255`` form is added only when the short decimal does not already say it exactly.
    """
    if isinstance(eps, Tensor):
        if eps.numel() == 0:
            return "per example"
        lo, hi = float(eps.min()), float(eps.max())
        return _format_eps(lo) if lo == hi else f"per example, {_format_eps(lo)} to {_format_eps(hi)}"
    short = f"{eps:.4g}"
    k = round(eps * 255)
    if float(short) != eps and k % 255 != 0 and math.isclose(eps * 255, k, rel_tol=0.0, abs_tol=1e-6):
        return f"{short} ({k}/255)"
    return short


def _format_threat(threat: ThreatModel) -> str:
    """``"ℓ∞, ε = 0.3"``."""
    return f"{threat.norm.symbol}, ε = {_format_eps(threat.eps)}"


def _threat_key(threat: ThreatModel) -> tuple[Norm, str, tuple[float, float]]:
    """What makes two threat models the same for the text (tensor radii compare by their description)."""
    return (threat.norm, _format_eps(threat.eps), threat.box)


def _join(items: Sequence[str]) -> str:
    """``["a", "b", "c"]`` → ``"a, b and c"``."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


_MD_CELL_SPECIAL = re.compile(r"([\\|<>])")


def _md_cell(text: str) -> str:
    """Keep a table cell on one line, out of the column separators, and free of raw HTML."""
    return _MD_CELL_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>#|])")


def _md_text(text: str) -> str:
    """Backslash-escape Markdown's active characters (and ``<``, so no raw HTML gets through)."""
    return _MD_SPECIAL.sub(r"\\\1", str(text))


def _rows(evaluations: Mapping[str, Evaluation]) -> list[list[str]]:
    """model | attack | accuracy | error | conf. on errors | n, one row per (model, attack)."""
    return [
        [
            label,
            str(row["attack"]),
            _pct(row["accuracy"]),
            _pct(row["error"]),
            _pct(row["confidence_on_errors"]),
            str(ev.num_examples),
        ]
        for label, ev in evaluations.items()
        for row in ev.table()
    ]


def format_table(evaluations: Mapping[str, Evaluation]) -> str:
    """A Markdown table of every model's accuracy, one row per (model, attack), padded to read in a terminal.

    Columns: model, attack, accuracy, error, mean confidence on errors (``—``
    where there were no errors) and the number of examples. Rows come from
    :meth:`Evaluation.table`: clean, each attack, and the worst case when there
    is more than one attack.

    Args:
        evaluations: evaluations by model label, in the order to print them.

    Returns:
        The table, lines joined by ``"\\n"``, without a trailing newline.

    Example:
        >>> ev = Evaluation(
        ...     threat=ThreatModel("linf", 0.3), num_examples=4, clean_accuracy=1.0,
        ...     robust_accuracy={"PGD": 0.25}, worst_case_accuracy=0.25,
        ...     confidence_on_errors={"clean": float("nan"), "PGD": 0.9}, correct={},
        ... )
        >>> print(format_table({"standard": ev}))
        | model    | attack | accuracy | error | conf. on errors | n |
        |----------|--------|---------:|------:|----------------:|--:|
        | standard | clean  |   100.0% |  0.0% |               — | 4 |
        | standard | PGD    |    25.0% | 75.0% |           90.0% | 4 |
    """
    header = ["model", "attack", "accuracy", "error", "conf. on errors", "n"]
    right = [False, False, True, True, True, True]
    body = [[_md_cell(cell) for cell in row] for row in _rows(evaluations)]
    widths = [max(len(c) for c in column) for column in zip(header, *body, strict=True)]

    def line(cells: Sequence[str]) -> str:
        padded = [c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)]
        return "| " + " | ".join(padded) + " |"

    # Right-aligned columns end their rule in ":" (Markdown's alignment marker).
    rules = ["-" * (w + 1) + ":" if r else "-" * (w + 2) for w, r in zip(widths, right, strict=True)]
    return "\n".join([line(header), "|" + "|".join(rules) + "|", *(line(row) for row in body)])


# ----------------------------------------------------------------------------- the text


Escape = Callable[[str], str]


def _headline(ev: Evaluation, esc: Escape) -> tuple[float, str]:
    """The accuracy the summary leads with and what it was measured against."""
    attacks = [esc(name) for name in ev.robust_accuracy]
    if not attacks:
        return ev.clean_accuracy, ""
    if len(attacks) == 1:
        return ev.worst_case_accuracy, f"under {attacks[0]}"
    return ev.worst_case_accuracy, f"in the worst case over {_join(attacks)}"


def _gap_sentences(models: Sequence[ModelReport], esc: Escape) -> list[str]:
    """Per model with a certificate: the interval [certified, empirical] that holds its true robust accuracy.

    An attack that fails proves nothing, so the attacks' accuracy is an upper bound; a
    certificate (IBP) is a lower bound; the gap between them is what is not known.
    """
    out = []
    for m in models:
        ev = m.evaluation
        certified = getattr(ev, "certified", None)
        if not certified or not ev.robust_accuracy:
            continue
        best = max(certified, key=certified.__getitem__)
        note = ""
        if best.startswith("smoothing"):
            note = " (smoothing certifies the smoothed classifier, not the model attacked)"
        elif certified[best] == 0.0:
            note = " (nothing is certified: the model was not trained to be verifiable)"
        out.append(
            f"The {esc(m.label)} model's true robust accuracy lies between {_pct(certified[best])} "
            f"certified by {esc(best)}, a lower bound, and {_pct(ev.worst_case_accuracy)} under the "
            f"attacks, an upper bound: a gap of {100.0 * ev.gap:.1f} points{note}."
        )
    return out


def _summary(models: Sequence[ModelReport], esc: Escape) -> str:
    """One paragraph, generated from the numbers: the headline accuracy of every model, most robust first.

    ``esc`` escapes the user's strings (labels, attack names) for the output format.
    """
    ranked = sorted(models, key=lambda m: -_headline(m.evaluation, esc)[0])
    threats = {_threat_key(m.evaluation.threat) for m in models}
    counts = {m.evaluation.num_examples for m in models}
    attack_sets = {tuple(m.evaluation.robust_accuracy) for m in models}
    shared = len(threats) == 1 and len(attack_sets) == 1

    clauses = []
    for i, m in enumerate(ranked):
        ev, label = m.evaluation, esc(m.label)
        accuracy, against = _headline(ev, esc)
        count = "" if len(counts) == 1 else f", n = {ev.num_examples:,}"
        if not ev.robust_accuracy:
            clauses.append(f"the {label} model classifies {_pct(accuracy)} of its inputs correctly{count}")
            continue
        threat = ev.threat
        where = "" if shared else f" at ε = {_format_eps(threat.eps)} ({threat.norm.symbol})"
        clean = f" (clean {_pct(ev.clean_accuracy)}{count})"
        if i == 0 or not shared:
            clauses.append(f"the {label} model keeps {_pct(accuracy)} accuracy {against}{where}{clean}")
        else:
            clauses.append(f"the {label} model keeps {_pct(accuracy)}{clean}")
    sentence = "; ".join(clauses) + "."
    first = ranked[0].evaluation
    if shared and first.robust_accuracy:
        norm, eps = first.threat.norm.symbol, _format_eps(first.threat.eps)
        sentence = f"Under {norm} attacks of radius ε = {eps}, {sentence}"
    else:
        sentence = sentence[0].upper() + sentence[1:]
    parts = [sentence]
    if len(counts) == 1:
        parts.append(f"Every accuracy is measured on {counts.pop():,} examples.")
    parts += _gap_sentences(ranked, esc)

    sweeps = [(esc(m.label), m.sweep) for m in ranked if m.sweep is not None and len(m.sweep.eps) > 0]
    if sweeps:
        last = [(label, max(s.eps), s.accuracy[int(np.argmax(s.eps))]) for label, s in sweeps]
        if len({eps for _, eps, _ in last}) == 1:
            ends = [f"{_pct(acc)} ({label})" for label, _, acc in last]
            parts.append(
                f"At the largest radius swept, ε = {_format_eps(last[0][1])}, worst-case accuracy falls to "
                f"{_join(ends)}."
            )
        else:
            ends = [f"{_pct(acc)} for {label} at ε = {_format_eps(eps)}" for label, eps, acc in last]
            parts.append(f"At the largest radius swept, worst-case accuracy is {_join(ends)}.")
    return " ".join(parts)


def _checks(models: Sequence[ModelReport], esc: Escape) -> list[str]:
    """Warnings a sweep can raise on its own: the signs of an attack that is not finding the worst case.

    A larger ball contains a smaller one, so worst-case accuracy cannot rise
    with ε; and an ℓ∞ ball as wide as the input box reaches every input, so
    nothing should survive it (Carlini et al. 2019, "On Evaluating Adversarial
    Robustness", §5). Either failure points at gradient masking or a weak attack.
    """
    found = []
    for m in models:
        sweep, label = m.sweep, esc(m.label)
        if sweep is None or len(sweep.eps) == 0:
            continue
        order = sorted(range(len(sweep.eps)), key=lambda i: sweep.eps[i])
        eps = [sweep.eps[i] for i in order]
        acc = [sweep.accuracy[i] for i in order]
        slack = 1.0 / max(sweep.num_examples, 1)
        for i in range(len(eps) - 1):
            if acc[i + 1] > acc[i] + slack:
                found.append(
                    f"The {label} model's worst-case accuracy rises from {_pct(acc[i])} at "
                    f"ε = {_format_eps(eps[i])} to {_pct(acc[i + 1])} at ε = {_format_eps(eps[i + 1])}, "
                    "although the larger ball holds every perturbation of the smaller one: the attack misses "
                    "adversarial examples (suspect gradient masking or too few steps)."
                )
                break
        threat = m.evaluation.threat
        if m.evaluation.robust_accuracy and not isinstance(threat.eps, Tensor) and sweep.norm == threat.norm:
            at_eval = [a for e, a in zip(eps, acc, strict=True) if math.isclose(e, threat.eps, abs_tol=1e-9)]
            if at_eval and at_eval[0] > m.evaluation.worst_case_accuracy + slack:
                found.append(
                    f"The sweep of the {label} model measures {_pct(at_eval[0])} at the evaluation radius "
                    f"ε = {_format_eps(threat.eps)}, where the results table's worst case gives "
                    f"{_pct(m.evaluation.worst_case_accuracy)}: the sweep's attacks are weaker, so its curve "
                    "is an upper bound on the accuracy."
                )
        lo, hi = sweep.threat.box
        if sweep.norm.ball_is_box and eps[-1] >= hi - lo and acc[-1] > 0.0:
            found.append(
                f"At ε = {_format_eps(eps[-1])} an ℓ∞ attacker can reach any input, yet the {label} model "
                f"keeps {_pct(acc[-1])}: unless it ignores its input, the attack is failing, not the model "
                "succeeding."
            )
    return found


# ----------------------------------------------------------------------------- figures


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


def _plot_sweeps(models: Sequence[tuple[int, ModelReport]]) -> bytes:
    """Worst-case accuracy against ε, every model on one axis, with the evaluation radius dashed."""
    from matplotlib.ticker import PercentFormatter

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
    ax.set_xlabel(f"ε ({norms.pop().symbol})" if len(norms) == 1 else "ε")
    ax.set_ylabel("worst-case accuracy")
    ax.set_ylim(0.0, 1.0)
    ax.set_xlim(left=0.0)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.grid(True, alpha=0.35)
    ax.legend(loc="best", frameon=True)
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


def _plot_certified(curves: Mapping[str, Sequence[tuple[float, float]]], xlabel: str) -> bytes:
    from matplotlib.ticker import PercentFormatter

    fig = _figure(6.4, 4.2)
    ax = fig.add_subplot()
    for index, (label, curve) in enumerate(curves.items()):
        radii = [r for r, _ in curve]
        accuracy = [a for _, a in curve]
        ax.plot(radii, accuracy, color=f"C{index}", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("certified accuracy")
    ax.set_ylim(0.0, 1.0)
    ax.set_xlim(left=0.0)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.grid(True, alpha=0.35)
    ax.legend(loc="best", frameon=True)
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


# ----------------------------------------------------------------------------- the report


# ----------------------------------------------------------------------------- masking checks and transfer

_DIAGNOSTICS_LEGEND = (
    "Symptoms of gradient masking (Athalye, Carlini & Wagner 2018, §3.1): a failed check means the "
    "attacks' robust accuracy may come from gradients that mislead them rather than from robustness; "
    "passing every check proves no robustness, it only removes the usual reasons to doubt the figure."
)


def _masking_warnings(models: Sequence[ModelReport], esc: Escape) -> list[str]:
    """One warning per model whose gradient-masking checks failed."""
    out = []
    for m in models:
        diag = m.diagnosis
        if diag is None or not diag.masked:
            continue
        titles = [c.title for c in diag.checks if c.flagged]
        out.append(
            f"The gradient-masking checks flag the {esc(m.label)} model ({_join(titles)}): its accuracy "
            "under gradient attacks may be an artefact of masked gradients; see the diagnostics."
        )
    return out


def _diagnostics_html(models: Sequence[ModelReport]) -> list[str]:
    """The diagnostics panel: per model, one row per check with its result, figure and meaning."""
    diagnosed = [m for m in models if m.diagnosis is not None]
    if not diagnosed:
        return []
    e = html.escape
    out = ["<h2>Gradient-masking diagnostics</h2>", f"<p class='legend'>{e(_DIAGNOSTICS_LEGEND)}</p>"]
    for m in diagnosed:
        diag = m.diagnosis
        assert diag is not None
        where = f"{diag.num_examples:,} examples, {_format_threat(diag.threat)}"
        out.append(f"<h3>{e(m.label)} ({e(where)})</h3>")
        out.append(
            "<table class='diagnostics'>\n<thead><tr><th>check</th><th>result</th><th>figure</th>"
            "<th>what it means</th></tr></thead>\n<tbody>"
        )
        for c in diag.checks:
            out.append(
                f"<tr><td>{e(c.title)}</td><td class='{c.status.replace(' ', '-')}'>{e(c.status)}</td>"
                f"<td>{e(c.detail)}</td><td>{e(c.meaning)}</td></tr>"
            )
        out.append("</tbody>\n</table>")
    return out


def _diagnostics_markdown(models: Sequence[ModelReport], esc: Escape) -> list[str]:
    """The diagnostics panel in Markdown: one table per model."""
    diagnosed = [m for m in models if m.diagnosis is not None]
    if not diagnosed:
        return []
    out = ["## Gradient-masking diagnostics", "", _DIAGNOSTICS_LEGEND, ""]
    for m in diagnosed:
        diag = m.diagnosis
        assert diag is not None
        out += [
            f"### {esc(m.label)} ({diag.num_examples:,} examples, {_format_threat(diag.threat)})",
            "",
            "| check | result | figure | what it means |",
            "|---|---|---|---|",
        ]
        for c in diag.checks:
            result = "**fail**" if c.flagged else c.status
            out.append(f"| {_md_cell(c.title)} | {result} | {_md_cell(c.detail)} | {_md_cell(c.meaning)} |")
        out.append("")
    return out


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


_CSS = """
body { font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: #1d1d1f; background: #fff; margin: 0; }
main { max-width: 1120px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 1.7em; margin: 0.2em 0 0.5em; }
h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
h3 { font-size: 1.05em; margin-bottom: 0.3em; }
p.summary { font-size: 1.05em; background: #f5f7fa; border-left: 4px solid #4a6fa5; padding: 10px 14px; }
ul.notes li.warning { color: #8a4b00; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; margin: 0.5em 0; }
th, td { padding: 4px 12px; border-bottom: 1px solid #e3e3e3; text-align: left; vertical-align: top; }
th { background: #f0f0f0; font-weight: 600; }
td.num, th.num { text-align: right; }
tr.first td { border-top: 2px solid #bbb; }
tr.worst td.attack, tr.worst td.acc { font-weight: 600; }
p.legend, figcaption { color: #555; font-size: 0.9em; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
pre { background: #f7f7f7; border: 1px solid #e3e3e3; padding: 10px 14px; overflow-x: auto;
      font-size: 0.85em; }
footer { margin-top: 3em; color: #888; font-size: 0.8em; }
table.diagnostics td.pass { color: #2e7d32; }
table.diagnostics td.fail { color: #c62828; font-weight: 600; }
table.diagnostics td.not-run { color: #888; }
"""

_TABLE_LEGEND = (
    "Accuracy under an attack counts an example only if the model classifies it correctly both clean and "
    "under that attack; the worst case counts it only if it survives every attack. Conf. on errors is the "
    "mean softmax probability the model gives its wrong prediction (— where it made no error). A certified "
    "row, where present, is a provable lower bound: the share of examples that no perturbation in the threat "
    "model can misclassify (interval bound propagation bounds ℓ2 and ℓ1 balls through their ℓ∞ box)."
)


def _html_table(models: Sequence[ModelReport]) -> str:
    e = html.escape
    head = (
        "<tr><th>model</th><th>attack</th><th class='num'>accuracy</th><th class='num'>error</th>"
        "<th class='num'>conf. on errors</th><th class='num'>n</th><th>threat model</th></tr>"
    )
    body = []
    for m in models:
        rows = m.evaluation.table()
        span = len(rows)
        for i, row in enumerate(rows):
            acc = float(row["accuracy"])
            bar = f"{max(0.0, min(100.0, 100.0 * acc)):.1f}"
            classes = " ".join(
                c for c, on in [("first", i == 0), ("worst", row["attack"] == "worst case")] if on
            )
            cells = []
            if i == 0:
                cells.append(f"<td rowspan='{span}'>{e(m.label)}</td>")
            cells += [
                f"<td class='attack'>{e(str(row['attack']))}</td>",
                f"<td class='num acc' style='background: linear-gradient(90deg, #d7ecd9 {bar}%, "
                f"transparent {bar}%)'>{_pct(acc)}</td>",
                f"<td class='num'>{_pct(float(row['error']))}</td>",
                f"<td class='num'>{_pct(float(row['confidence_on_errors']))}</td>",
            ]
            if i == 0:
                lo, hi = m.evaluation.threat.box
                cells.append(f"<td class='num' rowspan='{span}'>{m.evaluation.num_examples:,}</td>")
                cells.append(
                    f"<td rowspan='{span}'>{e(_format_threat(m.evaluation.threat))}, "
                    f"inputs in [{lo:g}, {hi:g}]</td>"
                )
            body.append(
                f"<tr class='{classes}'>{''.join(cells)}</tr>" if classes else f"<tr>{''.join(cells)}</tr>"
            )
    return f"<table>\n<thead>{head}</thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>"


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("advlearn")
    except Exception:  # not installed: a source checkout
        return "unknown version"


def _html(
    title: str,
    notes: Sequence[str],
    models: Sequence[ModelReport],
    figures: Sequence[_Figure],
    config_text: str | None,
) -> str:
    """The self-contained page: inline CSS, figures as data URIs, every string escaped, no script."""
    e = html.escape
    # The generated text is escaped whole: the summary and checks hold user labels.
    summary, checks = _summary(models, str), _checks(models, str) + _masking_warnings(models, str)
    out = [
        "<!DOCTYPE html>",
        "<html lang='en'>",
        "<head>",
        "<meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{e(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        "<main>",
        f"<h1>{e(title)}</h1>",
        f"<p class='summary'>{e(summary)}</p>",
    ]
    if notes or checks:
        out.append("<ul class='notes'>")
        out += [f"<li>{e(note)}</li>" for note in notes]
        out += [f"<li class='warning'>⚠ {e(check)}</li>" for check in checks]
        out.append("</ul>")
    out += ["<h2>Results</h2>", _html_table(models), f"<p class='legend'>{e(_TABLE_LEGEND)}</p>"]
    out += _diagnostics_html(models)
    in_examples = False
    for fig in figures:
        fig_title, caption = fig.text(str)
        if fig.model is None:
            out.append(f"<h2>{e(fig_title)}</h2>")
        else:
            if not in_examples:
                out.append("<h2>Adversarial examples</h2>")
                in_examples = True
            out.append(f"<h3>{e(fig_title)}</h3>")
        data = base64.b64encode(fig.png).decode("ascii")
        out += [
            "<figure>",
            f"<img src='data:image/png;base64,{data}' alt='{e(fig_title)}'>",
            f"<figcaption>{e(caption)}</figcaption>",
            "</figure>",
        ]
    if config_text is not None:
        out += ["<h2>Configuration</h2>", f"<pre>{e(config_text)}</pre>"]
    out += [f"<footer>Written by advlearn ({e(_version())}).</footer>", "</main>", "</body>", "</html>", ""]
    return "\n".join(out)


def _markdown(
    title: str,
    notes: Sequence[str],
    models: Sequence[ModelReport],
    figures: Sequence[_Figure],
    config_text: str | None,
) -> str:
    """The same report in Markdown, linking the PNG files beside it; the user's strings are escaped."""
    esc = _md_text
    out = [f"# {esc(title)}", "", _summary(models, esc), ""]
    checks = _checks(models, esc) + _masking_warnings(models, esc)
    if notes or checks:
        out += [f"- {esc(note)}" for note in notes]
        out += [f"- **Warning:** {check}" for check in checks]
        out.append("")
    out += ["## Results", "", format_table({m.label: m.evaluation for m in models}), ""]
    threats: dict[tuple[Norm, str, tuple[float, float]], list[str]] = {}
    for m in models:
        threats.setdefault(_threat_key(m.evaluation.threat), []).append(esc(m.label))
    for (norm, eps, (lo, hi)), labels in threats.items():
        who = "" if len(threats) == 1 else f" ({_join(labels)})"
        out.append(f"Threat model{who}: {norm.symbol}, ε = {eps}, inputs in [{lo:g}, {hi:g}].  ")
    out += [_TABLE_LEGEND, ""]
    out += _diagnostics_markdown(models, esc)
    in_examples = False
    for fig in figures:
        fig_title, caption = fig.text(esc)
        if fig.model is None:
            out += [f"## {fig_title}", ""]
        else:
            if not in_examples:
                out += ["## Adversarial examples", ""]
                in_examples = True
            out += [f"### {fig_title}", ""]
        out += [f"![{fig_title}]({fig.file})", "", caption, ""]
    if config_text is not None:
        # A fence longer than any run of backticks inside, so the config cannot close it.
        fence = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", config_text)), default=0))
        out += ["## Configuration", "", f"{fence}toml", config_text.rstrip("\n"), fence, ""]
    return "\n".join(out)


def write_report(
    run_dir: str | Path,
    *,
    title: str,
    models: Sequence[ModelReport],
    config_text: str | None = None,
    notes: Sequence[str] = (),
    class_names: Sequence[str] | None = None,
    transfer: TransferMatrix | None = None,
) -> tuple[Path, Path]:
    """Write ``report.html``, ``report.md`` and their PNG figures into ``run_dir``.

    The report holds, in order: the title, a summary paragraph generated from
    the numbers, the notes (and warnings raised by the ε sweeps: accuracy that
    rises with ε, or survives an ℓ∞ ball as wide as the input box), the results
    table, accuracy against ε (``accuracy_vs_eps.png``, when any model has a
    sweep), training curves (``training_curves.png``, when any model has a
    history), adversarial examples (``examples_<label>.png`` per model that has
    them, at most :data:`MAX_EXAMPLES` each) and the resolved configuration.

    ``report.html`` embeds its figures as base64 PNGs, escapes every
    user-supplied string, and loads nothing from elsewhere; ``report.md`` links
    the PNG files beside it. Every file is written atomically.

    Args:
        run_dir: the run's folder; created if missing.
        title: the report's heading.
        models: one :class:`ModelReport` per model, in the order of the table.
        config_text: the resolved configuration (TOML), shown verbatim.
        notes: sentences to show under the summary.
        class_names: names for the class indices in the example figures.
        transfer: a :func:`~advlearn.evaluation.transfer_matrix` between the models, drawn as a
            heat map (``transfer_matrix.png``) before the example figures.

    Models with a ``diagnosis`` get a gradient-masking panel after the results table
    (each check with its result, figure and meaning), and a warning under the summary
    when any check failed.

    Returns:
        ``(html_path, md_path)``.

    Raises:
        ValueError: if ``models`` is empty or two models share a label.
        ImportError: if matplotlib is not installed.
    """
    if len(models) == 0:
        raise ValueError("models must hold at least one ModelReport")
    labels = [m.label for m in models]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ValueError(f"models must have distinct labels; {duplicates[0]!r} appears more than once")

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    figures = _figures(models, class_names)
    if transfer is not None:
        figures.insert(sum(f.model is None for f in figures), _transfer_figure(transfer))
    for fig in figures:
        atomic_write_bytes(run_dir / fig.file, fig.png)
    html_path, md_path = run_dir / "report.html", run_dir / "report.md"
    atomic_write_text(html_path, _html(title, list(notes), models, figures, config_text))
    atomic_write_text(md_path, _markdown(title, list(notes), models, figures, config_text))
    return html_path, md_path


__all__ = [
    "MAX_EXAMPLES",
    "ModelReport",
    "format_table",
    "plot_certified_accuracy",
    "plot_examples",
    "write_report",
]
