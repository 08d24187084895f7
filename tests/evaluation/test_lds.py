"""LDS and LOO correlation against hand-computed answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr

from attributor.errors import DataError
from attributor.evaluation.lds import lds, lds_random, loo_correlation, paired_difference


def test_lds_is_the_mean_spearman_of_subset_sums():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(5, 40))
    masks = rng.random((30, 40)) < 0.5
    actual = masks @ scores.T + 0.5 * rng.normal(size=(30, 5))
    result = lds(scores, masks, actual)
    expected = [spearmanr(masks @ scores[q], actual[:, q]).statistic for q in range(5)]
    np.testing.assert_allclose(result["per_query"], expected, rtol=1e-12)
    assert result["lds"] == pytest.approx(np.mean(expected))
    assert result["lds_low"] <= result["lds"] <= result["lds_high"]


def test_lds_separates_a_good_attribution_from_chance():
    rng = np.random.default_rng(1)
    truth = rng.normal(size=(8, 60))
    masks = rng.random((40, 60)) < 0.5
    actual = masks @ truth.T + rng.normal(size=(40, 8))
    assert lds(truth, masks, actual)["lds"] > 0.8
    assert abs(lds_random(masks, actual, 60)) < 0.2
    assert lds(-truth, masks, actual)["lds"] < -0.8  # the sign matters


def test_lds_rejects_bad_shapes_and_nan():
    with pytest.raises(DataError, match="LDS needs"):
        lds(np.zeros((3, 10)), np.zeros((5, 9), dtype=bool), np.zeros((5, 3)))
    bad = np.zeros((5, 3))
    bad[0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        lds(np.ones((3, 10)), np.ones((5, 10), dtype=bool), bad)


def test_loo_correlation_uses_full_minus_without():
    rng = np.random.default_rng(2)
    scores = rng.normal(size=(3, 20))
    removed = np.array([1, 4, 7, 9, 12])
    full = rng.normal(size=3)
    without = full[None, :] - scores[:, removed].T * 2.0  # effect = 2 * score exactly
    result = loo_correlation(scores, removed, full, without)
    assert result["loo_pearson"] == pytest.approx(1.0) and result["loo_spearman"] == pytest.approx(1.0)
    flipped = loo_correlation(-scores, removed, full, without)
    assert flipped["loo_pearson"] == pytest.approx(-1.0)
    assert pearsonr(scores[0, removed], full[0] - without[:, 0]).statistic == pytest.approx(1.0)


def test_paired_difference_is_the_mean_over_queries_both_define():
    """Two methods' per-query LDS, paired: the mean of a - b where both are finite, inside its interval."""
    a = np.array([0.5, 0.7, np.nan, 0.9, 0.2])
    b = np.array([0.4, 0.5, 0.3, np.nan, 0.1])
    mean, low, high = paired_difference(a, b)
    assert mean == pytest.approx(np.mean([0.1, 0.2, 0.1]))
    assert low <= mean <= high and 0.1 - 1e-12 <= low and high <= 0.2 + 1e-12
    assert paired_difference(a, a)[0] == 0.0
    with pytest.raises(DataError, match="same queries"):
        paired_difference(a, b[:4])
    with pytest.raises(DataError, match="no query"):
        paired_difference(np.array([np.nan, 1.0]), np.array([1.0, np.nan]))
