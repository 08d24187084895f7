"""The bench's small CNN ("cnn" in the model zoo): shapes, seeding, and per-example gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attributor.errors import ConfigError
from attributor.features.gradients import per_example_gradients, tracked_parameter_names
from attributor.models import build_model
from attributor.tasks import ClassificationTask


def test_cnn_reads_flat_rows_as_images_and_is_seeded():
    model = build_model("cnn", 64, 10, seed=3)
    assert sum(p.numel() for p in model.parameters()) == 80 + 1168 + 2570
    assert model(torch.randn(5, 64)).shape == (5, 10)
    again = build_model("cnn", 64, 10, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    # a pixel's position matters: the model is not a function of the row's multiset of values
    x = torch.randn(1, 64)
    assert not torch.allclose(model(x), model(x.flip(1)))
    with pytest.raises(ConfigError, match="square image"):
        build_model("cnn", 30, 2)


@pytest.mark.parametrize("function", ["measurement", "train_loss"])
def test_cnn_per_example_gradients_match_an_autograd_loop_in_float64(function):
    model = build_model("cnn", 64, 10, seed=0).double()
    task = ClassificationTask()
    rng = np.random.default_rng(0)
    inputs = torch.as_tensor(rng.standard_normal((4, 64)))
    labels = torch.as_tensor([0, 3, 7, 9])
    names = tracked_parameter_names(model, task)
    assert {n.split(".")[0] for n in names} == {"conv1", "conv2", "linear"}
    batched = per_example_gradients(model, task, (inputs, labels), names, function=function)
    params = dict(model.named_parameters())
    for i in range(len(labels)):
        value = getattr(task, function)(model, (inputs[i : i + 1], labels[i : i + 1])).sum()
        expected = torch.cat([g.reshape(-1) for g in torch.autograd.grad(value, [params[n] for n in names])])
        torch.testing.assert_close(batched[i], expected, rtol=1e-10, atol=1e-12)
    assert batched.abs().sum(dim=1).min() > 0  # every row has a gradient (no dead network)
