"""Every built-in Task against the contract, in float64, on a tiny model of its own.

For each registered built-in task (a problem below is required for each):

* grad train_loss(z) = -Q(z) grad measurement(z) per example (TRAK's out-to-loss
  identity, tasks/base.py (*)), with per-example gradients from torch.func;
* ``measure`` equals ``(measurement, out_to_loss)``, Q without gradient;
* example i's values do not depend on the other examples of its batch;
* batches of size 1 work; ``spec()`` rebuilds the task; ``validate_batch`` accepts the batch.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils._pytree import tree_map

from hf_zoo import bert_classifier, bert_encoder, classification_batch, contrastive_batch, gpt2_lm, lm_batch
from zoo import classification_data, mlp

import attributor.curation.influence  # noqa: F401  (registers the curation tasks, whatever ran before)
import attributor.news.task  # noqa: F401  (registers the recommendation task)
from attributor.features.gradients import per_example_gradients, tracked_parameter_names
from attributor.tasks import (CausalLMTask, ClassificationTask, ContrastiveTask, RegressionTask,
                              SequenceClassificationTask, Task, get_task)


def _classification():
    inputs, labels = classification_data(5, d=6, n_classes=3, seed=1)
    return ClassificationTask(), mlp(d=6, n_classes=3, hidden=(8,), seed=0), (inputs, labels)


def _regression():
    generator = torch.Generator().manual_seed(2)
    inputs = torch.randn(5, 4, generator=generator, dtype=torch.float64)
    targets = torch.randn(5, generator=generator, dtype=torch.float64)
    return RegressionTask(), mlp(d=4, n_classes=1, hidden=(6,), seed=1), (inputs, targets)  # output (B, 1)


def _sequence_classification():
    return SequenceClassificationTask(), bert_classifier(seed=2), classification_batch([7, 4, 2, 5], seed=3)


def _causal_lm():
    return CausalLMTask(), gpt2_lm(seed=3), lm_batch([7, 5, 3, 6], prompts=[2, 3, 1, 0], seed=4)


def _contrastive():
    return ContrastiveTask(temperature=0.1), bert_encoder(seed=4), contrastive_batch()


def _validation_loss():
    from attributor.curation.influence import ValidationLossTask

    inputs, labels = classification_data(5, d=6, n_classes=3, seed=1)
    return ValidationLossTask(), mlp(d=6, n_classes=3, hidden=(8,), seed=0), (inputs, labels)


def _contrastive_validation_loss():
    from attributor.curation.influence import ContrastiveValidationLossTask

    return ContrastiveValidationLossTask(temperature=0.1), bert_encoder(seed=4), contrastive_batch()


def _recommendation():
    from attributor.news.models import LSTUR
    from attributor.news.task import RecommendationTask

    generator = torch.Generator().manual_seed(5)
    rows = lambda *shape: torch.cat([torch.randint(0, 30, (*shape, 7), generator=generator),  # title 4 + abstract 3
                                     torch.randint(1, 6, (*shape, 2), generator=generator)], dim=-1)  # categories
    batch = {"history": rows(4, 3), "history_mask": torch.tensor([[1.0, 1, 0], [1, 0, 0], [0, 0, 0], [1, 1, 1]]),
             "candidates": rows(4, 3), "user": torch.tensor([1, 2, 0, 1]), "label": torch.tensor([0, 1, 0, 2])}
    torch.manual_seed(6)
    model = LSTUR(30, dim=8, filters=6, attention_hidden=4, dropout=0.0, title_length=4, categories=6, users=2)
    return RecommendationTask(), model.double().eval(), batch  # eval: no long-term masking draw


PROBLEMS = {"recommendation": _recommendation, "classification": _classification, "regression": _regression,
            "sequence-classification": _sequence_classification, "causal-lm": _causal_lm, "contrastive": _contrastive,
            "validation-loss": _validation_loss, "contrastive-validation-loss": _contrastive_validation_loss}


def _first(batch, n: int = 1):
    return tree_map(lambda t: t[:n], batch)


def _rows(batch) -> int:
    return torch.utils._pytree.tree_leaves(batch)[0].shape[0]


def test_every_builtin_task_has_a_conformance_problem():
    builtins = {key for key in Task.names() if Task.lookup(key).__module__.startswith("attributor.")}
    assert builtins == set(PROBLEMS)


@pytest.mark.parametrize("size", ["all", 1])
@pytest.mark.parametrize("key", sorted(PROBLEMS))
def test_loss_gradient_is_minus_q_times_the_measurement_gradient(key, size):
    task, model, batch = PROBLEMS[key]()
    batch = batch if size == "all" else _first(batch)
    names = tracked_parameter_names(model, task)
    grad_f = per_example_gradients(model, task, batch, names, function="measurement")
    grad_loss = per_example_gradients(model, task, batch, names, function="train_loss")
    q = task.out_to_loss(model, batch).detach()
    assert grad_f.shape == (_rows(batch), sum(p.numel() for p in model.parameters()))
    assert q.shape == (_rows(batch),) and grad_f.abs().max() > 1e-3
    torch.testing.assert_close(grad_loss, -q.to(grad_f.dtype).unsqueeze(1) * grad_f, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("key", sorted(PROBLEMS))
def test_measure_is_measurement_and_out_to_loss(key):
    task, model, batch = PROBLEMS[key]()
    measurement, out_to_loss = task.measure(model, batch)
    assert measurement.shape == out_to_loss.shape == (_rows(batch),)
    assert measurement.requires_grad and not out_to_loss.requires_grad
    torch.testing.assert_close(measurement, task.measurement(model, batch), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out_to_loss, task.out_to_loss(model, batch).detach().to(out_to_loss.dtype),
                               rtol=1e-12, atol=1e-12)
    assert task.train_loss(model, batch).shape == (_rows(batch),)


@pytest.mark.parametrize("key", sorted(PROBLEMS))
def test_examples_do_not_depend_on_their_batch(key):
    task, model, batch = PROBLEMS[key]()
    together = torch.stack([task.measurement(model, batch), task.train_loss(model, batch)])
    alone = [torch.stack([task.measurement(model, one), task.train_loss(model, one)])
             for one in (tree_map(lambda t: t[i : i + 1], batch) for i in range(_rows(batch)))]
    torch.testing.assert_close(together, torch.cat(alone, dim=1), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("key", sorted(PROBLEMS))
def test_spec_rebuilds_the_task_and_validate_accepts_the_batch(key):
    task, model, batch = PROBLEMS[key]()
    spec = json.loads(json.dumps(task.spec()))
    assert spec["task"] == key == task.key
    rebuilt = get_task(spec.pop("task"), **spec)
    assert type(rebuilt) is type(task) and rebuilt.spec() == task.spec()
    task.validate_batch(model, batch)
    task.validate_batch(model, _first(batch))
