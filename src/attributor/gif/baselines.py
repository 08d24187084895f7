"""Retrieval baselines on the same queries: BM25 (bm25s) and a seeded random ranking.

BM25 over the training texts is the baseline that beat gradient and embedding retrieval
at finding the passages that state a fact in FTRACE (Akyurek et al. 2022, table 2).
Each ``rank(items, k)`` returns training row ids (q, k), best first.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from attributor.gif.fingerprints import item_texts

__all__ = ["BM25Ranker", "RandomRanker"]


class BM25Ranker:
    """BM25 (bm25s defaults: k1 1.5, b 0.75), English stopwords removed."""

    def __init__(self, stopwords: str | None = "en"):
        self.stopwords = stopwords

    def fit(self, items: Sequence[Any]) -> "BM25Ranker":
        import bm25s

        self.n_ = len(items)
        self.retriever_ = bm25s.BM25()
        self.retriever_.index(bm25s.tokenize(item_texts(items), stopwords=self.stopwords, show_progress=False),
                              show_progress=False)
        return self

    def rank(self, items: Sequence[Any], k: int) -> np.ndarray:
        import bm25s

        k = min(k, self.n_)
        tokens = bm25s.tokenize(item_texts(items), stopwords=self.stopwords, show_progress=False)
        ids, _ = self.retriever_.retrieve(tokens, k=k, show_progress=False, n_threads=1)
        return np.asarray(ids)


class RandomRanker:
    """A uniformly random ranking per query (seeded): the chance line."""

    def __init__(self, seed: int = 0):
        self.seed = seed

    def fit(self, items: Sequence[Any]) -> "RandomRanker":
        self.n_ = len(items)
        return self

    def rank(self, items: Sequence[Any], k: int) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        return np.stack([rng.permutation(self.n_)[:k] for _ in items])
