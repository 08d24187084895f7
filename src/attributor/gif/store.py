"""Fingerprints into a FeatureStore, chunk by chunk (resumable, checksummed), and exact search.

:func:`write_fingerprints` creates (or reopens, to resume) a store whose settings record
the fingerprinter's spec; each chunk of ``chunk_size`` rows is fingerprinted and committed
(:meth:`FeatureStore.write_chunk`, atomic, checksummed), so a killed run resumes at the
first uncommitted chunk. A fingerprint store has one pseudo-checkpoint (``"fingerprint"``)
and out_to_loss = 1 for every row (unused).

:func:`search_store` is the one switch between exact search (numpy, this module) and
the ANN indexes of :mod:`attributor.index` (``kind`` flat, hnsw, ivf-pq, ivf-sq8).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Sequence

import numpy as np

from attributor.errors import ConfigError
from attributor.features.store import FeatureStore
from attributor.gif.fingerprints import Fingerprinter, item_texts

__all__ = ["write_fingerprints", "fingerprint_settings", "ExactIndex", "search_store", "items_id"]


def items_id(items: Sequence[Any]) -> str:
    """Content id of the items (sha256 of their JSON), checked when a split is reopened."""
    return hashlib.sha256(json.dumps(list(items), sort_keys=True, default=str).encode()).hexdigest()[:16]


def fingerprint_settings(fingerprinter: Fingerprinter, chunk_size: int = 256, dtype: str = "float32") -> dict[str, Any]:
    return {"kind": "fingerprints", "fingerprinter": fingerprinter.spec(), "checkpoints": ["fingerprint"],
            "dtype": dtype, "chunk_size": int(chunk_size), "dim": int(fingerprinter.dim_)}


def write_fingerprints(fingerprinter: Fingerprinter, items: Sequence[Any], path: str | os.PathLike[str], *,
                       split: str = "train", labels: Sequence[int] | None = None, chunk_size: int = 256,
                       dtype: str = "float32", overwrite: bool = False, progress: bool = False) -> FeatureStore:
    """Fingerprint ``items`` into split ``split`` of the store at ``path``; resumes a killed run.

    The fingerprinter must be fitted; the store is refused if it holds another
    fingerprinter's rows (unless ``overwrite``). ``labels``: per-item classes for the
    probe's gradient (pass ``fingerprinter.labels_`` for the training items it was fitted
    on); None: the probe's prediction, as for queries.
    """
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ConfigError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    item_texts(items)  # checks every item before anything is written
    if labels is not None and len(labels) != len(items):
        raise ConfigError(f"{len(labels)} labels for {len(items)} items")
    store = FeatureStore.create(path, fingerprint_settings(fingerprinter, chunk_size, dtype), overwrite=overwrite)
    store.add_split(split, len(items), items_id([items, None if labels is None else np.asarray(labels).tolist()]))
    todo = store.missing_chunks(split, 0)
    if todo:
        from attributor.progress import progress_bar

        with store.writing(), progress_bar(sum(stop - start for _, start, stop in todo), f"fingerprint {split}",
                                           progress) as bar:
            for index, start, stop in todo:
                rows = fingerprinter.transform(items[start:stop], None if labels is None else labels[start:stop])
                store.write_chunk(split, 0, index, rows, np.ones(stop - start, dtype=np.float32))
                bar.update(stop - start)
    return store


class ExactIndex:
    """Exact inner-product search over rows held in memory (numpy); the API of attributor.index."""

    def __init__(self, rows: np.ndarray):
        self.rows = np.ascontiguousarray(rows, dtype=np.float32)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (q, k'), k' = min(k, n); larger score = closer."""
        queries = np.asarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.rows.shape[1]:
            raise ConfigError(f"queries must have shape (q, {self.rows.shape[1]}), got {queries.shape}")
        k = max(1, min(int(k), len(self.rows)))
        scores = queries @ self.rows.T
        if k < len(self.rows):
            ids = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        else:
            ids = np.tile(np.arange(len(self.rows)), (len(queries), 1))
        part = np.take_along_axis(scores, ids, 1)
        order = np.lexsort((ids, -part), axis=1)  # score descending, then id ascending
        return np.take_along_axis(part, order, 1), np.take_along_axis(ids, order, 1)


def search_store(store: FeatureStore, *, split: str = "train", kind: str = "exact",
                 out_dir: str | os.PathLike[str] | None = None, **kwargs: Any) -> Any:
    """An index over split ``split`` of ``store``: ``search(queries, k) -> (scores, ids)``.

    ``kind="exact"``: :class:`ExactIndex` (numpy). Any other kind is built by
    ``attributor.index.build_index(store, out_dir, kind=kind, split=split, metric="ip")``.
    """
    if kind == "exact":
        return ExactIndex(store.features(split, 0))
    try:
        from attributor.index import build_index
    except ImportError:
        raise ConfigError(f"index kind {kind!r} needs the attributor.index package; use kind='exact'") from None
    if out_dir is None:
        out_dir = store.path / f"index-{split}-{kind}"
    kwargs.setdefault("progress", False)
    kwargs.setdefault("overwrite", True)  # the index is derived from the store: rebuilt on request
    return build_index(store, out_dir, kind=kind, split=split, checkpoint=0, metric="ip", normalize=False, **kwargs)
