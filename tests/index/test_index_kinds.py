"""Every registered index kind: conformance, recall against exact search, flat == numpy."""

from __future__ import annotations

import json

import numpy as np
import pytest
from index_support import FAST, recall_at

from attributor.errors import ConfigError, DataError, UnknownNameError
from attributor.index import Index, build_index, index_kinds, open_index

# recall@10 against exact search at the saved search params (FAST build params):
# HNSW and 8-bit IVF are near exact here; PQ is capped by its 48-byte codes.
RECALL_BAR = {"flat": 1.0, "hnsw": 0.95, "ivf-sq8": 0.95, "ivf-pq": 0.7}


def test_kinds_are_registered():
    assert index_kinds() == ["flat", "hnsw", "ivf-pq", "ivf-sq8"]


@pytest.mark.parametrize("kind", index_kinds())
def test_conformance(kind, built, vectors):
    index, (rows, queries) = built[kind], vectors
    assert isinstance(index, Index) and index.kind == kind
    assert (index.n, index.dim, index.metric, index.normalize) == (len(rows), rows.shape[1], "ip", False)
    spec = index.spec()
    assert json.loads(json.dumps(spec)) == spec and spec["kind"] == kind and spec["split"] == "train"
    scores, ids = index.search(queries, 10)
    assert scores.shape == ids.shape == (len(queries), 10)
    assert scores.dtype == np.float32 and ids.dtype == np.int64
    assert ((ids >= 0) & (ids < index.n)).all()
    assert (np.diff(scores, axis=1) <= 1e-6).all(), "scores are sorted, best first"
    again = open_index(index.path)
    scores2, ids2 = again.search(queries, 10)
    np.testing.assert_array_equal(ids2, ids)
    np.testing.assert_array_equal(scores2, scores)
    assert again.spec() == spec
    one_s, one_i = index.search(queries[:1], 3)
    assert one_s.shape == (1, 3)
    assert index.search(queries[:0], 5)[1].shape == (0, 5)


@pytest.mark.parametrize("kind", index_kinds())
def test_recall_at_10_against_exact_search(kind, built, vectors, exact):
    _, ids = built[kind].search(vectors[1], 10)
    assert recall_at(ids, exact, 10) >= RECALL_BAR[kind]


def test_flat_equals_numpy_exact_topk(built, vectors, exact):
    rows, queries = vectors
    scores, ids = built["flat"].search(queries, 10)
    np.testing.assert_array_equal(ids, exact)
    expected = np.take_along_axis(queries.astype(np.float64) @ rows.astype(np.float64).T, exact, 1)
    np.testing.assert_allclose(scores, expected, atol=1e-5)


def test_l2_metric_scores_are_negative_squared_distances(store, vectors, tmp_path):
    rows, queries = vectors
    index = build_index(store, tmp_path / "l2", "flat", metric="l2", progress=False)
    scores, ids = index.search(queries, 5)
    q64, r64 = queries.astype(np.float64), rows.astype(np.float64)
    d2 = (q64 ** 2).sum(1)[:, None] - 2 * q64 @ r64.T + (r64 ** 2).sum(1)[None]
    np.testing.assert_array_equal(ids, np.argsort(d2, axis=1, kind="stable")[:, :5])
    np.testing.assert_allclose(scores, -np.take_along_axis(d2, ids, 1), atol=1e-4)


def test_normalize_gives_cosine(tmp_path, vectors):
    from index_support import make_store

    rows, queries = vectors
    scale = np.random.default_rng(0).uniform(0.1, 10, size=(len(rows), 1)).astype(np.float32)
    store = make_store(tmp_path / "scaled", rows * scale)
    index = build_index(store, tmp_path / "cos", "flat", normalize=True, progress=False)
    scores, ids = index.search(queries * 3.0, 10)
    cosine = queries.astype(np.float64) @ rows.astype(np.float64).T
    np.testing.assert_array_equal(ids, np.argsort(-cosine, axis=1, kind="stable")[:, :10])
    np.testing.assert_allclose(scores, np.take_along_axis(cosine, ids, 1), atol=1e-5)


def test_search_params_at_query_time(built, vectors, exact):
    queries = vectors[1]
    ivf = built["ivf-sq8"]
    low, high = (recall_at(ivf.search(queries, 10, nprobe=p)[1], exact, 10) for p in (1, ivf.params["nlist"]))
    assert low < high and high >= 0.97
    hnsw = built["hnsw"]
    assert recall_at(hnsw.search(queries, 10, ef_search=256)[1], exact, 10) >= \
        recall_at(hnsw.search(queries, 10, ef_search=10)[1], exact, 10)
    with pytest.raises(DataError, match="no search parameter 'nprobe'"):
        hnsw.search(queries, 10, nprobe=4)
    with pytest.raises(DataError, match="positive integer"):
        ivf.search(queries, 10, nprobe=0)


def test_k_above_n_is_clipped_and_unfilled_slots_are_minus_one(store, vectors, tmp_path):
    queries = vectors[1]
    index = build_index(store, tmp_path / "ivf", "ivf-sq8", nlist=32, progress=False)
    scores, ids = index.search(queries[:4], 10 * index.n, nprobe=1)
    assert ids.shape == (4, index.n)
    assert (ids == -1).any() and np.isneginf(scores[ids == -1]).all() and np.isfinite(scores[ids >= 0]).all()
    full_s, full_i = index.search(queries[:2], index.n + 5, nprobe=32)
    assert sorted(full_i[0]) == list(range(index.n))


def test_wrong_query_dimension_is_refused_naming_both(built, vectors):
    queries = vectors[1]
    with pytest.raises(DataError, match=rf"dimension 7 .*{queries.shape[1]}-dimensional"):
        built["flat"].search(np.zeros((2, 7), np.float32), 3)
    with pytest.raises(DataError, match="2-d"):
        built["flat"].search(queries[0], 3)
    with pytest.raises(DataError, match="NaN"):
        built["flat"].search(np.full_like(queries[:1], np.nan), 3)
    with pytest.raises(DataError, match="k must be"):
        built["flat"].search(queries, 0)


def test_bad_build_arguments(store, tmp_path):
    with pytest.raises(UnknownNameError, match="unknown index kind 'annoy'.*flat, hnsw, ivf-pq, ivf-sq8"):
        build_index(store, tmp_path / "x", "annoy")
    with pytest.raises(ConfigError, match="no parameter 'efs'"):
        build_index(store, tmp_path / "x", "hnsw", efs=3)
    with pytest.raises(ConfigError, match="metric"):
        build_index(store, tmp_path / "x", "flat", metric="cosine")
    with pytest.raises(ConfigError, match="m to divide"):
        build_index(store, tmp_path / "x", "ivf-pq", m=7)
    with pytest.raises(ConfigError, match="positive integer"):
        build_index(store, tmp_path / "x", "hnsw", M=0)
    with pytest.raises(ConfigError, match="checkpoint"):
        build_index(store, tmp_path / "x", "flat", checkpoint=3)
    assert not (tmp_path / "x").exists()


def test_ivf_builds_are_reproducible(store, tmp_path):
    first = build_index(store, tmp_path / "a", "ivf-sq8", nlist=16, train_size=500, progress=False)
    second = build_index(store, tmp_path / "b", "ivf-sq8", nlist=16, train_size=500, progress=False)
    assert first.manifest["sha256"] == second.manifest["sha256"]
    third = build_index(store, tmp_path / "c", "ivf-sq8", nlist=16, train_size=500, seed=1, progress=False)
    assert third.manifest["sha256"] != first.manifest["sha256"]


def test_fast_params_cover_every_kind():
    assert set(FAST) == set(index_kinds())
