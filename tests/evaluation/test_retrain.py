"""The retrain harness: deterministic recipes, a cache that makes reruns free, resumption."""

from __future__ import annotations

import numpy as np
import pytest

from attributor.data import load_dataset
from attributor.errors import DataError
from attributor.evaluation.brittleness import brittleness
from attributor.evaluation.retrain import ClassificationRecipe, LocalExecutor, random_subsets, retrain


@pytest.fixture(scope="module")
def recipe():
    data = load_dataset("digits", max_train=150, seed=0)
    return ClassificationRecipe(data.X_train, data.y_train, data.X_test[:12], data.y_test[:12], model="logreg",
                                trainer="lbfgs", train_args={"l2": 1e-1}, n_classes=data.n_classes, dtype="float64")


def test_random_subsets_have_exact_size_and_differ():
    masks = random_subsets(101, 6, fraction=0.5, seed=3)
    assert masks.shape == (6, 101) and (masks.sum(axis=1) == 50).all()
    assert len({m.tobytes() for m in masks}) == 6
    assert np.array_equal(masks, random_subsets(101, 6, fraction=0.5, seed=3))
    with pytest.raises(DataError):
        random_subsets(10, 2, fraction=1.0)


def test_retrain_caches_and_resumes(recipe, tmp_path, monkeypatch):
    masks = random_subsets(150, 4, seed=0)
    first = retrain(recipe, masks[:2], tmp_path, progress=False)
    assert first["measurement"].shape == (2, 12) and first["prediction"].shape == (2, 12)
    calls = []
    original = ClassificationRecipe.run
    monkeypatch.setattr(ClassificationRecipe, "run", lambda self, mask: calls.append(1) or original(self, mask))
    full = retrain(recipe, masks, tmp_path, progress=False)  # an "interrupted" run of 4 that had done 2
    assert len(calls) == 2
    np.testing.assert_array_equal(full["measurement"][:2], first["measurement"])
    retrain(recipe, masks, tmp_path, progress=False)
    assert len(calls) == 2  # a rerun costs nothing


def test_a_damaged_cache_entry_is_recomputed(recipe, tmp_path):
    masks = random_subsets(150, 1, seed=1)
    first = retrain(recipe, masks, tmp_path, progress=False)
    entry = next(tmp_path.rglob("*.npz"))
    entry.write_bytes(b"garbage")
    again = retrain(recipe, masks, tmp_path, progress=False)
    np.testing.assert_array_equal(first["measurement"], again["measurement"])


def test_process_pool_gives_the_same_results(recipe, tmp_path):
    masks = random_subsets(150, 2, seed=2)
    local = retrain(recipe, masks, tmp_path / "a", progress=False)
    pooled = retrain(recipe, masks, tmp_path / "b", executor=LocalExecutor(2), progress=False)
    np.testing.assert_allclose(pooled["measurement"], local["measurement"], rtol=1e-6, atol=1e-8)


def test_recipe_fingerprint_tracks_settings(recipe):
    other = ClassificationRecipe(recipe.X_train, recipe.y_train, recipe.X_query, recipe.y_query, model="logreg",
                                 trainer="lbfgs", train_args={"l2": 1.0}, n_classes=recipe.n_classes, dtype="float64")
    assert other.fingerprint() != recipe.fingerprint()


def test_brittleness_removing_true_proponents_flips_sooner_than_random(recipe, tmp_path):
    """Scores that are the exact effect of removing examples: an oracle attribution."""
    n = len(recipe.y_train)
    full = retrain(recipe, np.ones((1, n), dtype=bool), tmp_path, progress=False)
    correct = np.flatnonzero(full["prediction"][0] == recipe.y_query)[:2]
    # oracle-ish: proponents = training examples of the query's class, closest first
    scores = np.zeros((len(recipe.y_query), n))
    for q in correct:
        same = recipe.y_train == recipe.y_query[q]
        distance = np.linalg.norm(recipe.X_train - recipe.X_query[q], axis=1)
        scores[q] = np.where(same, 100.0 - distance, -distance)
    result = brittleness(scores, recipe, correct, recipe.y_query, tmp_path, ks=(5, 10, 15), progress=False)
    assert result["flipped_fraction"] >= result["flipped_fraction_random"]
    assert result["flipped_fraction"] > 0
