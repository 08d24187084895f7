"""TracIn-CP, grad-dot and grad-cos against their formulas on stored features, and the Q identity."""

from __future__ import annotations

import numpy as np
import pytest

import zoo
from attributor.errors import ConfigError
from attributor.features import featurize, make_projector
from attributor.features.gradients import per_example_gradients, tracked_parameter_names
from attributor.methods import GradCos, GradDot, TracIn, TrainingContext
from attributor.models import load_checkpoint
from attributor.tasks import ClassificationTask

N_TRAIN, N_TEST = 30, 6


@pytest.fixture(scope="module")
def problem(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tracin")
    x, y = zoo.classification_data(N_TRAIN + N_TEST, seed=8)
    checkpoints = zoo.train_and_save(zoo.mlp(), x[:N_TRAIN], y[:N_TRAIN], folder, n_checkpoints=2, steps=10)
    task = ClassificationTask()
    datasets = {"train": zoo.dataset(x[:N_TRAIN], y[:N_TRAIN]), "test": zoo.dataset(x[N_TRAIN:], y[N_TRAIN:])}
    for split, dataset in datasets.items():  # chunks of 8: several query and training chunks
        store = featurize(zoo.mlp(), task, dataset, checkpoints, folder / "store", make_projector("identity"),
                          split=split, dtype="float64", chunk_size=8, progress=False)
    context = TrainingContext(model=zoo.mlp(), task=task, datasets=datasets, checkpoints=checkpoints,
                              learning_rates=[0.3, 0.1])
    return {"store": store, "context": context}


def _formula(store, checkpoints, rates, cosine=False, queries="test"):
    total = 0.0
    for c, rate in zip(checkpoints, rates):
        phi_q, phi_t, q = store.features(queries, c), store.features("train", c), store.out_to_loss("train", c)
        if cosine:
            phi_q = phi_q / np.linalg.norm(phi_q, axis=1, keepdims=True)
            phi_t = phi_t / np.linalg.norm(phi_t, axis=1, keepdims=True)
            q = np.sign(q)
        total = total + rate * (phi_q @ phi_t.T) * q[None, :]
    return total


def test_tracin_is_the_learning_rate_weighted_sum(problem):
    store = problem["store"]
    with_context = TracIn().fit(store, "train", problem["context"]).score("test").values
    np.testing.assert_allclose(with_context, _formula(store, [0, 1], [0.3, 0.1]), rtol=1e-12, atol=1e-15)
    given = TracIn(learning_rates=[2.0, 1.0]).fit(store, "train", problem["context"]).score("test").values
    np.testing.assert_allclose(given, _formula(store, [0, 1], [2.0, 1.0]), rtol=1e-12, atol=1e-15)
    alone = TracIn(checkpoints=[1]).fit(store).score("test").values  # no context: eta = 1
    np.testing.assert_allclose(alone, _formula(store, [1], [1.0]), rtol=1e-12, atol=1e-15)


def test_grad_dot_and_cos(problem):
    store = problem["store"]
    dot = GradDot().fit(store).score("test").values
    np.testing.assert_allclose(dot, _formula(store, [1], [1.0]), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(GradDot(checkpoint=0).fit(store).score("test").values, _formula(store, [0], [1.0]),
                               rtol=1e-12, atol=1e-15)
    cos = GradCos().fit(store).score("test").values
    np.testing.assert_allclose(cos, _formula(store, [1], [1.0], cosine=True), rtol=1e-12, atol=1e-15)
    assert np.abs(cos).max() <= 1 + 1e-12


def test_grad_dot_is_minus_measurement_times_loss_gradient(problem):
    """With the identity projector: Q_j grad f(z) . grad f(z_j) = -grad f(z) . grad l(z_j) exactly."""
    context = problem["context"]
    model = load_checkpoint(zoo.mlp(), context.checkpoints[-1])
    names = tracked_parameter_names(model, context.task)
    grad_f = per_example_gradients(model, context.task, context.datasets["test"].tensors, names, "measurement")
    grad_l = per_example_gradients(model, context.task, context.datasets["train"].tensors, names, "train_loss")
    expected = -(grad_f @ grad_l.T).numpy()
    np.testing.assert_allclose(GradDot().fit(problem["store"]).score("test").values, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("method", [TracIn(), GradDot(), GradCos()])
def test_self_influence_is_the_diagonal(problem, method):
    method.fit(problem["store"])
    diagonal = np.diag(method.score("train").values)
    np.testing.assert_allclose(method.self_influence(), diagonal, rtol=1e-10, atol=1e-15)
    assert (method.self_influence() >= 0).all()


@pytest.mark.parametrize("method", [
    TracIn(checkpoints=[2]), TracIn(checkpoints=[]), TracIn(checkpoints=[-1]), TracIn(learning_rates=[1.0]),
    TracIn(learning_rates=[1.0, -1.0]), TracIn(learning_rates=[1.0, float("nan")]),
    GradDot(checkpoint=2), GradDot(checkpoint=-3), GradCos(checkpoint="last"),
])
def test_bad_arguments(problem, method):
    with pytest.raises(ConfigError):
        method.fit(problem["store"])


def test_a_store_is_required(problem):
    with pytest.raises(ConfigError, match="FeatureStore"):
        TracIn().fit(None, "train", problem["context"])
