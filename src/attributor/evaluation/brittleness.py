"""Brittleness (Ilyas et al. 2022; TRAK section 5): how few training examples, removed by
an attribution's ranking, flip a test prediction.

For each query that the full model classifies correctly and each k in a grid, retrain
without the query's k strongest proponents (the examples that push its margin up); the
query's brittleness is the smallest k whose retrain misclassifies it. The same with k
random training examples is the baseline. Smaller is better for the attribution.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from attributor.errors import DataError
from attributor.evaluation.retrain import Executor, Recipe, retrain

__all__ = ["brittleness"]


def brittleness(
    scores: np.ndarray,
    recipe: Recipe,
    queries: Sequence[int],
    labels: np.ndarray,
    cache_dir: str | os.PathLike[str],
    *,
    ks: Sequence[int] = (10, 20, 40, 80),
    seed: int = 0,
    executor: Executor | None = None,
    progress: bool = True,
) -> dict[str, object]:
    """Smallest k that flips each query, by the attribution's ranking and at random.

    Args:
        scores: (n_query, n_train) attributions; ``queries`` index its rows and the
            recipe's query outputs.
        labels: (n_query,) true labels of the recipe's queries.

    Returns ``{"ks", "flip_k", "flip_k_random", "flipped_fraction", "flipped_fraction_random"}``
    where ``flip_k`` holds, per query, the smallest flipping k or NaN if none in the grid.
    """
    scores = np.asarray(scores)
    n_train = scores.shape[1]
    if max(ks) >= n_train:
        raise DataError(f"brittleness grid {list(ks)} must stay below n_train={n_train}")
    rng = np.random.default_rng(seed)
    masks, owners = [], []
    for q in queries:
        order = np.argsort(-scores[q], kind="stable")
        random_order = rng.permutation(n_train)
        for kind, ranking in (("attribution", order), ("random", random_order)):
            for k in ks:
                mask = np.ones(n_train, dtype=bool)
                mask[ranking[:k]] = False
                masks.append(mask)
                owners.append((q, kind, k))
    outputs = retrain(recipe, np.stack(masks), cache_dir, executor=executor, progress=progress)["prediction"]
    flip = {kind: {q: np.nan for q in queries} for kind in ("attribution", "random")}
    for row, (q, kind, k) in enumerate(owners):
        if outputs[row, q] != labels[q] and np.isnan(flip[kind][q]):
            flip[kind][q] = k  # ks are visited in increasing order
    attribution = np.array([flip["attribution"][q] for q in queries])
    random = np.array([flip["random"][q] for q in queries])
    return {
        "ks": list(ks),
        "flip_k": attribution,
        "flip_k_random": random,
        "flipped_fraction": float(np.isfinite(attribution).mean()),
        "flipped_fraction_random": float(np.isfinite(random).mean()),
    }
