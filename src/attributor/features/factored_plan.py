"""The layout of a factored projection: which layers factor, their k_rows x k_cols, the rest.

Given a model, the tracked parameter names and the total dimension k (``proj_dim``):

* every module of a factorable kind (:mod:`attributor.features.factored_layers`) whose
  weight is tracked becomes a **block**; its bias joins the block as an extra column (or
  row, for Conv1D) driven by a constant input of one, if the bias is tracked too. Modules
  sharing one weight (tied embeddings) share one block when they agree on its layout.
* every other tracked parameter (LayerNorm, a bias without its weight, loose parameters)
  goes to the **rest**, one vector projected by a dense (or sparse) seeded projector.

Splitting k: the blocks and the rest (if any) are groups; each group gets an equal share
of k, capped at its number of parameters, what a capped group leaves is shared equally
among the others (water-filling). A block's share k_l becomes k_rows x k_cols <= k_l, both near
sqrt(k_l) as the caps k_rows <= rows, k_cols <= cols allow (the JL error of a rank-one
gradient's inner products grows like 1/k_rows + 1/k_cols, smallest when they are equal).
A factor with k equal to its dimension is the identity (that side exact); so is the rest
projection when the rest fits in its share. The store's dim is the sum of the blocks'
k_rows * k_cols and the rest's k, at most ``proj_dim``; features are laid out block by
block in ``named_parameters`` order, each row-major (k_rows, k_cols), then the rest.

Factors are Gaussian N(0, 1/k) (so kron(P_rows, P_cols) has E[P P^T] = I), regenerated
from ``(seed, checkpoint, block index, side)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from attributor.errors import ConfigError
from attributor.features.factored_layers import LayerKind, layer_kind

__all__ = ["Block", "Plan", "plan_layers", "split_dim", "balanced_factors"]


@dataclass
class Block:
    """One factored weight: ``modules`` call it, ``weight``/``bias`` name its parameters."""

    index: int
    kind: type[LayerKind]
    modules: list[str]
    weight: str
    bias: str | None
    rows: int  # including the bias row (Conv1D)
    cols: int  # including the bias column (Linear, Conv2d)
    k_rows: int = 0
    k_cols: int = 0

    @property
    def size(self) -> int:
        return self.rows * self.cols

    @property
    def dim(self) -> int:
        return self.k_rows * self.k_cols

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind.name, "modules": self.modules, "weight": self.weight, "bias": self.bias,
                "shape": [self.rows, self.cols], "k": [self.k_rows, self.k_cols]}

    def factor(self, side: int, seed: int, checkpoint: int, dtype: torch.dtype) -> torch.Tensor:
        """P_rows (side 0, rows x k_rows) or P_cols (side 1, cols x k_cols); identity when k = dim."""
        n, k = (self.rows, self.k_rows) if side == 0 else (self.cols, self.k_cols)
        if k == n:
            return torch.eye(n, dtype=dtype)
        state = np.random.SeedSequence([seed, checkpoint, self.index, side]).generate_state(1, np.uint64)[0]
        generator = torch.Generator().manual_seed(int(state))
        return (torch.randn(n, k, generator=generator) / math.sqrt(k)).to(dtype)


@dataclass
class Plan:
    blocks: list[Block]
    rest: list[str]  # parameter names on the exact path, in named_parameters order
    rest_size: int
    rest_dim: int

    @property
    def dim(self) -> int:
        return sum(b.dim for b in self.blocks) + self.rest_dim

    def spec(self) -> dict[str, Any]:
        return {"layers": [b.spec() for b in self.blocks],
                "rest_parameters": {"names": self.rest, "size": self.rest_size, "dim": self.rest_dim}}


def plan_layers(model: nn.Module, names: list[str], dim: int) -> Plan:
    """Lay out a factored projection of total width <= ``dim`` over the tracked ``names``."""
    params = dict(model.named_parameters())
    tracked = set(names)
    by_weight: dict[int, Block] = {}
    for module_name, module in model.named_modules():
        kind = layer_kind(module)
        weight = getattr(module, "weight", None)
        if kind is None or weight is None:
            continue
        weight_name = _name_of(params, weight)
        if weight_name not in tracked:
            continue
        bias = getattr(module, "bias", None)
        bias_name = _name_of(params, bias) if isinstance(bias, torch.Tensor) else None
        bias_name = bias_name if bias_name in tracked else None
        rows, cols = kind.shape(module)
        if bias_name is not None:
            rows, cols = (rows + 1, cols) if kind.bias_side == "rows" else (rows, cols + 1)
        known = by_weight.get(id(weight))
        if known is None:
            by_weight[id(weight)] = Block(0, kind, [module_name], weight_name, bias_name, rows, cols)
        elif (known.kind.bias_side, known.bias, known.rows, known.cols) == (kind.bias_side, bias_name, rows, cols):
            known.modules.append(module_name)
        else:  # a tied weight used in two incompatible layouts: exact path
            known.modules.append(module_name)
            known.kind = None  # type: ignore[assignment]
    order = {name: i for i, name in enumerate(names)}
    blocks = sorted((b for b in by_weight.values() if b.kind is not None), key=lambda b: order[b.weight])
    covered = {name for b in blocks for name in (b.weight, b.bias) if name is not None}
    rest = [name for name in names if name not in covered]
    rest_size = sum(params[name].numel() for name in rest)
    sizes = [b.size for b in blocks] + ([rest_size] if rest_size else [])
    if dim < len(sizes):
        raise ConfigError(f"factored projection needs proj_dim >= {len(sizes)} (one per layer and one for the "
                          f"other parameters), got {dim}")
    shares = split_dim(dim, sizes)
    for index, (block, share) in enumerate(zip(blocks, shares)):
        block.index = index
        block.k_rows, block.k_cols = balanced_factors(share, block.rows, block.cols)
    return Plan(blocks, rest, rest_size, shares[-1] if rest_size else 0)


def split_dim(dim: int, sizes: list[int]) -> list[int]:
    """Equal shares of ``dim``, each capped at its size, the remainder re-shared (water-filling)."""
    shares = [0] * len(sizes)
    remaining = dim
    for position, i in enumerate(sorted(range(len(sizes)), key=lambda j: sizes[j])):
        shares[i] = min(sizes[i], remaining // (len(sizes) - position))
        remaining -= shares[i]
    return shares


def balanced_factors(share: int, rows: int, cols: int) -> tuple[int, int]:
    """``(k_rows, k_cols)`` with k_rows * k_cols <= share, k_rows <= rows, k_cols <= cols, as
    close to sqrt(share) each as the caps allow (a capped side leaves the rest to the other)."""
    if share >= rows * cols:
        return rows, cols
    k_rows = max(1, min(rows, math.isqrt(share)))
    k_cols = max(1, min(cols, share // k_rows))
    return max(1, min(rows, share // k_cols)), k_cols


def _name_of(params: dict[str, torch.Tensor], tensor: Any) -> str | None:
    for name, p in params.items():
        if p is tensor:
            return name
    return None
