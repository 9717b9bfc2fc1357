"""A report page of sections: Markdown plus one self-contained HTML file with inline PNGs.

The games' runs (``advlearn gan``, ``advlearn dann``) describe what they measured as
:class:`Section` objects; :func:`write_page` renders them with the same figure helpers and style
sheet as the main report. Every file is written atomically.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from advlearn._io import atomic_write_bytes, atomic_write_text
from advlearn.report.figures import _figure, _png
from advlearn.report.html import _CSS

# The same figure factory and PNG renderer as the main report's.
figure = _figure
png = _png


def tile(images: Tensor, nrow: int, gap: int = 1) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Images ``(N, C, H, W)`` in ``[0, 1]`` as one ``(rows·(H+gap), nrow·(W+gap), 3)`` RGB array."""
    x = images.detach().cpu().float().clamp(0, 1).numpy()
    if x.shape[1] == 1:
        x = np.repeat(x, 3, axis=1)
    n, _, h, w = x.shape
    rows = -(-n // nrow)
    out = np.ones((rows * (h + gap) + gap, nrow * (w + gap) + gap, 3), dtype=np.float32)
    for i in range(n):
        r, c = divmod(i, nrow)
        top, left = gap + r * (h + gap), gap + c * (w + gap)
        out[top : top + h, left : left + w] = x[i].transpose(1, 2, 0)
    return out


def grid_png(images: Tensor, nrow: int, title: str | None = None, scale: float = 0.35) -> bytes:
    """A PNG of :func:`tile` (pixels drawn as blocks, no smoothing)."""
    array = tile(images, nrow)
    height, width = array.shape[:2]
    inches = scale / 10 * max(1.0, 16 / images.shape[-1])  # small images drawn larger per pixel
    fig = figure(max(2.0, width * inches), max(2.0, height * inches) + (0.3 if title else 0.0))
    ax = fig.add_subplot()
    ax.imshow(array, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=10)
    return png(fig)


@dataclass
class Section:
    """One heading with paragraphs, an optional table (first row = header) and figures."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    table: list[list[str]] | None = None
    figures: list[tuple[str, str, bytes]] = field(default_factory=list)  # (file, caption, png)


def _md_table(rows: Sequence[Sequence[str]]) -> list[str]:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return [line(rows[0]), "|" + "|".join("---" for _ in rows[0]) + "|", *(line(r) for r in rows[1:])]


def write_page(
    run_dir: Path, title: str, summary: str, sections: Sequence[Section], warnings: Sequence[str] = ()
) -> tuple[Path, Path]:
    """Write the sections' PNGs, ``report.md`` (linking them) and ``report.html`` (embedding them)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    e = html.escape
    md = [f"# {title}", "", summary, ""]
    page = [
        "<!DOCTYPE html>",
        "<html lang='en'>",
        "<head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{e(title)}</title><style>{_CSS}</style></head>",
        "<body><main>",
        f"<h1>{e(title)}</h1>",
        f"<p class='summary'>{e(summary)}</p>",
    ]
    if warnings:
        md += [f"- **Warning:** {w}" for w in warnings] + [""]
        page += ["<ul class='notes'>", *(f"<li class='warning'>⚠ {e(w)}</li>" for w in warnings), "</ul>"]
    for section in sections:
        md += [f"## {section.title}", ""]
        page.append(f"<h2>{e(section.title)}</h2>")
        for paragraph in section.paragraphs:
            md += [paragraph, ""]
            page.append(f"<p>{e(paragraph)}</p>")
        if section.table:
            md += [*_md_table(section.table), ""]
            head = "".join(f"<th>{e(c)}</th>" for c in section.table[0])
            body = "".join(
                "<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in section.table[1:]
            )
            page.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        for file, caption, data in section.figures:
            (run_dir / file).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(run_dir / file, data)
            md += [f"![{caption}]({file})", "", caption, ""]
            encoded = base64.b64encode(data).decode("ascii")
            page += [
                "<figure>",
                f"<img src='data:image/png;base64,{encoded}' alt='{e(caption)}'>",
                f"<figcaption>{e(caption)}</figcaption>",
                "</figure>",
            ]
    page += ["<footer>Written by advlearn.</footer>", "</main></body></html>", ""]
    html_path, md_path = run_dir / "report.html", run_dir / "report.md"
    atomic_write_text(md_path, "\n".join(md))
    atomic_write_text(html_path, "\n".join(page))
    return html_path, md_path
