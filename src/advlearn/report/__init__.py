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
table is flagged as a warning (judged by :func:`advlearn.diagnostics.check_sweep`).
The package renders only, one module per concern:

- :mod:`~advlearn.report.model`: :class:`ModelReport`, what is shown about one model;
- :mod:`~advlearn.report.text`: numbers, :func:`format_table` (the CLI prints it and
  ``report.md`` embeds it), the summary and the warnings' wording;
- :mod:`~advlearn.report.figures`: every figure, and :func:`plot_examples` /
  :func:`plot_certified_accuracy` for one figure on its own;
- :mod:`~advlearn.report.html` and :mod:`~advlearn.report.markdown`: the two pages.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from advlearn._io import atomic_write_bytes, atomic_write_text
from advlearn.evaluation import TransferMatrix
from advlearn.report.figures import _figures, _transfer_figure, plot_certified_accuracy, plot_examples
from advlearn.report.html import _html
from advlearn.report.markdown import _markdown
from advlearn.report.model import MAX_EXAMPLES, ModelReport
from advlearn.report.text import format_table


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
