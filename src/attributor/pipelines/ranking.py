"""Rankings read back from a scored run directory, for ``attributor rank``."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from attributor._io import atomic_write_text
from attributor.data import DatasetSplits
from attributor.errors import DataError, StoreError
from attributor.pipelines.run import label_text
from attributor.scores import Scores

__all__ = ["self_influence_ranking", "query_ranking", "write_rows"]

Rows = tuple[list[str], list[list[Any]]]


def self_influence_ranking(run_dir: Path, top: int) -> Rows:
    """The ``top`` most self-influential training examples (most suspicious first)."""
    path = run_dir / "scores" / "self_influence.npy"
    if not path.is_file():
        raise StoreError(f"{run_dir} has no scores yet (run `attributor score --out {run_dir}` first)")
    values = np.load(path, allow_pickle=False)
    data = _data(run_dir)
    order = np.argsort(-values, kind="stable")[:top]
    header = ["rank", "train_index", "self_influence", "label", "flipped"]
    return header, [[r + 1, int(j), f"{values[j]:.6g}", label_text(data, data.y_train[j]), int(data.flipped[j])] for r, j in enumerate(order)]


def query_ranking(run_dir: Path, query: int, top: int) -> Rows:
    """The strongest proponents and opponents of one test query."""
    scores = Scores.load(run_dir / "scores")
    if not 0 <= query < scores.n_queries:
        raise DataError(f"--query must be in [0, {scores.n_queries}), got {query}")
    data = _data(run_dir)
    header = ["kind", "rank", "train_index", "score", "train_label", "query_label"]
    rows = []
    for kind, indices, values in (("proponent", scores.top_indices, scores.top_values),
                                  ("opponent", scores.bottom_indices, scores.bottom_values)):
        for r, (j, v) in enumerate(zip(indices[query][:top], values[query][:top])):
            rows.append([kind, r + 1, int(j), f"{v:.6g}", label_text(data, data.y_train[j]), label_text(data, data.y_test[query])])
    return header, rows


def write_rows(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def _data(run_dir: Path) -> DatasetSplits:
    path = run_dir / "data.npz"
    if not path.is_file():
        raise StoreError(f"{run_dir} is not a run directory with data (run `attributor featurize --out {run_dir}` first)")
    return DatasetSplits.load(path)
