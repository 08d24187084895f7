"""StreamingTopK against a brute-force float64 reference, over many random block splittings.

The reference is a full stable argsort of the whole matrix in float64 (ties: lower column
first; NaN after every number in both directions). Matrices are drawn with many exact ties
(small integers, a constant row, -0.0 beside 0.0, infinities, a few NaNs), split into column
blocks of random widths (one column, wider than k, the whole matrix), fed in increasing or
shuffled column order and in row groups, for k from 1 to n_cols.
"""

from __future__ import annotations

import numpy as np
import pytest

from attributor.scores import StreamingTopK


def _reference(matrix: np.ndarray, k: int, largest: bool) -> tuple[np.ndarray, np.ndarray]:
    exact = matrix.astype(np.float64)
    order = np.argsort(-exact if largest else exact, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(exact, order, axis=1)


def _matrix(rng: np.random.Generator, n_rows: int, n_cols: int, kind: str, dtype) -> np.ndarray:
    if kind == "ties":
        matrix = rng.integers(-3, 4, (n_rows, n_cols)).astype(np.float64)
        matrix[0] = 1.0  # a row of one value: every choice is a tie
    elif kind == "special":
        choices = [-np.inf, -1.0, -0.0, 0.0, 0.5, np.inf, np.nan]
        matrix = rng.choice(choices, size=(n_rows, n_cols), p=[.1, .2, .2, .2, .1, .1, .1])
    else:
        matrix = rng.normal(size=(n_rows, n_cols))
    return matrix.astype(dtype)


def _splits(rng: np.random.Generator, n_cols: int, k: int, how: str) -> list[tuple[int, int]]:
    if how == "whole":
        return [(0, n_cols)]
    if how == "ones":
        widths = [1] * n_cols
    else:
        high = {"small": 4, "mixed": 2 * k + 3, "wide": 4 * k + 8}[how]
        widths = []
        while sum(widths) < n_cols:
            widths.append(int(rng.integers(1, high + 1)))
    bounds, start = [], 0
    for width in widths:
        stop = min(n_cols, start + width)
        bounds.append((start, stop))
        start = stop
        if start == n_cols:
            break
    return bounds


def _row_groups(rng: np.random.Generator, n_rows: int) -> list[slice]:
    cuts = sorted(set(rng.integers(1, n_rows, size=int(rng.integers(0, 3))).tolist())) if n_rows > 1 else []
    edges = [0, *cuts, n_rows]
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]


def _stream(matrix, k, largest, bounds, groups, shuffle, rng):
    topk = StreamingTopK(matrix.shape[0], k, largest=largest)
    for rows in groups:
        order = rng.permutation(len(bounds)) if shuffle else range(len(bounds))
        for i in order:
            start, stop = bounds[i]
            topk.update(rows, start, matrix[rows, start:stop])
    return topk.result()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind", ["ties", "special", "normal"])
@pytest.mark.parametrize("largest", [True, False])
@pytest.mark.parametrize("seed", range(6))
def test_equals_a_full_stable_sort_for_any_splitting(seed, largest, kind, dtype):
    rng = np.random.default_rng([seed, largest, len(kind), np.dtype(dtype).itemsize])
    n_rows, n_cols = int(rng.integers(1, 9)), int(rng.integers(1, 60))
    matrix = _matrix(rng, n_rows, n_cols, kind, dtype)
    for k in sorted({1, min(2, n_cols), int(rng.integers(1, n_cols + 1)), n_cols}):
        expected_indices, expected_values = _reference(matrix, k, largest)
        for how in ("whole", "ones", "small", "mixed", "wide"):
            for shuffle in (False, True):
                bounds = _splits(rng, n_cols, k, how)
                indices, values = _stream(matrix, k, largest, bounds, _row_groups(rng, n_rows), shuffle, rng)
                where = f"k={k} splitting={how} shuffled={shuffle}"
                assert indices.dtype == np.int64 and values.dtype == np.float64, where
                assert np.array_equal(indices, expected_indices), where
                assert np.array_equal(values, expected_values, equal_nan=True), where
                assert np.array_equal(np.signbit(values), np.signbit(expected_values)), where  # -0.0 kept


@pytest.mark.parametrize("largest", [True, False])
def test_a_wide_float32_stream_with_ties_at_the_boundary(largest):
    """Blocks much wider than k whose k-th value is tied many times: the path the scoring loop takes."""
    rng = np.random.default_rng(11)
    matrix = np.round(rng.normal(size=(50, 3000)), 1).astype(np.float32)  # about 80 columns share each value
    k = 25
    topk = StreamingTopK(50, k, largest=largest)
    for rows in (slice(0, 32), slice(32, 50)):
        for start in range(0, 3000, 512):
            topk.update(rows, start, matrix[rows, start : start + 512])
    indices, values = topk.result()
    expected_indices, expected_values = _reference(matrix, k, largest)
    assert np.array_equal(indices, expected_indices) and np.array_equal(values, expected_values)


def test_float64_thresholds_against_float32_blocks():
    """A held value between two float32 numbers must not hide a float32 column that beats it."""
    above = np.nextafter(np.float32(1.0), np.float32(2.0))  # the float32 after 1
    held = np.float64(above) - 2.0**-30  # not a float32; rounds up to ``above``
    topk = StreamingTopK(1, 1, largest=True)
    topk.update(slice(0, 1), 0, np.array([[held]]))
    topk.update(slice(0, 1), 1, np.array([[1.0, above]], dtype=np.float32))
    indices, values = topk.result()
    assert indices.tolist() == [[2]] and values[0, 0] == np.float64(above)
    bottom = StreamingTopK(1, 1, largest=False)
    bottom.update(slice(0, 1), 0, np.array([[-held]]))
    bottom.update(slice(0, 1), 1, np.array([[-1.0, -above]], dtype=np.float32))
    assert bottom.result()[0].tolist() == [[2]]


def test_integer_blocks_and_empty_blocks():
    topk = StreamingTopK(2, 2, largest=False)
    topk.update(slice(0, 2), 0, np.zeros((2, 0)))
    topk.update(slice(0, 2), 0, np.array([[3, 1, 2], [0, 0, 0]]))
    indices, values = topk.result()
    assert indices.tolist() == [[1, 2], [0, 1]] and values.tolist() == [[1.0, 2.0], [0.0, 0.0]]
