"""The baselines every table shows: random scores and penultimate-layer embedding similarity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import zoo
from attributor.errors import ConfigError
from attributor.features import featurize, make_projector
from attributor.methods import EmbeddingSimilarity, RandomScores, TrainingContext
from attributor.methods import random_baseline
from attributor.models import load_checkpoint, save_checkpoint
from attributor.tasks import ClassificationTask

N_TRAIN, N_TEST = 24, 5


@pytest.fixture(scope="module")
def problem(tmp_path_factory):
    folder = tmp_path_factory.mktemp("baselines")
    x, y = zoo.classification_data(N_TRAIN + N_TEST, seed=9)
    x[N_TRAIN - 1] = x[N_TRAIN]  # training example 23 duplicates query 0
    checkpoints = zoo.train_and_save(zoo.mlp(), x[:N_TRAIN], y[:N_TRAIN], folder, n_checkpoints=1, steps=10)
    datasets = {"train": zoo.dataset(x[:N_TRAIN], y[:N_TRAIN]), "test": zoo.dataset(x[N_TRAIN:], y[N_TRAIN:])}
    task = ClassificationTask()
    for split, dataset in datasets.items():
        store = featurize(zoo.mlp(), task, dataset, checkpoints, folder / "store", make_projector("gaussian", 4),
                          split=split, progress=False)
    return {"store": store, "context": TrainingContext(model=zoo.mlp(), task=task, datasets=datasets, checkpoints=checkpoints)}


def test_random_needs_only_the_sizes(problem, monkeypatch):
    from_store = RandomScores(seed=3).fit(problem["store"]).score("test").values
    from_context = RandomScores(seed=3).fit(None, "train", problem["context"]).score("test").values
    assert from_store.shape == (N_TEST, N_TRAIN)
    np.testing.assert_array_equal(from_store, from_context)
    assert not np.array_equal(from_store, RandomScores(seed=4).fit(problem["store"]).score("test").values)
    monkeypatch.setattr(random_baseline, "BLOCK", 4)  # many blocks: still standard normal, seeded per block
    blocked = RandomScores(seed=3).fit(problem["store"]).score("test").values
    assert blocked.shape == (N_TEST, N_TRAIN) and np.isfinite(blocked).all()
    np.testing.assert_array_equal(blocked, RandomScores(seed=3).fit(problem["store"]).score("test").values)
    self_influence = RandomScores(seed=3).fit(problem["store"]).self_influence()
    assert self_influence.shape == (N_TRAIN,) and (self_influence >= 0).all()


def test_random_refusals(problem):
    with pytest.raises(ConfigError, match="FeatureStore or a TrainingContext"):
        RandomScores().fit(None)
    with pytest.raises(ConfigError, match="seed"):
        RandomScores(seed=-1).fit(problem["store"])


def _embeddings(context, split):
    """The input of the MLP's last Linear (the hidden ReLU activations), computed by hand."""
    model = load_checkpoint(zoo.mlp(), context.checkpoints[-1])
    inputs = context.datasets[split].tensors[0]
    with torch.no_grad():
        return model.net[:-1](inputs).numpy()


def test_embedding_is_the_cosine_of_penultimate_features(problem):
    context = problem["context"]
    method = EmbeddingSimilarity(batch_size=4).fit(None, "train", context)
    scores = method.score("test").values
    e_test, e_train = _embeddings(context, "test"), _embeddings(context, "train")
    norm = lambda e: e / np.linalg.norm(e, axis=1, keepdims=True)  # noqa: E731
    np.testing.assert_allclose(scores, norm(e_test) @ norm(e_train).T, rtol=1e-10, atol=1e-12)
    assert scores[0, N_TRAIN - 1] == pytest.approx(1.0)  # the duplicate


def test_embedding_self_influence_is_distance_to_the_nearest_same_label_example(problem):
    context = problem["context"]
    e = _embeddings(context, "train")
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    labels = context.datasets["train"].tensors[1].numpy()
    cos = e @ e.T
    expected = [1 - max(cos[j, k] for k in range(N_TRAIN) if k != j and labels[k] == labels[j]) for j in range(N_TRAIN)]
    got = EmbeddingSimilarity(batch_size=5).fit(None, "train", context).self_influence()
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
    assert (got >= 0).all()


def test_embedding_refusals(problem, tmp_path):
    with pytest.raises(ConfigError, match="checkpoint"):
        EmbeddingSimilarity(checkpoint=1).fit(None, "train", problem["context"])
    model = nn.Sequential(nn.Flatten()).double()
    context = TrainingContext(model=model, task=ClassificationTask(), datasets=problem["context"].datasets,
                              checkpoints=[save_checkpoint(model, tmp_path / "c.pt")])
    with pytest.raises(ConfigError, match="nn.Linear"):
        EmbeddingSimilarity().fit(None, "train", context)
