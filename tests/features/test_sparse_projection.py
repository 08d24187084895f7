"""Sparse sign JL projector: equals its explicit matrix, deterministic, JL holds roughly."""

from __future__ import annotations

import pytest
import torch

from attributor.errors import ConfigError
from attributor.features import SparseProjector, make_projector


def _grads(batch=3, p=50, dtype=torch.float64):
    return torch.randn(batch, p, generator=torch.Generator().manual_seed(11), dtype=torch.float64).to(dtype)


@pytest.mark.parametrize("block_rows", [1, 7, 50, 65536])
@pytest.mark.parametrize("nnz", [1, 3])
def test_projection_equals_the_explicit_matrix(block_rows, nnz):
    projector = make_projector("sparse", dim=16, seed=2, block_rows=block_rows, nnz=nnz)
    assert isinstance(projector, SparseProjector)
    matrix = projector.matrix(50, checkpoint=3).double()
    # the explicit matrix, rebuilt from the hashes: nnz entries of +-1/sqrt(nnz) per row, one per segment
    explicit = torch.zeros(50, 16, dtype=torch.float64)
    for b, start in enumerate(range(0, 50, block_rows)):
        rows = min(block_rows, 50 - start)
        index, sign = projector._hashes(3, b, rows)
        for r in range(rows):
            for j in range(nnz):
                explicit[start + r, index[r, j]] += sign[r, j].item()
    torch.testing.assert_close(matrix, explicit, rtol=0, atol=1e-7)
    assert ((matrix != 0).sum(dim=1) == nnz).all()
    segments = [range(j * 16 // nnz, (j + 1) * 16 // nnz) for j in range(nnz)]
    for row in matrix:
        assert [sum(1 for c in seg if row[c] != 0) for seg in segments] == [1] * nnz
    torch.testing.assert_close(matrix.abs()[matrix != 0], torch.full(((matrix != 0).sum().item(),), nnz ** -0.5, dtype=torch.float64))
    grads = _grads()
    torch.testing.assert_close(projector.project(grads, 3), grads @ matrix, rtol=1e-12, atol=1e-12)
    got32 = projector.project(grads.float(), 3)
    assert got32.dtype == torch.float32
    torch.testing.assert_close(got32.double(), grads @ matrix, rtol=1e-5, atol=1e-5)


def test_deterministic_and_seeded():
    a = make_projector("sparse", dim=32, seed=4).matrix(100, checkpoint=1)
    assert torch.equal(a, make_projector("sparse", dim=32, seed=4, cache_mb=0).matrix(100, checkpoint=1))
    assert not torch.equal(a, make_projector("sparse", dim=32, seed=4).matrix(100, checkpoint=0))
    assert not torch.equal(a, make_projector("sparse", dim=32, seed=5).matrix(100, checkpoint=1))


def test_inner_products_are_preserved_roughly():
    p, k = 3000, 1024
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(6, p, generator=generator, dtype=torch.float64)
    x[3:] += x[:3]  # correlated pairs
    projected = make_projector("sparse", dim=k, seed=1, nnz=4, block_rows=500).project(x, 0)
    exact, sketched = x @ x.T, projected @ projected.T
    scale = exact.diagonal().sqrt()
    error = (sketched - exact) / (scale[:, None] * scale[None, :])
    assert error.abs().max() < 0.15  # std about sqrt(2 / k) = 0.044
    matrix = make_projector("sparse", dim=k, seed=1, nnz=4).matrix(40, 0).double()
    gram = matrix @ matrix.T
    torch.testing.assert_close(gram.diagonal(), torch.ones(40, dtype=torch.float64))  # exactly unit rows


def test_spec_and_validation():
    assert make_projector("sparse", dim=8, seed=1, nnz=2).spec() == {"kind": "sparse", "dim": 8, "seed": 1,
                                                                     "block_rows": 65536, "nnz": 2}
    with pytest.raises(ConfigError):
        make_projector("sparse", dim=4, nnz=5)
    with pytest.raises(ConfigError, match="dim"):
        make_projector("sparse")
    assert make_projector("dense", dim=8).spec()["kind"] == "gaussian"
