"""ClassificationTask against naive float64 formulas; its batch formats and checks; get_task."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attributor.errors import DataError, UnknownNameError
from attributor.tasks import ClassificationTask, Task, get_task


def _problem(batch: int, seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(5, 4).double()
    with torch.no_grad():
        model.weight.mul_(3.0)  # spread the probabilities so p_y is far from uniform
    inputs = torch.randn(batch, 5, dtype=torch.float64)
    labels = torch.randint(0, 4, (batch,))
    return model, (inputs, labels)


def _naive_p_y(model, batch) -> np.ndarray:
    inputs, labels = batch
    logits = model(inputs).detach().numpy().astype(np.float64)
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = exp / exp.sum(axis=1, keepdims=True)
    return probs[np.arange(len(labels)), labels.numpy()]


@pytest.mark.parametrize("batch_size", [7, 1])
def test_measurement_is_the_log_odds_margin(batch_size):
    model, batch = _problem(batch_size)
    p_y = _naive_p_y(model, batch)
    got = ClassificationTask().measurement(model, batch)
    assert got.shape == (batch_size,)
    np.testing.assert_allclose(got.detach().numpy(), np.log(p_y / (1 - p_y)), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("batch_size", [7, 1])
def test_out_to_loss_is_one_minus_p_y(batch_size):
    model, batch = _problem(batch_size, seed=1)
    got = ClassificationTask().out_to_loss(model, batch)
    assert got.shape == (batch_size,)
    np.testing.assert_allclose(got.detach().numpy(), 1 - _naive_p_y(model, batch), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("batch_size", [7, 1])
def test_train_loss_is_per_example_cross_entropy(batch_size):
    model, batch = _problem(batch_size, seed=2)
    inputs, labels = batch
    got = ClassificationTask().train_loss(model, batch)
    assert got.shape == (batch_size,)
    torch.testing.assert_close(got, F.cross_entropy(model(inputs), labels, reduction="none"), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(got.detach().numpy(), -np.log(_naive_p_y(model, batch)), rtol=1e-10)


def test_margin_is_stable_for_confident_predictions():
    model = torch.nn.Linear(1, 2, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[50.0], [-50.0]]))
    batch = (torch.ones(1, 1, dtype=torch.float64), torch.tensor([0]))
    # logits (50, -50): the margin is exactly 100, although 1 - p_y underflows naively.
    assert ClassificationTask().measurement(model, batch).item() == pytest.approx(100.0, rel=1e-12)


def test_get_task_builds_registered_tasks():
    assert isinstance(get_task("classification"), ClassificationTask)
    assert "classification" in Task.names()


def test_get_task_unknown_name_lists_the_known_ones():
    with pytest.raises(UnknownNameError) as info:
        get_task("nope")
    assert "classification" in str(info.value)
    assert "'nope'" in str(info.value)
    assert "classification" in info.value.known


def test_measure_takes_margin_and_q_from_one_forward():
    model, batch = _problem(6, seed=4)
    calls = []
    counted = lambda inputs: calls.append(1) or model(inputs)  # noqa: E731
    measurement, out_to_loss = ClassificationTask().measure(counted, batch)
    assert len(calls) == 1 and measurement.requires_grad and not out_to_loss.requires_grad
    task = ClassificationTask()
    torch.testing.assert_close(measurement, task.measurement(model, batch), rtol=0, atol=0)
    torch.testing.assert_close(out_to_loss, task.out_to_loss(model, batch).detach(), rtol=0, atol=0)


def test_the_default_measure_runs_measurement_then_q_without_gradients():
    class Plain(Task, key="test-task-plain-measure"):
        def train_loss(self, model, batch):
            return model(batch[0]).sum(-1)

        def measurement(self, model, batch):
            return model(batch[0])[:, 0]

    model, batch = _problem(3, seed=5)
    measurement, out_to_loss = Plain().measure(model, batch)
    torch.testing.assert_close(measurement, model(batch[0])[:, 0])
    assert out_to_loss.tolist() == [1.0, 1.0, 1.0] and not out_to_loss.requires_grad


# -- batch formats and validation ----------------------------------------------------------

class Keyword(torch.nn.Module):
    """An HF-like classifier: keyword inputs, an output object with ``.logits``."""

    def __init__(self, model):
        super().__init__()
        self.inner = model

    def forward(self, features, scale=None):
        logits = self.inner(features) * (1.0 if scale is None else scale)
        return type("Output", (), {"logits": logits})()


def test_mapping_inputs_and_mapping_batches_match_the_pair_form():
    model, (inputs, labels) = _problem(5, seed=6)
    task = ClassificationTask()
    expected = task.measurement(model, (inputs, labels))
    torch.testing.assert_close(task.measurement(Keyword(model), ({"features": inputs}, labels)), expected)
    torch.testing.assert_close(task.measurement(Keyword(model), {"features": inputs, "labels": labels}), expected)
    task.validate_batch(Keyword(model), {"features": inputs, "labels": labels})


@pytest.mark.parametrize("change,message", [
    (lambda x, y: (x, y.double()), "cast them with labels.long.*'regression' task"),
    (lambda x, y: (x, y.unsqueeze(1)), r"shape \(B,\)"),
    (lambda x, y: (x, y + 4), r"must lie in \[0, 4\).*re-encode"),
    (lambda x, y: (x, y - 4), r"must lie in \[0, 4\)"),
    (lambda x, y: (x,), r"\(inputs, labels\) or a mapping"),
    (lambda x, y: {"features": x}, "needs a 'labels' key"),
])
def test_validate_batch_says_what_to_change(change, message):
    model, (inputs, labels) = _problem(6, seed=7)
    with pytest.raises(DataError, match=message):
        ClassificationTask().validate_batch(model, change(inputs, labels))


def test_float64_inputs_to_a_float32_model_are_refused():
    model, batch = _problem(3, seed=7)
    with pytest.raises(DataError, match="inputs are float64 but the model's parameters are float32: cast"):
        ClassificationTask().validate_batch(model.float(), batch)


def test_cheap_checks_also_run_in_the_forward_and_logits_must_be_2d():
    model, (inputs, labels) = _problem(3, seed=8)
    with pytest.raises(DataError, match="integer dtype"):
        ClassificationTask().train_loss(model, (inputs, labels.float()))
    with pytest.raises(DataError, match=r"logits of shape \(B, C\)"):
        ClassificationTask().measurement(lambda x: model(x).unsqueeze(1), (inputs, labels))


def test_token_ids_outside_the_vocabulary_are_refused():
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Flatten(), torch.nn.Linear(12, 2))

    class Ids(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = model

        def get_input_embeddings(self):
            return model[0]

        def forward(self, input_ids):
            return self.net(input_ids)

    batch = {"input_ids": torch.tensor([[1, 2, 3], [4, 5, 12]]), "labels": torch.tensor([0, 1])}
    with pytest.raises(DataError, match=r"input_ids range over \[1, 12\].*10 rows"):
        ClassificationTask().validate_batch(Ids(), batch)


def test_validate_batch_leaves_the_model_mode_alone():
    model, batch = _problem(4, seed=9)
    model.train()
    ClassificationTask().validate_batch(model, batch)
    assert model.training


def test_featurize_validates_the_first_batch(tmp_path):
    from torch.utils.data import TensorDataset

    from attributor.features import featurize, make_projector
    from attributor.models import save_checkpoint

    model, (inputs, labels) = _problem(6, seed=10)
    checkpoint = save_checkpoint(model, tmp_path / "ckpt.pt")
    with pytest.raises(DataError, match=r"must lie in \[0, 4\)"):
        featurize(model, ClassificationTask(), TensorDataset(inputs, labels + 4), [checkpoint], tmp_path / "store",
                  make_projector("identity"), progress=False)
