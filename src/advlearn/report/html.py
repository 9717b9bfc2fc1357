"""``report.html``: one self-contained page (inline CSS, figures as data URIs, no script)."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence

from advlearn.diagnostics import MaskingCheck
from advlearn.report.figures import _Figure
from advlearn.report.model import ModelReport
from advlearn.report.text import (
    _AUTOATTACK_CHECKS_LEGEND,
    _DIAGNOSTICS_LEGEND,
    _TABLE_LEGEND,
    _format_threat,
    _masking_warnings,
    _pct,
    _summary,
    _sweep_warnings,
)

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


def _check_row(c: MaskingCheck) -> str:
    e = html.escape
    return (
        f"<tr><td>{e(c.title)}</td><td class='{c.status.replace(' ', '-')}'>{e(c.status)}</td>"
        f"<td>{e(c.detail)}</td><td>{e(c.meaning)}</td></tr>"
    )


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
        out += [_check_row(c) for c in diag.checks]
        out.append("</tbody>\n</table>")
    return out


def _autoattack_checks_html(models: Sequence[ModelReport]) -> list[str]:
    """AutoAttack's own checks, beside its figure: per model and AutoAttack row, one row per check."""
    e = html.escape
    out = []
    for m in models:
        for attack, checks in m.autoattack_checks.items():
            out.append(f"<p class='legend'>{e(m.label)}, {e(attack)}: {e(_AUTOATTACK_CHECKS_LEGEND)}</p>")
            out.append("<table class='diagnostics'>\n<tbody>")
            out += [_check_row(c) for c in checks]
            out.append("</tbody>\n</table>")
    return out


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
    summary, checks = _summary(models, str), _sweep_warnings(models, str) + _masking_warnings(models, str)
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
    out += _autoattack_checks_html(models)
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
        if fig.table:
            head, *rows = fig.table
            out.append(
                "<table><thead><tr>" + "".join(f"<th>{e(c)}</th>" for c in head) + "</tr></thead><tbody>"
            )
            out += ["<tr>" + "".join(f"<td class='num'>{e(c)}</td>" for c in row) + "</tr>" for row in rows]
            out.append("</tbody></table>")
    if config_text is not None:
        out += ["<h2>Configuration</h2>", f"<pre>{e(config_text)}</pre>"]
    out += [f"<footer>Written by advlearn ({e(_version())}).</footer>", "</main>", "</body>", "</html>", ""]
    return "\n".join(out)
