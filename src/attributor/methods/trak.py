"""TRAK: Tracing with the Randomly-projected After Kernel.

Park, Georgiev, Ilyas, Leclerc, Madry, "TRAK: Attributing Model Behavior at Scale",
ICML 2023, eq. (16) with the ensemble of section 3.4. For checkpoints m = 1..M, let
Phi_m (n_train, k) hold the projected gradients of the measurement f of every training
example, phi_m(z) (k,) the same for a query z, and Q_m (n_train,) the out-to-loss term
(for classification, 1 - p of the labelled class). Then

    tau(z)_j = [ 1/M sum_m phi_m(z)^T (Phi_m^T Phi_m + lambda_m I)^{-1} phi_m(z_j) ] * Qbar_j,
    Qbar_j   = 1/M sum_m Q_m,j,

which approximates f(z; trained on S) - f(z; trained on S without z_j): positive means
z_j is a proponent. ``lambda_m = damping * trace(Phi_m^T Phi_m) / k`` (relative damping:
a fraction of the kernel's mean eigenvalue), per checkpoint by default; with
``damping_scale="shared"`` every checkpoint gets lambda = damping * mean_m trace_m / k, one
ridge for the whole ensemble as traker's ``lambda_reg`` applies. Self-influence is tau(z_j)_j.

Which ridge. The paper's formula is lambda_m = 0 (traker's default ``lambda_reg``); ours
defaults to the small relative ridge damping = 1e-2, which keeps the factorisation well
posed and is the paper's estimator up to that. The LDS of TRAK depends strongly on it
(benchmarks/RESULTS.md, "Why the LDS gaps existed": on the digits MLP 0.49 at 1e-2, 0.75
at 1). ``damping="auto"`` chooses it from the training features alone by generalised
cross-validation (:func:`select_damping`); it helps on trajectory checkpoints of networks
but not at the optimum of an l2-regularised convex objective, where Phi^T Q = l2 P^T theta
is fixed by the regulariser, the features explain little of Q and GCV runs to the largest
ridge of its grid (measured on both logistic-regression bench tasks): there the training
l2 on the kernel's scale (``attributor.pipelines.bench.trak_damping_for_l2``) is the
principled choice. The same happens at the last checkpoint of a network trained to
near-zero loss (the digits MLP's final model alone: d = 1000, LDS 0.23 against 0.61 at
d = 1); ``fit`` warns when GCV lands on the grid's largest ridge and records
``damping_at_grid_edge``.

The inverse is never formed. With damping > 0, K + lambda I = L L^T (Cholesky) and the
query side phi(z)^T (K + lambda I)^{-1} is two triangular solves with L; self-influence is
||L^{-1} phi(z_j)||^2, non-negative by construction. With damping 0 the kernel may be
singular (fewer examples than k, duplicated features) and a Cholesky factorisation can then
succeed on round-off alone and return garbage, so damping 0 always takes the
eigendecomposition K = V diag(w) V^T and the pseudo-inverse V_r diag(1/w_r) V_r^T over the
eigenvalues above max(w) * k * eps (numpy's ``pinv`` cut-off); a damped kernel that Cholesky
still refuses takes the same route.

Cost: fit is one pass over the features, O(M n k^2), plus M factorisations in float64:
Cholesky, k^3 / 3 flops each (the eigendecomposition at damping 0 takes 5-20x longer). A
factorisation of k < 2048 runs on one torch thread, the caller's count restored afterwards:
on an idle 2-core machine a second thread saves at most half the time there, while with
another process on the other core an eigendecomposition on two threads took 8-200x longer
than on one (benchmarks/trak_inverse.py, benchmarks/RESULTS.md). Scoring is
O(M n_query k^2) for the solves plus O(M n_query n_train k), streamed block by block: a
group of query chunks (:data:`SCORE_BLOCK_BYTES`) against one training chunk, whose
features are scaled by Qbar / M as they are copied out of the store, so that a block is
one GEMM per checkpoint (benchmarks/score_gemm.py: the whole scoring against one GEMM of
the same shapes).
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from attributor.errors import ConfigError, StoreError
from attributor.features.store import FeatureStore
from attributor.methods.base import Method

__all__ = ["TRAK", "select_damping", "gcv_curve", "gcv_target", "DAMPING_GRID"]

#: Relative dampings ``damping="auto"`` chooses from (a fraction of the kernel's mean eigenvalue).
DAMPING_GRID = tuple(float(x) for x in np.logspace(-4, 3, 29))

#: Smallest kernel dimension k whose factorisation uses more than one torch thread.
PARALLEL_FACTOR_MIN_DIM = 2048
#: Largest score block (query rows x training chunk) scored at once: 4,096 query rows
#: against chunks of 1,024 in float32. benchmarks/score_gemm.py (10,000 x 100,000, k = 1,024,
#: dense=False): 6.7 s; 7.4 s with 4 MiB blocks (1,024 rows: the training chunks are read
#: 10 times) and 7.4 s with 64 MiB (all 10,000 rows: each fresh 40 MB block is page-faulted
#: anew, a million faults in all against 70 thousand).
SCORE_BLOCK_BYTES = 16 * 2**20
#: Largest query side (checkpoints x query rows x k) held while scoring.
SCORE_QUERY_BYTES = 256 * 2**20


class TRAK(Method, key="trak"):
    """TRAK scores from a FeatureStore of projected gradients.

    Args:
        damping: relative ridge on the after-kernel, lambda = damping * mean eigenvalue.
            0 gives the (pseudo-)inverse of the undamped kernel. ``"auto"``: chosen from
            the training features alone by :func:`select_damping` (generalised
            cross-validation of the kernel ridge regression of Q on Phi, no retraining, no
            LDS); the chosen value is ``damping_`` and goes into the scores' metadata
            (``fit_info``). The default 1e-2 is the fixed relative ridge of earlier versions.
        checkpoints: indices of the store's checkpoints to ensemble over (default: all).
        damping_scale: "checkpoint" (each checkpoint's ridge from its own kernel) or
            "shared" (one ridge from the mean kernel trace, as traker does).
    """

    holds_kernels = True  # one k x k float64 kernel factor per checkpoint (Method.fit checks the memory)

    def __init__(self, damping: float = 1e-2, checkpoints: Sequence[int] | None = None, damping_scale: str = "checkpoint"):
        self.damping = damping
        self.checkpoints = checkpoints
        self.damping_scale = damping_scale

    def _fit(self) -> None:
        store, split = self.store_, self.split_
        if not (self.damping == "auto" or (isinstance(self.damping, (int, float)) and not isinstance(self.damping, bool)
                                           and np.isfinite(self.damping) and self.damping >= 0)):
            raise ConfigError(f"trak damping must be a finite number >= 0 or 'auto', got {self.damping!r}")
        checkpoints = list(range(store.n_checkpoints)) if self.checkpoints is None else list(self.checkpoints)
        bad = [c for c in checkpoints if not 0 <= c < store.n_checkpoints]
        if not checkpoints or bad:
            raise ConfigError(f"trak checkpoints must be indices in [0, {store.n_checkpoints}), got {self.checkpoints!r}")
        if self.damping_scale not in ("checkpoint", "shared"):
            raise ConfigError(f"trak damping_scale must be 'checkpoint' or 'shared', got {self.damping_scale!r}")
        damping = self._auto_damping(store, split, checkpoints) if self.damping == "auto" else float(self.damping)
        n = store.split_size(split)
        q_sum = np.zeros(n)
        kernels = []
        for c in checkpoints:
            kernel = torch.zeros(store.dim, store.dim, dtype=torch.float64)
            for start, stop, features, out_to_loss in store.iter_chunks(split, c):
                phi = _tensor(features, torch.float64)
                kernel.addmm_(phi.T, phi)
                q_sum[start:stop] += out_to_loss
            if self.damping_scale == "checkpoint":
                kernel = _factorize(kernel, damping)  # factor now: one k x k matrix held at a time
            kernels.append(kernel)
        if self.damping_scale == "shared":
            traces = [float(torch.trace(k)) for k in kernels]
            mean_trace = sum(traces) / len(traces)
            kernels = [_factorize(k, damping * mean_trace / t if t > 0 else damping) for k, t in zip(kernels, traces)]
        self.damping_ = damping
        self.checkpoints_ = checkpoints
        self.kernel_factors_ = kernels
        self.out_to_loss_ = q_sum / len(checkpoints)

    def _auto_damping(self, store: FeatureStore, split: str, checkpoints: list[int]) -> float:
        damping = select_damping(store, split, checkpoints)
        self.damping_at_grid_edge_ = damping == DAMPING_GRID[-1]
        if self.damping_at_grid_edge_:
            warnings.warn(
                f"trak damping='auto': generalised cross-validation chose the largest ridge of its grid "
                f"({DAMPING_GRID[-1]:g}), where TRAK is Q-weighted gradient similarity. The features explain none of Q, "
                f"as at a stationary point (a converged model, or the optimum of an l2-regularised objective): GCV has "
                f"nothing to go on. Pass a number instead (the training l2 on the kernel's scale where there is one; "
                f"benchmarks/RESULTS.md, 'Why the LDS gaps existed').", UserWarning, stacklevel=4)
        return damping

    def fit_info(self) -> dict[str, object]:
        info: dict[str, object] = {"damping_used": self.damping_} if hasattr(self, "damping_") else {}
        if self.damping == "auto" and hasattr(self, "damping_"):
            info["damping_selected"] = self.damping_
            if self.damping_at_grid_edge_:
                info["damping_at_grid_edge"] = True
        return info

    def score_blocks(self, queries: str) -> Iterator[tuple[slice, int, np.ndarray]]:
        store, split = self._fitted()
        store.require_complete(queries)
        dtype = np.float64 if store.dtype == np.float64 else np.float32
        # Qbar_j / M, folded into the training features while they are copied out of the store
        weight = (self.out_to_loss_ / len(self.checkpoints_)).astype(dtype)[:, None]
        train_chunks = store.chunk_bounds(split)
        widest = max((stop - start for _, start, stop in train_chunks), default=0)
        for rows, q_chunks in _query_groups(store, queries, widest, len(self.checkpoints_), dtype):
            # phi(z)^T (K + lambda I)^{-1} for every checkpoint: (queries in group, k)
            left = []
            for c, factor in zip(self.checkpoints_, self.kernel_factors_):
                features = np.concatenate([store.read_chunk(queries, c, i)[0] for i in q_chunks])
                left.append(factor.solve(_tensor(features, torch.float64)).to(_TORCH[dtype]))
            for t_index, t_start, t_stop in train_chunks:
                block = None
                for c, a in zip(self.checkpoints_, left):
                    features = np.asarray(store.read_chunk(split, c, t_index)[0])
                    phi = torch.from_numpy(np.multiply(features, weight[t_start:t_stop], dtype=dtype))
                    block = a @ phi.T if block is None else block.addmm_(a, phi.T)
                yield rows, t_start, block.numpy()

    def self_influence(self) -> np.ndarray:
        store, split = self._fitted()
        total = np.zeros(store.split_size(split))
        for c, factor in zip(self.checkpoints_, self.kernel_factors_):
            for start, stop, features, _ in store.iter_chunks(split, c):
                whitened = factor.whiten(_tensor(features, torch.float64))
                total[start:stop] += (whitened * whitened).sum(dim=1).numpy()
        return total / len(self.checkpoints_) * self.out_to_loss_


class _CholeskyFactor:
    """K + lambda I = L L^T with ``lower`` = L (k, k), float64."""

    def __init__(self, lower: torch.Tensor):
        self.lower = lower

    def solve(self, rows: torch.Tensor) -> torch.Tensor:
        """rows (q, k) -> rows (K + lambda I)^{-1} (q, k): two triangular solves."""
        return torch.cholesky_solve(rows.T, self.lower).T

    def whiten(self, rows: torch.Tensor) -> torch.Tensor:
        """rows (q, k) -> (L^{-1} rows^T)^T (q, k): its squared row norms are x^T (K + lambda I)^{-1} x."""
        return torch.linalg.solve_triangular(self.lower, rows.T, upper=False).T


class _EigenFactor:
    """The pseudo-inverse K^+ = B B^T with ``basis`` B = V_r diag(w_r)^{-1/2} (k, r), float64."""

    def __init__(self, basis: torch.Tensor):
        self.basis = basis

    def solve(self, rows: torch.Tensor) -> torch.Tensor:
        """rows (q, k) -> rows K^+ (q, k)."""
        return (rows @ self.basis) @ self.basis.T

    def whiten(self, rows: torch.Tensor) -> torch.Tensor:
        """rows (q, k) -> rows B (q, r): its squared row norms are x^T K^+ x."""
        return rows @ self.basis


def _factorize(kernel: torch.Tensor, damping: float, threads: int | None = None) -> _CholeskyFactor | _EigenFactor:
    """(K + lambda I)^{-1}, lambda = damping * trace(K) / k, as a factor; float64, never formed.

    damping > 0: Cholesky of K + lambda I (falls back to the eigendecomposition if that is
    refused). damping 0: the pseudo-inverse of K from its eigendecomposition, eigenvalues
    at or below max(w) * k * eps dropped. ``threads``: torch threads for the
    factorisation; default one below :data:`PARALLEL_FACTOR_MIN_DIM`, else the caller's.
    """
    k = kernel.shape[0]
    if threads is None:
        threads = 1 if k < PARALLEL_FACTOR_MIN_DIM else torch.get_num_threads()
    with _torch_threads(threads):  # every k x k step: even isfinite on 2 contended threads costs 30 ms at k = 512
        if not torch.isfinite(kernel).all():
            raise StoreError("the after-kernel has non-finite entries; the features are corrupted")
        damped = kernel.clone()
        damped.diagonal().add_(damping * float(torch.trace(kernel)) / k)
        if damping > 0:
            lower, info = torch.linalg.cholesky_ex(damped)
            if int(info) == 0:
                return _CholeskyFactor(lower)
        eigenvalues, eigenvectors = torch.linalg.eigh(damped)
        keep = eigenvalues > eigenvalues.abs().max() * k * torch.finfo(kernel.dtype).eps
        return _EigenFactor(eigenvectors[:, keep] / eigenvalues[keep].sqrt())


def gcv_curve(store: FeatureStore, split: str = "train", checkpoints: Sequence[int] | None = None,
              grid: Sequence[float] = DAMPING_GRID,
              target: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """Generalised cross-validation score of every relative damping in ``grid``, (len(grid),).

    For each checkpoint m, the kernel ridge regression of the out-to-loss terms y = Q_m
    (n,) on the features Phi_m (n, k) with ridge lambda = d * trace(K_m) / k, K_m = Phi^T Phi:
    the one-step Newton update of TRAK's linearised model (its training residuals regressed
    on the after-kernel features; eq. (16)'s sum over j for a query). Its GCV score
    (Golub, Heath & Wahba 1979) n |y - H y|^2 / (n - trace H)^2, H = Phi (K + lambda I)^{-1}
    Phi^T, estimates the leave-one-out error of that regression. From the eigendecomposition
    K = V diag(s) V^T and b = V^T Phi^T y: y^T H y = sum b^2 / (s + lambda), |H y|^2 =
    sum b^2 s / (s + lambda)^2, trace H = sum s / (s + lambda). Summed over checkpoints
    (each GCV normalised by its |y|^2 / n). Cost: one pass over the features and one k x k
    eigendecomposition per checkpoint. Nothing here reads retrained models. ``target`` maps
    the out-to-loss terms to another regression target (default :func:`gcv_target`, Q itself;
    benchmarks/trak_ridge.py compares the margins).
    """
    checkpoints = list(range(store.n_checkpoints)) if checkpoints is None else list(checkpoints)
    grid = np.asarray(grid, dtype=np.float64)
    total = np.zeros(len(grid))
    n = store.split_size(split)
    for c in checkpoints:
        kernel = torch.zeros(store.dim, store.dim, dtype=torch.float64)
        moment = torch.zeros(store.dim, dtype=torch.float64)
        y_sq = 0.0
        for _, _, features, out_to_loss in store.iter_chunks(split, c):
            phi = _tensor(features, torch.float64)
            y = torch.tensor((target or gcv_target)(np.asarray(out_to_loss, dtype=np.float64)))
            kernel.addmm_(phi.T, phi)
            moment += phi.T @ y
            y_sq += float(y @ y)
        with _torch_threads(1 if store.dim < PARALLEL_FACTOR_MIN_DIM else torch.get_num_threads()):
            s, vectors = torch.linalg.eigh(kernel)
        s = s.clamp_min(0).numpy()
        b2 = ((vectors.T @ moment) ** 2).numpy()
        lam = grid[:, None] * s.sum() / store.dim  # (grid, 1)
        fit = (b2 / (s + lam)).sum(axis=1)
        fit_sq = (b2 * s / (s + lam) ** 2).sum(axis=1)
        rss = np.maximum(y_sq - 2 * fit + fit_sq, 0.0)
        dof = (s / (s + lam)).sum(axis=1)
        total += n * rss / np.maximum(n - dof, 1e-12) ** 2 / max(y_sq / n, 1e-300)
    return total


def gcv_target(out_to_loss: np.ndarray) -> np.ndarray:
    """The regression target of :func:`gcv_curve` from the out-to-loss terms Q (n,)."""
    return out_to_loss


def select_damping(store: FeatureStore, split: str = "train", checkpoints: Sequence[int] | None = None,
                   grid: Sequence[float] = DAMPING_GRID) -> float:
    """The relative damping of ``grid`` with the smallest :func:`gcv_curve` (TRAK ``damping="auto"``)."""
    curve = gcv_curve(store, split, checkpoints, grid)
    return float(np.asarray(grid, dtype=np.float64)[int(np.argmin(curve))])


@contextlib.contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    """Run the block with at most ``threads`` torch threads, then restore the caller's count.

    torch's thread count is process-wide: other threads of the process that run torch
    work meanwhile run with this count too.
    """
    previous = torch.get_num_threads()
    if threads >= previous:
        yield
        return
    torch.set_num_threads(max(1, threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _query_groups(store: FeatureStore, queries: str, train_rows: int, n_checkpoints: int,
                  dtype: type[np.floating]) -> Iterator[tuple[slice, list[int]]]:
    """Consecutive query chunks scored together: ``(rows, chunk indices)``.

    A group takes as many chunks as keep its score block (rows x ``train_rows``) within
    :data:`SCORE_BLOCK_BYTES` and its query side (``n_checkpoints`` x rows x k) within
    :data:`SCORE_QUERY_BYTES`, and at least one chunk. Bigger groups read every training
    chunk fewer times and amortise the per-block work of the streaming top-k.
    """
    itemsize = np.dtype(dtype).itemsize
    limit = min(SCORE_BLOCK_BYTES // max(1, train_rows * itemsize),
                SCORE_QUERY_BYTES // (n_checkpoints * store.dim * itemsize))
    group: list[int] = []
    start = stop = 0
    for index, chunk_start, chunk_stop in store.chunk_bounds(queries):
        if group and chunk_stop - start > limit:
            yield slice(start, stop), group
            group = []
        if not group:
            start = chunk_start
        group.append(index)
        stop = chunk_stop
    if group:
        yield slice(start, stop), group


_TORCH = {np.float32: torch.float32, np.float64: torch.float64}


def _tensor(array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """A writable torch copy of a (memory-mapped) chunk in ``dtype``."""
    return torch.tensor(np.asarray(array), dtype=dtype)
