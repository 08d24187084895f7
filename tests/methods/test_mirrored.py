"""Forward-INF (``mirrored``) against the same steps written out with torch.optim, in float64.

The tiny problem: gaussian blobs, an MLP trained by full-batch gradient descent, and six
queries. Query 0 carries an atypical label; the training set holds its duplicate (same
input and label, index DUP) and a copy with another label (index FLIP).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import zoo
from attributor.cli import main
from attributor.errors import ConfigError, NotFittedError
from attributor.methods import MirroredInfluence, TrainingContext, get_method, method_names
from attributor.models import load_checkpoint
from attributor.tasks import ClassificationTask

N_TRAIN = 60
DUP, FLIP = N_TRAIN, N_TRAIN + 1


@pytest.fixture(scope="module")
def problem(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mirrored")
    x, y = zoo.classification_data(70, seed=0)
    queries_x, queries_y = x[60:66].clone(), y[60:66].clone()
    queries_y[0] = (queries_y[0] + 1) % 3
    train_x = torch.cat([x[:N_TRAIN], queries_x[:1], queries_x[:1]])
    train_y = torch.cat([y[:N_TRAIN], queries_y[:1], (queries_y[:1] + 2) % 3])
    checkpoints = zoo.train_and_save(zoo.mlp(), train_x, train_y, folder, n_checkpoints=2, steps=20)
    return {"train": (train_x, train_y), "queries": (queries_x, queries_y), "checkpoints": checkpoints}


def context(problem) -> TrainingContext:
    datasets = {"train": zoo.dataset(*problem["train"]), "q": zoo.dataset(*problem["queries"])}
    return TrainingContext(model=zoo.mlp(), task=ClassificationTask(), datasets=datasets, checkpoints=problem["checkpoints"])


def fitted(problem, **kwargs) -> MirroredInfluence:
    return MirroredInfluence(**kwargs).fit(None, "train", context(problem))


def direct(problem, query_x, query_y, *, lr, steps=1, optimizer="sgd", ascent=False, checkpoint=-1):
    """Loss change of every training example after torch.optim steps on the queries' mean loss."""
    model = load_checkpoint(zoo.mlp(), problem["checkpoints"][checkpoint])
    train_x, train_y = problem["train"]
    with torch.no_grad():
        before = torch.nn.functional.cross_entropy(model(train_x), train_y, reduction="none")
    moved = copy.deepcopy(model)
    opt = (torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam)(moved.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(moved(query_x), query_y)
        (-loss if ascent else loss).backward()
        opt.step()
    with torch.no_grad():
        after = torch.nn.functional.cross_entropy(moved(train_x), train_y, reduction="none")
    return ((after - before) if ascent else (before - after)).numpy()


def test_registered_and_declares_its_needs():
    assert "mirrored" in method_names()
    method = get_method("mirrored", steps=2)
    assert isinstance(method, MirroredInfluence) and method.steps == 2
    assert not MirroredInfluence.requires_features and MirroredInfluence.requires_context
    assert method.spec()["method"] == "mirrored" and method.spec()["mode"] == "descent"


def test_shapes_and_top_k(problem):
    scores = fitted(problem).score("q", topk=4)
    assert scores.values.shape == (6, N_TRAIN + 2) and scores.values.dtype == np.float64
    assert scores.top_indices.shape == scores.bottom_indices.shape == (6, 4)
    assert np.array_equal(scores.top_indices, np.argsort(-scores.values, axis=1, kind="stable")[:, :4])
    assert scores.meta["n_train"] == N_TRAIN + 2 and scores.meta["queries"] == "q"


def test_deterministic_and_independent_of_batching(problem):
    first = fitted(problem).score("q").values
    again = fitted(problem).score("q").values
    assert np.array_equal(first, again)
    looped = fitted(problem, vectorize=False, query_batch=1, batch_size=7).score("q").values
    np.testing.assert_allclose(looped, first, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("kwargs, steps_kwargs", [
    ({"lr": 0.05}, {"lr": 0.05}),
    ({"lr": 0.02, "steps": 3}, {"lr": 0.02, "steps": 3}),
    ({"lr": 5e-3, "optimizer": "adam", "steps": 2}, {"lr": 5e-3, "optimizer": "adam", "steps": 2}),
    ({"lr": 5e-3, "optimizer": "adam", "mode": "ascent", "near_zero": 0.0}, {"lr": 5e-3, "optimizer": "adam", "ascent": True}),
    ({"lr": 0.05, "checkpoint": 0}, {"lr": 0.05, "checkpoint": 0}),
])
def test_scores_equal_the_direct_computation(problem, kwargs, steps_kwargs):
    values = fitted(problem, **kwargs).score("q").values
    qx, qy = problem["queries"]
    for q in range(len(qy)):
        exact = direct(problem, qx[q : q + 1], qy[q : q + 1], **steps_kwargs)
        np.testing.assert_allclose(values[q], exact, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("kwargs", [{}, {"mode": "ascent", "optimizer": "adam", "lr": 5e-3}, {"steps": 3, "lr": 0.05}])
def test_sign_duplicate_is_the_top_proponent_and_a_relabelled_copy_an_opponent(problem, kwargs):
    values = fitted(problem, **kwargs).score("q").values[0]
    assert values[DUP] > 0 and values[DUP] == values.max(), values
    assert values[DUP] > 5 * np.median(np.abs(values))
    assert values[FLIP] < 0, values


def test_measurement_response_is_the_margin_change(problem):
    values = fitted(problem, response="measurement", lr=0.05).score("q").values
    assert values[0, DUP] > 0 and DUP in np.argsort(-values[0])[:3]
    assert values[0, FLIP] < 0
    task, (qx, qy), (train_x, train_y) = ClassificationTask(), problem["queries"], problem["train"]
    model = load_checkpoint(zoo.mlp(), problem["checkpoints"][-1])
    moved = copy.deepcopy(model)
    torch.nn.functional.cross_entropy(moved(qx[2:3]), qy[2:3]).backward()
    with torch.no_grad():
        for p in moved.parameters():
            p -= 0.05 * p.grad
        exact = task.measurement(moved, (train_x, train_y)) - task.measurement(model, (train_x, train_y))
    np.testing.assert_allclose(values[2], exact.numpy(), rtol=1e-8, atol=1e-12)


def test_ascent_perturbs_fitted_queries_reproducibly(problem):
    plain = fitted(problem, mode="ascent", optimizer="adam", lr=5e-3, near_zero=0.0).score("q").values
    # near_zero above every query's loss: every query is replaced by a point on a sphere
    perturbed = fitted(problem, mode="ascent", optimizer="adam", lr=5e-3, near_zero=50.0, max_radius_trials=3)
    values = perturbed.score("q").values
    assert not np.allclose(values, plain)
    batched_differently = fitted(problem, mode="ascent", optimizer="adam", lr=5e-3, near_zero=50.0, max_radius_trials=3,
                                 query_batch=4, vectorize=False).score("q").values
    np.testing.assert_allclose(batched_differently, values, rtol=1e-9, atol=1e-12)
    other_seed = fitted(problem, mode="ascent", optimizer="adam", lr=5e-3, near_zero=50.0, max_radius_trials=3, seed=1)
    assert not np.allclose(other_seed.score("q").values, values)


def test_query_groups_are_trained_together(problem):
    method = fitted(problem, lr=0.05)
    groups = method.score_groups("q", query_groups=[[0, 1], [2], [3, 4, 5]])
    assert groups.shape == (3, N_TRAIN + 2)
    qx, qy = problem["queries"]
    for row, members in zip(groups, ([0, 1], [2], [3, 4, 5])):
        np.testing.assert_allclose(row, direct(problem, qx[members], qy[members], lr=0.05), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(method.score_groups("q"), method.score("q").values, rtol=1e-12)


@pytest.mark.parametrize("reduce", ["mean", "sum"])
def test_training_groups_reduce_the_per_example_scores(problem, reduce):
    method = fitted(problem, lr=0.05)
    dense = method.score("q").values
    train_groups = [[0, 1, 2], [DUP], list(range(10, 40)), [FLIP, DUP]]
    grouped = method.score_groups("q", train_groups=train_groups, train_reduce=reduce)
    assert grouped.shape == (6, 4)
    reducer = np.mean if reduce == "mean" else np.sum
    expected = np.stack([reducer(dense[:, g], axis=1) for g in train_groups], axis=1)
    np.testing.assert_allclose(grouped, expected, rtol=1e-10, atol=1e-14)
    both = method.score_groups("q", query_groups=[[0, 1]], train_groups=train_groups, train_reduce=reduce)
    together = method.score_groups("q", query_groups=[[0, 1]])[0]
    np.testing.assert_allclose(both[0], [reducer(together[g]) for g in train_groups], rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("kwargs", [{"lr": 0.05}, {"mode": "ascent", "optimizer": "adam", "lr": 5e-3, "near_zero": 0.0}])
def test_self_influence_is_the_own_loss_change_and_non_negative(problem, kwargs):
    values = fitted(problem, **kwargs).self_influence()
    assert values.shape == (N_TRAIN + 2,) and (values >= 0).all()
    train_x, train_y = problem["train"]
    ascent = kwargs.get("mode") == "ascent"
    for j in (0, 7, DUP, FLIP):
        exact = direct(problem, train_x[j : j + 1], train_y[j : j + 1], lr=kwargs["lr"],
                       optimizer=kwargs.get("optimizer", "sgd"), ascent=ascent)[j]
        assert values[j] == pytest.approx(max(exact, 0.0), rel=1e-8, abs=1e-12)
    assert values[FLIP] > np.median(values)  # a label that contradicts its input is self-influential


@pytest.mark.parametrize("kwargs", [
    {"steps": 0}, {"steps": 1.5}, {"lr": 0}, {"lr": float("nan")}, {"mode": "sideways"}, {"optimizer": "rmsprop"},
    {"checkpoint": 2}, {"checkpoint": -3}, {"checkpoint": "last"}, {"query_batch": 0}, {"batch_size": -1},
    {"radius": 0}, {"radius_growth": 1.0}, {"near_zero": -1}, {"max_radius_trials": 0}, {"vectorize": "yes"},
    {"response": "margin"},
])
def test_bad_arguments_raise_config_error(problem, kwargs):
    with pytest.raises(ConfigError):
        fitted(problem, **kwargs)


@pytest.mark.parametrize("groups", [[[]], [[0, 99]], [[-1]], [["a"]], [[0.5]], []])
def test_bad_groups_raise_config_error(problem, groups):
    method = fitted(problem)
    with pytest.raises(ConfigError):
        method.score_groups("q", query_groups=groups)
    with pytest.raises(ConfigError):
        method.score_groups("q", train_groups=groups)


def test_bad_reduce_and_missing_context(problem):
    with pytest.raises(ConfigError, match="train_reduce"):
        fitted(problem).score_groups("q", train_groups=[[0]], train_reduce="max")
    with pytest.raises(ConfigError, match="TrainingContext"):
        MirroredInfluence().fit(None)
    with pytest.raises(ConfigError, match="no split"):
        fitted(problem).score("nope")
    with pytest.raises(NotFittedError):
        MirroredInfluence().score("q")


def test_through_the_run_pipeline(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["score", "--out", str(out), "--set", "score.method=mirrored", "--set", "data.max_train=200",
                 "--set", "train.epochs=4", "--set", "train.checkpoint_epochs=[2,4]", "-q"])
    assert code == 0, capsys.readouterr().err
    scores = np.load(out / "scores" / "scores.npy")
    self_influence = np.load(out / "scores" / "self_influence.npy")
    assert scores.shape[1] == 200 and np.isfinite(scores).all()
    assert self_influence.shape == (200,) and (self_influence >= 0).all()
    code = main(["score", "--out", str(tmp_path / "bad"), "--set", "score.method=mirrored",
                 "--set", "score.method_args={mode: sideways}", "--set", "data.max_train=50", "-q"])
    assert code == 2 and "mode" in capsys.readouterr().err
