"""A Markdown summary report (GitHub-flavoured), next to the PNGs it links to.

Images become relative links ``![name](relative/path.png)`` computed from the folder of
the Markdown file, so the report and its ``plots/`` folder can be moved together. Tables
become GFM pipe tables, with ``|`` in cells escaped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from attributor._io import atomic_write_text
from attributor.reports.document import Section, Table, check_images, format_cell, is_number, paragraphs

__all__ = ["Section", "Table", "write_markdown_report"]


def _cell(text: str) -> str:
    """Escape one table cell: pipes, backslashes and newlines would break the row."""
    return (
        text.replace("\\", "\\\\")
        .replace("|", "\\|")
        .replace("\r\n", " ")
        .replace("\n", " ")
    )


def _render_table(table: Table) -> list[str]:
    numeric = [
        bool(table.rows) and all(is_number(row[i]) for row in table.rows)
        for i in range(len(table.columns))
    ]
    lines = []
    if table.caption:
        lines += [f"**{_cell(table.caption)}**", ""]
    lines.append("| " + " | ".join(_cell(c) for c in table.columns) + " |")
    lines.append("|" + "|".join("---:" if n else "---" for n in numeric) + "|")
    for row in table.rows:
        lines.append("| " + " | ".join(_cell(format_cell(v)) for v in row) + " |")
    lines.append("")
    return lines


def _relative_link(image: Path, folder: Path) -> str:
    """``image`` relative to ``folder``, with forward slashes (what Markdown viewers expect)."""
    rel = os.path.relpath(image.resolve(), folder.resolve())
    return Path(rel).as_posix().replace(" ", "%20").replace(")", "%29").replace("(", "%28")


def render_markdown(title: str, sections: Sequence[Section], folder: Path) -> str:
    """Return the Markdown text; image links are made relative to ``folder``."""
    check_images(sections)
    lines = [f"# {title.strip()}", ""]
    for section in sections:
        lines += [f"## {section.heading.strip()}", ""]
        for para in paragraphs(section.text):
            lines += [para, ""]
        for image in section.images:
            alt = image.stem.replace("[", "(").replace("]", ")")
            lines += [f"![{alt}]({_relative_link(image, folder)})", ""]
        for table in section.tables:
            lines += _render_table(table)
    return "\n".join(lines).rstrip() + "\n"


def write_markdown_report(
    path: str | os.PathLike[str], title: str, sections: Sequence[Section]
) -> Path:
    """Write a Markdown report to ``path`` (atomically) and return its path.

    Raises :class:`attributor.errors.DataError` if an image listed in a section is missing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, render_markdown(title, list(sections), path.parent))
    return path
