"""Private helpers of :mod:`attributor.reports.plots`: input checks, CSV text, saving.

matplotlib is imported only inside :func:`pyplot`, so importing this module (or
``attributor.reports``) never imports matplotlib.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from attributor._io import atomic_write_bytes, atomic_write_text
from attributor.errors import DataError

__all__ = ["pyplot", "as_array", "as_labels", "as_indices", "csv_text", "fmt", "save_figure", "subsample"]

DPI = 110


def pyplot() -> Any:
    """Return ``matplotlib.pyplot`` with the non-interactive Agg backend selected."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def as_array(name: str, value: Any, ndim: int | None = None, min_size: int = 1) -> np.ndarray:
    """``value`` as a finite float64 array with ``ndim`` dimensions, else :class:`DataError`."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise DataError(f"{name} must be numeric, got {type(value).__name__}: {err}") from None
    if ndim is not None and array.ndim != ndim:
        raise DataError(f"{name} must be {ndim}-D, got shape {array.shape}")
    if array.size < min_size:
        raise DataError(f"{name} must have at least {min_size} element(s), got shape {array.shape}")
    bad = ~np.isfinite(array)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DataError(
            f"{name} contains {int(bad.sum())} NaN/inf value(s) (first at index {first}); "
            "drop or fix them before plotting"
        )
    return array


def as_labels(name: str, value: Any, length: int) -> np.ndarray:
    """Integer class labels of shape (length,), else :class:`DataError`."""
    array = np.asarray(value)
    if array.shape != (length,):
        raise DataError(f"{name} must have shape ({length},), got {array.shape}")
    if array.dtype.kind not in "iub":
        as_float = as_array(name, array, ndim=1, min_size=0)
        if not np.array_equal(as_float, np.round(as_float)):
            raise DataError(f"{name} must hold integer class labels, got dtype {array.dtype}")
        array = as_float
    return array.astype(np.int64)


def as_indices(name: str, value: Any, shape: tuple[int, ...], upper: int) -> np.ndarray:
    """Integer indices in [0, upper) with exactly ``shape``, else :class:`DataError`."""
    array = np.asarray(value)
    if array.shape != shape:
        raise DataError(f"{name} must have shape {shape}, got {array.shape}")
    if array.dtype.kind not in "iu":
        raise DataError(f"{name} must hold integer indices, got dtype {array.dtype}")
    if array.size and (array.min() < 0 or array.max() >= upper):
        raise DataError(
            f"{name} holds indices in [{array.min()}, {array.max()}] but there are only {upper} "
            "training examples"
        )
    return array.astype(np.int64)


def fmt(value: float) -> str:
    """Shortest text that reads back as the same float64 (what the CSV files hold)."""
    return repr(float(value))


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """CSV text with a header row; numbers already formatted by the caller as needed."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def subsample(n: int, limit: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``limit`` of ``range(n)``, the same for the same seed."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def save_figure(fig: Any, path: str | os.PathLike[str], csv: str) -> Path:
    """Render ``fig`` to PNG at ``path`` and ``csv`` beside it (same stem), both atomic.

    The figure is always closed, also when rendering fails. Returns the PNG path.
    """
    plt = pyplot()
    path = Path(path)
    try:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    finally:
        plt.close(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path.with_suffix(".csv"), csv)
    atomic_write_bytes(path, buffer.getvalue())
    return path
