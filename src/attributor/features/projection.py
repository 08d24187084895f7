"""Random projections of (per-example) gradients, regenerated from seeds, applied blockwise.

A projector maps a gradient g in R^p to P^T g in R^k. The p x k matrix P is never stored:
rows ``[b * block_rows, (b + 1) * block_rows)`` form block b, generated on demand from
``(seed, checkpoint, b)``, so memory stays at one block (plus an optional bounded cache)
however large p is, and a rerun, a resumed run or another shard regenerates exactly the
same matrix.

Entries are scaled by 1/sqrt(k) so that E[P P^T] = I and inner products are preserved in
expectation (Johnson-Lindenstrauss), which keeps damping values comparable across k.

Example:
    >>> import torch
    >>> proj = GaussianProjector(dim=8, seed=0)
    >>> proj.project(torch.ones(2, 100), checkpoint=0).shape
    torch.Size([2, 8])
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from attributor.errors import ConfigError
from attributor.registry import Registered

__all__ = ["Projector", "GaussianProjector", "RademacherProjector", "IdentityProjector", "make_projector"]


class Projector(Registered, kind="projector"):
    """Base class. ``dim`` is k (ignored by identity), ``seed`` fixes every block."""

    def __init__(self, dim: int | None = None, seed: int = 0, block_rows: int = 4096, cache_mb: float = 1024.0):
        self.dim = dim
        self.seed = seed
        self.block_rows = block_rows
        self.cache_mb = cache_mb
        self._cache: OrderedDict[tuple[int, int, int], torch.Tensor] = OrderedDict()
        self._cache_bytes = 0
        if dim is not None and (not isinstance(dim, int) or dim < 1):
            raise ConfigError(f"projection dim must be a positive integer, got {dim!r}")
        if block_rows < 1:
            raise ConfigError(f"block_rows must be >= 1, got {block_rows}")

    def spec(self) -> dict[str, Any]:
        """What determines the matrix; stored in the feature store manifest."""
        return {"kind": self.key, "dim": self.dim, "seed": self.seed, "block_rows": self.block_rows}

    def out_dim(self, n_params: int) -> int:
        return int(self.dim)

    def project(self, grads: torch.Tensor, checkpoint: int) -> torch.Tensor:
        """Project ``grads`` of shape (B, p) to shape (B, k), one block of P at a time."""
        n_params = grads.shape[1]
        out = torch.zeros(grads.shape[0], self.out_dim(n_params), dtype=grads.dtype)
        for b, start in enumerate(range(0, n_params, self.block_rows)):
            stop = min(start + self.block_rows, n_params)
            block = self._block(checkpoint, b, stop - start).to(grads.dtype)
            out.addmm_(grads[:, start:stop], block)
        return out

    def matrix(self, n_params: int, checkpoint: int) -> torch.Tensor:
        """The full p x k matrix (for tests and small problems only)."""
        eye = torch.eye(n_params)
        return self.project(eye, checkpoint)

    def _block(self, checkpoint: int, block: int, rows: int) -> torch.Tensor:
        key = (checkpoint, block, rows)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        state = np.random.SeedSequence([self.seed, checkpoint, block]).generate_state(1, np.uint64)[0]
        generator = torch.Generator().manual_seed(int(state))
        matrix = self._generate(rows, int(self.dim), generator) / float(self.dim) ** 0.5
        self._remember(key, matrix)
        return matrix

    def _remember(self, key: tuple[int, int, int], matrix: torch.Tensor) -> None:
        size = matrix.numel() * matrix.element_size()
        if size > self.cache_mb * 2**20:
            return
        self._cache[key] = matrix
        self._cache_bytes += size
        while self._cache_bytes > self.cache_mb * 2**20:
            _, evicted = self._cache.popitem(last=False)
            self._cache_bytes -= evicted.numel() * evicted.element_size()

    def _generate(self, rows: int, cols: int, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement _generate")


class GaussianProjector(Projector, key="gaussian"):
    """Dense i.i.d. N(0, 1/k) entries (TRAK, Park et al. 2023, section 3.1)."""

    def _generate(self, rows: int, cols: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(rows, cols, generator=generator)


class RademacherProjector(Projector, key="rademacher"):
    """Dense i.i.d. +-1/sqrt(k) entries (Achlioptas 2003)."""

    def _generate(self, rows: int, cols: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(0, 2, (rows, cols), generator=generator).float().mul_(2).sub_(1)


class IdentityProjector(Projector, key="identity"):
    """No projection: k = p. Exact features for small models and for checking methods."""

    def spec(self) -> dict[str, Any]:
        return {"kind": self.key, "dim": None, "seed": None, "block_rows": None}

    def out_dim(self, n_params: int) -> int:
        return n_params

    def project(self, grads: torch.Tensor, checkpoint: int) -> torch.Tensor:
        return grads


def make_projector(kind: str, dim: int | None = None, seed: int = 0, **kwargs: Any) -> Projector:
    """Build a registered projector by name: ``gaussian``, ``rademacher`` or ``identity``."""
    cls = Projector.lookup(kind)
    if kind != "identity" and dim is None:
        raise ConfigError(f"projection {kind!r} needs a dim (k); set featurize.proj_dim")
    return cls(dim=None if kind == "identity" else dim, seed=seed, **kwargs)
