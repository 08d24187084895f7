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

Cost: fit is one pass over the features, O(M n k^2), plus M Cholesky factorisations,
O(M k^3), in float64. Scoring is O(M n_query n_train k), streamed chunk by chunk.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch

from attributor.errors import ConfigError, StoreError
from attributor.methods.base import Method

__all__ = ["TRAK"]


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
                kernel = _damped_inverse(kernel, self.damping)  # invert now: one k x k matrix held at a time
            kernels.append(kernel)
        if self.damping_scale == "shared":
            mean_trace = sum(float(torch.trace(k)) for k in kernels) / len(kernels)
            kernels = [_damped_inverse(k, self.damping * mean_trace / float(torch.trace(k)) if float(torch.trace(k)) > 0 else self.damping)
                       for k in kernels]
        inverses = kernels
        self.checkpoints_ = checkpoints
        self.kernel_inverses_ = inverses
        self.out_to_loss_ = q_sum / len(checkpoints)

    def score_blocks(self, queries: str) -> Iterator[tuple[slice, int, np.ndarray]]:
        store, split = self._fitted()
        store.require_complete(queries)
        dtype = torch.float64 if store.dtype == np.float64 else torch.float32
        q_bar = torch.from_numpy(self.out_to_loss_).to(dtype)
        for q_index, q_start, q_stop in store.chunk_bounds(queries):
            # phi(z)^T K^{-1} for every checkpoint: (queries in chunk, k)
            left = [
                (_tensor(store.read_chunk(queries, c, q_index)[0], torch.float64) @ inverse).to(dtype)
                for c, inverse in zip(self.checkpoints_, self.kernel_inverses_)
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
        for c, inverse in zip(self.checkpoints_, self.kernel_inverses_):
            for start, stop, features, _ in store.iter_chunks(split, c):
                phi = _tensor(features, torch.float64)
                total[start:stop] += ((phi @ inverse) * phi).sum(dim=1).numpy()
        return total / len(self.checkpoints_) * self.out_to_loss_


def _damped_inverse(kernel: torch.Tensor, damping: float) -> torch.Tensor:
    """(K + lambda I)^{-1} with lambda = damping * trace(K) / k, in float64.

    Uses a Cholesky factorisation; if K + lambda I is not positive definite (damping 0 on
    a rank-deficient kernel) it falls back to the eigendecomposition pseudo-inverse.
    """
    k = kernel.shape[0]
    if not torch.isfinite(kernel).all():
        raise StoreError("the after-kernel has non-finite entries; the features are corrupted")
    lam = damping * float(torch.trace(kernel)) / k
    damped = kernel + lam * torch.eye(k, dtype=kernel.dtype)
    factor, info = torch.linalg.cholesky_ex(damped)
    if int(info) == 0:
        return torch.cholesky_inverse(factor)
    eigenvalues, eigenvectors = torch.linalg.eigh(damped)
    cutoff = eigenvalues.abs().max() * k * torch.finfo(kernel.dtype).eps
    inverted = torch.where(eigenvalues > cutoff, 1.0 / eigenvalues, torch.zeros_like(eigenvalues))
    return (eigenvectors * inverted) @ eigenvectors.T


def _tensor(array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """A writable torch copy of a (memory-mapped) chunk in ``dtype``."""
    return torch.tensor(np.asarray(array), dtype=dtype)
