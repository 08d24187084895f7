"""Influence functions with the explicit damped curvature matrix, solved by Cholesky.

Koh & Liang, "Understanding Black-box Predictions via Influence Functions", ICML 2017:

    score(z, z_j) = - grad f(z)^T (C + lambda I)^{-1} grad l(z_j)

with C the p x p curvature of the summed training loss at one checkpoint, built exactly in
float64 (``attributor.methods.curvature``: the Hessian, ``hessian="exact"``, or the
Gauss-Newton matrix, the default; identical for logistic regression), and lambda the
family's relative damping. The matrix is the curvature operator applied to the identity,
COLUMNS columns at a time (forward-over-reverse: the arithmetic of
``torch.func.jacfwd(jacrev(L))``), symmetrised, and factorised once by Cholesky.

Cost: p curvature-vector products over the training set plus O(p^3) for the factorisation,
O(p^2) memory; hence ``max_params`` (default 5000): larger models are refused, use
``if-cg`` (exact up to a tolerance) or ``if-ekfac`` (approximate, scalable). Scoring is
O(n_query n_train p) after one O(p^2) solve per query.

The exact reference of the family: on a convex problem every other influence method is
checked against it.
"""

from __future__ import annotations

import copy

import torch

from attributor.errors import ConfigError
from attributor.methods._context import check_damping, check_positive_int
from attributor.methods.curvature import COLUMNS, CURVATURES, Curvature
from attributor.methods.influence import InfluenceFunction

__all__ = ["ExplicitInfluence"]


class ExplicitInfluence(InfluenceFunction, key="if-explicit"):
    """Influence functions with the exact damped curvature matrix (float64, Cholesky); small models only.

    Args:
        damping: relative damping, lambda = damping * sum_i |grad l_i|^2 / p (>= 0).
        checkpoint: index of the context's checkpoint to linearise at (default -1, the last).
        hessian: ``"gauss-newton"`` (default, positive semi-definite) or ``"exact"``.
        max_params: refuse models with more tracked parameters than this.
        batch_size: examples per gradient / curvature batch.

    Fitted attributes: ``hessian_`` (p, p) the undamped curvature, ``lambda_`` the absolute
    damping added to its diagonal.
    """

    def __init__(self, damping: float = 1e-2, checkpoint: int = -1, hessian: str = "gauss-newton",
                 max_params: int = 5000, batch_size: int = 64):
        self.damping = damping
        self.checkpoint = checkpoint
        self.hessian = hessian
        self.max_params = max_params
        self.batch_size = batch_size

    def _check_arguments(self) -> None:
        if self.hessian not in CURVATURES:
            raise ConfigError(f"if-explicit hessian must be one of {CURVATURES}, got {self.hessian!r}")
        check_positive_int(self.key, "max_params", self.max_params)

    def _check_size(self) -> None:
        if self.n_params_ > self.max_params:
            raise ConfigError(
                f"if-explicit builds a {self.n_params_} x {self.n_params_} matrix ({self.n_params_} tracked "
                f"parameters, {self.n_params_**2 * 8 / 2**30:.2g} GiB), more than max_params={self.max_params}; use "
                "if-cg (exact up to a tolerance) or if-ekfac, track fewer parameters (a Task subclass whose "
                "tracked_parameters(model) names, e.g., the last layers only), or raise max_params"
            )

    def _fit_curvature(self) -> None:
        curvature = Curvature(self.model_, self.context_.task, self.context_.dataset(self.split_),
                              self.parameter_names_, kind=self.hessian, batch_size=self.batch_size)
        p = self.n_params_
        matrix = torch.zeros(p, p, dtype=torch.float64)
        for lo in range(0, p, COLUMNS):
            hi = min(lo + COLUMNS, p)
            basis = torch.zeros(p, hi - lo, dtype=torch.float64)
            basis[torch.arange(lo, hi), torch.arange(hi - lo)] = 1.0
            matrix[:, lo:hi] = curvature.matmat(basis)
        matrix = (matrix + matrix.T) / 2
        if not torch.isfinite(matrix).all():
            raise ConfigError(f"if-explicit: the curvature at checkpoint {self.checkpoint_} has non-finite entries")
        self.hessian_ = matrix
        self._factorise()

    def with_damping(self, damping: float) -> "ExplicitInfluence":
        """This fitted method at relative ``damping``, sharing its curvature matrices and cached
        gradients: only C + lambda I is factorised again (a damping sweep costs one O(p^3)
        Cholesky per value and checkpoint instead of rebuilding C)."""
        self._fitted()
        check_damping(self.key, damping)
        twin = copy.copy(self)
        twin.damping = damping
        if self.members_:
            twin.members_ = [member.with_damping(damping) for member in self.members_]
        else:
            twin._factorise()
        return twin

    def _factorise(self) -> None:
        p = self.n_params_
        self.lambda_ = self._family_lambda()
        damped = self.hessian_ + self.lambda_ * torch.eye(p, dtype=torch.float64)
        factor, info = torch.linalg.cholesky_ex(damped)
        if int(info) != 0:
            smallest = float(torch.linalg.eigvalsh(damped)[0])
            raise ConfigError(
                f"if-explicit: C + lambda I is not positive definite at checkpoint {self.checkpoint_} (smallest "
                f"eigenvalue {smallest:.3g}, lambda {self.lambda_:.3g}); raise damping"
                + (" or use hessian='gauss-newton'" if self.hessian == "exact" else "")
            )
        self.cholesky_ = factor

    def _inverse_hvp(self, vectors: torch.Tensor) -> torch.Tensor:
        return torch.cholesky_solve(vectors, self.cholesky_)
