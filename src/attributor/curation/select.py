"""Selection rules: which training examples to keep (and with what weight) at a budget.

Every rule returns a boolean mask (n,) keeping exactly ``round(budget * n)`` examples
(ties broken by index), except :func:`reweight`, which returns weights. Inputs are plain
arrays so that the rules serve the benchmark and a user's own pipeline alike.

* :func:`random_keep`: a seeded uniform sample (the baseline every rule must beat);
* :func:`top_keep`: the examples with the largest ``scores`` (individual influence,
  negative loss for loss-rank, an alignment score for the CLIP-score filter);
* :func:`cluster_keep`: whole clusters in order of their influence, the last cluster
  partially (its members by their own influence): InfluenceSpace's pruning; optionally
  within each stratum (class) so that no class is dropped whole;
* :func:`k_center_greedy`: Sener & Savarese (2018), the farthest-point cover of the
  embeddings (diversity);
* :func:`semantic_dedup`: SemDeDup (Abbas et al. 2023): within each k-means cluster, drop
  the member whose nearest other member is most similar, repeatedly, until the budget;
* :func:`reweight`: per-cluster weights from influence, capped and normalised to mean 1.
"""

from __future__ import annotations

import numpy as np

from attributor.errors import ConfigError

__all__ = ["budget_size", "random_keep", "top_keep", "cluster_keep", "k_center_greedy", "semantic_dedup", "reweight"]


def budget_size(n: int, budget: float) -> int:
    if not (isinstance(budget, (int, float)) and 0 < budget <= 1):
        raise ConfigError(f"budget must be a fraction in (0, 1], got {budget!r}")
    return max(1, int(round(budget * n)))


def _mask(n: int, keep: np.ndarray) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    mask[keep] = True
    return mask


def random_keep(n: int, budget: float, seed: int = 0) -> np.ndarray:
    return _mask(n, np.random.default_rng(seed).permutation(n)[:budget_size(n, budget)])


def top_keep(scores: np.ndarray, budget: float) -> np.ndarray:
    """Keep the largest ``scores`` (NaN counts as the smallest)."""
    scores = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf)
    order = np.lexsort((np.arange(len(scores)), -scores))
    return _mask(len(scores), order[:budget_size(len(scores), budget)])


def cluster_keep(clusters: np.ndarray, cluster_scores: np.ndarray, member_scores: np.ndarray, budget: float,
                 strata: np.ndarray | None = None) -> np.ndarray:
    """Whole clusters by ``cluster_scores`` (largest first) until the budget; the cluster that
    crosses it contributes its members with the largest ``member_scores``.

    ``strata`` (e.g. the labels): the budget is applied within each stratum separately
    (``round(budget * size)`` of each), so that no class is dropped whole; clusters are
    then ranked within a stratum (give clusters that do not straddle strata, e.g. one id
    per (cluster, label) pair).
    """
    clusters = np.asarray(clusters)
    if strata is not None:
        strata = np.asarray(strata)
        mask = np.zeros(len(clusters), dtype=bool)
        for value in np.unique(strata):
            members = np.flatnonzero(strata == value)
            inner = cluster_keep(clusters[members], cluster_scores, np.asarray(member_scores)[members], budget)
            mask[members[inner]] = True
        return mask
    n, size = len(clusters), budget_size(len(clusters), budget)
    order = np.lexsort((np.arange(len(cluster_scores)), -np.asarray(cluster_scores, dtype=np.float64)))
    keep: list[np.ndarray] = []
    left = size
    for c in order:
        members = np.flatnonzero(clusters == c)
        if left <= 0:
            break
        if len(members) == 0:
            continue
        if len(members) > left:
            ranked = members[np.lexsort((members, -np.asarray(member_scores, dtype=np.float64)[members]))]
            members = ranked[:left]
        keep.append(members)
        left -= len(members)
    return _mask(n, np.concatenate(keep) if keep else np.zeros(0, dtype=np.int64))


def k_center_greedy(embeddings: np.ndarray, budget: float, seed: int = 0) -> np.ndarray:
    """The farthest-point cover: start at a seeded example, add the one farthest from the kept set."""
    x = np.asarray(embeddings, dtype=np.float64)
    n, size = len(x), budget_size(len(x), budget)
    first = int(np.random.default_rng(seed).integers(n))
    keep = [first]
    distance = ((x - x[first]) ** 2).sum(1)
    for _ in range(size - 1):
        nxt = int(np.argmax(distance))
        keep.append(nxt)
        distance = np.minimum(distance, ((x - x[nxt]) ** 2).sum(1))
    return _mask(n, np.array(keep))


def semantic_dedup(embeddings: np.ndarray, clusters: np.ndarray, budget: float) -> np.ndarray:
    """SemDeDup to a budget: repeatedly drop the example with the most similar other member
    of its cluster (cosine), so the most redundant examples go first."""
    x = np.asarray(embeddings, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    n, size = len(x), budget_size(len(x), budget)
    redundancy = np.full(n, -np.inf)
    for c in np.unique(clusters):
        members = np.flatnonzero(clusters == c)
        if len(members) < 2:
            continue
        sim = x[members] @ x[members].T
        np.fill_diagonal(sim, -np.inf)
        # the earlier member of a near-duplicate pair is kept: only later members carry the pair's similarity
        upper = np.triu(np.ones_like(sim, dtype=bool), 1)
        redundancy[members] = np.where(upper.T, sim, -np.inf).max(axis=1)
    order = np.lexsort((np.arange(n), redundancy))  # least redundant first
    return _mask(n, order[:size])


def reweight(clusters: np.ndarray, cluster_scores: np.ndarray, *, strength: float = 1.0, cap: float = 3.0) -> np.ndarray:
    """Per-example weights exp(strength * z(cluster score)), clipped to [0, cap], normalised to mean 1.

    z standardises the cluster scores (0 when all are equal), so harmful clusters get
    weights below 1 and helpful ones above, at most ``cap`` before normalisation.
    """
    scores = np.asarray(cluster_scores, dtype=np.float64)
    std = scores.std()
    z = (scores - scores.mean()) / std if std > 0 else np.zeros_like(scores)
    weights = np.clip(np.exp(strength * z), 0.0, cap)[np.asarray(clusters)]
    return weights * len(weights) / weights.sum()
