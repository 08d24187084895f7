"""attributor.reports.plots: each plot writes a PNG and a CSV matching its data."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from attributor.errors import DataError
from attributor.reports import (
    plot_run_comparison,
    plot_score_distribution_by_class,
    plot_self_influence_by_group,
    plot_top_influential,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def digits():
    """A small digits problem: 200 train / 12 query examples, 8x8 images, 10% labels flipped."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    rng = np.random.default_rng(0)
    train_x, train_y, query_x, query_y = x[:200], y[:200].copy(), x[200:212], y[200:212]
    flipped = np.zeros(200, dtype=bool)
    flipped[rng.choice(200, size=20, replace=False)] = True
    train_y[flipped] = (train_y[flipped] + rng.integers(1, 10, size=20)) % 10
    # scores: similarity of inputs, positive for same (given) label, negative otherwise
    sim = query_x @ train_x.T
    scores = np.where(query_y[:, None] == train_y[None, :], sim, -0.3 * sim).astype(np.float64)
    return dict(train_x=train_x, train_y=train_y, query_x=query_x, query_y=query_y,
                flipped=flipped, scores=scores)


def _read_csv(png: Path) -> list[dict[str, str]]:
    with open(png.with_suffix(".csv"), newline="") as handle:
        return list(csv.DictReader(handle))


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 1000


def _topk(scores: np.ndarray, k: int):
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    bottom = np.argsort(scores, axis=1, kind="stable")[:, :k]
    return top, np.take_along_axis(scores, top, 1), bottom, np.take_along_axis(scores, bottom, 1)


# -- self-influence ------------------------------------------------------------------
def test_self_influence_png_and_csv(tmp_path, digits):
    rng = np.random.default_rng(1)
    values = rng.lognormal(size=200) * np.where(digits["flipped"], 10.0, 1.0)
    groups = np.where(digits["flipped"], "flipped", "clean")
    out = plot_self_influence_by_group(values, list(groups), tmp_path / "nested" / "self.png")
    assert out == tmp_path / "nested" / "self.png"
    _assert_png(out)
    rows = _read_csv(out)
    assert len(rows) == 200
    assert list(rows[0]) == ["index", "group", "value"]
    assert [r["group"] for r in rows] == list(groups)
    np.testing.assert_array_equal([float(r["value"]) for r in rows], values)
    assert [int(r["index"]) for r in rows] == list(range(200))


def test_self_influence_non_positive_values_use_linear_bins(tmp_path):
    values = np.array([-1.0, 0.0, 2.0, 3.0, 3.0])
    out = plot_self_influence_by_group(values, ["a", "a", "b", "b", "b"], tmp_path / "lin.png")
    _assert_png(out)
    assert len(_read_csv(out)) == 5


@pytest.mark.parametrize(
    "values, groups, match",
    [
        (np.array([1.0, np.nan, 2.0]), ["a", "b", "a"], "NaN"),
        (np.array([1.0, 2.0, 3.0]), ["a", "b"], "groups has 2"),
        (np.ones((2, 2)), ["a", "b"], "1-D"),
    ],
)
def test_self_influence_bad_input(tmp_path, values, groups, match):
    with pytest.raises(DataError, match=match):
        plot_self_influence_by_group(values, groups, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


# -- score distribution --------------------------------------------------------------
def test_score_distribution_summary_matches_data(tmp_path, digits):
    scores, qy, ty = digits["scores"], digits["query_y"], digits["train_y"]
    out = plot_score_distribution_by_class(scores, qy, ty, tmp_path / "dist.png")
    _assert_png(out)
    rows = _read_csv(out)
    assert list(rows[0]) == ["query_class", "relation", "count", "mean", "median", "q05", "q95"]
    expected = {(int(c), rel) for c in np.unique(qy) for rel in ("same-class", "other-class")}
    assert {(int(r["query_class"]), r["relation"]) for r in rows} == expected
    for r in rows:
        c = int(r["query_class"])
        cols = (ty == c) if r["relation"] == "same-class" else (ty != c)
        data = scores[qy == c][:, cols].ravel()
        assert int(r["count"]) == data.size
        assert float(r["mean"]) == pytest.approx(data.mean())
        assert float(r["median"]) == pytest.approx(np.median(data))
        assert float(r["q05"]) <= float(r["median"]) <= float(r["q95"])
    # the constructed scores are positive for same-class and negative for other-class
    same = [float(r["mean"]) for r in rows if r["relation"] == "same-class"]
    other = [float(r["mean"]) for r in rows if r["relation"] == "other-class"]
    assert min(same) > 0 > max(other)


def test_score_distribution_subsamples_large_input(tmp_path):
    rng = np.random.default_rng(2)
    scores = rng.normal(size=(300, 1000))  # 300k > 200k points
    out = plot_score_distribution_by_class(scores, rng.integers(0, 10, 300), rng.integers(0, 10, 1000),
                                           tmp_path / "big.png")
    rows = _read_csv(out)
    assert sum(int(r["count"]) for r in rows) == scores.size  # summary uses every score


def test_score_distribution_bad_input(tmp_path, digits):
    scores, qy, ty = digits["scores"], digits["query_y"], digits["train_y"]
    with pytest.raises(DataError, match="train_labels"):
        plot_score_distribution_by_class(scores, qy, ty[:-1], tmp_path / "x.png")
    with pytest.raises(DataError, match="query_labels"):
        plot_score_distribution_by_class(scores, qy[:-1], ty, tmp_path / "x.png")
    bad = scores.copy()
    bad[3, 4] = np.inf
    with pytest.raises(DataError, match="NaN/inf"):
        plot_score_distribution_by_class(bad, qy, ty, tmp_path / "x.png")


# -- top influential -----------------------------------------------------------------
@pytest.mark.parametrize("image_shape", [(8, 8), None])
def test_top_influential_grid_and_csv(tmp_path, digits, image_shape):
    k, n_queries = 4, 3
    top_i, top_v, bot_i, bot_v = _topk(digits["scores"], 7)
    out = plot_top_influential(
        digits["query_x"], digits["query_y"], digits["train_x"], digits["train_y"],
        top_i, top_v, bot_i, bot_v, tmp_path / "top.png", image_shape=image_shape,
        n_queries=n_queries, k=k, flipped=digits["flipped"],
    )
    _assert_png(out)
    rows = _read_csv(out)
    assert len(rows) == n_queries * k * 2
    assert list(rows[0]) == ["query", "kind", "rank", "train_index", "score", "train_label"]
    for r in rows:
        q, rank = int(r["query"]), int(r["rank"])
        idx, val = (top_i, top_v) if r["kind"] == "proponent" else (bot_i, bot_v)
        assert r["kind"] in ("proponent", "opponent")
        assert int(r["train_index"]) == idx[q, rank]
        assert float(r["score"]) == val[q, rank]
        assert int(r["train_label"]) == digits["train_y"][idx[q, rank]]
    assert {int(r["query"]) for r in rows} == set(range(n_queries))


def test_top_influential_bad_input(tmp_path, digits):
    top_i, top_v, bot_i, bot_v = _topk(digits["scores"], 5)
    args = (digits["query_x"], digits["query_y"], digits["train_x"], digits["train_y"])
    with pytest.raises(DataError, match="only 200 training"):
        plot_top_influential(*args, top_i + 1000, top_v, bot_i, bot_v, tmp_path / "t.png")
    with pytest.raises(DataError, match="image_shape"):
        plot_top_influential(*args, top_i, top_v, bot_i, bot_v, tmp_path / "t.png", image_shape=(7, 7))
    with pytest.raises(DataError, match="must match"):
        plot_top_influential(*args, top_i, top_v[:, :3], bot_i, bot_v, tmp_path / "t.png")
    with pytest.raises(DataError, match="flipped"):
        plot_top_influential(*args, top_i, top_v, bot_i, bot_v, tmp_path / "t.png", flipped=np.zeros(5, bool))
    nan_q = digits["query_x"].copy()
    nan_q[0, 0] = np.nan
    with pytest.raises(DataError, match="query_inputs"):
        plot_top_influential(nan_q, *args[1:], top_i, top_v, bot_i, bot_v, tmp_path / "t.png")


# -- run comparison ------------------------------------------------------------------
def test_run_comparison_csv_and_correlation(tmp_path):
    rng = np.random.default_rng(3)
    a = rng.normal(size=500)
    b = 2.0 * a + rng.normal(scale=0.1, size=500)
    out = plot_run_comparison(a, b, "run 1", "run 2", tmp_path / "cmp.png")
    _assert_png(out)
    rows = _read_csv(out)
    assert list(rows[0]) == ["index", "run 1", "run 2"]
    assert len(rows) == 500
    np.testing.assert_array_equal([float(r["run 1"]) for r in rows], a)
    np.testing.assert_array_equal([float(r["run 2"]) for r in rows], b)


def test_run_comparison_correlations_match_scipy():
    from scipy import stats

    from attributor.reports.plots import _correlations

    rng = np.random.default_rng(4)
    a = rng.normal(size=300)
    b = np.round(a + rng.normal(size=300), 1)  # ties in b
    spearman, pearson = _correlations(a, b)
    assert spearman == pytest.approx(stats.spearmanr(a, b)[0])
    assert pearson == pytest.approx(stats.pearsonr(a, b)[0])


def test_run_comparison_bad_input(tmp_path):
    with pytest.raises(DataError, match="same length"):
        plot_run_comparison(np.ones(5), np.ones(6), "a", "b", tmp_path / "c.png")
    with pytest.raises(DataError, match="NaN"):
        plot_run_comparison(np.array([1.0, np.nan, 3.0]), np.ones(3), "a", "b", tmp_path / "c.png")
    assert not (tmp_path / "c.png").exists() and not (tmp_path / "c.csv").exists()
