"""A self-contained HTML report: one file, works offline, no external resources.

PNG images are embedded as base64 ``data:`` URIs, the style sheet is inline, and every
piece of user text (title, headings, paragraphs, captions, table cells) is HTML-escaped.
Nothing in the output points to ``http://`` or ``https://``. Tables can be sorted by
clicking a column header (a few lines of inline script; the report reads fine without).
"""

from __future__ import annotations

import base64
import datetime as _dt
import os
from html import escape
from pathlib import Path
from typing import Sequence

from attributor._io import atomic_write_text
from attributor.reports.document import Section, Table, check_images, format_cell, is_number, paragraphs

__all__ = ["Section", "Table", "write_html_report"]

_CSS = """
:root { --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --bg: #ffffff; --alt: #f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg);
  font: 16px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 2rem 1.25rem 4rem; }
h1 { font-size: 1.9rem; margin: 0 0 .25rem; }
h2 { font-size: 1.35rem; margin: 2.5rem 0 .75rem; padding-bottom: .3rem; border-bottom: 1px solid var(--line); }
p { margin: .6rem 0; }
.meta { color: var(--muted); font-size: .9rem; }
nav ol { padding-left: 1.3rem; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--muted); font-size: .85rem; }
.table-wrap { overflow-x: auto; margin: 1rem 0; }
table { border-collapse: collapse; font-size: .9rem; min-width: 40%; }
caption { text-align: left; font-weight: 600; padding: .3rem 0; }
th, td { border: 1px solid var(--line); padding: .3rem .6rem; }
th { background: var(--alt); cursor: pointer; user-select: none; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:nth-child(even) { background: var(--alt); }
@media (max-width: 600px) { body { font-size: 15px; } main { padding: 1rem .75rem; } }
"""

#: Click-to-sort for every ``table.sortable`` (numbers numerically, text after numbers).
SORT_SCRIPT = """
document.querySelectorAll("table.sortable th").forEach(function (th) {
  th.addEventListener("click", function () {
    var table = th.closest("table"), body = table.tBodies[0];
    var col = Array.prototype.indexOf.call(th.parentNode.children, th);
    var asc = th.getAttribute("data-dir") !== "asc";
    th.parentNode.querySelectorAll("th").forEach(function (h) { h.removeAttribute("data-dir"); });
    th.setAttribute("data-dir", asc ? "asc" : "desc");
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[col].textContent, y = b.cells[col].textContent;
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny
            : (isNaN(nx) === isNaN(ny) ? x.localeCompare(y) : (isNaN(nx) ? 1 : -1));
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""


def _data_uri(path: Path) -> str:
    """Return the PNG at ``path`` as a ``data:image/png;base64,...`` URI."""
    payload = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"data:image/png;base64,{payload}"


def _render_table(table: Table) -> str:
    head = "".join(f"<th>{escape(col)}</th>" for col in table.columns)
    body_rows = []
    for row in table.rows:
        cells = []
        for value in row:
            css = ' class="num"' if is_number(value) else ""
            cells.append(f"<td{css}>{escape(format_cell(value))}</td>")
        body_rows.append("<tr>" + "".join(cells) + "</tr>")
    return (
        '<div class="table-wrap"><table class="sortable">'
        f"<caption>{escape(table.caption)}</caption>"
        f"<thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(body_rows)}</tbody></table></div>"
    )


def _render_section(index: int, section: Section) -> str:
    parts = [f'<section id="s{index}"><h2>{escape(section.heading)}</h2>']
    parts.extend(f"<p>{escape(p)}</p>" for p in paragraphs(section.text))
    for image in section.images:
        name = escape(image.name)
        parts.append(
            f'<figure><img src="{_data_uri(image)}" alt="{name}">'
            f"<figcaption>{name}</figcaption></figure>"
        )
    parts.extend(_render_table(t) for t in section.tables)
    parts.append("</section>")
    return "\n".join(parts)


def render_html(title: str, sections: Sequence[Section]) -> str:
    """Return the full HTML document for ``title`` and ``sections`` as a string."""
    check_images(sections)
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    toc = "".join(
        f'<li><a href="#s{i}">{escape(s.heading)}</a></li>' for i, s in enumerate(sections)
    )
    body = "\n".join(_render_section(i, s) for i, s in enumerate(sections))
    has_tables = any(s.tables for s in sections)
    script = f"<script>{SORT_SCRIPT}</script>" if has_tables else ""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n"
        f"<h1>{escape(title)}</h1>\n"
        f'<p class="meta">Generated by attributor on {stamp}.</p>\n'
        + (f"<nav><ol>{toc}</ol></nav>\n" if len(sections) > 1 else "")
        + f"{body}\n</main>\n{script}\n</body>\n</html>\n"
    )


def write_html_report(
    path: str | os.PathLike[str], title: str, sections: Sequence[Section]
) -> Path:
    """Write one self-contained HTML report to ``path`` (atomically) and return its path.

    Images are read from disk and embedded as base64 data URIs, so the file can be moved
    or mailed on its own. Raises :class:`attributor.errors.DataError` if an image is
    missing.
    """
    path = Path(path)
    atomic_write_text(path, render_html(title, list(sections)))
    return path
