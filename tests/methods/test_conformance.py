"""Every registered method through the same checks, on one tiny convex float64 problem.

The problem: multinomial logistic regression (6 standardised wine features, 3 classes) on
80 training examples plus two constructed ones, trained by full-batch gradient descent with
two checkpoints; 20 queries. Training example DUP is a copy of query 0 with its label,
FLIP the same input with another label. Methods that read features get a store made with
the identity projector in float64; methods that need a context get one built by hand.
Every method receives both and a ``damping`` of DAMPING when its constructor takes one.

New methods are included automatically (``method_names()``); one that is not listed in
AGREEMENT fails test_agreement_with_if_explicit until its measured agreement is stated.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_wine
from torch.utils.data import TensorDataset

from attributor.features import featurize, make_projector
from attributor.methods import Method, TrainingContext, get_method, method_names
from attributor.models import LogisticRegression, save_checkpoint
from attributor.tasks import ClassificationTask

N_TRAIN, N_TEST, N_FEATURES = 80, 20, 6
DUP, FLIP = N_TRAIN, N_TRAIN + 1
DAMPING = 1e-2
METHODS = method_names()

#: Arguments beyond ``damping`` (kept small so that the whole suite stays fast).
ARGS = {"if-lissa": {"depth": 500, "batch_size": 41}}

#: Pearson correlation of the flattened (query x train) scores with if-explicit, as
#: (lower bound, upper bound). Measured on this problem (see the comments) and set with
#: a margin. The first-order methods and TRAK have no inverse curvature (or another
#: one: TRAK's after-kernel, measurement gradients only), so only a clear positive
#: correlation is required of them. ``random`` must be uncorrelated.
AGREEMENT = {
    "if-explicit": (1.0 - 1e-12, 1.0),  # itself
    "if-cg": (0.999, 1.0),       # measured 1.0000 (max relative error 5e-7 at the default tolerance 1e-6)
    "if-lissa": (0.99, 1.0),     # measured 0.9995 (depth 500, half the data per minibatch; max rel. error 0.05)
    "if-ekfac": (0.8, 1.0),      # measured 0.890; EK-FAC with the exact expected-label correction
                                 # reaches 0.905 here: the Gauss-Newton matrix of softmax regression
                                 # is not Kronecker-factored (43% of its norm is off-diagonal in
                                 # the K-FAC eigenbasis), the rest is label-sampling noise
    "datainf": (0.7, 1.0),       # measured 0.845 (its own layer damping; swapping inverse and average
                                 # overestimates the inverse along high-curvature directions: scores ~20x)
    "trak": (0.75, 1.0),         # measured 0.864
    "tracin": (0.7, 1.0),        # measured 0.816
    "grad-dot": (0.7, 1.0),      # measured 0.816
    "grad-cos": (0.35, 1.0),     # measured 0.505 (magnitudes normalised away)
    "mirrored": (0.35, 1.0),     # measured 0.543 (one SGD step on the query's loss)
    "embedding": (-0.2, 0.2),    # measured 0.0005: ignores labels and losses
    "random": (-0.2, 0.2),       # measured -0.024
}


@pytest.fixture(scope="module")
def problem(tmp_path_factory):
    folder = tmp_path_factory.mktemp("conformance")
    data = load_wine()
    order = np.random.default_rng(0).permutation(len(data.target))
    x = data.data[order][:, :N_FEATURES]
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    y = data.target[order]
    x_test, y_test = x[N_TRAIN : N_TRAIN + N_TEST], y[N_TRAIN : N_TRAIN + N_TEST]
    x_train = np.concatenate([x[:N_TRAIN], x_test[:1], x_test[:1]])
    y_train = np.concatenate([y[:N_TRAIN], y_test[:1], (y_test[:1] + 1) % 3])
    train = TensorDataset(torch.tensor(x_train), torch.tensor(y_train))
    test = TensorDataset(torch.tensor(x_test), torch.tensor(y_test))
    torch.manual_seed(0)
    model = LogisticRegression(N_FEATURES, 3).double()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    checkpoints = []
    for c in range(2):
        for _ in range(20):
            optimizer.zero_grad()
            F.cross_entropy(model(train.tensors[0]), train.tensors[1]).backward()
            optimizer.step()
        checkpoints.append(save_checkpoint(model, folder / f"ckpt{c}.pt"))
    task = ClassificationTask()
    for split, dataset in (("train", train), ("test", test)):
        store = featurize(model, task, dataset, checkpoints, folder / "store", make_projector("identity"), split=split,
                          dtype="float64", chunk_size=32, batch_size=16, progress=False)
    context = TrainingContext(model=model, task=task, datasets={"train": train, "test": test},
                              checkpoints=checkpoints, learning_rates=[0.5, 0.5])
    return {"store": store, "context": context}


def fit(problem, name: str) -> Method:
    kwargs = dict(ARGS.get(name, {}))
    if "damping" in inspect.signature(Method.lookup(name).__init__).parameters:
        kwargs.setdefault("damping", DAMPING)
    return get_method(name, **kwargs).fit(problem["store"], "train", problem["context"])


@pytest.fixture(scope="module")
def results(problem):
    """Scores and self-influence of every method, computed once."""
    out = {}
    for name in METHODS:
        method = fit(problem, name)
        out[name] = (method.score("test", topk=5), method.self_influence())
    return out


@pytest.mark.parametrize("name", METHODS)
def test_shapes(results, name):
    scores, _ = results[name]
    n_train = N_TRAIN + 2
    assert scores.values.shape == (N_TEST, n_train) and np.isfinite(scores.values).all()
    for array in (scores.top_indices, scores.top_values, scores.bottom_indices, scores.bottom_values):
        assert array.shape == (N_TEST, 5)
    values = np.asarray(scores.values)
    np.testing.assert_array_equal(scores.top_values, -np.sort(-values, axis=1)[:, :5])
    np.testing.assert_array_equal(scores.bottom_values, np.sort(values, axis=1)[:, :5])
    assert scores.meta["method"] == name and scores.meta["n_train"] == n_train


@pytest.mark.parametrize("name", METHODS)
def test_self_influence(results, name):
    _, self_influence = results[name]
    assert self_influence.shape == (N_TRAIN + 2,)
    assert np.isfinite(self_influence).all() and (self_influence >= 0).all()


@pytest.mark.parametrize("name", METHODS)
def test_deterministic(problem, results, name):
    scores, self_influence = results[name]
    again = fit(problem, name)
    np.testing.assert_array_equal(again.score("test", topk=5).values, scores.values)
    np.testing.assert_array_equal(again.self_influence(), self_influence)


@pytest.mark.parametrize("name", METHODS)
def test_sign_convention(results, name):
    """The duplicate of query 0 is a proponent; the same input with another label an opponent."""
    if name == "random":
        pytest.skip("random scores carry no sign by design")
    values = results[name][0].values[0]
    assert values[DUP] > 0, (name, values[DUP])
    if name == "embedding":
        return  # features only: the flipped copy has the same input, so the same (maximal) score
    assert values[FLIP] < 0, (name, values[FLIP])


@pytest.mark.parametrize("name", METHODS)
def test_agreement_with_if_explicit(results, name):
    if name not in AGREEMENT:
        pytest.fail(f"method {name!r} has no measured agreement with if-explicit in AGREEMENT; measure it and add it")
    exact = np.asarray(results["if-explicit"][0].values).ravel()
    got = np.asarray(results[name][0].values).ravel()
    r = np.corrcoef(got, exact)[0, 1]
    low, high = AGREEMENT[name]
    assert low <= r <= high, f"{name}: Pearson r = {r:.4f}, expected in [{low}, {high}]"


def test_cg_matches_if_explicit_tightly(results):
    exact, cg = (np.asarray(results[name][0].values) for name in ("if-explicit", "if-cg"))
    assert np.abs(cg - exact).max() <= 1e-5 * np.abs(exact).max()
    np.testing.assert_allclose(results["if-cg"][1], results["if-explicit"][1], rtol=1e-5, atol=1e-12)

