"""TRAK against its closed form computed independently in numpy float64.

For a 2-class linear model with logits W x + b, the margin f = z_y - z_other has the
per-example gradient +x on row y of W, -x on the other row, +1 / -1 on the biases: it does
not depend on the weights, but Q = 1 - p_y does, so the checkpoints differ through Q.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_breast_cancer

from attributor.errors import ConfigError, NotFittedError, StoreError, UnknownNameError
from attributor.features import FeatureStore, featurize, make_projector
from attributor.methods import TRAK, get_method, method_names
from attributor.models import LogisticRegression, save_checkpoint
from attributor.tasks import ClassificationTask

DAMPING = 1e-3
N_TRAIN, N_TEST = 100, 20


def _margin_gradients(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(n, 2d + 2): [linear.weight (2, d) row-major, linear.bias (2,)]."""
    n, d = x.shape
    sign = np.where(np.arange(2)[None, :] == y[:, None], 1.0, -1.0)  # (n, 2)
    weight = sign[:, :, None] * x[:, None, :]  # (n, 2, d)
    return np.concatenate([weight.reshape(n, 2 * d), sign], axis=1)


def _q(weight: np.ndarray, bias: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    logits = x @ weight.T + bias
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return 1.0 - probs[np.arange(len(y)), y]


def _trak(phi_train: list[np.ndarray], phi_query: list[np.ndarray], q_train: list[np.ndarray]) -> np.ndarray:
    """TRAK eq. (16) with the ensemble over checkpoints, written out directly."""
    total = 0.0
    for phi, psi in zip(phi_train, phi_query):
        kernel = phi.T @ phi
        lam = DAMPING * np.trace(kernel) / kernel.shape[0]
        total = total + psi @ np.linalg.solve(kernel + lam * np.eye(kernel.shape[0]), phi.T)
    return total / len(phi_train) * np.mean(q_train, axis=0)[None, :]


def _train_checkpoints(model, x, y, folder, n=2, steps=10):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    paths, weights = [], []
    for c in range(n):
        for _ in range(steps):
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
        paths.append(save_checkpoint(model, folder / f"ckpt{c}.pt"))
        weights.append((model.linear.weight.detach().numpy().copy(), model.linear.bias.detach().numpy().copy()))
    return paths, weights


def _featurize(model, x, y, checkpoints, store, split, chunk_size):
    return featurize(model, ClassificationTask(), torch.utils.data.TensorDataset(x, y), checkpoints, store,
                     make_projector("identity"), split=split, dtype="float64", chunk_size=chunk_size,
                     batch_size=16, progress=False)


@pytest.fixture(scope="module")
def problem(tmp_path_factory):
    folder = tmp_path_factory.mktemp("trak")
    data = load_breast_cancer()
    x = data.data[: N_TRAIN + N_TEST].astype(np.float64)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    y = data.target[: N_TRAIN + N_TEST].astype(np.int64)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    torch.manual_seed(0)
    model = LogisticRegression(x.shape[1], 2).double()
    checkpoints, weights = _train_checkpoints(model, xt[:N_TRAIN], yt[:N_TRAIN], folder)
    store = folder / "store"
    _featurize(model, xt[:N_TRAIN], yt[:N_TRAIN], checkpoints, store, "train", chunk_size=32)
    _featurize(model, xt[N_TRAIN:], yt[N_TRAIN:], checkpoints, store, "test", chunk_size=32)

    phi_train = _margin_gradients(x[:N_TRAIN], y[:N_TRAIN])
    phi_test = _margin_gradients(x[N_TRAIN:], y[N_TRAIN:])
    q = [_q(w, b, x[:N_TRAIN], y[:N_TRAIN]) for w, b in weights]
    assert not np.allclose(q[0], q[1])  # the checkpoints differ
    return {"store": FeatureStore.open(store), "phi_train": phi_train, "phi_test": phi_test, "q": q,
            "model": model, "x": xt, "y": yt, "checkpoints": checkpoints, "folder": folder}


def _relative_error(got, exact) -> float:
    return float(np.max(np.abs(got - exact)) / np.max(np.abs(exact)))


def _dense_from_blocks(method: TRAK, queries: str, shape) -> np.ndarray:
    out = np.full(shape, np.nan)
    for rows, offset, block in method.score_blocks(queries):
        out[rows, offset : offset + block.shape[1]] = block
    assert not np.isnan(out).any()
    return out


def test_features_are_the_closed_form_margin_gradients(problem):
    store = problem["store"]
    for c in range(2):
        np.testing.assert_allclose(store.features("train", c), problem["phi_train"], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(store.out_to_loss("train", c), problem["q"][c], rtol=1e-10, atol=1e-12)


def test_trak_scores_equal_the_closed_form(problem):
    store = problem["store"]
    exact = _trak([problem["phi_train"]] * 2, [problem["phi_test"]] * 2, problem["q"])
    method = TRAK(damping=DAMPING).fit(store)
    scores = method.score("test", topk=5)
    assert scores.values.shape == (N_TEST, N_TRAIN)
    assert _relative_error(scores.values, exact) <= 1e-6
    assert _relative_error(_dense_from_blocks(method, "test", exact.shape), exact) <= 1e-9
    assert scores.meta["method"] == "trak" and scores.meta["n_train"] == N_TRAIN


def test_self_influence_is_the_diagonal_and_non_negative(problem):
    exact = _trak([problem["phi_train"]] * 2, [problem["phi_train"]] * 2, problem["q"])
    self_influence = TRAK(damping=DAMPING).fit(problem["store"]).self_influence()
    assert self_influence.shape == (N_TRAIN,)
    assert _relative_error(self_influence, np.diag(exact)) <= 1e-9
    assert (self_influence >= 0).all()
    train_scores = TRAK(damping=DAMPING).fit(problem["store"]).score("train").values
    np.testing.assert_allclose(np.diag(train_scores), self_influence, rtol=1e-5)


@pytest.mark.parametrize("checkpoint", [0, 1])
def test_single_checkpoint_of_the_ensemble(problem, checkpoint):
    exact = _trak([problem["phi_train"]], [problem["phi_test"]], [problem["q"][checkpoint]])
    method = TRAK(damping=DAMPING, checkpoints=[checkpoint]).fit(problem["store"])
    assert _relative_error(_dense_from_blocks(method, "test", exact.shape), exact) <= 1e-9
    ensemble = TRAK(damping=DAMPING).fit(problem["store"])
    assert _relative_error(_dense_from_blocks(ensemble, "test", exact.shape), exact) > 1e-3


def test_damping_changes_the_scores(problem):
    exact = _trak([problem["phi_train"]] * 2, [problem["phi_test"]] * 2, problem["q"])
    other = _dense_from_blocks(TRAK(damping=0.5).fit(problem["store"]), "test", exact.shape)
    assert _relative_error(other, exact) > 1e-3


def test_top_indices_follow_the_dense_values(problem):
    scores = TRAK(damping=DAMPING).fit(problem["store"]).score("test", topk=7)
    values = np.asarray(scores.values)
    top = np.argsort(-values, axis=1, kind="stable")[:, :7]
    bottom = np.argsort(values, axis=1, kind="stable")[:, :7]
    assert np.array_equal(scores.top_indices, top)
    assert np.array_equal(scores.bottom_indices, bottom)
    np.testing.assert_allclose(scores.top_values, np.take_along_axis(values, top, 1), rtol=1e-6)
    np.testing.assert_allclose(scores.bottom_values, np.take_along_axis(values, bottom, 1), rtol=1e-6)
    assert (np.diff(scores.top_values, axis=1) <= 0).all() and (np.diff(scores.bottom_values, axis=1) >= 0).all()


def test_sparse_scores_keep_the_same_top_k(problem):
    method = TRAK(damping=DAMPING).fit(problem["store"])
    dense, sparse = method.score("test", topk=4), method.score("test", topk=4, dense=False)
    assert sparse.values is None
    assert np.array_equal(dense.top_indices, sparse.top_indices)
    assert np.array_equal(dense.bottom_indices, sparse.bottom_indices)


def test_sign_convention_on_a_one_dimensional_toy(tmp_path):
    x = torch.tensor([[-2.0], [-1.0], [-0.5], [0.5], [1.0], [2.0], [1.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1, 1, 1, 0])  # example 6 is example 4 with the opposite label
    torch.manual_seed(0)
    model = LogisticRegression(1, 2).double()
    checkpoints, _ = _train_checkpoints(model, x, y, tmp_path, n=1)
    _featurize(model, x, y, checkpoints, tmp_path / "store", "train", chunk_size=4)
    store = _featurize(model, x[4:5], y[4:5], checkpoints, tmp_path / "store", "query", chunk_size=4)
    values = TRAK(damping=DAMPING).fit(store).score("query", topk=3).values[0]
    assert values[4] > 0, values  # identical example, same label: a proponent
    assert values[6] < 0, values  # identical input, opposite label: an opponent


def test_score_before_fit():
    with pytest.raises(NotFittedError):
        TRAK().score("test")
    with pytest.raises(NotFittedError):
        TRAK().self_influence()


@pytest.mark.parametrize("damping", [-1e-3, float("nan"), float("inf"), "0.1"])
def test_invalid_damping(problem, damping):
    with pytest.raises(ConfigError):
        TRAK(damping=damping).fit(problem["store"])


@pytest.mark.parametrize("checkpoints", [[5], [-1], [0, 2], []])
def test_checkpoints_out_of_range(problem, checkpoints):
    with pytest.raises(ConfigError):
        TRAK(checkpoints=checkpoints).fit(problem["store"])


def test_incomplete_splits_are_refused(problem, tmp_path):
    store = FeatureStore.create(tmp_path / "partial", problem["store"].settings)
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        store.add_split(split, n)
        with store.writing():
            for c in range(store.n_checkpoints):
                for index, start, stop in store.chunk_bounds(split):
                    if (split, c, index) != ("test", 1, 0):
                        store.write_chunk(split, c, index, problem["store"].read_chunk(split, c, index)[0],
                                          np.asarray(problem["store"].read_chunk(split, c, index)[1]))
    assert store.is_complete("train") and not store.is_complete("test")
    method = TRAK(damping=DAMPING).fit(store)
    with pytest.raises(StoreError, match="incomplete"):
        method.score("test")
    with pytest.raises(StoreError, match="incomplete"):
        TRAK(damping=DAMPING).fit(store, split="test")
    with pytest.raises(StoreError):
        method.score("no-such-split")


def test_trak_with_small_chunks_and_default_topk(problem, tmp_path):
    """chunk_size below topk: query chunks and train chunks both smaller than k."""
    model, x, y, checkpoints = problem["model"], problem["x"], problem["y"], problem["checkpoints"]
    _featurize(model, x[:30], y[:30], checkpoints, tmp_path / "small", "train", chunk_size=16)
    store = _featurize(model, x[N_TRAIN:], y[N_TRAIN:], checkpoints, tmp_path / "small", "test", chunk_size=16)
    scores = TRAK(damping=DAMPING).fit(store).score("test", topk=10)
    assert np.array_equal(scores.top_indices, np.argsort(-scores.values, axis=1, kind="stable")[:, :10])


def test_trak_with_chunks_smaller_than_topk(problem, tmp_path):
    model, x, y, checkpoints = problem["model"], problem["x"], problem["y"], problem["checkpoints"]
    _featurize(model, x[:30], y[:30], checkpoints, tmp_path / "tiny", "train", chunk_size=4)
    store = _featurize(model, x[N_TRAIN:], y[N_TRAIN:], checkpoints, tmp_path / "tiny", "test", chunk_size=4)
    scores = TRAK(damping=DAMPING).fit(store).score("test", topk=10)
    assert np.array_equal(scores.top_indices, np.argsort(-scores.values, axis=1, kind="stable")[:, :10])


def test_registry():
    method = get_method("trak", damping=0.01, checkpoints=[0])
    assert isinstance(method, TRAK) and method.damping == 0.01 and method.checkpoints == [0]
    assert method.get_params() == {"damping": 0.01, "checkpoints": [0], "damping_scale": "checkpoint"}
    assert "trak" in method_names()
    with pytest.raises(UnknownNameError) as info:
        get_method("nope")
    assert "trak" in str(info.value)


def _store_from_arrays(path, phi, psi, q):
    """A float64 store with one checkpoint per (phi (n, k), psi (m, k), q (n,)) triple: splits "train", "query"."""
    (n, k), m = phi[0].shape, psi[0].shape[0]
    settings = {"task": {"task": "classification"}, "checkpoints": [f"c{c}" for c in range(len(phi))],
                "projector": {"kind": "gaussian", "dim": k, "seed": 0, "block_rows": 4096},
                "dtype": "float64", "chunk_size": 4, "n_params": 10, "dim": k}
    store = FeatureStore.create(path, settings)
    store.add_split("train", n)
    store.add_split("query", m)
    with store.writing():
        for c in range(len(phi)):
            for i, (_, lo, hi) in enumerate(store.chunk_bounds("train")):
                store.write_chunk("train", c, i, phi[c][lo:hi], q[c][lo:hi])
            for i, (_, lo, hi) in enumerate(store.chunk_bounds("query")):
                store.write_chunk("query", c, i, psi[c][lo:hi], np.ones(hi - lo))
    return store


def test_shared_damping_uses_one_ridge_for_the_whole_ensemble(tmp_path):
    """damping_scale='shared': lambda = d * mean_m trace(K_m) / k for every checkpoint (traker's lambda_reg)."""
    rng = np.random.default_rng(0)
    k, n, m = 3, 8, 4
    phi = [rng.standard_normal((n, k)), 5.0 * rng.standard_normal((n, k))]  # very different kernel traces
    psi = [rng.standard_normal((m, k)), 5.0 * rng.standard_normal((m, k))]
    q = [rng.random(n), rng.random(n)]
    store = _store_from_arrays(tmp_path / "s", phi, psi, q)
    damping = 0.3
    lam = damping * np.mean([np.trace(p.T @ p) for p in phi]) / k
    exact = sum(s @ np.linalg.solve(p.T @ p + lam * np.eye(k), p.T) for p, s in zip(phi, psi)) / 2 * np.mean(q, axis=0)
    shared = TRAK(damping=damping, damping_scale="shared").fit(store).score("query").values
    assert _relative_error(shared, exact) <= 1e-10
    per_checkpoint = TRAK(damping=damping).fit(store).score("query").values
    assert _relative_error(per_checkpoint, exact) > 1e-3
    with pytest.raises(ConfigError, match="damping_scale"):
        TRAK(damping_scale="global").fit(store)


def test_damping_zero_on_a_singular_kernel_is_the_pseudo_inverse(tmp_path):
    """n = k - 1 examples: Phi^T Phi is singular, but a Cholesky factorisation often succeeds on
    round-off (about half of these seeds) and returns garbage; damping 0 must give numpy's pinv."""
    rng = np.random.default_rng(0)
    k, n, m, n_checkpoints = 6, 5, 3, 12
    phi = [rng.standard_normal((n, k)) for _ in range(n_checkpoints)]
    psi = [rng.standard_normal((m, k)) for _ in range(n_checkpoints)]  # with a component outside the span
    q = [rng.random(n) for _ in range(n_checkpoints)]
    store = _store_from_arrays(tmp_path / "s", phi, psi, q)
    for c in range(n_checkpoints):
        pinv = np.linalg.pinv(phi[c].T @ phi[c])
        method = TRAK(damping=0.0, checkpoints=[c]).fit(store)
        scores = method.score("query").values
        assert _relative_error(scores, psi[c] @ pinv @ phi[c].T * q[c]) <= 1e-8, c
        self_influence = method.self_influence()
        assert _relative_error(self_influence, np.einsum("ik,kl,il->i", phi[c], pinv, phi[c]) * q[c]) <= 1e-8, c
        assert (self_influence >= 0).all()


def test_factorisation_of_a_small_kernel_runs_on_one_thread_and_restores_the_count(problem, monkeypatch):
    """Below PARALLEL_FACTOR_MIN_DIM the factorisation is scoped to one torch thread (a second
    thread loses several-fold on a busy 2-core machine); the caller's count comes back, also
    after an error."""
    cholesky = torch.linalg.cholesky_ex
    seen = []

    def recording(matrix, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return cholesky(matrix, *args, **kwargs)

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.setattr(torch.linalg, "cholesky_ex", recording)
        TRAK(damping=DAMPING).fit(problem["store"])
        assert seen == [1, 1] and torch.get_num_threads() == 2

        def failing(matrix, *args, **kwargs):
            raise RuntimeError("simulated failure")

        monkeypatch.setattr(torch.linalg, "cholesky_ex", failing)
        with pytest.raises(RuntimeError, match="simulated"):
            TRAK(damping=DAMPING).fit(problem["store"])
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
