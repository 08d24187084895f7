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
O(M n_query k^2) for the solves plus O(M n_query n_train k), streamed chunk by chunk.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import numpy as np
import torch

from attributor.errors import ConfigError, StoreError
from attributor.methods.base import Method

__all__ = ["TRAK"]

#: Smallest kernel dimension k whose factorisation uses more than one torch thread.
PARALLEL_FACTOR_MIN_DIM = 2048


class TRAK(Method, key="trak"):
    """TRAK scores from a FeatureStore of projected gradients.

    Args:
        damping: relative ridge on the after-kernel, lambda = damping * mean eigenvalue.
            0 gives the (pseudo-)inverse of the undamped kernel.
        checkpoints: indices of the store's checkpoints to ensemble over (default: all).
        damping_scale: "checkpoint" (each checkpoint's ridge from its own kernel) or
            "shared" (one ridge from the mean kernel trace, as traker does).
    """

    def __init__(self, damping: float = 1e-2, checkpoints: Sequence[int] | None = None, damping_scale: str = "checkpoint"):
        self.damping = damping
        self.checkpoints = checkpoints
        self.damping_scale = damping_scale

    def _fit(self) -> None:
        store, split = self.store_, self.split_
        if not (isinstance(self.damping, (int, float)) and np.isfinite(self.damping) and self.damping >= 0):
            raise ConfigError(f"trak damping must be a finite number >= 0, got {self.damping!r}")
        checkpoints = list(range(store.n_checkpoints)) if self.checkpoints is None else list(self.checkpoints)
        bad = [c for c in checkpoints if not 0 <= c < store.n_checkpoints]
        if not checkpoints or bad:
            raise ConfigError(f"trak checkpoints must be indices in [0, {store.n_checkpoints}), got {self.checkpoints!r}")
        if self.damping_scale not in ("checkpoint", "shared"):
            raise ConfigError(f"trak damping_scale must be 'checkpoint' or 'shared', got {self.damping_scale!r}")
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
                kernel = _factorize(kernel, self.damping)  # factor now: one k x k matrix held at a time
            kernels.append(kernel)
        if self.damping_scale == "shared":
            traces = [float(torch.trace(k)) for k in kernels]
            mean_trace = sum(traces) / len(traces)
            kernels = [_factorize(k, self.damping * mean_trace / t if t > 0 else self.damping) for k, t in zip(kernels, traces)]
        self.checkpoints_ = checkpoints
        self.kernel_factors_ = kernels
        self.out_to_loss_ = q_sum / len(checkpoints)

    def score_blocks(self, queries: str) -> Iterator[tuple[slice, int, np.ndarray]]:
        store, split = self._fitted()
        store.require_complete(queries)
        dtype = torch.float64 if store.dtype == np.float64 else torch.float32
        q_bar = torch.from_numpy(self.out_to_loss_).to(dtype)
        for q_index, q_start, q_stop in store.chunk_bounds(queries):
            # phi(z)^T (K + lambda I)^{-1} for every checkpoint: (queries in chunk, k)
            left = [
                factor.solve(_tensor(store.read_chunk(queries, c, q_index)[0], torch.float64)).to(dtype)
                for c, factor in zip(self.checkpoints_, self.kernel_factors_)
            ]
            for t_index, t_start, t_stop in store.chunk_bounds(split):
                block = torch.zeros(q_stop - q_start, t_stop - t_start, dtype=dtype)
                for c, a in zip(self.checkpoints_, left):
                    phi = _tensor(store.read_chunk(split, c, t_index)[0], dtype)
                    block.addmm_(a, phi.T)
                block *= q_bar[t_start:t_stop] / len(self.checkpoints_)
                yield slice(q_start, q_stop), t_start, block.numpy()

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


def _tensor(array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """A writable torch copy of a (memory-mapped) chunk in ``dtype``."""
    return torch.tensor(np.asarray(array), dtype=dtype)
