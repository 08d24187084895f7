"""First-order gradient similarity from a FeatureStore: TracIn-CP, grad-dot, grad-cos.

The store holds, per checkpoint c, phi_c(z) = P_c^T grad f(z; theta_c) (projected
gradients of the measurement; P_c = I for the identity projector) and Q_c(z) =
``task.out_to_loss``. For the built-in classification task the training loss is an exact
function of the margin f, l = softplus(-f), with dl/df = -(1 - p_y) = -Q, hence

    grad l(z_j) = -Q_j grad f(z_j)     and     P^T grad l(z_j) = -Q_j phi(z_j).

A gradient step of size eta on z_j changes f(z) by -eta grad f(z) . grad l(z_j) =
eta Q_j grad f(z) . grad f(z_j), so the scores below are positive for proponents
(DESIGN.md). For a custom Task whose Q is not -dl/df these are "Q-weighted" similarities.

* ``tracin`` (Pruthi, Liu, Kale, Sundararajan, "Estimating Training Data Influence by
  Tracing Gradient Descent", NeurIPS 2020, TracInCP of section 3):
  score = sum_c eta_c Q_c,j phi_c(z) . phi_c(z_j).
  Self-influence: sum_c eta_c |Q_c,j| |phi_c(z_j)|^2 (the diagonal; |Q| keeps it >= 0
  for tasks whose Q may be negative).
* ``grad-dot``: one checkpoint, score = Q_j phi(z) . phi(z_j); self-influence
  |Q_j| |phi(z_j)|^2.
* ``grad-cos``: one checkpoint, the cosine of phi(z) and -P^T grad l(z_j) = Q_j phi(z_j),
  i.e. sign(Q_j) cos(phi(z), phi(z_j)) (0 where a gradient vanishes). Its self-influence
  is the diagonal, 1 for every example with a non-zero gradient and Q (0 otherwise): it
  carries no information, by construction.

Cost: O(n_query n_train k) per checkpoint, streamed chunk by chunk from the store.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np
import torch

from attributor.errors import ConfigError
from attributor.methods._context import check_checkpoint
from attributor.methods.base import Method

__all__ = ["TracIn", "GradDot", "GradCos"]

_EPS = 1e-30


class _GradientSimilarity(Method):
    """Shared scoring: ``checkpoints_`` and ``weights_`` are set by ``_fit``; ``cosine`` normalises."""

    cosine = False

    def score_blocks(self, queries: str) -> Iterator[tuple[slice, int, np.ndarray]]:
        return _similarity_blocks(self, queries, cosine=self.cosine)

    def self_influence(self) -> np.ndarray:
        return _diagonal(self, cosine=self.cosine)


class TracIn(_GradientSimilarity, key="tracin"):
    """TracIn-CP (Pruthi et al. 2020): learning-rate-weighted gradient dot products summed over checkpoints.

    Args:
        checkpoints: indices of the store's checkpoints to sum over (default: all).
        learning_rates: eta_c for every checkpoint of the store (indexed like it). Default:
            the training context's ``learning_rates`` when one is given, else 1.0 each.
    """

    def __init__(self, checkpoints: Sequence[int] | None = None, learning_rates: Sequence[float] | None = None):
        self.checkpoints = checkpoints
        self.learning_rates = learning_rates

    def _fit(self) -> None:
        store = self.store_
        n = store.n_checkpoints
        checkpoints = list(range(n)) if self.checkpoints is None else list(self.checkpoints)
        if not checkpoints or not all(_is_index(c, n) for c in checkpoints):
            raise ConfigError(f"tracin checkpoints must be indices in [0, {n}), got {self.checkpoints!r}")
        rates = self.learning_rates
        if rates is None and self.context_ is not None and self.context_.learning_rates is not None:
            rates = self.context_.learning_rates
        rates = [1.0] * n if rates is None else list(rates)
        if len(rates) != n or not all(_is_positive(r) for r in rates):
            raise ConfigError(f"tracin learning_rates must be {n} positive numbers, one per checkpoint of the store, "
                              f"got {rates!r}")
        self.checkpoints_ = checkpoints
        self.weights_ = [float(rates[c]) for c in checkpoints]


class GradDot(_GradientSimilarity, key="grad-dot"):
    """Gradient dot product Q_j phi(z) . phi(z_j) at one checkpoint of the store.

    Args:
        checkpoint: index of the store's checkpoint (default -1, the last).
    """

    def __init__(self, checkpoint: int = -1):
        self.checkpoint = checkpoint

    def _fit(self) -> None:
        self.checkpoints_ = [check_checkpoint(self.key, self.checkpoint, self.store_.n_checkpoints)]
        self.weights_ = [1.0]


class GradCos(GradDot, key="grad-cos"):
    """Gradient cosine sign(Q_j) cos(phi(z), phi(z_j)) at one checkpoint of the store.

    Args:
        checkpoint: index of the store's checkpoint (default -1, the last).
    """

    cosine = True


def _similarity_blocks(method: Method, queries: str, cosine: bool) -> Iterator[tuple[slice, int, np.ndarray]]:
    store, split = method._fitted()
    store.require_complete(queries)
    for q_index, q_start, q_stop in store.chunk_bounds(queries):
        left = [_rows(store.read_chunk(queries, c, q_index)[0], cosine) for c in method.checkpoints_]
        for t_index, t_start, t_stop in store.chunk_bounds(split):
            block = torch.zeros(q_stop - q_start, t_stop - t_start, dtype=torch.float64)
            for c, weight, phi_q in zip(method.checkpoints_, method.weights_, left):
                features, out_to_loss = store.read_chunk(split, c, t_index)
                q = torch.tensor(np.asarray(out_to_loss), dtype=torch.float64)
                scale = torch.sign(q) if cosine else q
                block.addmm_(phi_q, _rows(features, cosine).T * scale, alpha=weight)
            yield slice(q_start, q_stop), t_start, block.numpy()


def _diagonal(method: Method, cosine: bool) -> np.ndarray:
    store, split = method._fitted()
    total = np.zeros(store.split_size(split))
    for c, weight in zip(method.checkpoints_, method.weights_):
        for start, stop, features, out_to_loss in store.iter_chunks(split, c):
            phi = _rows(features, cosine)
            q = np.abs(np.asarray(out_to_loss, dtype=np.float64))
            total[start:stop] += weight * ((phi**2).sum(dim=1).numpy() * (np.sign(q) if cosine else q))
    return total


def _rows(features: np.ndarray, normalise: bool) -> torch.Tensor:
    phi = torch.tensor(np.asarray(features), dtype=torch.float64)
    if normalise:
        norms = phi.norm(dim=1, keepdim=True)
        phi = torch.where(norms > _EPS, phi / norms.clamp_min(_EPS), torch.zeros_like(phi))
    return phi


def _is_index(value: object, n: int) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 <= value < n


def _is_positive(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
