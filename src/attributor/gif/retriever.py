"""GifRetriever: fingerprint a query, retrieve candidates from an index, optionally refine.

    query z --fingerprint--> h_z --index.search(top c)--> candidates C(z) --refiner--> ranked top k

Without a refiner the ranking is the index score <h_z, h_x> (for ``gif``:
alpha^2 cos(e_z, e_x) + beta^2 cos(c_z, c_x)). With :class:`TrakRefiner` the c candidates are
re-ranked by their TRAK score alone,

    score(z, x) = tau(z)_x = phi(z)^T (Phi^T Phi + lambda I)^{-1} phi(x) Qbar_x,   x in C(z),

the kernel fitted once over ALL training rows (so a candidate's score equals its entry in
exhaustive TRAK), only the c candidate columns computed per query: O(k^2 + c k) instead of
O(n k). With ``mix`` < 1 the final score blends both, each standardised over the query's
candidates (z(s) = (s - mean) / std, 0 where all are equal):

    score(z, x) = (1 - mix) z(<h_z, h_x>) + mix z(tau(z)_x),

so mix = 1 (the default) is TRAK alone and mix = 0 keeps the index order.
:class:`InfluenceRefiner` does the same with any fitted influence-function method
(``datainf``, ``if-ekfac``, ``if-lissa``, ``if-cg``, ``if-explicit``): its own score
-grad f(z)^T (C + lambda I)^{-1} grad l(x) for the candidates only (one inverse product
per query, exact per-example gradients of the candidate rows), equal to the candidate's
entry in the method's exhaustive scores. Examples outside
C(z) are never returned; the index score of each returned
candidate is kept as ``ann_scores``. Latency per query is split into embed, gradient,
search and refine (ms).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from attributor.errors import ConfigError, NotFittedError
from attributor.features.store import FeatureStore
from attributor.gif.fingerprints import Fingerprinter

__all__ = ["GifRetriever", "TrakRefiner", "InfluenceRefiner", "Retrieved"]


@dataclass
class Retrieved:
    """One query's answer: training row ids (best first), their final scores, the index
    scores of the same rows, and the latency breakdown in ms (the batch's time / queries)."""

    ids: np.ndarray
    scores: np.ndarray
    ann_scores: np.ndarray
    latency_ms: dict[str, float] = field(default_factory=dict)


class TrakRefiner:
    """Re-rank candidates by TRAK (:class:`attributor.methods.trak.TRAK`) over model-gradient features.

    Args:
        trak: a TRAK method fitted on a store of raw (not normalised) projected gradients.
        fingerprinter: a fitted ``model-gradient`` fingerprinter with ``normalize=False``, the
            same projection as the store (it computes phi(z) of new queries).
    """

    def __init__(self, trak: Any, fingerprinter: Fingerprinter | None = None):
        self.trak = trak
        self.fingerprinter = fingerprinter

    def fit(self) -> "TrakRefiner":
        store, split = self.trak._fitted()
        if len(self.trak.checkpoints_) != 1:
            raise ConfigError("TrakRefiner scores one checkpoint; fit TRAK with checkpoints=[c]")
        self.checkpoint_ = self.trak.checkpoints_[0]
        self.features_ = torch.from_numpy(np.ascontiguousarray(store.features(split, self.checkpoint_), dtype=np.float64))
        self.q_bar_ = torch.from_numpy(self.trak.out_to_loss_)
        return self

    def score_features(self, query_features: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """TRAK scores (q, c) of candidate rows ``candidates`` (q, c) for query features (q, k)."""
        if not hasattr(self, "features_"):
            raise NotFittedError("TrakRefiner is not fitted; call fit() first")
        left = self.trak.kernel_factors_[0].solve(torch.as_tensor(np.asarray(query_features), dtype=torch.float64))
        ids = torch.from_numpy(np.asarray(candidates, dtype=np.int64))
        phi = self.features_[ids]  # (q, c, k)
        return (torch.einsum("qk,qck->qc", left, phi) * self.q_bar_[ids]).numpy()

    def refine(self, items: Sequence[Any], candidates: np.ndarray, timing: dict[str, float]) -> np.ndarray:
        if self.fingerprinter is None:
            raise ConfigError("TrakRefiner needs a model-gradient fingerprinter to refine new queries")
        features, inner = self.fingerprinter.transform_timed(items)
        start = time.perf_counter()
        scores = self.score_features(features, candidates)
        timing["refine"] += inner["gradient"] + 1e3 * (time.perf_counter() - start)
        return scores


class InfluenceRefiner:
    """Re-rank candidates by a fitted influence-function method (:class:`attributor.methods.influence.InfluenceFunction`).

    Args:
        method: fitted on a TrainingContext whose split ``method.split_`` holds the indexed
            training rows in the same order as the fingerprint store.
        encode: ``encode(items) -> batch`` for the method's Task (e.g. token ids, attention
            mask and labels of a causal LM, right-padded), used for new queries.

    Cost per query: one measurement gradient, one inverse product, and the training-loss
    gradients of the candidate rows (taken from the method's in-memory gradient cache when
    it holds them, else computed for those rows only).
    """

    def __init__(self, method: Any, encode: Any):
        self.method = method
        self.encode = encode

    def fit(self) -> "InfluenceRefiner":
        from attributor.methods.influence import InfluenceFunction

        if not isinstance(self.method, InfluenceFunction):
            raise ConfigError(f"InfluenceRefiner needs an influence-function method (datainf, if-ekfac, if-lissa, if-cg, "
                              f"if-explicit), got {type(self.method).__name__}")
        self.method._fitted()
        cache = self.method.train_gradients_._cache
        self.cached_ = torch.cat([grads for _, _, grads in cache]) if cache is not None else None
        return self

    def score_items(self, items: Sequence[Any], candidates: np.ndarray) -> np.ndarray:
        """Influence scores (q, c) of candidate rows ``candidates`` (q, c) for query ``items``."""
        from attributor.features.gradients import per_example_gradients
        from attributor.methods._context import cast_batch, collate

        if not hasattr(self, "cached_"):
            raise NotFittedError("InfluenceRefiner is not fitted; call fit() first")
        method = self.method
        batch = cast_batch(self.encode(list(items)), torch.float64)
        query = per_example_gradients(method.model_, method.context_.task, batch, method.parameter_names_).detach()
        solved = method._inverse_hvp(query.T)  # (p, q)
        candidates = np.asarray(candidates, dtype=np.int64)
        rows = np.unique(candidates[candidates >= 0])
        if self.cached_ is not None:
            train = self.cached_[torch.from_numpy(rows)]
        else:
            dataset = method.context_.dataset(method.split_)
            train = torch.cat([per_example_gradients(method.model_, method.context_.task, collate(dataset, chunk),
                                                     method.parameter_names_, function="train_loss").detach()
                               for chunk in np.array_split(rows, max(1, -(-len(rows) // method.batch_size)))])
        position = {int(r): i for i, r in enumerate(rows)}
        take = torch.tensor([[position.get(int(c), 0) for c in row] for row in candidates]).reshape(len(candidates), -1)
        products = -(train @ solved)  # (rows, q): every candidate row against every query of the batch
        scores = torch.gather(products.T, 1, take)  # (q, c): each query's own candidates
        return np.where(candidates >= 0, scores.numpy(), -np.inf)

    def refine(self, items: Sequence[Any], candidates: np.ndarray, timing: dict[str, float]) -> np.ndarray:
        start = time.perf_counter()
        scores = self.score_items(items, candidates)
        timing["refine"] += 1e3 * (time.perf_counter() - start)
        return scores


class GifRetriever:
    """Fingerprinter + index over its store + optional refiner.

    Args:
        fingerprinter: fitted; the same one that wrote ``store``.
        store: the fingerprint store (split ``split``).
        refiner: e.g. :class:`TrakRefiner` (fitted), or None.
        candidates: how many index hits the refiner re-ranks (default 100).
        index_kind: ``exact`` (numpy) or an :mod:`attributor.index` kind (built into the store folder).
        index: an already built :class:`attributor.index.Index` over ``store`` (overrides ``index_kind``).
        mix: weight of the refiner's score in the final score (see the module docstring).

    Example (see tests/gif): ``GifRetriever(fp, store).fit().query(["Where was Ann born? Paris"], k=5)``.
    """

    def __init__(self, fingerprinter: Fingerprinter, store: FeatureStore, split: str = "train", refiner: Any = None,
                 candidates: int = 100, index_kind: str = "exact", mix: float = 1.0, index: Any = None):
        self.fingerprinter = fingerprinter
        self.store = store
        self.split = split
        self.refiner = refiner
        self.candidates = candidates
        self.index_kind = index_kind
        self.mix = mix
        self.index = index

    def fit(self) -> "GifRetriever":
        from attributor.gif.store import search_store

        if not isinstance(self.candidates, int) or self.candidates < 1:
            raise ConfigError(f"candidates must be a positive integer, got {self.candidates!r}")
        if not (isinstance(self.mix, (int, float)) and 0 <= self.mix <= 1):
            raise ConfigError(f"mix must be a number in [0, 1], got {self.mix!r}")
        spec = self.store.settings.get("fingerprinter", {})
        if spec.get("kind") != self.fingerprinter.key or spec.get("fit_digest") != self.fingerprinter.spec()["fit_digest"]:
            raise ConfigError(f"the store at {self.store.path} holds {spec.get('kind')!r} fingerprints of another fit; "
                              f"rewrite it with this {self.fingerprinter.key!r} fingerprinter")
        if self.index is not None:
            self.index.check_store(self.store)
            self.index_ = self.index
        else:
            self.index_ = search_store(self.store, split=self.split, kind=self.index_kind)
        return self

    def query(self, items: Sequence[Any], k: int = 10) -> list[Retrieved]:
        """The top ``k`` training rows per item, best first."""
        if not hasattr(self, "index_"):
            raise NotFittedError("GifRetriever is not fitted; call fit() first")
        if not len(items):
            return []
        timing = {"embed": 0.0, "gradient": 0.0, "search": 0.0, "refine": 0.0}
        rows, inner = self.fingerprinter.transform_timed(items)
        timing.update({key: timing[key] + value for key, value in inner.items()})
        start = time.perf_counter()
        depth = max(k, self.candidates) if self.refiner is not None else k
        ann_scores, ids = self.index_.search(rows, depth)
        timing["search"] += 1e3 * (time.perf_counter() - start)
        if self.refiner is not None:
            scores = self.refiner.refine(items, ids, timing)
            if self.mix < 1:
                scores = (1 - self.mix) * _standardised(ann_scores) + self.mix * _standardised(scores)
            order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
            ids, ann_scores, scores = (np.take_along_axis(a, order, 1) for a in (ids, ann_scores, scores))
        else:
            ids, ann_scores = ids[:, :k], ann_scores[:, :k]
            scores = ann_scores
        per_query = {key: value / len(items) for key, value in timing.items()}
        per_query["total"] = sum(per_query.values())
        return [Retrieved(ids[i], scores[i], ann_scores[i], dict(per_query)) for i in range(len(items))]


def _standardised(scores: np.ndarray) -> np.ndarray:
    """Each row (q, c) minus its mean, over its standard deviation (0 where the row is constant)."""
    scores = np.asarray(scores, dtype=np.float64)
    std = scores.std(axis=1, keepdims=True)
    return (scores - scores.mean(axis=1, keepdims=True)) / np.where(std > 0, std, 1.0)
