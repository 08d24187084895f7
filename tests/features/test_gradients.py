"""Per-example gradients (torch.func) against a plain autograd loop, in float64."""

from __future__ import annotations

import pytest
import torch

from zoo import classification_data, mlp

from attributor.errors import ConfigError
from attributor.features.gradients import count_parameters, per_example_gradients, tracked_parameter_names
from attributor.tasks import ClassificationTask

LAST_LAYER = ["net.2.weight", "net.2.bias"]


class LastLayerTask(ClassificationTask, key="test-gradients-last-layer"):
    def tracked_parameters(self, model):
        return list(LAST_LAYER)


class UnknownParameterTask(ClassificationTask, key="test-gradients-unknown-parameter"):
    def tracked_parameters(self, model):
        return ["net.2.weight", "no.such.parameter"]


def _loop_gradients(model, task, batch, names, function):
    inputs, labels = batch
    params = dict(model.named_parameters())
    rows = []
    for i in range(len(labels)):
        value = getattr(task, function)(model, (inputs[i : i + 1], labels[i : i + 1])).sum()
        grads = torch.autograd.grad(value, [params[n] for n in names])
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    return torch.stack(rows)


@pytest.mark.parametrize("function", ["measurement", "train_loss"])
@pytest.mark.parametrize("batch_size", [5, 1])
def test_per_example_gradients_match_an_autograd_loop(function, batch_size):
    model = mlp(d=6, n_classes=3, hidden=(8,), seed=0)
    inputs, labels = classification_data(batch_size, d=6, n_classes=3, seed=1)
    task = ClassificationTask()
    names = tracked_parameter_names(model, task)
    assert names == [n for n, _ in model.named_parameters()]
    got = per_example_gradients(model, task, (inputs, labels), names, function=function)
    assert got.shape == (batch_size, count_parameters(model, names)) == (batch_size, 6 * 8 + 8 + 8 * 3 + 3)
    assert got.dtype == torch.float64
    expected = _loop_gradients(model, task, (inputs, labels), names, function)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-14)


def test_measurement_and_train_loss_gradients_differ():
    model = mlp(seed=0)
    batch = classification_data(4, seed=1)
    names = tracked_parameter_names(model, ClassificationTask())
    f = per_example_gradients(model, ClassificationTask(), batch, names, function="measurement")
    loss = per_example_gradients(model, ClassificationTask(), batch, names, function="train_loss")
    assert not torch.allclose(f, loss)


def test_tracked_parameters_restrict_the_columns():
    model = mlp(d=6, n_classes=3, hidden=(8,), seed=0)
    batch = classification_data(5, seed=2)
    task = LastLayerTask()
    names = tracked_parameter_names(model, task)
    assert names == LAST_LAYER
    got = per_example_gradients(model, task, batch, names)
    assert got.shape == (5, 8 * 3 + 3)
    full = per_example_gradients(model, ClassificationTask(), batch, tracked_parameter_names(model, ClassificationTask()))
    torch.testing.assert_close(got, full[:, -(8 * 3 + 3):], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(got, _loop_gradients(model, task, batch, names, "measurement"), rtol=1e-12, atol=1e-14)


def test_tracked_names_follow_named_parameters_order():
    class Reversed(ClassificationTask, key="test-gradients-reversed"):
        def tracked_parameters(self, model):
            return ["net.2.bias", "net.0.weight"]

    assert tracked_parameter_names(mlp(), Reversed()) == ["net.0.weight", "net.2.bias"]


def test_frozen_parameters_are_not_tracked_by_default():
    model = mlp(seed=0)
    model.net[0].weight.requires_grad_(False)
    names = tracked_parameter_names(model, ClassificationTask())
    assert "net.0.weight" not in names and len(names) == 3
    batch = classification_data(3, seed=3)
    got = per_example_gradients(model, ClassificationTask(), batch, names)
    assert got.shape == (3, count_parameters(model, names))


def test_unknown_tracked_parameter_is_a_config_error():
    with pytest.raises(ConfigError, match="no.such.parameter"):
        tracked_parameter_names(mlp(), UnknownParameterTask())
