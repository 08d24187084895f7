"""Retrieval metrics of fact tracing over ranked lists with several gold rows per query.

For query i with gold set G_i and a ranked list R_i (best first, at most ``depth`` rows):

* reciprocal rank: 1 / (rank of the first gold row in R_i), 0 if none is in R_i (MRR@depth);
* recall@k = |G_i cap R_i[:k]| / min(|G_i|, k) (so recall@1 is "a gold row ranked first");
* strict recall@k = 1 if every gold row is in R_i[:k];
* precision@k = |G_i cap R_i[:k]| / k.

Means over queries; the MRR gets a percentile bootstrap 95% interval (queries resampled,
seeded). :func:`random_mrr` is the exact expectation of the MRR@depth of a uniformly random
ranking of n rows with g gold: sum_{r <= depth} P(first gold at r) / r,
P(first gold at r) = C(n - r, g - 1) / C(n, g).
"""

from __future__ import annotations

from math import comb
from typing import Sequence

import numpy as np

__all__ = ["retrieval_metrics", "random_mrr", "reciprocal_ranks"]


def reciprocal_ranks(ranked: Sequence[Sequence[int]], gold: Sequence[Sequence[int]]) -> np.ndarray:
    out = np.zeros(len(gold))
    for i, (row, truth) in enumerate(zip(ranked, gold)):
        hits = np.flatnonzero(np.isin(np.asarray(row), list(truth)))
        out[i] = 1.0 / (hits[0] + 1) if len(hits) else 0.0
    return out


def retrieval_metrics(ranked: Sequence[Sequence[int]], gold: Sequence[Sequence[int]], *, n_boot: int = 1000,
                      seed: int = 0) -> dict[str, float]:
    """MRR (with bootstrap 95% interval), recall@1/10, strict recall@10, precision@10."""
    rr = reciprocal_ranks(ranked, gold)
    rng = np.random.default_rng(seed)
    boot = rr[rng.integers(len(rr), size=(n_boot, len(rr)))].mean(1) if len(rr) else np.zeros(1)
    result = {"mrr": float(rr.mean()) if len(rr) else 0.0, "mrr_low": float(np.percentile(boot, 2.5)),
              "mrr_high": float(np.percentile(boot, 97.5))}
    for k in (1, 10):
        hits = np.array([len(set(np.asarray(row)[:k].tolist()) & set(truth)) for row, truth in zip(ranked, gold)], dtype=float)
        sizes = np.array([len(truth) for truth in gold], dtype=float)
        result[f"recall_at_{k}"] = float((hits / np.minimum(sizes, k)).mean())
        if k == 10:
            result["strict_recall_at_10"] = float((hits == sizes).mean())
            result["precision_at_10"] = float((hits / k).mean())
    return result


def random_mrr(n: int, g: int, depth: int | None = None) -> float:
    """Expected reciprocal rank of the first of ``g`` gold rows among ``n`` in a random order (ranks <= depth)."""
    depth = n if depth is None else min(depth, n)
    total = comb(n, g)
    return float(sum(comb(n - r, g - 1) / total / r for r in range(1, depth + 1)))
