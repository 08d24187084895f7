"""StreamingTopK against a full stable sort; Scores save/load."""

from __future__ import annotations

import numpy as np
import pytest

from attributor.errors import StoreError
from attributor.scores import Scores, StreamingTopK


def _expected(matrix: np.ndarray, k: int, largest: bool):
    order = np.argsort(-matrix if largest else matrix, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(matrix, order, axis=1)


def _column_blocks(n_cols: int, rng: np.random.Generator):
    start = 0
    while start < n_cols:
        stop = min(n_cols, start + int(rng.integers(1, 9)))
        yield start, stop
        start = stop


@pytest.mark.parametrize("largest", [True, False])
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_streaming_topk_equals_a_stable_argsort(largest, ties, seed):
    rng = np.random.default_rng(seed)
    n_rows, n_cols, k = 5, 37, 6
    matrix = rng.integers(-3, 4, (n_rows, n_cols)).astype(float) if ties else rng.normal(size=(n_rows, n_cols))
    topk = StreamingTopK(n_rows, k, largest=largest)
    for start, stop in _column_blocks(n_cols, rng):
        topk.update(slice(0, n_rows), start, matrix[:, start:stop])
    indices, values = topk.result()
    expected_indices, expected_values = _expected(matrix, k, largest)
    assert np.array_equal(indices, expected_indices)
    assert np.array_equal(values, expected_values)


@pytest.mark.parametrize("largest", [True, False])
def test_ties_are_broken_by_the_lower_index(largest):
    topk = StreamingTopK(1, 3, largest=largest)
    topk.update(slice(0, 1), 0, np.array([[0.0, 1.0, 1.0]]))
    topk.update(slice(0, 1), 3, np.array([[1.0, 0.0]]))
    topk.update(slice(0, 1), 5, np.array([[1.0, 0.0, 0.0]]))
    indices, values = topk.result()
    assert indices.tolist() == ([[1, 2, 3]] if largest else [[0, 4, 6]])
    assert values.tolist() == ([[1.0, 1.0, 1.0]] if largest else [[0.0, 0.0, 0.0]])


@pytest.mark.parametrize("largest", [True, False])
def test_streaming_topk_over_row_groups_with_large_blocks(largest):
    """Row groups (query chunks) whose first column block already holds >= k columns."""
    rng = np.random.default_rng(7)
    matrix = rng.integers(-2, 3, (9, 30)).astype(float)
    topk = StreamingTopK(9, 4, largest=largest)
    for rows in (slice(0, 4), slice(4, 8), slice(8, 9)):
        for start in range(0, 30, 6):
            topk.update(rows, start, matrix[rows, start : start + 6])
    indices, values = topk.result()
    expected_indices, expected_values = _expected(matrix, 4, largest)
    assert np.array_equal(indices, expected_indices) and np.array_equal(values, expected_values)


@pytest.mark.parametrize("block", [3, 1])
def test_streaming_topk_over_row_groups_with_small_blocks(block):
    rng = np.random.default_rng(8)
    matrix = rng.normal(size=(6, 12))
    topk = StreamingTopK(6, 5, largest=True)
    for rows in (slice(0, 3), slice(3, 6)):
        for start in range(0, 12, block):
            topk.update(rows, start, matrix[rows, start : start + block])
    indices, values = topk.result()
    expected_indices, expected_values = _expected(matrix, 5, True)
    assert np.array_equal(indices, expected_indices) and np.array_equal(values, expected_values)


def test_result_before_k_columns_is_refused():
    topk = StreamingTopK(2, 4)
    topk.update(slice(0, 2), 0, np.ones((2, 3)))
    with pytest.raises(ValueError):
        topk.result()


def _scores(dense: bool) -> Scores:
    rng = np.random.default_rng(0)
    values = rng.normal(size=(3, 8))
    top = np.argsort(-values, axis=1, kind="stable")[:, :2]
    bottom = np.argsort(values, axis=1, kind="stable")[:, :2]
    return Scores(top, np.take_along_axis(values, top, 1), bottom, np.take_along_axis(values, bottom, 1),
                  values if dense else None, {"method": "test", "n_train": 8})


@pytest.mark.parametrize("dense", [True, False])
@pytest.mark.parametrize("mmap", [True, False])
def test_scores_save_load_round_trip(tmp_path, dense, mmap):
    scores = _scores(dense)
    assert not Scores.exists(tmp_path / "out")
    scores.save(tmp_path / "out")
    assert Scores.exists(tmp_path / "out")
    loaded = Scores.load(tmp_path / "out", mmap=mmap)
    assert loaded.n_queries == 3
    for name in ("top_indices", "top_values", "bottom_indices", "bottom_values"):
        assert np.array_equal(getattr(loaded, name), getattr(scores, name))
        assert getattr(loaded, name).dtype == getattr(scores, name).dtype
    if dense:
        assert np.array_equal(loaded.values, scores.values)
    else:
        assert loaded.values is None
    assert loaded.meta == scores.meta


def test_scores_load_on_an_empty_directory(tmp_path):
    with pytest.raises(StoreError, match="no scores"):
        Scores.load(tmp_path)


def test_scores_load_with_a_missing_array_file(tmp_path):
    _scores(True).save(tmp_path)
    (tmp_path / "top_values.npy").unlink()
    with pytest.raises(StoreError):
        Scores.load(tmp_path)
