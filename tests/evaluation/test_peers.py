"""Peers side by side: traker and dattri through ``attributor.evaluation.peers``.

Checks, on tiny digits problems: our TRAK and traker's agree (identity projection); every
adapter returns finite (n_query, n_train) scores in attributor's sign convention (a
training duplicate of a query is a top proponent); TracIn and the influence function match
a hand computation; dattri's own LDS function reproduces our LDS.
"""

from __future__ import annotations

import copy
import sys

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, spearmanr

from attributor.data import ArrayDataset, load_dataset
from attributor.errors import ConfigError, UnknownNameError
from attributor.evaluation.lds import lds
from attributor.evaluation.peers import PEERS, PeerResult, peer_ridge, run_peer
from attributor.evaluation.retrain import ClassificationRecipe, random_subsets, retrain
from attributor.features import featurize, make_projector, per_example_gradients
from attributor.methods import TRAK
from attributor.models import MLP, LogisticRegression, load_checkpoint, save_checkpoint
from attributor.models.training import fit_lbfgs, train
from attributor.tasks import ClassificationTask

pytest.importorskip("trak")
pytest.importorskip("dattri")

LR = 1e-2


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _tensors(X: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(X), torch.tensor(y)


@pytest.fixture(scope="module")
def duplicates(digits, tmp_path_factory):
    """200 training examples whose first 8 are copies (input and label) of the 8 queries;
    logistic regression early in training (checkpoints after Adam epochs 1 and 2): convex,
    so every peer's estimator is well posed (influence functions need a positive definite
    damped Hessian), and gradient norms are still comparable, so a duplicate must top its
    query's row."""
    q = 8
    X, y = digits.X_train[:200].copy(), digits.y_train[:200].copy()
    X[:q], y[:q] = digits.X_test[:q], digits.y_test[:q]
    torch.manual_seed(0)
    model = LogisticRegression(64, 10)
    folder = tmp_path_factory.mktemp("duplicates")
    paths = train(model, ClassificationTask(), ArrayDataset(X, y), folder / "ckpt", epochs=2,
                  checkpoint_epochs=[1, 2], lr=LR, progress=False)
    return model, _tensors(X, y), _tensors(digits.X_test[:q], digits.y_test[:q]), paths, folder


def test_our_trak_agrees_with_traker_identity_projection(digits, tmp_path):
    """Acceptance: mean per-query Spearman >= 0.99 with traker's NoOpProjector.

    Our damping is relative (lambda_c = damping * trace(K_c) / p per checkpoint); traker's
    lambda_reg is absolute and applies to X^T X of its features X = G / sqrt(p), i.e. to
    K / p. We pass lambda_reg = mean_c(lambda_c) / p (one value for both checkpoints).
    damping 1e-3 keeps traker's float32 inverse accurate (1e-4 already breaks it) while the
    per-checkpoint lambda differences stay negligible (at 1e-1 the mean drops to ~0.99).
    """
    X, y, Xq, yq = digits.X_train[:300], digits.y_train[:300], digits.X_test[:40], digits.y_test[:40]
    torch.manual_seed(0)
    model = MLP(64, 10, hidden=[16])
    paths = train(model, ClassificationTask(), ArrayDataset(X, y), tmp_path / "ckpt", epochs=10,
                  checkpoint_epochs=[5, 10], lr=LR, progress=False)
    task, identity = ClassificationTask(), make_projector("identity")
    store = featurize(model, task, ArrayDataset(X, y), paths, tmp_path / "store", identity, dtype="float64", progress=False)
    featurize(model, task, ArrayDataset(Xq, yq), paths, tmp_path / "store", identity, split="queries", dtype="float64", progress=False)
    damping, p = 1e-3, store.dim
    method = TRAK(damping=damping).fit(store)
    ours, our_self = method.score("queries").values, method.self_influence()
    lambdas = [damping * np.trace(store.features("train", c).T @ store.features("train", c)) / p for c in range(2)]
    for name in ("traker-trak", "dattri-trak"):  # dattri's TRAK uses the same absolute units
        peer = run_peer(name, model, _tensors(X, y), _tensors(Xq, yq), paths, proj_dim=None,
                        damping=float(np.mean(lambdas)) / p, work_dir=tmp_path / "work")
        rho = [spearmanr(a, b)[0] for a, b in zip(ours, peer.scores)]
        signs = [pearsonr(a, b)[0] for a, b in zip(ours, peer.scores)]
        print(f"{name}: mean Spearman {np.mean(rho):.4f} (min {np.min(rho):.4f}), min Pearson {np.min(signs):.4f}")
        assert np.mean(rho) >= 0.99
        assert min(signs) > 0
        assert spearmanr(our_self, peer.self_influence)[0] > 0.99


@pytest.mark.parametrize("name", PEERS)
def test_duplicate_of_a_query_is_a_top_proponent(name, duplicates):
    model, train_set, queries, paths, folder = duplicates
    q, n = len(queries[1]), len(train_set[1])
    result = run_peer(name, model, train_set, queries, paths, proj_dim=128, damping=1e-2,
                      learning_rates=[LR, LR], work_dir=folder / "work")
    assert isinstance(result, PeerResult)
    assert result.scores.shape == (q, n) and result.scores.dtype == np.float64
    assert np.isfinite(result.scores).all()
    assert result.self_influence.shape == (n,) and np.isfinite(result.self_influence).all()
    assert result.featurize_s >= 0 and result.score_s > 0
    own = result.scores[np.arange(q), np.arange(q)]
    assert (own > 0).all(), f"{name}: a duplicate of its query scored {own.min():.3g}"
    ranks = (result.scores > own[:, None]).sum(axis=1)
    assert (ranks < 5).all(), f"{name}: duplicate ranks {ranks.tolist()}"
    # kernels, grad-dot and a convex model's damped Hessian are positive (semi-)definite
    assert (result.self_influence >= -1e-6 * np.abs(result.self_influence).max()).all()


def _loss_gradients(model, paths, data) -> list[torch.Tensor]:
    """Per-example cross-entropy gradients (n, p) at each checkpoint, float64."""
    task, names = ClassificationTask(), [name for name, _ in model.named_parameters()]
    model64 = copy.deepcopy(model).double()
    out = []
    for path in paths:
        load_checkpoint(model64, path)
        out.append(per_example_gradients(model64, task, (data[0].double(), data[1]), names, function="train_loss"))
    return out


def test_tracin_matches_hand_computation(duplicates):
    """score(q, j) = sum_c eta_c grad l(z_q) . grad l(z_j), unprojected: exactly dattri's, same sign."""
    model, train_set, queries, paths, folder = duplicates
    result = run_peer("dattri-tracin", model, train_set, queries, paths, proj_dim=None,
                      learning_rates=[LR, 2 * LR], work_dir=folder / "work")
    train_grads, query_grads = _loss_gradients(model, paths, train_set), _loss_gradients(model, paths, queries)
    expected = sum(eta * (gq @ gt.T) for eta, gq, gt in zip([LR, 2 * LR], query_grads, train_grads)).numpy()
    np.testing.assert_allclose(result.scores, expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())
    expected_self = sum(eta * (gt * gt).sum(dim=1) for eta, gt in zip([LR, 2 * LR], train_grads)).numpy()
    np.testing.assert_allclose(result.self_influence, expected_self, rtol=1e-3)


def test_influence_function_matches_exact_solve(digits, tmp_path):
    """dattri-if against an explicit float64 solve of g_q^T (H + lambda I)^{-1} g_j, H the
    Hessian of the mean training cross-entropy, on logistic regression at its optimum
    (convex, so 10 CG steps converge): same values, hence same sign and orientation."""
    n, q, damping = 200, 8, 1e-2
    train_set, queries = _tensors(digits.X_train[:n], digits.y_train[:n]), _tensors(digits.X_test[:q], digits.y_test[:q])
    torch.manual_seed(0)
    model = fit_lbfgs(LogisticRegression(64, 10), ClassificationTask(), ArrayDataset(*train_set), l2=1e-2)
    path = save_checkpoint(model, tmp_path / "logreg.pt")
    result = run_peer("dattri-if", model, train_set, queries, [path], damping=damping, work_dir=tmp_path)
    names = [name for name, _ in model.named_parameters()]
    model64 = load_checkpoint(LogisticRegression(64, 10).double(), path)
    task, data64 = ClassificationTask(), (train_set[0].double(), train_set[1])
    g_train = per_example_gradients(model64, task, data64, names, function="train_loss")
    g_query = per_example_gradients(model64, task, (queries[0].double(), queries[1]), names, function="train_loss")

    def mean_loss(theta: torch.Tensor) -> torch.Tensor:
        logits = data64[0] @ theta[:640].reshape(10, 64).T + theta[640:]
        return torch.nn.functional.cross_entropy(logits, data64[1])

    theta = torch.cat([model64.linear.weight.detach().reshape(-1), model64.linear.bias.detach()])
    damped = torch.func.hessian(mean_loss)(theta) + damping * torch.eye(650, dtype=torch.float64)
    expected = (g_query @ torch.linalg.solve(damped, g_train.T)).numpy()
    np.testing.assert_allclose(result.scores, expected, atol=1e-3 * np.abs(expected).max())
    expected_self = (g_train * torch.linalg.solve(damped, g_train.T).T).sum(dim=1).numpy()
    np.testing.assert_allclose(result.self_influence, expected_self, atol=1e-3 * np.abs(expected_self).max())


def test_peer_ridge_is_our_relative_damping_on_each_peers_own_kernel(digits):
    """The converted ridge equals d * trace(K_peer) / k computed from the peer's own
    projected features (traker: BasicProjector of g / sqrt(p); dattri: its projector of
    g / sqrt(p), which divides by sqrt(k) again), within the projection's noise."""
    from dattri.func.projection import random_project
    from trak.projectors import BasicProjector, ProjectionType

    n, k, d = 300, 512, 0.3
    torch.manual_seed(0)
    model = fit_lbfgs(LogisticRegression(64, 10).double(), ClassificationTask(),
                      ArrayDataset(digits.X_train[:n].astype(np.float64), digits.y_train[:n]), l2=1.0)
    g = per_example_gradients(model, ClassificationTask(), (torch.tensor(digits.X_train[:n]).double(), torch.tensor(digits.y_train[:n])),
                              [name for name, _ in model.named_parameters()], function="measurement").float()
    p = g.shape[1]
    phi = make_projector("gaussian", k, seed=0).project(g.double(), 0)
    our_trace = float((phi**2).sum())
    traker = BasicProjector(grad_dim=p, proj_dim=k, seed=0, proj_type=ProjectionType.normal, device="cpu", dtype=torch.float32)
    x_traker = traker.project(g / p**0.5, model_id=0)
    x_dattri = random_project(g, n, proj_dim=k, proj_max_batch_size=32, proj_seed=0, device="cpu",
                              proj_type="normal")(g / p**0.5, ensemble_id=0)
    for name, x in (("traker-trak", x_traker), ("dattri-trak", x_dattri)):
        expected = d * float((x.double() ** 2).sum()) / k
        assert peer_ridge(name, d, our_trace, p, k) == pytest.approx(expected, rel=0.1), name
    # the two conventions differ by k: what the bench gave dattri before issue 20
    assert peer_ridge("traker-trak", d, our_trace, p, k) / peer_ridge("dattri-trak", d, our_trace, p, k) == pytest.approx(k)
    assert peer_ridge("dattri-trak", d, our_trace, p, None) == pytest.approx(d * our_trace / p**2)
    with pytest.raises(UnknownNameError):
        peer_ridge("dattri-if", d, our_trace, p, k)


@pytest.mark.parametrize("name", ["traker-trak", "dattri-trak"])
def test_converted_ridge_reproduces_our_projected_trak(name, digits, tmp_path):
    """Our TRAK (gaussian projection, relative damping 3, where the ridge matters) and the
    peer's TRAK at peer_ridge give the same ranking up to projection differences, much
    closer than the peer at a ridge k times off."""
    n, q, k, d = 200, 20, 1024, 3.0
    X, y, Xq, yq = digits.X_train[:n], digits.y_train[:n], digits.X_test[:q], digits.y_test[:q]
    torch.manual_seed(0)
    model = LogisticRegression(64, 10)  # early in training: Q is not ~0 for most examples
    path = train(model, ClassificationTask(), ArrayDataset(X, y), tmp_path / "ckpt", epochs=2, checkpoint_epochs=[2], lr=LR,
                 progress=False)[0]
    task, projector = ClassificationTask(), make_projector("gaussian", k, seed=0)
    store = featurize(model, task, ArrayDataset(X, y), [path], tmp_path / "store", projector, dtype="float64", progress=False)
    featurize(model, task, ArrayDataset(Xq, yq), [path], tmp_path / "store", projector, split="queries", dtype="float64", progress=False)
    ours = TRAK(damping=d).fit(store).score("queries").values
    trace = float((store.features("train", 0).astype(np.float64) ** 2).sum())
    ridge = peer_ridge(name, d, trace, int(store.settings["n_params"]), k)
    rho = {}
    for label, value in (("matched", ridge), ("k x heavier", ridge * k), ("k x lighter", ridge / k)):
        peer = run_peer(name, model, _tensors(X, y), _tensors(Xq, yq), [path], proj_dim=k, damping=value, work_dir=tmp_path / "w")
        rho[label] = float(np.mean([pearsonr(a, b)[0] for a, b in zip(ours, peer.scores)]))
    print(name, rho)
    assert rho["matched"] >= 0.9
    assert rho["matched"] > max(rho["k x heavier"], rho["k x lighter"]) + 0.02


def test_dattri_lds_matches_ours(digits, tmp_path):
    """Acceptance: dattri.metric.lds on our scores gives our LDS to 3 decimals."""
    from dattri.metric import lds as dattri_lds

    n, q = 200, 20
    recipe = ClassificationRecipe(digits.X_train[:n], digits.y_train[:n], digits.X_test[:q], digits.y_test[:q],
                                  model="logreg", trainer="lbfgs", train_args={"l2": 1.0}, dtype="float64")
    masks = random_subsets(n, 10, 0.5, seed=0)
    actual = retrain(recipe, masks, tmp_path / "cache", progress=False)["measurement"]  # (10, q)
    model = recipe.train_on(np.ones(n, dtype=bool))
    checkpoint = save_checkpoint(model, tmp_path / "full.pt")
    task, identity = ClassificationTask(), make_projector("identity")
    train_set = ArrayDataset(digits.X_train[:n].astype(np.float64), digits.y_train[:n])
    query_set = ArrayDataset(digits.X_test[:q].astype(np.float64), digits.y_test[:q])
    store = featurize(model, task, train_set, [checkpoint], tmp_path / "store", identity, dtype="float64", progress=False)
    featurize(model, task, query_set, [checkpoint], tmp_path / "store", identity, split="queries", dtype="float64", progress=False)
    scores = TRAK(damping=1e-2).fit(store).score("queries").values  # (q, n)

    ours = lds(scores, masks, actual)["lds"]
    indices = torch.tensor(np.stack([np.flatnonzero(mask) for mask in masks]))  # (m, n / 2)
    per_query, _ = dattri_lds(torch.tensor(scores.T), (torch.tensor(actual), indices))
    theirs = float(np.nanmean(per_query.numpy()))
    print(f"LDS ours {ours:.6f}, dattri {theirs:.6f}")
    assert abs(ours - theirs) < 5e-4


def test_errors(duplicates, monkeypatch):
    model, train_set, queries, paths, folder = duplicates
    with pytest.raises(UnknownNameError, match="traker-trak"):
        run_peer("kronfluence", model, train_set, queries, paths, work_dir=folder)
    with pytest.raises(ConfigError, match="learning_rates"):
        run_peer("dattri-tracin", model, train_set, queries, paths, learning_rates=[1.0], work_dir=folder)
    monkeypatch.setitem(sys.modules, "trak", None)
    with pytest.raises(ConfigError, match=r"attributor\[peers\]"):
        run_peer("traker-trak", model, train_set, queries, paths, work_dir=folder)
    monkeypatch.setitem(sys.modules, "dattri.algorithm.tracin", None)
    with pytest.raises(ConfigError, match=r"attributor\[peers\]"):
        run_peer("dattri-tracin", model, train_set, queries, paths, work_dir=folder)
