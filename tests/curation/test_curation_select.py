"""Selection rules at a budget, and cluster influence (sum of its members, sign of a planted harmful cluster)."""

from __future__ import annotations

import numpy as np
import pytest

from attributor.curation import cluster_keep, k_center_greedy, random_keep, reweight, semantic_dedup, top_keep
from attributor.errors import ConfigError


def test_every_rule_keeps_exactly_the_budget():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3))
    clusters = rng.integers(0, 5, 50)
    for mask in (random_keep(50, 0.3), top_keep(rng.normal(size=50), 0.3), k_center_greedy(x, 0.3),
                 semantic_dedup(x, clusters, 0.3), cluster_keep(clusters, rng.normal(size=5), rng.normal(size=50), 0.3)):
        assert mask.dtype == bool and mask.sum() == 15
    with pytest.raises(ConfigError, match="budget"):
        random_keep(10, 1.5)


def test_cluster_keep_takes_the_best_clusters_whole_then_the_best_members():
    clusters = np.array([0, 0, 1, 1, 1, 2, 2])
    member = np.arange(7, dtype=float)
    mask = cluster_keep(clusters, np.array([1.0, 5.0, -2.0]), member, 4 / 7)
    # cluster 1 (best) whole, then the best member of cluster 0 (its larger member score)
    assert mask.tolist() == [False, True, True, True, True, False, False]


def test_semantic_dedup_drops_near_duplicates_first():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(10, 8))
    x = np.concatenate([base, base[:3] + 1e-4 * rng.normal(size=(3, 8))])  # rows 10..12 duplicate rows 0..2
    mask = semantic_dedup(x, np.zeros(13, dtype=int), 10 / 13)
    assert mask[:10].all() and not mask[10:].any()


def test_k_center_covers_separated_groups():
    x = np.concatenate([np.zeros((20, 2)), np.full((20, 2), 10.0), np.full((20, 2), -10.0)])
    x += np.random.default_rng(2).normal(scale=0.1, size=x.shape)
    kept = np.flatnonzero(k_center_greedy(x, 3 / 60))
    assert sorted(kept // 20) == [0, 1, 2]


def test_reweight_has_mean_one_and_orders_clusters():
    clusters = np.array([0, 0, 1, 1, 2])
    weights = reweight(clusters, np.array([-1.0, 0.0, 2.0]), cap=3.0)
    assert weights.mean() == pytest.approx(1.0)
    assert weights[0] < weights[2] < weights[4]
    assert reweight(clusters, np.zeros(3)).tolist() == [1.0] * 5


def test_cluster_influence_is_the_sum_of_its_members_and_flags_a_mislabelled_cluster(tmp_path):
    from attributor.curation.classification import train_weighted
    from attributor.curation.influence import estimate_influence
    from attributor.data import ArrayDataset
    from attributor.models.checkpoints import save_checkpoint

    rng = np.random.default_rng(3)
    centres = rng.normal(scale=3, size=(3, 4))
    y = rng.integers(0, 3, 120)
    x = centres[y] + rng.normal(size=(120, 4))
    xv_y = rng.integers(0, 3, 60)
    xv = centres[xv_y] + rng.normal(size=(60, 4))
    clusters = np.arange(120) % 6
    y_noisy = y.copy()
    y_noisy[clusters == 5] = (y[clusters == 5] + 1) % 3  # cluster 5: every label wrong
    model = train_weighted(x, y_noisy, np.ones(120), 3, hidden=8, steps=200, seed=0)
    checkpoint = save_checkpoint(model, tmp_path / "m.pt")
    for method in ("datainf", "if-ekfac"):
        estimate = estimate_influence(model, checkpoint, ArrayDataset(x, y_noisy), ArrayDataset(xv, xv_y), clusters, method)
        sums = np.array([estimate.examples[clusters == c].sum() for c in range(6)])
        np.testing.assert_allclose(estimate.clusters, sums, rtol=1e-8, atol=1e-10)
        assert np.argmin(estimate.clusters) == 5 and estimate.clusters[5] < 0


def test_cluster_keep_within_strata_keeps_every_class():
    labels = np.array([0] * 6 + [1] * 4)
    groups = np.array([0, 0, 0, 1, 1, 1, 2, 2, 3, 3])  # (cluster, label) pairs
    scores = np.array([5.0, 4.5, 4.0, 3.0])  # class 0's clusters outrank class 1's
    mask = cluster_keep(groups, scores, np.zeros(10), 0.5, strata=labels)
    assert mask.sum() == 5 and mask[:6].sum() == 3 and mask[6:].sum() == 2
    assert mask[:3].all() and mask[6:8].all()  # the best cluster of each class
    plain = cluster_keep(groups, scores, np.zeros(10), 0.5)
    assert plain.sum() == 5 and not plain[6:].any()  # without strata class 1 loses everything
