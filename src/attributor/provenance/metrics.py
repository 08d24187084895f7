"""Similarity metrics between fingerprint vectors (registered by name; higher = more similar).

Every metric maps two 1-D float vectors to a similarity; the identical pair scores the
metric's maximum (1 for all of these). Vectors of different lengths are not comparable
(:class:`IncomparableError`), which similarity matrices record as a gap, not a number.

| name            | formula                                                        | range     |
|-----------------|----------------------------------------------------------------|-----------|
| l1              | 1 - sum|a'-b'| / (sum|a'| + sum|b'|), a' = |a| sorted descending | [0, 1]    |
| cosine          | a.b / (|a| |b|)                                                | [-1, 1]   |
| euclidean       | 1 / (1 + |a - b|)                                              | (0, 1]    |
| correlation     | Pearson correlation of the entries                             | [-1, 1]   |
| jensen_shannon  | 1 - JSD(a/sum a, b/sum b), base-2 logarithms (a, b >= 0)       | [0, 1]    |
| aligned_blocks  | mean cosine of the blocks matched by the best monotone         | [-1, 1]   |
|                 | alignment of two block fingerprints (weight_invariants, ...)   |           |
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Sequence

import numpy as np

from attributor.errors import DataError
from attributor.registry import Registered

__all__ = ["Similarity", "IncomparableError", "get_metric", "metric_names", "similarity_matrix"]


class IncomparableError(DataError):
    """Two fingerprints cannot be compared by a metric (different lengths or domains)."""


class Similarity(Registered, kind="similarity metric"):
    """A similarity between two fingerprint vectors; subclasses implement :meth:`_similarity`."""

    summary: str = ""

    def __call__(self, a: np.ndarray, b: np.ndarray) -> float:
        a = np.asarray(a, dtype=np.float64).ravel()
        b = np.asarray(b, dtype=np.float64).ravel()
        if a.shape != b.shape:
            raise IncomparableError(f"{self.key}: fingerprints of lengths {a.size} and {b.size} are not comparable")
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            raise DataError(f"{self.key}: a fingerprint contains NaN or inf")
        return float(self._similarity(a, b))

    @abstractmethod
    def _similarity(self, a: np.ndarray, b: np.ndarray) -> float: ...


class L1(Similarity, key="l1"):
    """1 - sum|a'-b'| / (sum|a'| + sum|b'|) on magnitudes sorted descending (the VAIL registry's l1)."""

    summary = "1 - L1 distance of magnitude-sorted vectors over their total mass (VAIL registry)"

    def _similarity(self, a, b):
        a, b = np.sort(np.abs(a))[::-1], np.sort(np.abs(b))[::-1]
        total = a.sum() + b.sum()
        return 1.0 if total == 0 else 1.0 - np.abs(a - b).sum() / total


class Cosine(Similarity, key="cosine"):
    """a.b / (|a| |b|); two zero vectors are identical (1), one zero vector scores 0."""

    summary = "cosine of the angle between the vectors"

    def _similarity(self, a, b):
        na, nb = np.linalg.norm(a), np.linalg.norm(b)
        if na == 0 or nb == 0:
            return 1.0 if na == nb else 0.0
        return float(np.clip(a @ b / (na * nb), -1.0, 1.0))


class Euclidean(Similarity, key="euclidean"):
    """1 / (1 + |a - b|_2)."""

    summary = "1 / (1 + euclidean distance)"

    def _similarity(self, a, b):
        return 1.0 / (1.0 + np.linalg.norm(a - b))


class Correlation(Similarity, key="correlation"):
    """Pearson correlation of the entries; a constant vector correlates 1 with itself, else 0."""

    summary = "Pearson correlation of the entries"

    def _similarity(self, a, b):
        a, b = a - a.mean(), b - b.mean()
        na, nb = np.linalg.norm(a), np.linalg.norm(b)
        if na == 0 or nb == 0:
            return 1.0 if np.array_equal(a, b) else 0.0
        return float(np.clip(a @ b / (na * nb), -1.0, 1.0))


class JensenShannon(Similarity, key="jensen_shannon"):
    """1 - JSD(P, Q) with P = a / sum a, Q = b / sum b and base-2 logs (so JSD is in [0, 1]).

    JSD(P, Q) = (KL(P | M) + KL(Q | M)) / 2, M = (P + Q) / 2. Entries must be non-negative.
    """

    summary = "1 - Jensen-Shannon divergence (base 2) of the vectors as distributions"

    def _similarity(self, a, b):
        if (a < 0).any() or (b < 0).any() or a.sum() == 0 or b.sum() == 0:
            raise IncomparableError("jensen_shannon needs non-negative fingerprints with positive mass")
        p, q = a / a.sum(), b / b.sum()
        m = (p + q) / 2

        def kl(x: np.ndarray) -> float:
            nz = x > 0
            return float((x[nz] * np.log2(x[nz] / m[nz])).sum())

        return 1.0 - float(np.clip((kl(p) + kl(q)) / 2, 0.0, 1.0))


class AlignedBlocks(Similarity, key="aligned_blocks"):
    """Block fingerprints (:func:`attributor.provenance.weight_fingerprints.pack_blocks`) under the best layer alignment.

    S[i, j] is the mean over terms t of cos(a_i^t, b_j^t) for block i of a and block j of b.
    With m = min(L_a, L_b) blocks, every block of the shorter model is matched to a distinct
    block of the longer one in increasing order (a dropped block is skipped, never crossed),
    the alignment maximising sum S over the matched pairs (dynamic programming, O(L_a L_b)),
    and the similarity is that sum / m. Fingerprints of different term counts, term lengths or
    vocabulary signatures are :class:`IncomparableError`.
    """

    summary = "mean block cosine under the best monotone alignment of two models' layers (block fingerprints)"

    def __call__(self, a: np.ndarray, b: np.ndarray) -> float:
        a = np.asarray(a, dtype=np.float64).ravel()
        b = np.asarray(b, dtype=np.float64).ravel()
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            raise DataError(f"{self.key}: a fingerprint contains NaN or inf")
        return float(self._similarity(a, b))

    def _similarity(self, a, b):
        from attributor.provenance.weight_fingerprints import unpack_blocks

        (blocks_a, sig_a), (blocks_b, sig_b) = unpack_blocks(a), unpack_blocks(b)
        if blocks_a.shape[1:] != blocks_b.shape[1:] or sig_a != sig_b:
            raise IncomparableError(f"{self.key}: block fingerprints of other probes, terms or vocabularies are not comparable")
        scores = block_similarities(blocks_a, blocks_b)
        return best_monotone_alignment(scores if scores.shape[0] <= scores.shape[1] else scores.T)


def block_similarities(blocks_a: np.ndarray, blocks_b: np.ndarray) -> np.ndarray:
    """(L_a, L_b) mean over terms of the cosine of block i of a and block j of b ((L, T, m) arrays)."""
    def unit(x: np.ndarray) -> np.ndarray:
        norms = np.linalg.norm(x, axis=-1, keepdims=True)
        return x / np.where(norms > 0, norms, 1.0)

    return np.einsum("itm,jtm->ij", unit(blocks_a), unit(blocks_b)) / blocks_a.shape[1]


def best_monotone_alignment(scores: np.ndarray) -> float:
    """Max over increasing matchings of all L_a rows to distinct columns (L_a <= L_b) of the mean matched score."""
    rows, cols = scores.shape
    best = np.full((rows + 1, cols + 1), -np.inf)
    best[0, :] = 0.0
    for i in range(1, rows + 1):
        for j in range(i, cols + 1):
            best[i, j] = max(best[i, j - 1], best[i - 1, j - 1] + scores[i - 1, j - 1])
    return float(np.clip(best[rows, cols] / rows, -1.0, 1.0))


def metric_names() -> list[str]:
    return Similarity.names()


def get_metric(name: str) -> Similarity:
    """The metric registered as ``name`` (:class:`UnknownNameError` lists the known ones)."""
    return Similarity.lookup(name)()


def similarity_matrix(vectors: Sequence[np.ndarray], metric: str | Similarity) -> np.ndarray:
    """Symmetric (n, n) matrix of pairwise similarities; NaN where two vectors are incomparable."""
    metric = get_metric(metric) if isinstance(metric, str) else metric
    n = len(vectors)
    out = np.full((n, n), np.nan)
    for i in range(n):
        for j in range(i, n):
            try:
                out[i, j] = out[j, i] = metric(vectors[i], vectors[j])
            except IncomparableError:
                pass
    return out
