"""TRAK's ridge chosen from data (``damping="auto"``): the GCV formula against a brute-force
hat matrix, the choice recorded in the scores' metadata, and equal to fitting at that value."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attributor.data import ArrayDataset, load_dataset
from attributor.features import featurize, make_projector
from attributor.methods import TRAK
from attributor.methods.trak import DAMPING_GRID, gcv_curve, gcv_target, select_damping
from attributor.models import LogisticRegression
from attributor.models.training import train
from attributor.tasks import ClassificationTask


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("trak-auto")
    data = load_dataset("iris")
    torch.manual_seed(0)
    model = LogisticRegression(4, 3)
    paths = train(model, ClassificationTask(), ArrayDataset(data.X_train, data.y_train), folder / "ckpt", epochs=4,
                  checkpoint_epochs=[2, 4], lr=0.05, progress=False)
    projector = make_projector("gaussian", 8, seed=0)
    out = featurize(model, ClassificationTask(), ArrayDataset(data.X_train, data.y_train), paths, folder / "store", projector,
                    dtype="float64", progress=False)
    featurize(model, ClassificationTask(), ArrayDataset(data.X_test, data.y_test), paths, folder / "store", projector,
              split="queries", dtype="float64", progress=False)
    return out


def _brute_gcv(store, grid) -> np.ndarray:
    total = np.zeros(len(grid))
    for c in range(store.n_checkpoints):
        phi = store.features("train", c).astype(np.float64)
        y = gcv_target(store.out_to_loss("train", c).astype(np.float64))
        n, k = phi.shape
        for i, d in enumerate(grid):
            lam = d * np.trace(phi.T @ phi) / k
            hat = phi @ np.linalg.solve(phi.T @ phi + lam * np.eye(k), phi.T)
            residual = y - hat @ y
            total[i] += n * (residual @ residual) / (n - np.trace(hat)) ** 2 / (y @ y / n)
    return total


def test_gcv_curve_matches_the_explicit_hat_matrix(store):
    grid = DAMPING_GRID[::4]
    np.testing.assert_allclose(gcv_curve(store, "train", grid=grid), _brute_gcv(store, grid), rtol=1e-7)
    # a single checkpoint is its own curve
    assert gcv_curve(store, "train", [1], grid).shape == (len(grid),)


def test_auto_damping_is_the_gcv_minimum_and_is_recorded(store):
    chosen = select_damping(store, "train")
    assert chosen in DAMPING_GRID and chosen == DAMPING_GRID[int(np.argmin(gcv_curve(store, "train")))]
    auto = TRAK(damping="auto").fit(store)
    scores = auto.score("queries")
    assert auto.damping_ == chosen and scores.meta["damping_selected"] == chosen and scores.meta["damping"] == "auto"
    np.testing.assert_allclose(scores.values, TRAK(damping=chosen).fit(store).score("queries").values, rtol=1e-12)
    fixed = TRAK(damping=0.5).fit(store).score("queries")
    assert fixed.meta["damping_used"] == 0.5 and "damping_selected" not in fixed.meta


def test_auto_damping_warns_at_a_stationary_point(tmp_path):
    """At the optimum of an l2-regularised logistic regression Phi^T Q = l2 P^T theta: the
    features explain none of Q, GCV runs to the grid's largest ridge (TRAK becomes
    Q-weighted gradient similarity), and the user is told, in a warning and the metadata."""
    from attributor.models.checkpoints import save_checkpoint
    from attributor.models.training import fit_lbfgs

    data = load_dataset("breast_cancer")
    model = LogisticRegression(data.X_train.shape[1], 2).double()
    train_set = ArrayDataset(data.X_train.astype("float64"), data.y_train)
    fit_lbfgs(model, ClassificationTask(), train_set, l2=1.0)
    path = save_checkpoint(model, tmp_path / "optimum.pt")
    projector = make_projector("gaussian", 64, seed=0)
    store = featurize(model, ClassificationTask(), train_set, [path], tmp_path / "store", projector, dtype="float64", progress=False)
    featurize(model, ClassificationTask(), ArrayDataset(data.X_test.astype("float64"), data.y_test), [path], tmp_path / "store",
              projector, split="queries", dtype="float64", progress=False)
    with pytest.warns(UserWarning, match="largest ridge of its grid"):
        scores = TRAK(damping="auto").fit(store).score("queries")
    assert scores.meta["damping_selected"] == DAMPING_GRID[-1] and scores.meta["damping_at_grid_edge"] is True
