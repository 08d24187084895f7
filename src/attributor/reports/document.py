"""The report document model shared by the HTML and Markdown writers.

A report is a title and a list of :class:`Section`; a section holds free text (paragraphs
separated by blank lines), image files (PNGs written by :mod:`attributor.reports.plots`)
and :class:`Table` objects. Both writers render the same structure, so a pipeline builds
the sections once and writes both formats.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from attributor.errors import DataError

__all__ = ["Section", "Table", "format_cell", "is_number", "paragraphs"]


@dataclass(frozen=True)
class Table:
    """A small table: ``rows`` is a sequence of rows, each with ``len(columns)`` cells.

    Cells may be numbers (formatted by :func:`format_cell`) or anything with ``str()``.
    """

    caption: str
    columns: Sequence[str]
    rows: Sequence[Sequence[Any]] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", tuple(str(c) for c in self.columns))
        object.__setattr__(self, "rows", tuple(tuple(row) for row in self.rows))
        if not self.columns:
            raise DataError(f"table {self.caption!r} has no columns; give at least one column name")
        for i, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise DataError(
                    f"table {self.caption!r}: row {i} has {len(row)} cells but there are "
                    f"{len(self.columns)} columns {list(self.columns)}"
                )


@dataclass(frozen=True)
class Section:
    """One report section: a heading, text paragraphs, images (PNG paths) and tables."""

    heading: str
    text: str = ""
    images: Sequence[Path] = field(default_factory=tuple)
    tables: Sequence[Table] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        object.__setattr__(self, "images", tuple(Path(p) for p in self.images))
        object.__setattr__(self, "tables", tuple(self.tables))
        for table in self.tables:
            if not isinstance(table, Table):
                raise DataError(
                    f"section {self.heading!r}: tables must be Table objects, got {type(table).__name__}"
                )


def paragraphs(text: str) -> list[str]:
    """Split ``text`` into paragraphs on blank lines; drop empty ones, strip each."""
    blocks: list[str] = []
    current: list[str] = []
    for line in text.splitlines():
        if line.strip():
            current.append(line.strip())
        elif current:
            blocks.append(" ".join(current))
            current = []
    if current:
        blocks.append(" ".join(current))
    return blocks


def is_number(value: Any) -> bool:
    """True for real numbers (Python or numpy), False for bools and everything else."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and type(value).__name__ != "bool_"


def format_cell(value: Any) -> str:
    """Format one table cell: floats to 4 significant digits, ints as is, rest via ``str``.

    >>> format_cell(0.123456), format_cell(12345678.0), format_cell(3), format_cell(True)
    ('0.1235', '1.235e+07', '3', 'True')
    """
    if value is None:
        return ""
    if isinstance(value, (bool,)) or type(value).__name__ == "bool_":
        return str(bool(value))
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        x = float(value)
        if math.isnan(x):
            return "nan"
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        return f"{x:.4g}"
    return str(value)


def check_images(sections: Sequence[Section]) -> None:
    """Raise :class:`DataError` if an image listed in a section does not exist."""
    for section in sections:
        if not isinstance(section, Section):
            raise DataError(f"sections must be Section objects, got {type(section).__name__}")
        for image in section.images:
            if not image.is_file():
                raise DataError(
                    f"section {section.heading!r}: image {str(image)!r} does not exist; "
                    "write the plot before the report"
                )
