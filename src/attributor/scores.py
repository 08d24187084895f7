"""Scores: the one result type of every attribution method.

``values[q, j]`` is the attribution of training example j to query q, shape
(n_query, n_train). Sign convention everywhere in attributor: **a positive score means the
training example pushes the query's measured output up** (a proponent); a negative one
pushes it down (an opponent).

Scores are produced block by block (``Method.score_blocks``) and reduced by a streaming
top-k, so the k strongest proponents and opponents of every query are known even when the
dense matrix is not kept.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from attributor._io import atomic_save_npy, atomic_write_json
from attributor.errors import StoreError

__all__ = ["Scores", "StreamingTopK"]


class StreamingTopK:
    """Running top-k of each row of an (n_rows, n_cols) matrix seen in column blocks.

    Ties are broken by the lower column index, so the result does not depend on the
    block sizes. ``largest=False`` keeps the k smallest instead.
    """

    def __init__(self, n_rows: int, k: int, largest: bool = True):
        self.k, self.largest = k, largest
        self._values = np.zeros((n_rows, 0))
        self._indices = np.zeros((n_rows, 0), dtype=np.int64)
        self._width = np.zeros(n_rows, dtype=np.int64)

    def update(self, rows: slice, offset: int, block: np.ndarray) -> None:
        """Merge ``block`` (rows x b), whose column 0 is global column ``offset``."""
        n = rows.stop - rows.start
        old_width = int(self._width[rows.start])  # rows of one block always share their width
        width = min(self.k, old_width + block.shape[1])
        if width > self._values.shape[1]:  # grow storage, up to k columns
            pad = width - self._values.shape[1]
            self._values = np.pad(self._values, ((0, 0), (0, pad)), constant_values=np.nan)
            self._indices = np.pad(self._indices, ((0, 0), (0, pad)), constant_values=-1)
        values = np.concatenate([self._values[rows, :old_width], block.astype(np.float64)], axis=1)
        columns = np.broadcast_to(np.arange(offset, offset + block.shape[1], dtype=np.int64), (n, block.shape[1]))
        indices = np.concatenate([self._indices[rows, :old_width], columns], axis=1)
        by_index = np.argsort(indices, axis=1, kind="stable")
        values = np.take_along_axis(values, by_index, axis=1)
        indices = np.take_along_axis(indices, by_index, axis=1)
        order = np.argsort(-values if self.largest else values, axis=1, kind="stable")[:, :width]
        self._values[rows, :width] = np.take_along_axis(values, order, axis=1)
        self._indices[rows, :width] = np.take_along_axis(indices, order, axis=1)
        self._width[rows] = width

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """``(indices, values)``, each (n_rows, k), strongest first."""
        if (self._width != self.k).any():
            raise ValueError("StreamingTopK.result() before every row saw at least k columns")
        return self._indices.copy(), self._values.copy()


@dataclass
class Scores:
    """Attribution scores of n_query queries over n_train training examples.

    Attributes:
        top_indices, top_values: (n_query, k) strongest proponents, largest score first.
        bottom_indices, bottom_values: (n_query, k) strongest opponents, most negative first.
        values: the dense (n_query, n_train) matrix, or None when it was not kept.
        meta: the method's spec and anything else worth saving beside the scores.
    """

    top_indices: np.ndarray
    top_values: np.ndarray
    bottom_indices: np.ndarray
    bottom_values: np.ndarray
    values: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_queries(self) -> int:
        return self.top_indices.shape[0]

    # -- the four verbs -------------------------------------------------------------
    @staticmethod
    def path(folder: str | os.PathLike[str]) -> Path:
        return Path(folder) / "scores.json"

    @classmethod
    def exists(cls, folder: str | os.PathLike[str]) -> bool:
        return cls.path(folder).is_file()

    def save(self, folder: str | os.PathLike[str]) -> None:
        """Write scores.npy (if dense), topk arrays and scores.json; scores.json commits."""
        folder = Path(folder)
        arrays = {
            "top_indices": self.top_indices, "top_values": self.top_values,
            "bottom_indices": self.bottom_indices, "bottom_values": self.bottom_values,
        }
        if self.values is not None:
            arrays["scores"] = self.values
        files = {name: atomic_save_npy(folder / f"{name}.npy", np.asarray(array)) for name, array in arrays.items()}
        atomic_write_json(self.path(folder), {"files": files, "meta": self.meta})

    @classmethod
    def load(cls, folder: str | os.PathLike[str], mmap: bool = True) -> "Scores":
        folder = Path(folder)
        if not cls.exists(folder):
            raise StoreError(f"no scores in {folder} (run `attributor score` first)")
        try:
            index = json.loads(cls.path(folder).read_text())
            arrays = {
                name: np.load(folder / f"{name}.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
                for name in index["files"]
            }
        except (OSError, ValueError, KeyError) as err:
            raise StoreError(f"scores in {folder} cannot be read: {err}") from None
        return cls(
            top_indices=arrays["top_indices"], top_values=arrays["top_values"],
            bottom_indices=arrays["bottom_indices"], bottom_values=arrays["bottom_values"],
            values=arrays.get("scores"), meta=index.get("meta", {}),
        )
