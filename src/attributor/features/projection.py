"""Random projections of (per-example) gradients, regenerated from seeds, applied blockwise.

A projector maps a gradient g in R^p to P^T g in R^k. The p x k matrix P is never stored:
rows ``[b * block_rows, (b + 1) * block_rows)`` form block b, generated on demand from
``(seed, checkpoint, b)``, so memory stays at one block (plus an optional bounded cache)
however large p is, and a rerun, a resumed run or another shard regenerates exactly the
same matrix.

Entries are scaled by 1/sqrt(k) so that E[P P^T] = I and inner products are preserved in
expectation (Johnson-Lindenstrauss), which keeps damping values comparable across k.

Kinds: ``gaussian`` and ``rademacher`` (dense), ``sparse`` (sparse sign / CountSketch,
applied by scatter-add without a dense matrix), ``identity`` (no projection) and
``factored`` (a Kronecker product P_rows (x) P_cols per layer, applied to layer inputs and
output gradients by :mod:`attributor.features.factored`; declared by ``factored = True``).

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
from attributor.memory import require_memory
from attributor.registry import Registered

__all__ = ["Projector", "GaussianProjector", "RademacherProjector", "IdentityProjector", "SparseProjector",
           "FactoredProjector", "make_projector"]


#: what to do when a block of a dense projection matrix cannot fit in memory
DENSE_ADVICE = ("use a smaller --proj-dim (featurize.proj_dim), or --projection factored (per-layer Kronecker factors, "
                "no p x k matrix) or sparse; add --overwrite to reuse this --out")


class Projector(Registered, kind="projector"):
    """Base class. ``dim`` is k (ignored by identity), ``seed`` fixes every block."""

    #: featurize computes this projection from layer inputs and output gradients (hooks)
    #: instead of projecting full per-example gradients.
    factored: bool = False
    #: whether the projector needs ``dim`` (k); identity does not.
    needs_dim: bool = True

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

    def check_memory(self, n_params: int) -> None:
        """Refuse (ResourceError) before any work when one block of P, min(block_rows, p) x k float32,
        cannot fit in the memory available (featurize calls this before it writes anything)."""
        self._check_block(min(self.block_rows, n_params))

    def _check_block(self, rows: int) -> None:
        require_memory(f"one block of the {self.key} projection matrix ({rows} x {self.dim} x 4 bytes)",
                       rows * int(self.dim) * 4, DENSE_ADVICE)

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
        self._check_block(rows)
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

    needs_dim = False

    def spec(self) -> dict[str, Any]:
        return {"kind": self.key, "dim": None, "seed": None, "block_rows": None}

    def out_dim(self, n_params: int) -> int:
        return n_params

    def check_memory(self, n_params: int) -> None:
        """No matrix (the features themselves, k = p, are checked by featurize)."""

    def project(self, grads: torch.Tensor, checkpoint: int) -> torch.Tensor:
        return grads


class SparseProjector(Projector, key="sparse"):
    """Sparse sign JL: every input coordinate goes to ``nnz`` output coordinates with +-1/sqrt(nnz).

    The block construction of Kane and Nelson ("Sparser Johnson-Lindenstrauss Transforms",
    JACM 2014, section 2): the k outputs are cut into ``nnz`` contiguous segments and
    coordinate i is hashed to one uniformly chosen position in each, with an independent
    random sign; ``nnz=1`` is CountSketch (Charikar, Chen, Farach-Colton 2002). Then
    E[P P^T] = I. The hashes of rows ``[b * block_rows, (b + 1) * block_rows)`` are
    regenerated from ``(seed, checkpoint, b)`` and applied with ``index_add_``: O(B p nnz)
    work and no dense p x k matrix.
    """

    def __init__(self, dim: int | None = None, seed: int = 0, block_rows: int = 65536, cache_mb: float = 256.0,
                 nnz: int = 4):
        super().__init__(dim, seed, block_rows, cache_mb)
        if not isinstance(nnz, int) or not 1 <= nnz <= int(dim or 0):
            raise ConfigError(f"sparse projection needs 1 <= nnz <= dim, got nnz={nnz!r} with dim={dim!r}")
        self.nnz = nnz

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "nnz": self.nnz}

    def check_memory(self, n_params: int) -> None:
        """No dense matrix: a block is block_rows x nnz hashes and signs."""

    def project(self, grads: torch.Tensor, checkpoint: int) -> torch.Tensor:
        """Project ``grads`` (B, p) to (B, k) by scatter-adding signed entries, block by block."""
        n_params = grads.shape[1]
        out = torch.zeros(int(self.dim), grads.shape[0], dtype=grads.dtype)  # (k, B): index_add_ on rows
        for b, start in enumerate(range(0, n_params, self.block_rows)):
            stop = min(start + self.block_rows, n_params)
            index, sign = self._hashes(checkpoint, b, stop - start)
            values = grads[:, start:stop].T.unsqueeze(1) * sign.to(grads.dtype).unsqueeze(-1)  # (rows, nnz, B)
            out.index_add_(0, index.reshape(-1), values.reshape(-1, grads.shape[0]))
        return out.T.contiguous()

    def _hashes(self, checkpoint: int, block: int, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(index, sign)``, both (rows, nnz): output positions and +-1/sqrt(nnz) values."""
        key = (checkpoint, block, rows)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached[0].long(), cached[1]
        state = np.random.SeedSequence([self.seed, checkpoint, block]).generate_state(1, np.uint64)[0]
        generator = torch.Generator().manual_seed(int(state))
        k, s = int(self.dim), self.nnz
        bounds = torch.tensor([j * k // s for j in range(s + 1)])
        sizes = (bounds[1:] - bounds[:-1]).double()
        offset = (torch.rand(rows, s, generator=generator, dtype=torch.float64) * sizes).long()
        index = (bounds[:-1] + offset.clamp_max(sizes.long() - 1)).to(torch.int32)
        sign = torch.randint(0, 2, (rows, s), generator=generator).float().mul_(2).sub_(1).div_(s ** 0.5)
        self._remember_pair(key, index, sign)
        return index.long(), sign

    def _remember_pair(self, key: tuple[int, int, int], index: torch.Tensor, sign: torch.Tensor) -> None:
        size = index.numel() * index.element_size() + sign.numel() * sign.element_size()
        if size > self.cache_mb * 2**20:
            return
        self._cache[key] = (index, sign)  # type: ignore[assignment]
        self._cache_bytes += size
        while self._cache_bytes > self.cache_mb * 2**20:
            _, (old_index, old_sign) = self._cache.popitem(last=False)  # type: ignore[misc]
            self._cache_bytes -= old_index.numel() * old_index.element_size() + old_sign.numel() * old_sign.element_size()


class FactoredProjector(Projector, key="factored"):
    """Kronecker-factored projection per layer (LoGra: Choe et al., "What is Your Data Worth
    to GPT? LLM-Scale Data Valuation with Influence Functions", 2024, section 3.1).

    For a layer whose weight gradient is ``dW = sum_t u_t v_t^T`` (rows x cols), the
    feature block is ``P_rows^T dW P_cols`` (k_rows x k_cols), i.e. ``vec(dW) @ kron(P_rows,
    P_cols)``, computed as ``sum_t (P_rows^T u_t)(P_cols^T v_t)^T`` without forming dW. How
    the total ``dim`` is split across layers and which parameters take the exact path are
    decided by :func:`attributor.features.factored_plan.plan_layers` once the model is
    known; ``rest`` is the projector kind (``gaussian`` or ``sparse``) of the parameters
    outside factorable layers (LayerNorm and the like).
    """

    factored = True

    def __init__(self, dim: int | None = None, seed: int = 0, block_rows: int = 4096, cache_mb: float = 1024.0,
                 rest: str = "gaussian"):
        super().__init__(dim, seed, block_rows, cache_mb)
        if dim is None:
            raise ConfigError("factored projection needs a dim (k); set featurize.proj_dim")
        if rest not in ("gaussian", "rademacher", "sparse"):
            raise ConfigError(f"factored projection: rest must be gaussian, rademacher or sparse, got {rest!r}")
        self.rest = rest

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "rest": self.rest}

    def check_memory(self, n_params: int) -> None:
        """No p x k matrix: the per-layer factors are small, and each block is checked when generated."""

    def out_dim(self, n_params: int) -> int:
        raise ConfigError("the width of a factored projection depends on the model's layers; "
                          "use attributor.features.factored_plan.plan_layers")

    def project(self, grads: torch.Tensor, checkpoint: int) -> torch.Tensor:
        raise ConfigError("a factored projection is computed from layer inputs and output gradients; "
                          "use featurize (or attributor.features.factored.FactoredFeaturizer)")


def make_projector(kind: str, dim: int | None = None, seed: int = 0, **kwargs: Any) -> Projector:
    """Build a registered projector by name: ``gaussian``, ``rademacher``, ``sparse``,
    ``factored`` or ``identity`` (``dense`` is accepted for ``gaussian``)."""
    cls = Projector.lookup("gaussian" if kind == "dense" else kind)
    if cls.needs_dim and dim is None:
        raise ConfigError(f"projection {kind!r} needs a dim (k); set featurize.proj_dim")
    return cls(dim=dim if cls.needs_dim else None, seed=seed, **kwargs)
