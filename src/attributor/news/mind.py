"""MIND-format news data: read and write ``news.tsv`` and ``behaviors.tsv``.

``news.tsv`` (tab-separated, no header): news id, category, subcategory, title, abstract,
url, title entities, abstract entities. The last three may be empty or absent.

``behaviors.tsv``: impression id, user id, time (``11/15/2019 8:55:22 AM`` or any text that
sorts in time order), history (space-separated news ids, possibly empty), impressions
(space-separated ``NEWSID-LABEL`` with label 1 = clicked, 0 = not; MIND's test split
has no labels: a bare ``NEWSID`` reads as label -1).

Rows are streamed line by line. Malformed rows are refused with the file and line number;
news ids missing from ``news.tsv`` are refused (``unknown="error"``) or dropped and
counted (``unknown="drop"``). An empty history is allowed: the user encoder then sees
only padding (documented in :mod:`attributor.news.models`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from attributor.errors import DataError

__all__ = ["NewsItem", "Impression", "read_news", "read_behaviors", "write_news", "write_behaviors"]


@dataclass
class NewsItem:
    id: str
    category: str
    subcategory: str
    title: str
    abstract: str = ""


@dataclass
class Impression:
    id: str
    user: str
    time: str
    history: list[str]
    candidates: list[str]
    labels: list[int]
    dropped: int = field(default=0, compare=False)


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    if not path.is_file():
        raise DataError(f"no such file: {path} (a MIND folder holds news.tsv and behaviors.tsv)")
    with path.open(encoding="utf-8", errors="strict", newline="") as handle:
        try:
            for number, line in enumerate(handle, 1):
                line = line.rstrip("\r\n")
                if line.strip():
                    yield number, line
        except UnicodeDecodeError as err:
            raise DataError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start})") from None


def read_news(path: str | os.PathLike[str]) -> dict[str, NewsItem]:
    """news id -> item, in file order. Duplicate ids and rows with fewer than 4 fields are refused."""
    path = Path(path)
    news: dict[str, NewsItem] = {}
    for number, line in _lines(path):
        fields = line.split("\t")
        if len(fields) < 4 or not fields[0]:
            raise DataError(f"{path} line {number}: expected at least 4 tab-separated fields (id, category, "
                            f"subcategory, title), got {len(fields)}")
        if fields[0] in news:
            raise DataError(f"{path} line {number}: news id {fields[0]!r} appears twice")
        news[fields[0]] = NewsItem(fields[0], fields[1], fields[2], fields[3], fields[4] if len(fields) > 4 else "")
    if not news:
        raise DataError(f"{path} holds no news")
    return news


def read_behaviors(path: str | os.PathLike[str], news: dict[str, NewsItem], *, unknown: str = "error") -> list[Impression]:
    """The impressions of ``path``; every news id must be in ``news`` (see ``unknown``)."""
    if unknown not in ("error", "drop"):
        raise DataError(f"unknown must be 'error' or 'drop', got {unknown!r}")
    path = Path(path)
    out = []
    for number, line in _lines(path):
        fields = line.split("\t")
        if len(fields) != 5:
            raise DataError(f"{path} line {number}: expected 5 tab-separated fields (impression id, user, time, "
                            f"history, impressions), got {len(fields)}")
        impression_id, user, time, history_text, shown = fields
        dropped = 0
        history = []
        for item in history_text.split():
            if item in news:
                history.append(item)
            elif unknown == "error":
                raise DataError(f"{path} line {number}: history news id {item!r} is not in news.tsv "
                                "(pass unknown='drop' to skip unknown ids)")
            else:
                dropped += 1
        candidates, labels = [], []
        for token in shown.split():
            news_id, sep, label = token.rpartition("-")
            if not sep:
                news_id, label = token, "-1"
            if label not in ("0", "1", "-1") or not news_id:
                raise DataError(f"{path} line {number}: impression {token!r} must look like NEWSID-1 or NEWSID-0")
            if news_id not in news:
                if unknown == "error":
                    raise DataError(f"{path} line {number}: candidate news id {news_id!r} is not in news.tsv "
                                    "(pass unknown='drop' to skip unknown ids)")
                dropped += 1
                continue
            candidates.append(news_id)
            labels.append(int(label))
        if not candidates:
            raise DataError(f"{path} line {number}: impression {impression_id!r} shows no known news")
        out.append(Impression(impression_id, user, time, history, candidates, labels, dropped))
    return out


def write_news(path: str | os.PathLike[str], items: Sequence[NewsItem]) -> None:
    from attributor._io import atomic_write_text

    rows = []
    for item in items:
        for value in (item.id, item.category, item.subcategory, item.title, item.abstract):
            if "\t" in value or "\n" in value:
                raise DataError(f"news {item.id!r}: fields cannot hold tabs or newlines")
        rows.append("\t".join([item.id, item.category, item.subcategory, item.title, item.abstract, "", "[]", "[]"]))
    atomic_write_text(path, "\n".join(rows) + "\n")


def write_behaviors(path: str | os.PathLike[str], impressions: Sequence[Impression]) -> None:
    from attributor._io import atomic_write_text

    rows = [f"{i.id}\t{i.user}\t{i.time}\t{' '.join(i.history)}\t"
            + " ".join(f"{c}-{label}" for c, label in zip(i.candidates, i.labels)) for i in impressions]
    atomic_write_text(path, "\n".join(rows) + "\n")
