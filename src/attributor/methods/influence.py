"""The influence-function family: one scoring rule, several inverse-curvature products.

Koh & Liang, "Understanding Black-box Predictions via Influence Functions", ICML 2017,
eq. (2) (I_up,loss) with the measured output f in place of the test loss. At one
checkpoint theta of the training context, for a query z and a training example z_j,

    score(z, z_j) = - grad f(z)^T (C + lambda I)^{-1} grad l(z_j)

with C the curvature of the SUM of training losses (``attributor.methods.curvature``) and
lambda the family's relative damping. Removing z_j from the sum moves the minimiser by
about (C + lambda I)^{-1} grad l(z_j), so the score approximates
f(z; trained on S) - f(z; trained on S without z_j): positive = proponent (DESIGN.md), on
the same scale as TRAK. Gradients are exact (``per_example_gradients`` of the Task, float64),
not projected features. Self-influence is grad l(z_j)^T (C + lambda I)^{-1} grad l(z_j) >= 0
(values below 0 from an inexact inverse are clipped to 0).

Subclasses provide ``_inverse_hvp(V)``: (C + lambda I)^{-1} V for V of shape (p, m), and
may restrict the parameters (EK-FAC). Scoring streams the queries in blocks of
:data:`BLOCK_ROWS`: their gradients (m, p), one inverse product, then a pass over the
training gradients (``GradientStream``, cached in memory only when it fits).

Checkpoint ensembles: ``checkpoint="all"`` (or a list of indices) fits one member per
checkpoint (each with its own curvature and damping) and averages their scores,
self-influence and group scores: the ensemble over training checkpoints that TRAK and
TracIn use, and that dattri's influence functions apply to every checkpoint of their task.
Memory is the members' together (the explicit inverse: one p x p factor per checkpoint).

Groups: :meth:`score_groups` scores the MEAN training gradient of each group. The score is
linear in grad l(z_j), so this equals the mean of the members' scores exactly; multiply by
the group size for the effect of removing the whole group.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Iterator

import numpy as np
import torch

from attributor.errors import ConfigError
from attributor.features.gradients import tracked_parameter_names
from attributor.methods._context import (GRADIENT_CACHE_BYTES, GradientStream, check_checkpoint, check_damping,
                                         check_positive_int, model_at)
from attributor.methods.base import Method
from attributor.methods.curvature import damping_lambda

__all__ = ["InfluenceFunction", "BLOCK_ROWS"]

#: Queries (and training examples, for self-influence) handled per inverse product.
BLOCK_ROWS = 256


class InfluenceFunction(Method):
    """Base class of the influence-function methods (not registered itself).

    Subclasses take ``checkpoint`` and ``batch_size`` (and ``damping`` when the family's
    damping rule applies) as constructor arguments, implement ``_fit_curvature`` and
    ``_inverse_hvp``, and may override ``_check_arguments``, ``_check_size`` and
    ``_parameter_names``. Fitted attributes: ``checkpoint_`` (non-negative index),
    ``model_`` (float64 copy at that checkpoint), ``parameter_names_``, ``n_params_``,
    ``train_gradients_`` (a GradientStream of the training-loss gradients).
    """

    requires_features = False
    requires_context = True

    # -- fitting ---------------------------------------------------------------------------
    def _fit(self) -> None:
        context = self.context_
        check_positive_int(self.key, "batch_size", self.batch_size)
        if hasattr(self, "damping"):
            check_damping(self.key, self.damping)
        self._check_arguments()
        self.members_: list[InfluenceFunction] = []
        if isinstance(self.checkpoint, (str, list, tuple)):
            self._fit_members()
            return
        self.checkpoint_ = check_checkpoint(self.key, self.checkpoint, len(context.checkpoints))
        self.model_ = model_at(context.model, context.checkpoints[self.checkpoint_])
        self.parameter_names_ = self._parameter_names()
        self.n_params_ = sum(p.numel() for n, p in self.model_.named_parameters() if n in set(self.parameter_names_))
        self._check_size()
        self.train_gradients_ = self._stream(self.split_, "train_loss")
        self._fit_curvature()

    def _fit_members(self) -> None:
        """One fitted member per checkpoint of ``checkpoint`` ("all" or a list of indices)."""
        n = len(self.context_.checkpoints)
        if isinstance(self.checkpoint, str):
            if self.checkpoint != "all":
                raise ConfigError(f"{self.key} checkpoint must be an index, a list of indices or 'all', got {self.checkpoint!r}")
            indices = list(range(n))
        else:
            indices = [check_checkpoint(self.key, c, n) for c in self.checkpoint]
            if not indices or len(set(indices)) != len(indices):
                raise ConfigError(f"{self.key} checkpoint list must name distinct checkpoints, got {self.checkpoint!r}")
        params = self.get_params()
        for index in indices:
            member = type(self)(**{**params, "checkpoint": index})
            self.members_.append(member.fit(self.store_, self.split_, self.context_))
        self.checkpoint_ = indices

    def _check_arguments(self) -> None:
        """Validate method-specific arguments (ConfigError); runs before any computation."""

    def _check_size(self) -> None:
        """Refuse a model that is too large for the method; runs before any gradient is taken."""

    def _parameter_names(self) -> list[str]:
        return tracked_parameter_names(self.model_, self.context_.task)

    @abstractmethod
    def _fit_curvature(self) -> None:
        """Prepare ``_inverse_hvp`` (factorise, estimate scales, ...)."""

    @abstractmethod
    def _inverse_hvp(self, vectors: torch.Tensor) -> torch.Tensor:
        """(C + lambda I)^{-1} ``vectors`` for vectors of shape (p, m), float64."""

    def _family_lambda(self) -> float:
        """The family's damping lambda = damping * sum_i |grad l_i|^2 / p (one pass, fills the cache)."""
        return damping_lambda(self.damping, self.train_gradients_.squared_norms(), self.n_params_)

    def _stream(self, split: str, function: str) -> GradientStream:
        """Per-example gradients of ``split``; only the training gradients (read many times) are cached."""
        cache = GRADIENT_CACHE_BYTES if function == "train_loss" else 0
        return GradientStream(self.model_, self.context_.task, self.context_.dataset(split), self.parameter_names_,
                              function=function, batch_size=self.batch_size, cache_bytes=cache)

    # -- scoring ---------------------------------------------------------------------------
    def fit_info(self) -> dict[str, object]:
        if not getattr(self, "members_", None):
            return {}
        infos = [member.fit_info() for member in self.members_]
        return {f"checkpoint {member.checkpoint_}: {key}": value for member, info in zip(self.members_, infos)
                for key, value in info.items()}

    def score_blocks(self, queries: str) -> Iterator[tuple[slice, int, np.ndarray]]:
        self._fitted()
        if self.members_:
            # every member streams the same blocks (same data, batch size and BLOCK_ROWS)
            for parts in zip(*(member.score_blocks(queries) for member in self.members_)):
                yield parts[0][0], parts[0][1], sum(part[2] for part in parts) / len(parts)
            return
        query_gradients = self._stream(queries, "measurement")
        for q_start, q_stop, gq in _merged(query_gradients, BLOCK_ROWS):
            solved = self._inverse_hvp(gq.T)  # (p, m)
            for t_start, _, gt in self.train_gradients_:
                yield slice(q_start, q_stop), t_start, (-(gt @ solved).T).numpy()

    def self_influence(self) -> np.ndarray:
        self._fitted()
        if self.members_:
            return sum(member.self_influence() for member in self.members_) / len(self.members_)
        out = np.zeros(len(self.train_gradients_))
        for start, stop, gt in _merged(self.train_gradients_, BLOCK_ROWS):
            out[start:stop] = (gt.T * self._inverse_hvp(gt.T)).sum(dim=0).numpy()
        return np.maximum(out, 0.0)

    def score_groups(self, queries: str, groups: np.ndarray) -> np.ndarray:
        """Scores of each query against the mean training gradient of each group.

        Args:
            groups: (n_train,) integer group id of every training example.

        Returns (n_query, n_groups) with columns in the order of ``np.unique(groups)``
        (column g is group g when the ids are 0..G-1). Equal to the mean of the members'
        per-example scores (the score is linear in the training gradient).
        """
        self._fitted()
        if self.members_:
            return sum(member.score_groups(queries, groups) for member in self.members_) / len(self.members_)
        groups = np.asarray(groups)
        n_train = len(self.train_gradients_)
        if groups.shape != (n_train,) or not np.issubdtype(groups.dtype, np.integer):
            raise ConfigError(f"groups must be an integer array of shape ({n_train},), got {groups.dtype} {groups.shape}")
        ids, members = np.unique(groups, return_inverse=True)
        sums = torch.zeros(len(ids), self.n_params_, dtype=torch.float64)
        for start, stop, gt in self.train_gradients_:
            sums.index_add_(0, torch.from_numpy(members[start:stop]).long(), gt)
        means = sums / torch.from_numpy(np.bincount(members, minlength=len(ids))).to(sums.dtype)[:, None]
        blocks = _merged(self._stream(queries, "measurement"), BLOCK_ROWS)
        rows = [-(means @ self._inverse_hvp(gq.T)).T for _, _, gq in blocks]
        return torch.cat(rows).numpy()


def _merged(stream: GradientStream, rows: int) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Consecutive batches of ``stream`` merged into blocks of at least ``rows`` rows (last may be smaller)."""
    parts: list[torch.Tensor] = []
    first = 0
    for start, stop, grads in stream:
        if not parts:
            first = start
        parts.append(grads)
        if stop - first >= rows:
            yield first, stop, torch.cat(parts)
            parts = []
    if parts:
        yield first, first + sum(len(p) for p in parts), torch.cat(parts)
