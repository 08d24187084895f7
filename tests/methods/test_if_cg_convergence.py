"""if-cg reports its convergence (issue 20): the vectors left above the tolerance at
``max_iter`` and the worst relative residual, in ``fit_info`` and the scores' metadata."""

from __future__ import annotations

import warnings

import numpy as np

import zoo
from attributor.methods import TrainingContext
from attributor.methods.if_cg import CGInfluence
from attributor.methods.if_explicit import ExplicitInfluence
from attributor.tasks import ClassificationTask


def _context(tmp_path) -> TrainingContext:
    x, y = zoo.classification_data(50, seed=3)
    checkpoints = zoo.train_and_save(zoo.mlp(), x[:40], y[:40], tmp_path, n_checkpoints=1, steps=30)
    datasets = {"train": zoo.dataset(x[:40], y[:40]), "test": zoo.dataset(x[40:], y[40:])}
    return TrainingContext(model=zoo.mlp(), task=ClassificationTask(), datasets=datasets, checkpoints=checkpoints)


def test_unconverged_queries_are_counted_and_recorded(tmp_path):
    context = _context(tmp_path)
    capped = CGInfluence(damping=1e-3, max_iter=2).fit(None, "train", context)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        scores = capped.score("test")
    info = capped.fit_info()
    assert capped.unconverged_ == 10 and info["cg_iterations_max"] == 2
    assert info["cg_max_relative_residual"] > capped.tolerance
    assert "10 vectors above tolerance" in info["unconverged"] and scores.meta["unconverged"] == info["unconverged"]

    converged = CGInfluence(damping=0.1, max_iter=500).fit(None, "train", context)
    values = converged.score("test").values
    assert converged.unconverged_ == 0 and "unconverged" not in converged.fit_info()
    assert converged.fit_info()["cg_max_relative_residual"] <= converged.tolerance
    exact = ExplicitInfluence(damping=0.1).fit(None, "train", context).score("test").values
    np.testing.assert_allclose(values, exact, atol=1e-5 * np.abs(exact).max())


def test_start_at_the_gradient_is_dattris_first_cg_step(tmp_path):
    """``start="gradient"`` begins at x0 = b / n (dattri's ihvp_cg: x0 = v on the mean-loss
    Hessian). One iteration is then x0 + alpha r0 with r0 = b - A x0, alpha = r0.r0 / r0.A r0,
    checked in float64 against the explicit damped Gauss-Newton matrix A; run to
    convergence, the starting point does not matter."""
    import pytest
    import torch

    from attributor.errors import ConfigError

    context = _context(tmp_path)
    explicit = ExplicitInfluence(damping=0.1).fit(None, "train", context)
    matrix = explicit.hessian_ + explicit.lambda_ * torch.eye(len(explicit.hessian_), dtype=explicit.hessian_.dtype)
    one_step = CGInfluence(damping=0.1, max_iter=1, start="gradient").fit(None, "train", context)
    b = torch.randn(len(matrix), 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        got = one_step._inverse_hvp(b)
    x0 = b / 40
    r0 = b - matrix @ x0
    alpha = (r0 * r0).sum(0) / (r0 * (matrix @ r0)).sum(0)
    torch.testing.assert_close(got, x0 + alpha * r0, rtol=1e-9, atol=1e-12)

    converged = CGInfluence(damping=0.1, max_iter=500, start="gradient").fit(None, "train", context)
    np.testing.assert_allclose(converged.score("test").values, explicit.score("test").values,
                               atol=1e-5 * np.abs(explicit.score("test").values).max())
    with pytest.raises(ConfigError, match="start must be 'zero' or 'gradient'"):
        CGInfluence(start="ones").fit(None, "train", context)
