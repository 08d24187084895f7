"""RegressionTask: f is the prediction, Q = y - f is signed; shapes and refused batches."""

from __future__ import annotations

import pytest
import torch

from zoo import mlp

from attributor.errors import DataError
from attributor.tasks import RegressionTask


def _problem(targets_shape=(4,)):
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(4, 3, generator=generator, dtype=torch.float64)
    return mlp(d=3, n_classes=1, hidden=(5,), seed=0), inputs, torch.randn(*targets_shape, generator=generator, dtype=torch.float64)


@pytest.mark.parametrize("targets_shape", [(4,), (4, 1)])
def test_values_and_the_sign_of_q(targets_shape):
    model, inputs, targets = _problem(targets_shape)
    task = RegressionTask()
    with torch.no_grad():
        prediction = model(inputs)[:, 0]
    y = targets.reshape(-1)
    f, q = task.measure(model, (inputs, targets))
    torch.testing.assert_close(f.detach(), prediction, rtol=0, atol=0)
    torch.testing.assert_close(q, y - prediction, rtol=0, atol=0)  # positive when the target lies above f
    torch.testing.assert_close(task.train_loss(model, (inputs, targets)).detach(), 0.5 * (prediction - y) ** 2)


def test_mapping_batches_and_logits_outputs():
    model, inputs, targets = _problem()

    class Wrapped(torch.nn.Module):  # an HF-like model: keyword inputs, an output with .logits
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, features):
            return {"logits": self.inner(features)}

    task = RegressionTask()
    torch.testing.assert_close(task.measurement(Wrapped(), {"features": inputs, "labels": targets}),
                               task.measurement(model, (inputs, targets)))


@pytest.mark.parametrize("batch,message", [
    (lambda x, y: (x, y.long()), "must be floating"),
    (lambda x, y: (x, y.reshape(2, 2)), r"shape \(B,\) or \(B, 1\)"),
    (lambda x, y: {"features": x}, "'labels' key"),
])
def test_refused_batches_say_what_to_change(batch, message):
    model, inputs, targets = _problem()
    with pytest.raises(DataError, match=message):
        RegressionTask().validate_batch(model, batch(inputs, targets))


def test_float64_inputs_to_a_float32_model_are_refused():
    model, inputs, targets = _problem()
    with pytest.raises(DataError, match="inputs are float64 but the model's parameters are float32"):
        RegressionTask().validate_batch(model.float(), (inputs, targets.float()))


def test_a_multi_output_model_is_refused():
    model = mlp(d=3, n_classes=2, seed=0)
    with pytest.raises(DataError, match=r"one output per example.*\(4, 2\)"):
        RegressionTask().measurement(model, (torch.randn(4, 3, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)))
