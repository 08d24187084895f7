"""EK-FAC: layer statistics, the per-layer inverse, factor files in the store folder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import zoo
from attributor.errors import ConfigError
from attributor.features import featurize, make_projector
from attributor.features.gradients import per_example_gradients, tracked_parameter_names
from attributor.methods import EKFACInfluence, ExplicitInfluence, TrainingContext
from attributor.methods.if_ekfac import find_layers, layer_gradients
from attributor.models import save_checkpoint
from attributor.tasks import ClassificationTask, Task


class TinyConvNet(nn.Module):
    """(B, 1, 5, 5) -> Conv2d(1, 3, 3, padding 1, stride 2) -> ReLU -> Linear -> 3 logits."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, stride=2, padding=1)
        self.head = nn.Linear(3 * 3 * 3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).flatten(1))


def conv_context(folder) -> TrainingContext:
    x, y = zoo.classification_data(48, d=25, seed=2)
    x = x.reshape(-1, 1, 5, 5)
    torch.manual_seed(0)
    model = TinyConvNet().double()
    checkpoints = zoo.train_and_save(model, x[:40], y[:40], folder, n_checkpoints=1, steps=20, lr=0.1)
    return TrainingContext(model=model, task=ClassificationTask(),
                           datasets={"train": zoo.dataset(x[:40], y[:40]), "test": zoo.dataset(x[40:], y[40:])},
                           checkpoints=checkpoints)


@pytest.fixture(scope="module")
def mlp_context(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ekfac")
    x, y = zoo.classification_data(50, seed=1)
    checkpoints = zoo.train_and_save(zoo.mlp(), x[:40], y[:40], folder, n_checkpoints=2, steps=20)
    return TrainingContext(model=zoo.mlp(), task=ClassificationTask(),
                           datasets={"train": zoo.dataset(x[:40], y[:40]), "test": zoo.dataset(x[40:], y[40:])},
                           checkpoints=checkpoints)


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_layer_statistics_give_the_per_example_gradients(mlp_context, tmp_path, kind):
    context = mlp_context if kind == "mlp" else conv_context(tmp_path)
    model = context.model
    names = tracked_parameter_names(model, context.task)
    layers = find_layers(model, names)
    assert [type(layer.module) for layer in layers] == ([nn.Linear, nn.Linear] if kind == "mlp" else [nn.Conv2d, nn.Linear])
    batch = tuple(t[:7] for t in context.datasets["train"].tensors)
    expected = per_example_gradients(model, context.task, batch, names, function="train_loss")
    offset = 0
    for layer, (a, g) in zip(layers, layer_gradients(model, context.task, batch, layers)):
        rows, cols = layer.shape
        matrix = torch.einsum("bto,bti->boi", g, a)  # (B, out, in + 1)
        flat = torch.cat([matrix[:, :, :-1].reshape(7, -1), matrix[:, :, -1]], dim=1)
        torch.testing.assert_close(flat, expected[:, offset : offset + rows * cols], rtol=1e-10, atol=1e-12)
        offset += rows * cols
    assert offset == expected.shape[1]


def test_the_inverse_is_the_eigenbasis_formula(mlp_context):
    """(C + lambda I)^{-1} = U diag(1 / (Lambda + lambda)) U^T with U = the Kronecker eigenbasis, per layer."""
    method = EKFACInfluence(damping=0.1, labels="true").fit(None, "train", mlp_context)
    blocks = []
    for layer, (q_s, q_a, lam) in zip(method.layers_, method.factors_):
        rows, cols = layer.shape
        basis = []
        for p in range(rows):
            for j in range(cols):
                matrix = torch.outer(q_s[:, p], q_a[:, j])  # [weight | bias] layout
                basis.append(torch.cat([matrix[:, :-1].reshape(-1), matrix[:, -1]]))
        u = torch.stack(basis, dim=1)
        blocks.append(u @ torch.diag(1.0 / (lam.reshape(-1) + method.lambda_)) @ u.T)
    expected = torch.block_diag(*blocks)
    got = method._inverse_hvp(torch.eye(method.n_params_, dtype=torch.float64))
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)
    # with the true labels, the corrected eigenvalues carry the whole empirical Fisher trace
    total = sum(float(lam.sum()) for _, _, lam in method.factors_)
    assert total == pytest.approx(float(method.train_gradients_.squared_norms().sum()), rel=1e-10)


def test_close_to_explicit_on_a_single_linear_layer(tmp_path):
    """Logistic regression, large damping: EK-FAC is close to the exact Gauss-Newton inverse."""
    from attributor.models import LogisticRegression

    x, y = zoo.classification_data(60, seed=4)
    torch.manual_seed(0)
    checkpoints = zoo.train_and_save(LogisticRegression(6, 3).double(), x[:50], y[:50], tmp_path, n_checkpoints=1)
    context = TrainingContext(model=LogisticRegression(6, 3).double(), task=ClassificationTask(),
                              datasets={"train": zoo.dataset(x[:50], y[:50]), "test": zoo.dataset(x[50:], y[50:])},
                              checkpoints=checkpoints)
    exact = ExplicitInfluence(damping=1.0).fit(None, "train", context).score("test").values
    approx = EKFACInfluence(damping=1.0).fit(None, "train", context).score("test").values
    assert np.corrcoef(exact.ravel(), approx.ravel())[0, 1] >= 0.85  # measured 0.917 (0.886 at damping 0.01)


def test_conv_net_scores(tmp_path):
    context = conv_context(tmp_path)
    method = EKFACInfluence().fit(None, "train", context)
    scores = method.score("test").values
    assert scores.shape == (8, 40) and np.isfinite(scores).all()
    assert (method.self_influence() >= 0).all()
    exact = ExplicitInfluence().fit(None, "train", context).score("test").values
    assert np.corrcoef(exact.ravel(), scores.ravel())[0, 1] >= 0.4  # measured 0.54 (0.56, 0.56 with seeds 1, 2)


def test_factors_are_saved_in_the_store_and_reused(mlp_context, tmp_path):
    model, task = mlp_context.model, mlp_context.task
    store = featurize(model, task, mlp_context.datasets["train"], mlp_context.checkpoints, tmp_path / "store",
                      make_projector("gaussian", 8), progress=False)
    first = EKFACInfluence(checkpoint=0).fit(store, "train", mlp_context)
    path = tmp_path / "store" / "ekfac" / "train_ckpt000.npz"
    assert path.is_file() and not first.factors_loaded_
    with np.load(path, allow_pickle=False) as saved:
        assert "settings" in saved.files
    stamp = path.stat().st_mtime_ns
    again = EKFACInfluence(checkpoint=0).fit(store, "train", mlp_context)
    assert again.factors_loaded_ and path.stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(again.score("test").values, first.score("test").values)
    np.testing.assert_array_equal(again.self_influence(), first.self_influence())
    in_memory = EKFACInfluence(checkpoint=0).fit(None, "train", mlp_context)
    np.testing.assert_array_equal(in_memory.score("test").values, first.score("test").values)
    # other settings (seed, checkpoint) do not reuse the file; a corrupt file is recomputed
    assert not EKFACInfluence(checkpoint=0, seed=1).fit(store, "train", mlp_context).factors_loaded_
    assert (tmp_path / "store" / "ekfac" / "train_ckpt001.npz").exists() is False
    path.write_bytes(b"not an npz")
    redone = EKFACInfluence(checkpoint=0).fit(store, "train", mlp_context)
    assert not redone.factors_loaded_
    np.testing.assert_array_equal(redone.score("test").values, first.score("test").values)


class _Regression(Task, key="test-ekfac-regression"):
    def train_loss(self, model, batch):
        inputs, targets = batch
        return ((model(inputs)[:, 0] - targets.to(inputs.dtype)) ** 2)

    def measurement(self, model, batch):
        return model(batch[0])[:, 0]


def test_bad_arguments(mlp_context):
    with pytest.raises(ConfigError, match="labels"):
        EKFACInfluence(labels="expected").fit(None, "train", mlp_context)
    with pytest.raises(ConfigError, match="damping"):
        EKFACInfluence(damping=-1).fit(None, "train", mlp_context)
    with pytest.raises(ConfigError, match="checkpoint"):
        EKFACInfluence(checkpoint=2).fit(None, "train", mlp_context)
    regression = TrainingContext(model=mlp_context.model, task=_Regression(), datasets=mlp_context.datasets,
                                 checkpoints=mlp_context.checkpoints)
    with pytest.raises(ConfigError, match="labels='true'"):
        EKFACInfluence().fit(None, "train", regression)
    assert np.isfinite(EKFACInfluence(labels="true").fit(None, "train", regression).score("test").values).all()


def test_a_model_without_linear_layers_is_refused(tmp_path):
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(3, dtype=torch.float64))

        def forward(self, x):
            return x[:, :3] * self.w

    x, y = zoo.classification_data(10)
    context = TrainingContext(model=Scale(), task=ClassificationTask(), datasets={"train": zoo.dataset(x, y)},
                              checkpoints=[save_checkpoint(Scale(), tmp_path / "c.pt")])
    with pytest.raises(ConfigError, match="no nn.Linear"):
        EKFACInfluence().fit(None, "train", context)
