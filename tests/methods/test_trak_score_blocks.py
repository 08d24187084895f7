"""TRAK's scoring loop on a synthetic store: query groups, Q folded into the features, dtypes.

The store holds random features (no model): the closed form tau = 1/M sum_m
psi_m (K_m + lambda_m I)^{-1} Phi_m^T * Qbar is computed in numpy float64 and compared with
``score_blocks`` for every grouping of the query chunks, from one chunk per group to all.
"""

from __future__ import annotations

import numpy as np
import pytest

import attributor.methods.trak as trak_module
from attributor.features.store import FeatureStore
from attributor.methods import TRAK

N_TRAIN, N_QUERY, DIM, CHUNK, DAMPING = 45, 21, 6, 8, 1e-2


@pytest.fixture(scope="module", params=["float64", "float32"])
def store(request, tmp_path_factory):
    rng = np.random.default_rng(3)
    store = FeatureStore.create(tmp_path_factory.mktemp("trak-blocks") / "store",
                                {"dtype": request.param, "dim": DIM, "checkpoints": ["a", "b"], "chunk_size": CHUNK})
    data = {}
    for split, n in (("train", N_TRAIN), ("query", N_QUERY)):
        store.add_split(split, n)
        data[split] = [rng.normal(size=(n, DIM)) for _ in range(2)]
        data[split + "_q"] = [rng.uniform(0.1, 1.0, n) for _ in range(2)]
        with store.writing():
            for c in range(2):
                for index, start, stop in store.chunk_bounds(split):
                    store.write_chunk(split, c, index, data[split][c][start:stop], data[split + "_q"][c][start:stop])
    return store


def _closed_form(store: FeatureStore) -> np.ndarray:
    total = 0.0
    for c in range(2):
        phi, psi = store.features("train", c).astype(np.float64), store.features("query", c).astype(np.float64)
        kernel = phi.T @ phi
        lam = DAMPING * np.trace(kernel) / DIM
        total = total + psi @ np.linalg.solve(kernel + lam * np.eye(DIM), phi.T)
    q_bar = np.mean([store.out_to_loss("train", c).astype(np.float64) for c in range(2)], axis=0)
    return total / 2 * q_bar[None, :]


@pytest.mark.parametrize("block_bytes", [1, 2 * CHUNK * CHUNK * 8, 2**30])
def test_every_query_grouping_gives_the_closed_form(store, monkeypatch, block_bytes):
    monkeypatch.setattr(trak_module, "SCORE_BLOCK_BYTES", block_bytes)
    exact = _closed_form(store)
    method = TRAK(damping=DAMPING).fit(store)
    out = np.full(exact.shape, np.nan)
    groups = set()
    for rows, offset, block in method.score_blocks("query"):
        assert block.dtype == (np.float64 if store.dtype == np.float64 else np.float32)
        assert np.isnan(out[rows, offset : offset + block.shape[1]]).all()  # each entry once
        out[rows, offset : offset + block.shape[1]] = block
        groups.add((rows.start, rows.stop))
    assert not np.isnan(out).any()
    starts = sorted(groups)
    assert starts[0][0] == 0 and starts[-1][1] == N_QUERY and all(a[1] == b[0] for a, b in zip(starts, starts[1:]))
    if block_bytes == 1:
        assert len(groups) == len(store.chunk_bounds("query"))  # one chunk per group
    if block_bytes == 2**30:
        assert len(groups) == 1
    tolerance = 1e-9 if store.dtype == np.float64 else 1e-5
    assert np.max(np.abs(out - exact)) / np.max(np.abs(exact)) <= tolerance
    scores = method.score("query", topk=4)
    assert np.array_equal(scores.values, out.astype(scores.values.dtype))
    assert np.array_equal(scores.top_indices, np.argsort(-out, axis=1, kind="stable")[:, :4])
    assert np.array_equal(scores.bottom_indices, np.argsort(out, axis=1, kind="stable")[:, :4])


def test_dense_scores_refuse_blocks_that_leave_entries_unwritten(store, monkeypatch):
    """The dense matrix is allocated uninitialised: a method whose blocks miss an entry is caught."""
    method = TRAK(damping=DAMPING).fit(store)
    blocks = list(method.score_blocks("query"))
    monkeypatch.setattr(method, "score_blocks", lambda queries: iter(blocks[:-1]))
    with pytest.raises(RuntimeError, match="covered"):
        method.score("query", topk=2)
    assert method.score("query", topk=2, dense=False).values is None  # top-k only: nothing to cover
