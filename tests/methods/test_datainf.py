"""DataInf against its closed form (Kwon et al. 2023, section 3) written out directly, and groups."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import zoo
from attributor.errors import ConfigError
from attributor.features.gradients import per_example_gradients, tracked_parameter_names
from attributor.methods import DataInf, TrainingContext, get_method
from attributor.models import load_checkpoint
from attributor.tasks import ClassificationTask

N_TRAIN, N_TEST = 40, 7


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    folder = tmp_path_factory.mktemp("datainf")
    x, y = zoo.classification_data(N_TRAIN + N_TEST, seed=6)
    checkpoints = zoo.train_and_save(zoo.mlp(), x[:N_TRAIN], y[:N_TRAIN], folder, n_checkpoints=2, steps=15)
    return TrainingContext(model=zoo.mlp(), task=ClassificationTask(),
                           datasets={"train": zoo.dataset(x[:N_TRAIN], y[:N_TRAIN]), "test": zoo.dataset(x[N_TRAIN:], y[N_TRAIN:])},
                           checkpoints=checkpoints)


def closed_form(context: TrainingContext, lambda_scale: float, checkpoint: int) -> np.ndarray:
    """-(1/n) sum_l grad_l f^T [1/(n lam_l) sum_i (v - (g_i^T v)/(lam_l + |g_i|^2) g_i)] grad_l l_j, in plain loops."""
    model = load_checkpoint(zoo.mlp(), context.checkpoints[checkpoint])
    names = tracked_parameter_names(model, context.task)  # net.0.weight, net.0.bias, net.2.weight, net.2.bias
    train = per_example_gradients(model, context.task, context.datasets["train"].tensors, names, "train_loss").numpy()
    test = per_example_gradients(model, context.task, context.datasets["test"].tensors, names, "measurement").numpy()
    sizes = [p.numel() for n, p in model.named_parameters()]
    cut = sizes[0] + sizes[1]  # layer "net.0" | layer "net.2"
    n = len(train)
    scores = np.zeros((len(test), n))
    for layer in (slice(0, cut), slice(cut, None)):
        g = train[:, layer]
        lam = lambda_scale * (g**2).sum() / (n * g.shape[1])
        for q, v in enumerate(test[:, layer]):
            inverse_v = sum(v - (gi @ v) / (lam + gi @ gi) * gi for gi in g) / (n * lam)
            scores[q] -= (g @ inverse_v) / n  # the summed-loss curvature is n times the mean's
    return scores


@pytest.mark.parametrize("lambda_scale, checkpoint", [(0.1, -1), (0.5, 0)])
def test_scores_are_the_closed_form(context, lambda_scale, checkpoint):
    method = DataInf(lambda_scale=lambda_scale, checkpoint=checkpoint).fit(None, "train", context)
    exact = closed_form(context, lambda_scale, checkpoint)
    got = method.score("test").values
    assert np.abs(got - exact).max() <= 1e-10 * np.abs(exact).max()
    assert len(method.layer_slices_) == 2


def test_self_influence_is_q_times_the_diagonal(context):
    """For classification grad l = -Q grad f, so grad l^T M grad l = Q * (-grad f^T M grad l) = Q * score(z_j, z_j)."""
    method = DataInf().fit(None, "train", context)
    model = load_checkpoint(zoo.mlp(), context.checkpoints[-1])
    with torch.no_grad():
        q = context.task.out_to_loss(model, context.datasets["train"].tensors).numpy()
    diagonal = np.diag(method.score("train").values)
    np.testing.assert_allclose(method.self_influence(), q * diagonal, rtol=1e-9, atol=1e-15)


def test_groups_use_the_mean_gradient(context):
    """score_groups scores each group's mean training gradient: the mean of its members' scores."""
    method = DataInf().fit(None, "train", context)
    groups = np.array([j % 5 for j in range(N_TRAIN)]) * 3  # ids 0, 3, 6, 9, 12
    grouped = method.score_groups("test", groups)
    per_example = method.score("test").values
    expected = np.stack([per_example[:, groups == g].mean(axis=1) for g in np.unique(groups)], axis=1)
    assert grouped.shape == (N_TEST, 5)
    np.testing.assert_allclose(grouped, expected, rtol=1e-10, atol=1e-15)
    singletons = method.score_groups("test", np.arange(N_TRAIN))
    np.testing.assert_allclose(singletons, per_example, rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("groups", [np.zeros(N_TRAIN - 1, dtype=int), np.zeros(N_TRAIN), np.zeros((N_TRAIN, 1), dtype=int)])
def test_bad_groups(context, groups):
    with pytest.raises(ConfigError, match="groups"):
        DataInf().fit(None, "train", context).score_groups("test", groups)


@pytest.mark.parametrize("kwargs", [{"lambda_scale": 0}, {"lambda_scale": -0.1}, {"lambda_scale": float("inf")},
                                    {"checkpoint": 2}, {"batch_size": 0}])
def test_bad_arguments(context, kwargs):
    with pytest.raises(ConfigError):
        get_method("datainf", **kwargs).fit(None, "train", context)


def test_batch_size_does_not_change_the_scores(context):
    a = DataInf(batch_size=7).fit(None, "train", context).score("test").values
    b = DataInf(batch_size=64).fit(None, "train", context).score("test").values
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-15)
    assert torch.get_default_dtype() == torch.float32  # nothing leaked a global dtype change
