"""Linear datamodeling score (LDS) and leave-one-out correlation.

LDS (Park et al., "TRAK", ICML 2023, section 2.2; Ilyas et al. 2022): draw m random
subsets S_1..S_m of the training set, each of a fraction alpha (0.5); retrain on each and
record the measured output f(z; theta_{S_k}) of every query z. An attribution tau
predicts g(z, S) = sum_{j in S} tau(z)_j. The LDS of query z is the Spearman rank
correlation over k of g(z, S_k) and f(z; theta_{S_k}); the reported LDS is the mean over
queries, with a bootstrap 95% interval over queries.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from attributor.errors import DataError

__all__ = ["lds", "lds_random", "loo_correlation", "spearman_columns", "paired_difference"]


def spearman_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman correlation of each column of ``a`` with the same column of ``b``, both (m, q).

    A column that is constant in either input gives NaN.
    """
    ra, rb = rankdata(a, axis=0), rankdata(b, axis=0)
    return _pearson_columns(ra, rb)


def _pearson_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    denominator = np.sqrt((a**2).sum(axis=0) * (b**2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (a * b).sum(axis=0) / denominator, np.nan)


def lds(scores: np.ndarray, masks: np.ndarray, actual: np.ndarray, *, n_bootstrap: int = 1000, seed: int = 0) -> dict[str, float | np.ndarray]:
    """LDS of ``scores`` (n_query, n_train) given subset ``masks`` (m, n_train) and the
    retrained models' outputs ``actual`` (m, n_query).

    Returns ``{"lds", "lds_low", "lds_high", "per_query"}``; queries whose correlation is
    undefined (constant outputs) are left out of the mean.
    """
    scores, masks, actual = np.asarray(scores, dtype=np.float64), np.asarray(masks, dtype=bool), np.asarray(actual, dtype=np.float64)
    if scores.ndim != 2 or masks.ndim != 2 or masks.shape[1] != scores.shape[1] or actual.shape != (masks.shape[0], scores.shape[0]):
        raise DataError(f"LDS needs scores (q, n), masks (m, n), actual (m, q); got {scores.shape}, {masks.shape}, {actual.shape}")
    if not (np.isfinite(scores).all() and np.isfinite(actual).all()):
        raise DataError("LDS inputs contain NaN or inf")
    predicted = masks.astype(np.float64) @ scores.T  # (m, q)
    per_query = spearman_columns(predicted, actual)
    valid = per_query[np.isfinite(per_query)]
    if valid.size == 0:
        raise DataError("LDS is undefined: every query's outputs or predictions are constant")
    rng = np.random.default_rng(seed)
    boots = valid[rng.integers(0, valid.size, size=(n_bootstrap, valid.size))].mean(axis=1)
    low, high = np.percentile(boots, [2.5, 97.5])
    return {"lds": float(valid.mean()), "lds_low": float(low), "lds_high": float(high), "per_query": per_query}


def paired_difference(a: np.ndarray, b: np.ndarray, *, n_bootstrap: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """Two methods' per-query LDS (``lds(...)["per_query"]``) compared paired by query: the mean
    of a - b over the queries where both are defined, with a bootstrap 95% interval over queries."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise DataError(f"paired_difference needs two (q,) arrays of the same queries; got {a.shape} and {b.shape}")
    both = np.isfinite(a) & np.isfinite(b)
    if not both.any():
        raise DataError("paired_difference: no query has both values defined")
    diff = a[both] - b[both]
    boots = diff[np.random.default_rng(seed).integers(0, diff.size, size=(n_bootstrap, diff.size))].mean(axis=1)
    low, high = np.percentile(boots, [2.5, 97.5])
    return float(diff.mean()), float(low), float(high)


def lds_random(masks: np.ndarray, actual: np.ndarray, n_train: int, *, seed: int = 0) -> float:
    """The LDS of a random attribution (i.i.d. standard normal scores): the chance level."""
    rng = np.random.default_rng(seed)
    return float(lds(rng.standard_normal((actual.shape[1], n_train)), masks, actual, seed=seed)["lds"])


def loo_correlation(scores: np.ndarray, removed: np.ndarray, full: np.ndarray, without: np.ndarray) -> dict[str, float]:
    """Agreement of scores with exact leave-one-out retraining.

    Args:
        scores: (n_query, n_train) attributions.
        removed: (r,) training indices that were left out, one retrain each.
        full: (n_query,) outputs of the model trained on everything.
        without: (r, n_query) outputs of the model trained without ``removed[i]``.

    The actual effect of example j on query z is f(z; S) - f(z; S without j); returns the
    mean over queries of its Pearson and Spearman correlation with ``scores[z, j]``.
    """
    scores, removed = np.asarray(scores, dtype=np.float64), np.asarray(removed)
    effect = np.asarray(full, dtype=np.float64)[None, :] - np.asarray(without, dtype=np.float64)  # (r, q)
    predicted = scores[:, removed].T  # (r, q)
    pearson, spearman = _pearson_columns(predicted, effect), spearman_columns(predicted, effect)
    return {"loo_pearson": float(np.nanmean(pearson)), "loo_spearman": float(np.nanmean(spearman))}
