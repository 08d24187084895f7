"""Layers whose weight gradient factors per example: dW_i = sum_t u_{i,t} v_{i,t}^T.

Each kind views its weight as a matrix (rows x cols), bias included as one extra row or
column driven by a constant input of one, and says how to turn what the forward hook saw
(the layer input) and the gradient of the measurement with respect to the layer output
into the projected factors ``U = u @ P_rows`` (B, T, k_rows) and ``V = v @ P_cols``
(B, T, k_cols). The projected gradient block is then ``einsum("btr,btc->brc", U, V)``,
equal to ``P_rows^T dW_i P_cols`` (LoGra, Choe et al. 2024, eq. 4) without forming dW_i.

=============  ======================  ================================  =====================
kind           weight as a matrix      u_t (rows side)                   v_t (cols side)
=============  ======================  ================================  =====================
Linear         (out, in [+1 bias])     output gradient g_t               input a_t [, 1]
Conv2d         (out, in*kh*kw [+1])    output gradient at position t     input patch t [, 1]
Conv1D (HF)    (in [+1 bias], out)     input a_t [, 1]                   output gradient g_t
Embedding      (vocab, dim)            one-hot of token t                output gradient g_t
=============  ======================  ================================  =====================

T is the number of positions (1 for a plain (B, in) input, the sequence length for
(B, T, in), H' * W' for a convolution). Hugging Face's ``Conv1D`` is recognised by its
class name and 2-D weight of shape (in, out) (``y = x @ W + b``), so transformers is
never imported. Modules of other types, and these with options that break the
factorisation (grouped convolutions, ``scale_grad_by_freq``), and subclasses that override
``forward`` (their output is no longer x W^T + b), take the exact path.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LayerKind", "layer_kind", "LAYER_KINDS"]


class LayerKind:
    """How one module type's weight gradient factors; see the module docstring."""

    name: ClassVar[str]
    #: where the bias goes in the weight matrix: an extra "cols" entry or an extra "rows" entry
    bias_side: ClassVar[str] = "cols"

    @staticmethod
    def matches(module: nn.Module) -> bool:
        raise NotImplementedError

    @staticmethod
    def shape(module: nn.Module) -> tuple[int, int]:
        """(rows, cols) of the weight as a matrix, without the bias."""
        raise NotImplementedError

    @staticmethod
    def factors(module: nn.Module, inputs: torch.Tensor, grad: torch.Tensor, p_rows: torch.Tensor,
                p_cols: torch.Tensor, bias: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """``(U, V)`` of shapes (B, T, k_rows) and (B, T, k_cols) for one call of ``module``."""
        raise NotImplementedError

    @staticmethod
    def positions(module: nn.Module, inputs: torch.Tensor) -> tuple[int, ...] | None:
        """The (B, ...) position shape a padding mask must have to apply, or None (no positions)."""
        return tuple(inputs.shape[:-1]) if inputs.dim() > 2 else None

    @classmethod
    def block(cls, module: nn.Module, inputs: torch.Tensor, grad: torch.Tensor, p_rows: torch.Tensor,
              p_cols: torch.Tensor, bias: bool, mask: torch.Tensor | None) -> torch.Tensor:
        """``sum_t U_t V_t^T`` of one call, shape (B, k_rows, k_cols); positions with mask 0 left out."""
        u, v = cls.factors(module, inputs, grad, p_rows, p_cols, bias)
        positions = cls.positions(module, inputs)
        if mask is not None and positions is not None and positions == tuple(mask.shape):
            u = u * mask.reshape(u.shape[0], -1, 1).to(u.dtype)
        if u.shape[1] == 1:  # one position: an outer product (bmm with an inner dimension of 1 is slow)
            return u[:, 0, :, None] * v[:, 0, None, :]
        return torch.bmm(u.transpose(1, 2), v)

    @classmethod
    def as_matrix(cls, weight_grad: torch.Tensor, bias_grad: torch.Tensor | None) -> torch.Tensor:
        """Per-example gradients (B, *weight.shape) [and (B, *bias.shape)] as (B, rows, cols)."""
        batch = weight_grad.shape[0]
        matrix = weight_grad.reshape(batch, weight_grad.shape[1], -1)
        if bias_grad is None:
            return matrix
        if cls.bias_side == "cols":
            return torch.cat([matrix, bias_grad.reshape(batch, -1, 1)], dim=2)
        return torch.cat([matrix, bias_grad.reshape(batch, 1, -1)], dim=1)


def _identity(p: torch.Tensor) -> bool:
    """Factors are square exactly when k equals the dimension, and then they are the identity."""
    return p.shape[0] == p.shape[1]


def _project(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    return x if _identity(p) else x @ p


def _with_bias(x: torch.Tensor, p: torch.Tensor, bias: bool) -> torch.Tensor:
    """``[x, 1] @ p`` (bias) or ``x @ p``, without concatenating the column of ones."""
    if not bias:
        return _project(x, p)
    if _identity(p):
        return torch.cat([x, x.new_ones(*x.shape[:-1], 1)], dim=-1)
    return torch.addmm(p[-1], x.reshape(-1, x.shape[-1]), p[:-1]).reshape(*x.shape[:-1], p.shape[1])


class LinearKind(LayerKind):
    name = "linear"

    @staticmethod
    def matches(module: nn.Module) -> bool:
        return isinstance(module, nn.Linear) and type(module).forward is nn.Linear.forward

    @staticmethod
    def shape(module: nn.Module) -> tuple[int, int]:
        return module.out_features, module.in_features

    @staticmethod
    def factors(module, inputs, grad, p_rows, p_cols, bias):
        batch = inputs.shape[0]
        u = _project(grad.reshape(batch, -1, grad.shape[-1]), p_rows)
        v = _with_bias(inputs.reshape(batch, -1, inputs.shape[-1]), p_cols, bias)
        return u, v


class Conv1DKind(LayerKind):
    """Hugging Face ``transformers.pytorch_utils.Conv1D``: weight (in, out), y = x @ W + b."""

    name = "conv1d"
    bias_side = "rows"

    @staticmethod
    def matches(module: nn.Module) -> bool:
        weight = getattr(module, "weight", None)
        return type(module).__name__ == "Conv1D" and isinstance(weight, torch.Tensor) and weight.dim() == 2

    @staticmethod
    def shape(module: nn.Module) -> tuple[int, int]:
        return tuple(module.weight.shape)  # type: ignore[return-value]

    @staticmethod
    def factors(module, inputs, grad, p_rows, p_cols, bias):
        batch = inputs.shape[0]
        u = _with_bias(inputs.reshape(batch, -1, inputs.shape[-1]), p_rows, bias)
        v = _project(grad.reshape(batch, -1, grad.shape[-1]), p_cols)
        return u, v


class EmbeddingKind(LayerKind):
    """Rows of the (vocab, dim) table: token t adds g_t to row x_t (none for ``padding_idx``)."""

    name = "embedding"

    @staticmethod
    def matches(module: nn.Module) -> bool:
        return (isinstance(module, nn.Embedding) and type(module).forward is nn.Embedding.forward
                and not module.scale_grad_by_freq)

    @staticmethod
    def shape(module: nn.Module) -> tuple[int, int]:
        return module.num_embeddings, module.embedding_dim

    @staticmethod
    def positions(module: nn.Module, inputs: torch.Tensor) -> tuple[int, ...] | None:
        return tuple(inputs.shape) if inputs.dim() > 1 else None

    @staticmethod
    def factors(module, inputs, grad, p_rows, p_cols, bias):
        batch = inputs.shape[0]
        tokens = inputs.reshape(batch, -1)
        u = p_rows[tokens]  # (B, T, k_rows): the projected one-hot rows
        if module.padding_idx is not None:
            u = u * (tokens != module.padding_idx).unsqueeze(-1).to(u.dtype)
        v = _project(grad.reshape(batch, -1, grad.shape[-1]), p_cols)
        return u, v


class Conv2dKind(LayerKind):
    """``P_cols`` is applied as a convolution with k_cols filters: no unfolded patches."""

    name = "conv2d"

    @staticmethod
    def matches(module: nn.Module) -> bool:
        return isinstance(module, nn.Conv2d) and type(module).forward is nn.Conv2d.forward and module.groups == 1

    @staticmethod
    def shape(module: nn.Module) -> tuple[int, int]:
        out_channels, in_channels, kh, kw = module.weight.shape
        return out_channels, in_channels * kh * kw

    @staticmethod
    def positions(module: nn.Module, inputs: torch.Tensor) -> tuple[int, ...] | None:
        return None

    @classmethod
    def block(cls, module, inputs, grad, p_rows, p_cols, bias, mask):
        """``P_rows^T (G V)``: G (B, out, L) the output gradients, V (B, L, k_cols) the projected
        patches, computed as a convolution of the input with the k_cols filters of P_cols."""
        batch, out_channels = grad.shape[0], grad.shape[1]
        g = grad.reshape(batch, out_channels, -1)
        n_patch = p_cols.shape[0] - (1 if bias else 0)
        filters = p_cols[:n_patch].T.reshape(-1, *module.weight.shape[1:])  # identity: one filter per patch entry
        padding = 0 if module.padding_mode != "zeros" else module.padding
        projected = F.conv2d(_pad(module, inputs), filters, None, module.stride, padding, module.dilation)
        m = torch.bmm(g, projected.reshape(batch, projected.shape[1], -1).transpose(1, 2))  # (B, out, k_cols)
        if bias:
            m = m + g.sum(-1).unsqueeze(-1) * p_cols[-1]
        return m if _identity(p_rows) else torch.matmul(p_rows.T, m)

    @classmethod
    def factors(cls, module, inputs, grad, p_rows, p_cols, bias):
        """(U, V) as in the other kinds (used by tests; :meth:`block` avoids forming U)."""
        batch = inputs.shape[0]
        filters = p_cols[: p_cols.shape[0] - (1 if bias else 0)].T.reshape(-1, *module.weight.shape[1:])
        padding = 0 if module.padding_mode != "zeros" else module.padding
        projected = F.conv2d(_pad(module, inputs), filters, None, module.stride, padding, module.dilation)
        v = projected.reshape(batch, projected.shape[1], -1).transpose(1, 2)
        if bias:
            v = v + p_cols[-1]
        u = grad.reshape(batch, grad.shape[1], -1).transpose(1, 2) @ p_rows  # (B, H'W', k_rows)
        return u, v


def _pad(module: nn.Conv2d, inputs: torch.Tensor) -> torch.Tensor:
    """Inputs padded explicitly for reflect/replicate/circular padding (zeros is left to conv2d)."""
    if module.padding_mode == "zeros":
        return inputs
    return F.pad(inputs, module._reversed_padding_repeated_twice, mode=module.padding_mode)


LAYER_KINDS: tuple[type[LayerKind], ...] = (LinearKind, Conv2dKind, EmbeddingKind, Conv1DKind)


def layer_kind(module: nn.Module) -> type[LayerKind] | None:
    """The factorable kind of ``module``, or None when it takes the exact path."""
    for kind in LAYER_KINDS:
        if kind.matches(module):
            return kind
    return None
