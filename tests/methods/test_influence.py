"""Influence functions (if-explicit, if-cg, if-lissa) against independent float64 answers.

* if-explicit's matrix against the closed-form Hessian of softmax regression in numpy, and
  its scores against the formula written out in numpy;
* if-explicit against actual leave-one-out retraining of an L2-regularised logistic
  regression trained to convergence;
* if-cg and the deterministic (full-batch) LiSSA recursion against if-explicit, also on a
  non-convex MLP where the Gauss-Newton matrix and the Hessian differ;
* argument validation.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_breast_cancer, load_wine
from torch.utils.data import TensorDataset

import zoo
from attributor.errors import ConfigError
from attributor.features.gradients import per_example_gradients
from attributor.methods import CGInfluence, ExplicitInfluence, LiSSAInfluence, TrainingContext, get_method
from attributor.models import LogisticRegression, save_checkpoint
from attributor.tasks import ClassificationTask

N_TRAIN, N_TEST, D, C = 60, 10, 5, 3


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _numpy_gradients(weight, bias, x, y, kind):
    """(n, C*D + C) gradients, parameter order weight (C, D) row-major then bias (C,)."""
    p = _softmax(x @ weight.T + bias)
    onehot = np.eye(C)[y]
    if kind == "loss":  # cross-entropy: p - e_y
        dz = p - onehot
    else:  # margin z_y - logsumexp(others): e_y - softmax over the other classes
        others = np.where(onehot == 1, 0.0, p)
        dz = onehot - others / others.sum(axis=1, keepdims=True)
    return np.concatenate([(dz[:, :, None] * x[:, None, :]).reshape(len(x), -1), dz], axis=1)


def _numpy_hessian(weight, bias, x):
    """sum_i kron(diag(p_i) - p_i p_i^T, x~_i x~_i^T) with x~ = [x, 1], reordered to [weight, bias]."""
    p = _softmax(x @ weight.T + bias)
    xt = np.concatenate([x, np.ones((len(x), 1))], axis=1)
    h = sum(np.kron(np.diag(pi) - np.outer(pi, pi), np.outer(xi, xi)) for pi, xi in zip(p, xt))
    # rows of kron are (class c, input k) over k in 0..D (D is the bias); move biases last
    order = [c * (D + 1) + k for c in range(C) for k in range(D)] + [c * (D + 1) + D for c in range(C)]
    return h[np.ix_(order, order)]


@pytest.fixture(scope="module")
def softmax_problem(tmp_path_factory):
    folder = tmp_path_factory.mktemp("influence")
    data = load_wine()
    order = np.random.default_rng(1).permutation(len(data.target))
    x = data.data[order][:, :D]
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    y = data.target[order]
    torch.manual_seed(0)
    model = LogisticRegression(D, C).double()
    xt, yt = torch.tensor(x[:N_TRAIN]), torch.tensor(y[:N_TRAIN])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(30):
        optimizer.zero_grad()
        F.cross_entropy(model(xt), yt).backward()
        optimizer.step()
    checkpoint = save_checkpoint(model, folder / "ckpt.pt")
    datasets = {"train": TensorDataset(xt, yt), "test": TensorDataset(torch.tensor(x[N_TRAIN : N_TRAIN + N_TEST]),
                                                                     torch.tensor(y[N_TRAIN : N_TRAIN + N_TEST]))}
    context = TrainingContext(model=model, task=ClassificationTask(), datasets=datasets, checkpoints=[checkpoint])
    weight, bias = (model.linear.weight.detach().numpy().copy(), model.linear.bias.detach().numpy().copy())
    return {"context": context, "weight": weight, "bias": bias, "x": x, "y": y}


@pytest.mark.parametrize("hessian", ["exact", "gauss-newton"])
def test_explicit_matrix_is_the_closed_form_hessian(softmax_problem, hessian):
    s = softmax_problem
    method = ExplicitInfluence(damping=0.05, hessian=hessian).fit(None, "train", s["context"])
    exact = _numpy_hessian(s["weight"], s["bias"], s["x"][:N_TRAIN])
    got = method.hessian_.numpy()
    assert np.abs(got - exact).max() <= 1e-8 * np.abs(exact).max()


def test_explicit_scores_are_the_closed_form(softmax_problem):
    s = softmax_problem
    damping = 0.05
    method = ExplicitInfluence(damping=damping).fit(None, "train", s["context"])
    x, y, w, b = s["x"], s["y"], s["weight"], s["bias"]
    g_train = _numpy_gradients(w, b, x[:N_TRAIN], y[:N_TRAIN], "loss")
    g_test = _numpy_gradients(w, b, x[N_TRAIN : N_TRAIN + N_TEST], y[N_TRAIN : N_TRAIN + N_TEST], "margin")
    p = g_train.shape[1]
    lam = damping * (g_train**2).sum() / p  # relative damping: a fraction of the mean Fisher eigenvalue
    assert method.lambda_ == pytest.approx(lam, rel=1e-12)
    damped = _numpy_hessian(w, b, x[:N_TRAIN]) + lam * np.eye(p)
    exact = -g_test @ np.linalg.solve(damped, g_train.T)
    scores = method.score("test").values
    assert np.abs(scores - exact).max() <= 1e-8 * np.abs(exact).max()
    self_exact = np.einsum("ij,ji->i", g_train, np.linalg.solve(damped, g_train.T))
    np.testing.assert_allclose(method.self_influence(), self_exact, rtol=1e-8)


def test_explicit_with_damping_is_the_closed_form_at_the_new_damping(softmax_problem):
    """A damping sweep re-factorises the stored curvature: the scores at the new damping are
    the numpy closed form there, and the original fit is untouched."""
    s = softmax_problem
    method = ExplicitInfluence(damping=0.05).fit(None, "train", s["context"])
    before = method.score("test").values.copy()
    x, y, w, b = s["x"], s["y"], s["weight"], s["bias"]
    g_train = _numpy_gradients(w, b, x[:N_TRAIN], y[:N_TRAIN], "loss")
    g_test = _numpy_gradients(w, b, x[N_TRAIN : N_TRAIN + N_TEST], y[N_TRAIN : N_TRAIN + N_TEST], "margin")
    p = g_train.shape[1]
    for damping in (3.0, 1e-3):
        twin = method.with_damping(damping)
        lam = damping * (g_train**2).sum() / p
        exact = -g_test @ np.linalg.solve(_numpy_hessian(w, b, x[:N_TRAIN]) + lam * np.eye(p), g_train.T)
        assert twin.damping == damping and twin.lambda_ == pytest.approx(lam, rel=1e-12)
        assert np.abs(twin.score("test").values - exact).max() <= 1e-8 * np.abs(exact).max()
    np.testing.assert_array_equal(method.score("test").values, before)
    with pytest.raises(ConfigError):
        method.with_damping(-1.0)


def test_explicit_predicts_leave_one_out_retraining(tmp_path):
    """score(z, z_j) ~ f(z; trained on S) - f(z; trained on S without z_j) at a regularised optimum."""
    data = load_breast_cancer()
    order = np.random.default_rng(0).permutation(len(data.target))
    x = data.data[order][:, :6]
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    y = data.target[order]
    n, alpha = 50, 1.0  # objective: sum_i l_i + alpha / 2 |theta|^2
    xt, yt = torch.tensor(x[:n]), torch.tensor(y[:n])
    query = (torch.tensor(x[n : n + 1]), torch.tensor(y[n : n + 1]))
    task = ClassificationTask()

    def train(keep: np.ndarray) -> LogisticRegression:
        torch.manual_seed(0)
        model = LogisticRegression(6, 2).double()
        optimizer = torch.optim.LBFGS(model.parameters(), lr=1, max_iter=500, tolerance_grad=1e-13,
                                      tolerance_change=1e-15, line_search_fn="strong_wolfe")

        def closure():
            optimizer.zero_grad()
            loss = F.cross_entropy(model(xt[keep]), yt[keep], reduction="sum")
            loss = loss + alpha / 2 * sum((p**2).sum() for p in model.parameters())
            loss.backward()
            return loss

        optimizer.step(closure)
        return model

    full = train(np.arange(n))
    names = [name for name, _ in full.named_parameters()]
    grads = per_example_gradients(full, task, (xt, yt), names, function="train_loss")
    p = grads.shape[1]
    assert float(sum(g.norm() for g in torch.autograd.grad(
        F.cross_entropy(full(xt), yt, reduction="sum") + alpha / 2 * sum((q**2).sum() for q in full.parameters()),
        list(full.parameters())))) < 1e-6  # converged (the LOO effects here are ~1e-2)
    damping = alpha * p / float((grads**2).sum())  # the L2 term, as the family's relative damping
    context = TrainingContext(model=full, task=task, datasets={"train": TensorDataset(xt, yt), "q": TensorDataset(*query)},
                              checkpoints=[save_checkpoint(full, tmp_path / "full.pt")])
    method = ExplicitInfluence(damping=damping, hessian="exact").fit(None, "train", context)
    assert method.lambda_ == pytest.approx(alpha, rel=1e-10)
    predicted = method.score("q").values[0]
    with torch.no_grad():
        f_full = float(task.measurement(full, query)[0])
        removed = range(20)
        actual = [f_full - float(task.measurement(train(np.delete(np.arange(n), j)), query)[0]) for j in removed]
    r = np.corrcoef(predicted[list(removed)], actual)[0, 1]
    assert r >= 0.95, (r, predicted[:20], actual)  # measured 0.9968


@pytest.fixture(scope="module")
def mlp_problem(tmp_path_factory):
    """A non-convex model: a 2-layer MLP (6 -> 8 -> 3) after a few gradient steps."""
    folder = tmp_path_factory.mktemp("mlp")
    x, y = zoo.classification_data(50, seed=3)
    checkpoints = zoo.train_and_save(zoo.mlp(), x[:40], y[:40], folder, n_checkpoints=1, steps=30)
    datasets = {"train": zoo.dataset(x[:40], y[:40]), "test": zoo.dataset(x[40:], y[40:])}
    return TrainingContext(model=zoo.mlp(), task=ClassificationTask(), datasets=datasets, checkpoints=checkpoints)


@pytest.mark.parametrize("hessian, damping", [("gauss-newton", 0.1), ("exact", 20.0)])
def test_cg_matches_explicit_on_an_mlp(mlp_problem, hessian, damping):
    """The exact Hessian is indefinite here (smallest eigenvalue about -3.6; lambda = 0.044 per 0.1 of damping)."""
    explicit = ExplicitInfluence(damping=damping, hessian=hessian).fit(None, "train", mlp_problem)
    cg = CGInfluence(damping=damping, hessian=hessian, tolerance=1e-10, max_iter=1000).fit(None, "train", mlp_problem)
    exact, got = explicit.score("test").values, cg.score("test").values
    assert np.abs(got - exact).max() <= 1e-6 * np.abs(exact).max()


def test_gauss_newton_differs_from_the_hessian_on_an_mlp(mlp_problem):
    ggn = ExplicitInfluence(damping=20.0).fit(None, "train", mlp_problem).hessian_
    hessian = ExplicitInfluence(damping=20.0, hessian="exact").fit(None, "train", mlp_problem).hessian_
    assert torch.linalg.eigvalsh(ggn)[0] > -1e-10  # positive semi-definite
    assert torch.linalg.eigvalsh(hessian)[0] < -1.0  # indefinite
    assert (ggn - hessian).norm() > 1e-3 * hessian.norm()


def test_full_batch_lissa_is_the_neumann_series_of_the_explicit_inverse(softmax_problem):
    """batch_size >= n: every step uses the whole set, so the recursion converges to (C + lambda I)^{-1} g."""
    context = softmax_problem["context"]
    exact = ExplicitInfluence(damping=0.1).fit(None, "train", context).score("test").values
    lissa = LiSSAInfluence(damping=0.1, depth=1500, batch_size=N_TRAIN).fit(None, "train", context)
    assert np.abs(lissa.score("test").values - exact).max() <= 1e-6 * np.abs(exact).max()
    shallow = LiSSAInfluence(damping=0.1, depth=20, batch_size=N_TRAIN).fit(None, "train", context)
    assert np.abs(shallow.score("test").values - exact).max() > 1e-2 * np.abs(exact).max()  # truncated series


def test_lissa_minibatches_follow_the_seed(softmax_problem):
    context = softmax_problem["context"]
    first = LiSSAInfluence(depth=50, batch_size=16, seed=1).fit(None, "train", context).score("test").values
    again = LiSSAInfluence(depth=50, batch_size=16, seed=1).fit(None, "train", context).score("test").values
    other = LiSSAInfluence(depth=50, batch_size=16, seed=2).fit(None, "train", context).score("test").values
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_lissa_with_too_small_a_scale_diverges_loudly(softmax_problem):
    with pytest.raises(ConfigError, match="diverged"):
        LiSSAInfluence(depth=200, scale=0.1).fit(None, "train", softmax_problem["context"]).score("test")


def test_groups_are_the_mean_of_member_scores(softmax_problem):
    method = CGInfluence(damping=0.05, tolerance=1e-12).fit(None, "train", softmax_problem["context"])
    groups = np.arange(N_TRAIN) % 4
    per_example = method.score("test").values
    expected = np.stack([per_example[:, groups == g].mean(axis=1) for g in range(4)], axis=1)
    np.testing.assert_allclose(method.score_groups("test", groups), expected, rtol=1e-8, atol=1e-14)
    with pytest.raises(ConfigError, match="groups"):
        method.score_groups("test", groups[:-1])


@pytest.mark.parametrize("name, kwargs, match", [
    ("if-explicit", {"damping": -0.1}, "damping"),
    ("if-explicit", {"damping": float("nan")}, "damping"),
    ("if-cg", {"damping": -1.0}, "damping"),
    ("if-lissa", {"damping": "0.1"}, "damping"),
    ("if-explicit", {"checkpoint": 1}, "checkpoint"),
    ("if-cg", {"checkpoint": -2}, "checkpoint"),
    ("if-lissa", {"checkpoint": 0.5}, "checkpoint"),
    ("if-explicit", {"max_params": 10}, "max_params"),
    ("if-explicit", {"hessian": "fisher"}, "hessian"),
    ("if-cg", {"tolerance": 0}, "tolerance"),
    ("if-cg", {"max_iter": 0}, "max_iter"),
    ("if-lissa", {"depth": 0}, "depth"),
    ("if-lissa", {"scale": -1.0}, "scale"),
    ("if-explicit", {"batch_size": 0}, "batch_size"),
])
def test_bad_arguments(softmax_problem, name, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        get_method(name, **kwargs).fit(None, "train", softmax_problem["context"])


@pytest.mark.parametrize("method", [ExplicitInfluence, CGInfluence])
def test_indefinite_curvature_is_refused_with_advice(tmp_path, method):
    """The exact Hessian of a barely trained MLP is indefinite: without damping there is no inverse to take."""
    x, y = zoo.classification_data(40, seed=5)
    checkpoints = zoo.train_and_save(zoo.mlp(seed=7), x, y, tmp_path, n_checkpoints=1, steps=1, lr=0.01)
    context = TrainingContext(model=zoo.mlp(), task=ClassificationTask(), datasets={"train": zoo.dataset(x, y)},
                              checkpoints=checkpoints)
    with pytest.raises(ConfigError, match="raise damping or use hessian='gauss-newton'"):
        method(damping=0.0, hessian="exact").fit(None, "train", context).score("train")
