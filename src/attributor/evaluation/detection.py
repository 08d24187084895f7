"""Mislabel / poison detection and label agreement, each with its chance baseline.

* :func:`detection_auc`: ROC AUC of a suspicion score (e.g. self-influence) against the
  corrupted flags, beside the same AUC for seeded random rankings.
* :func:`recall_at_fractions`: the fraction of corrupted examples found when inspecting
  the top 5/10/20% by score; a random inspection finds that same fraction on average.
* :func:`label_agreement`: how often a query's top-k proponents carry the query's label,
  beside the agreement expected of k random training examples.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from attributor.errors import DataError

__all__ = ["detection_auc", "recall_at_fractions", "label_agreement"]


def detection_auc(scores: np.ndarray, flags: np.ndarray, *, n_random: int = 100, seed: int = 0) -> dict[str, float]:
    """ROC AUC of ``scores`` (n,) for the boolean ``flags`` (n,), higher = more suspicious.

    Returns ``{"auc", "auc_random", "auc_random_std"}``; the random baseline averages the
    AUC of ``n_random`` seeded random scorings.
    """
    from sklearn.metrics import roc_auc_score

    scores, flags = _check_pair(scores, flags)
    if flags.all() or not flags.any():
        raise DataError("detection AUC needs both corrupted and clean examples")
    rng = np.random.default_rng(seed)
    random_aucs = [roc_auc_score(flags, rng.random(len(flags))) for _ in range(n_random)]
    return {
        "auc": float(roc_auc_score(flags, scores)),
        "auc_random": float(np.mean(random_aucs)),
        "auc_random_std": float(np.std(random_aucs)),
    }


def recall_at_fractions(scores: np.ndarray, flags: np.ndarray, fractions: Sequence[float] = (0.05, 0.1, 0.2)) -> dict[str, float]:
    """Fraction of flagged examples among the top ``f * n`` by score, for each f.

    Keys are ``recall@5%`` etc.; a random inspection order has expected recall f.
    """
    scores, flags = _check_pair(scores, flags)
    order = np.argsort(-scores, kind="stable")
    total = max(int(flags.sum()), 1)
    return {f"recall@{round(f * 100)}%": float(flags[order[: int(round(f * len(scores)))]].sum() / total) for f in fractions}


def label_agreement(top_indices: np.ndarray, query_labels: np.ndarray, train_labels: np.ndarray) -> dict[str, float]:
    """Mean fraction of each query's top-k training examples that share the query's label.

    ``top_indices`` is (n_query, k). The baseline is the expected agreement of k training
    examples drawn uniformly at random: sum_c P_query(c) * P_train(c).
    """
    top_indices, query_labels, train_labels = np.asarray(top_indices), np.asarray(query_labels), np.asarray(train_labels)
    if top_indices.ndim != 2 or len(top_indices) != len(query_labels):
        raise DataError(f"top_indices must be (n_query, k) with n_query={len(query_labels)}, got {top_indices.shape}")
    agreement = (train_labels[top_indices] == query_labels[:, None]).mean()
    classes = np.union1d(query_labels, train_labels)
    p_query = np.array([(query_labels == c).mean() for c in classes])
    p_train = np.array([(train_labels == c).mean() for c in classes])
    return {"agreement": float(agreement), "agreement_random": float(p_query @ p_train)}


def _check_pair(scores: np.ndarray, flags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores, flags = np.asarray(scores, dtype=np.float64), np.asarray(flags, dtype=bool)
    if scores.shape != flags.shape or scores.ndim != 1:
        raise DataError(f"scores and flags must be 1-D of the same length, got {scores.shape} and {flags.shape}")
    if not np.isfinite(scores).all():
        raise DataError("scores contain NaN or inf")
    return scores, flags
