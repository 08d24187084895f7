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

    Ties are broken by the lower column index, so the result depends neither on the block
    sizes nor on the order of the blocks. ``largest=False`` keeps the k smallest instead.
    NaN ranks after every number in both directions. Values are kept in float64.

    Cost per block of b columns: one comparison of the block with each row's current k-th
    value, then a sort of (k + c) entries in each row where c > 0 columns passed. Fed in
    increasing column order (as ``Method.score`` does) with scores in no particular order,
    about k b / offset columns of a row pass, so the comparison dominates. A row group's
    first block holding more than k columns is partitioned (``np.partition``) to find its
    own k-th value first.
    """

    def __init__(self, n_rows: int, k: int, largest: bool = True):
        self.k, self.largest = k, largest
        self._values = np.empty((n_rows, k))  # columns [0, width) of a row are valid, strongest first
        self._indices = np.empty((n_rows, k), dtype=np.int64)
        self._width = np.zeros(n_rows, dtype=np.int64)
        self._last = np.full(n_rows, -1, dtype=np.int64)  # highest column index merged into a row
        self._mask = np.empty(0, dtype=bool)  # reused: a fresh block-sized array costs page faults

    def update(self, rows: slice, offset: int, block: np.ndarray) -> None:
        """Merge ``block`` (rows x b), whose column 0 is global column ``offset``."""
        block = np.asarray(block)
        if block.dtype not in (np.float32, np.float64):
            block = block.astype(np.float64)
        n, b = block.shape
        if n == 0 or b == 0 or self.k == 0:
            return
        old = int(self._width[rows.start])  # rows of one block always share their width
        new = min(self.k, old + b)
        # strict: every column held has a lower index than the block's, so a tie never enters
        strict = offset > int(self._last[rows].max())
        if old == self.k:
            mask = self._passes(block, self._values[rows, old - 1], strict)
        elif b > self.k:  # the block's own k-th value bounds what can enter
            key = -block if self.largest else block
            kth = np.partition(key, self.k - 1, axis=1)[:, self.k - 1]
            mask = self._passes(block, -kth if self.largest else kth, strict=False)
        else:
            mask = None  # every column of the block is a candidate
        if mask is None:
            touched = np.arange(n)
            values = block.astype(np.float64)
            indices = np.broadcast_to(np.arange(offset, offset + b, dtype=np.int64), (n, b))
        else:
            touched, values, indices = self._candidates(block, mask, offset)
        if touched.size:
            held = rows.start + touched
            values = np.concatenate([self._values[held, :old], values], axis=1)
            indices = np.concatenate([self._indices[held, :old], indices], axis=1)
            key = -values if self.largest else values
            if strict:  # held entries sorted by (key, index) come first, candidates in column order
                order = np.argsort(key, axis=1, kind="stable")[:, :new]
            else:
                order = np.lexsort((indices, key), axis=1)[:, :new]
            self._values[held, :new] = np.take_along_axis(values, order, axis=1)
            self._indices[held, :new] = np.take_along_axis(indices, order, axis=1)
        self._width[rows] = new
        self._last[rows] = np.maximum(self._last[rows], offset + b - 1)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """``(indices, values)``, each (n_rows, k), strongest first."""
        if (self._width != self.k).any():
            raise ValueError("StreamingTopK.result() before every row saw at least k columns")
        return self._indices.copy(), self._values.copy()

    def _passes(self, block: np.ndarray, threshold: np.ndarray, strict: bool) -> np.ndarray:
        """(n, b) mask of the columns that can displace value ``threshold`` (n,) of each row.

        A superset is fine (the merge sorts exactly): the threshold is rounded outwards
        to the block's dtype. A NaN threshold lets every column pass.
        """
        with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes inf, then is stepped back
            rounded = threshold.astype(block.dtype)
        if rounded.dtype != threshold.dtype:
            wrong = rounded > threshold if self.largest else rounded < threshold
            rounded[wrong] = np.nextafter(rounded[wrong], rounded.dtype.type(-np.inf if self.largest else np.inf))
        if self._mask.size < block.size:
            self._mask = np.empty(block.size, dtype=bool)
        mask = self._mask[: block.size].reshape(block.shape)
        compare = (np.greater if strict else np.greater_equal) if self.largest else (np.less if strict else np.less_equal)
        compare(block, rounded[:, None], out=mask)
        unknown = np.isnan(threshold)
        if unknown.any():
            mask[unknown] = True
        return mask

    @staticmethod
    def _candidates(block: np.ndarray, mask: np.ndarray, offset: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows with a True in ``mask`` and their passing columns, left-aligned and padded.

        Returns ``(touched (m,), values (m, c), indices (m, c))``, c the most columns passing
        in one row; padding is NaN with index int64 max, which sorts after every real entry.
        """
        positions = np.flatnonzero(mask)
        b = block.shape[1]
        row, column = np.divmod(positions, b)
        counts = np.bincount(row, minlength=block.shape[0])
        touched = np.flatnonzero(counts)
        if not touched.size:
            return touched, np.empty((0, 0)), np.empty((0, 0), dtype=np.int64)
        rank = np.cumsum(counts > 0) - 1  # row -> its position among the touched rows
        slot = np.arange(positions.size) - (np.cumsum(counts) - counts)[row]
        width = int(counts.max())
        values = np.full((touched.size, width), np.nan)
        indices = np.full((touched.size, width), np.iinfo(np.int64).max, dtype=np.int64)
        values[rank[row], slot] = block[row, column]
        indices[rank[row], slot] = column + offset
        return touched, values, indices

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
        """Write scores.npy (if dense), topk arrays and scores.json; scores.json commits.

        scores.json maps each array file's name to the sha256 of its bytes (``files``),
        checked by :meth:`load`, and holds ``meta``.

        Nothing is half-written: the arrays go to temporary names first (a full disk stops
        the save here, and the previous scores in ``folder``, if any, stay as they were),
        then the old scores.json is removed, the arrays are renamed into place and the new
        scores.json is written. An error after that point removes the new files again.
        """
        folder = Path(folder)
        arrays = {
            "top_indices": self.top_indices, "top_values": self.top_values,
            "bottom_indices": self.bottom_indices, "bottom_values": self.bottom_values,
        }
        if self.values is not None:
            arrays["scores"] = self.values
        created = not folder.exists()
        staged: dict[str, Path] = {}
        placed: list[Path] = []
        try:
            files = {}
            for name, array in arrays.items():
                staged[name] = folder / f".{name}.npy.{os.getpid()}.staged"
                try:
                    files[name] = atomic_save_npy(staged[name], np.asarray(array))
                except OSError as err:  # name the file the user knows (a full disk names none)
                    err.filename = str(folder / f"{name}.npy")
                    raise
            self.path(folder).unlink(missing_ok=True)  # the old scores are uncommitted from here on
            for name, tmp in staged.items():
                os.replace(tmp, folder / f"{name}.npy")
                placed.append(folder / f"{name}.npy")
            atomic_write_json(self.path(folder), {"files": files, "meta": self.meta})
        except BaseException:
            for path in [*staged.values(), *placed]:
                path.unlink(missing_ok=True)
            if created:
                try:
                    folder.rmdir()  # only when empty
                except OSError:
                    pass
            raise

    @classmethod
    def load(cls, folder: str | os.PathLike[str], mmap: bool = True, verify: bool = True) -> "Scores":
        """Read scores written by :meth:`save` (memory-mapped unless ``mmap`` is false).

        With ``verify`` (the default) every array file is checked against the sha256 that
        scores.json records for it (one sequential read of each file); a missing or changed
        file raises StoreCorruptedError saying how to recompute the scores. Folders whose
        scores.json records no checksums load unverified.
        """
        from attributor.errors import StoreCorruptedError

        folder = Path(folder)
        if not cls.exists(folder):
            raise StoreError(f"no scores in {folder} (run `attributor score` first)")
        try:
            index = json.loads(cls.path(folder).read_text())
            files = index["files"]
            if not isinstance(files, (dict, list)) or not isinstance(index.get("meta", {}), dict):
                raise ValueError("'files' must list the array files and 'meta' must be a mapping")
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise StoreError(f"scores in {folder} cannot be read: {err}") from None
        checksums = files if isinstance(files, dict) else {}
        arrays = {name: _load_array(folder, name, checksums.get(name) if verify else None, mmap)
                  for name in files if name in SCORE_FILES}
        missing = [name for name in SCORE_FILES[:4] if name not in arrays]
        if missing:
            raise StoreCorruptedError(f"{cls.path(folder)} lists no {', '.join(missing)}; {_recompute(folder)}")
        return cls(
            top_indices=arrays["top_indices"], top_values=arrays["top_values"],
            bottom_indices=arrays["bottom_indices"], bottom_values=arrays["bottom_values"],
            values=arrays.get("scores"), meta=index.get("meta", {}),
        )


#: the array files of a saved Scores, the dense matrix last (it is optional)
SCORE_FILES = ("top_indices", "top_values", "bottom_indices", "bottom_values", "scores")


def _load_array(folder: Path, name: str, checksum: Any, mmap: bool) -> np.ndarray:
    """``folder/<name>.npy``, checked against its sha256 ``checksum`` when that is a string."""
    from attributor._io import sha256_file
    from attributor.errors import StoreCorruptedError

    file = folder / f"{name}.npy"
    if not file.is_file():
        raise StoreCorruptedError(f"{file} is missing; {_recompute(folder)}")
    if isinstance(checksum, str) and sha256_file(file) != checksum:
        raise StoreCorruptedError(f"{file} does not match the checksum recorded in {Scores.path(folder)}; "
                                  f"the scores are corrupted: {_recompute(folder)}")
    try:
        return np.load(file, mmap_mode="r" if mmap else None, allow_pickle=False)
    except Exception as err:  # numpy raises OSError, ValueError, EOFError, even tokenize errors on a damaged header
        raise StoreCorruptedError(f"{file} cannot be read ({type(err).__name__}: {err}); {_recompute(folder)}") from None


def _recompute(folder: Path) -> str:
    """How to recompute the scores in ``folder`` (a run's ``scores/``): ``--overwrite`` alone keeps them."""
    return f"delete {folder} and run `attributor score --out {folder.parent}` again to recompute them"
