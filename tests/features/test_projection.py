"""Seeded projectors: reproducible, blockwise-exact, JL-scaled, with a bounded cache."""

from __future__ import annotations

import pytest
import torch

from attributor.errors import ConfigError, UnknownNameError
from attributor.features.projection import (
    GaussianProjector,
    IdentityProjector,
    RademacherProjector,
    make_projector,
)

KINDS = ["gaussian", "rademacher"]


def _grads(batch: int = 3, p: int = 50, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(batch, p, generator=torch.Generator().manual_seed(11), dtype=torch.float64).to(dtype)


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_and_checkpoint_give_identical_matrices(kind):
    a = make_projector(kind, dim=16, seed=4, block_rows=7).matrix(50, checkpoint=1)
    b = make_projector(kind, dim=16, seed=4, block_rows=7).matrix(50, checkpoint=1)
    assert a.shape == (50, 16)
    assert torch.equal(a, b)


@pytest.mark.parametrize("kind", KINDS)
def test_other_checkpoint_or_seed_give_other_matrices(kind):
    base = make_projector(kind, dim=16, seed=4).matrix(50, checkpoint=0)
    other_checkpoint = make_projector(kind, dim=16, seed=4).matrix(50, checkpoint=1)
    other_seed = make_projector(kind, dim=16, seed=5).matrix(50, checkpoint=0)
    assert not torch.equal(base, other_checkpoint)
    assert not torch.equal(base, other_seed)
    # not just a few entries: the matrices are essentially unrelated
    assert (base != other_checkpoint).float().mean() > 0.4
    assert (base != other_seed).float().mean() > 0.4


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("block_rows", [1, 7, 16, 50, 4096])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_blockwise_projection_equals_product_with_the_matrix(kind, block_rows, dtype):
    projector = make_projector(kind, dim=16, seed=2, block_rows=block_rows)
    grads = _grads(dtype=dtype)
    got = projector.project(grads, checkpoint=3)
    assert got.shape == (3, 16) and got.dtype == dtype
    expected = grads.double() @ projector.matrix(50, checkpoint=3).double()
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(got.double(), expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("kind", KINDS)
def test_cache_eviction_does_not_change_results(kind):
    cached = make_projector(kind, dim=16, seed=8, block_rows=7)
    # room for about two 7x16 float32 blocks: the cache evicts while projecting 50 rows
    evicting = make_projector(kind, dim=16, seed=8, block_rows=7, cache_mb=1000 / 2**20)
    no_cache = make_projector(kind, dim=16, seed=8, block_rows=7, cache_mb=0.0001)
    grads = _grads()
    expected = cached.project(grads, checkpoint=0)
    for _ in range(2):  # second pass: blocks come from the cache or are regenerated
        for c in (0, 1, 0):
            torch.testing.assert_close(evicting.project(grads, c), cached.project(grads, c), rtol=0, atol=0)
            torch.testing.assert_close(no_cache.project(grads, c), cached.project(grads, c), rtol=0, atol=0)
    torch.testing.assert_close(cached.project(grads, 0), expected, rtol=0, atol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_projection_preserves_inner_products_in_expectation(kind):
    p, k = 20, 2000
    matrix = make_projector(kind, dim=k, seed=0).matrix(p, checkpoint=0).double()
    gram = matrix @ matrix.T  # (p, p), E = I
    assert abs(gram.diagonal().mean().item() - 1.0) < 0.1
    off = gram - torch.diag(gram.diagonal())
    assert off.abs().max().item() < 0.15  # each entry has std 1/sqrt(k) ~ 0.022
    assert abs(off.mean().item()) < 0.02


def test_rademacher_entries_are_plus_minus_one_over_sqrt_k():
    matrix = RademacherProjector(dim=25, seed=1).matrix(40, checkpoint=0)
    assert torch.allclose(matrix.abs(), torch.full_like(matrix, 0.2))
    assert 0.3 < (matrix > 0).float().mean().item() < 0.7


def test_gaussian_entries_have_variance_one_over_k():
    matrix = GaussianProjector(dim=100, seed=1).matrix(200, checkpoint=0).double()
    assert abs(matrix.var().item() * 100 - 1.0) < 0.05
    assert abs(matrix.mean().item()) < 0.01


def test_identity_projector_returns_its_input():
    projector = make_projector("identity")
    assert isinstance(projector, IdentityProjector)
    grads = _grads()
    assert torch.equal(projector.project(grads, checkpoint=2), grads)
    assert projector.out_dim(50) == 50
    assert make_projector("identity", dim=7).out_dim(13) == 13  # dim is ignored


def test_spec_records_what_determines_the_matrix():
    spec = make_projector("gaussian", dim=16, seed=3, block_rows=7).spec()
    assert spec == {"kind": "gaussian", "dim": 16, "seed": 3, "block_rows": 7}


def test_dimensionless_random_projection_is_refused():
    with pytest.raises(ConfigError, match="dim"):
        make_projector("gaussian")
    with pytest.raises(ConfigError, match="dim"):
        make_projector("rademacher", dim=None)


def test_unknown_projector_kind():
    with pytest.raises(UnknownNameError) as info:
        make_projector("nope", dim=4)
    assert {"gaussian", "rademacher", "identity"} <= set(info.value.known)


@pytest.mark.parametrize("dim", [0, -3, 2.5])
def test_non_positive_or_fractional_dim_is_refused(dim):
    with pytest.raises(ConfigError):
        make_projector("gaussian", dim=dim)


def test_zero_block_rows_is_refused():
    with pytest.raises(ConfigError):
        make_projector("gaussian", dim=4, block_rows=0)
