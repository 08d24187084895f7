"""Contrastive embedding models: f is the positive's margin over explicit negatives.

Batch: one mapping ``{"anchor": x, "positive": x, "negatives": x}``. Each side's inputs
``x`` are a tensor or a mapping of keyword arguments (``model(**x)``); the anchor's and the
positive's have batch shape (B, ...), the negatives' an extra dimension (B, m, ...): m
negatives per example. The model maps inputs to embeddings (B, D), or returns an output
with ``last_hidden_state`` (B, T, D) (HF ``AutoModel``), mean-pooled over the positions where
that side's ``attention_mask`` is 1.

With s(u, v) = cos(u, v) / tau (temperature tau, default 0.05), s_+ = s(anchor, positive)
and s_j = s(anchor, negative_j):

* measurement: f = s_+ - logsumexp_j s_j = log(p_+ / (1 - p_+)), the margin of the
  positive, as classification's margin of the right class (TRAK, Park et al., ICML 2023,
  eq. 14, which TRAK also uses for CLIP);
* train loss: the InfoNCE loss over [positive, negatives] (van den Oord et al., 2018,
  "Representation Learning with Contrastive Predictive Coding", eq. 4),
  L = -log softmax(s_+, s_1..s_m)[+] = log(1 + exp(-f));
* out-to-loss: dL/df = -sigmoid(-f), so Q = 1 - p_+ = sigmoid(-f) and grad L = -Q grad f.

Negatives must be given per example: in-batch negatives (the other examples' positives)
would make example i's loss depend on the rest of the batch, which per-example gradients
(``vmap``, one example at a time) cannot see. Each negative is embedded by its own model
call of batch B, so every call keeps the batch in dim 0 (the factored featurizer's hooks
need it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils._pytree import tree_leaves, tree_map

from attributor.errors import ConfigError, DataError
from attributor.tasks.base import Model, Task, call_model

__all__ = ["ContrastiveTask", "embed"]

_SIDES = ("anchor", "positive", "negatives")


class ContrastiveTask(Task, key="contrastive"):
    """InfoNCE with explicit negatives, f = the positive's margin, Q = sigmoid(-f); see the module docstring.

    Args:
        temperature: tau in s = cos / tau, > 0.
    """

    def __init__(self, temperature: float = 0.05):
        if not temperature > 0:
            raise ConfigError(f"contrastive temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def spec(self) -> dict[str, Any]:
        return {"task": self.key, "temperature": self.temperature}

    def train_loss(self, model: Model, batch: Any) -> torch.Tensor:
        return F.softplus(-self.measurement(model, batch))

    def measurement(self, model: Model, batch: Any) -> torch.Tensor:
        positive, negatives = self._similarities(model, batch)
        return positive - torch.logsumexp(negatives, dim=-1)

    def out_to_loss(self, model: Model, batch: Any) -> torch.Tensor:
        return torch.sigmoid(-self.measurement(model, batch))

    def measure(self, model: Model, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """f and Q = sigmoid(-f) from one pass over the three sides."""
        measurement = self.measurement(model, batch)
        return measurement, torch.sigmoid(-measurement.detach())

    def validate_batch(self, model: torch.nn.Module, batch: Any) -> None:
        """The three sides present, negatives with the extra dimension m >= 1, one batch size."""
        anchor, _, negatives = _sides(batch)
        n = _leading(anchor, "anchor", 1)[0]
        for name in ("positive", "negatives"):
            shape = _leading(batch[name], name, 2 if name == "negatives" else 1)
            if shape[0] != n:
                raise DataError(f"contrastive {name} has batch size {shape[0]}, the anchor {n}; give one row per anchor")
        if _leading(negatives, "negatives", 2)[1] < 1:
            raise DataError("contrastive negatives have m = 0 per example; give at least one")

    def _similarities(self, model: Model, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """s_+ (B,) and s_j (B, m)."""
        anchor, positive, negatives = _sides(batch)
        m = _leading(negatives, "negatives", 2)[1]
        a = embed(model, anchor)
        p = embed(model, positive)
        n = torch.stack([embed(model, tree_map(lambda t: t[:, j], negatives)) for j in range(m)], dim=1)
        s_pos = F.cosine_similarity(a, p, dim=-1) / self.temperature
        s_neg = F.cosine_similarity(a.unsqueeze(1), n, dim=-1) / self.temperature
        return s_pos, s_neg


def embed(model: Model, inputs: Any) -> torch.Tensor:
    """Embeddings (B, D) of one side: the model's output, or its ``last_hidden_state``
    (B, T, D) mean-pooled over the positions where ``inputs["attention_mask"]`` is 1."""
    output = call_model(model, inputs)
    if isinstance(output, torch.Tensor):
        hidden = output
    else:
        hidden = getattr(output, "last_hidden_state", None)
        if hidden is None and isinstance(output, Mapping):
            hidden = output.get("last_hidden_state")
        if not isinstance(hidden, torch.Tensor):
            raise DataError(f"the model returned {type(output).__name__}; the contrastive task needs embeddings (B, D) "
                            "or an output with last_hidden_state (B, T, D)")
        mask = inputs.get("attention_mask") if isinstance(inputs, Mapping) else None
        weights = torch.ones(hidden.shape[:2], dtype=hidden.dtype, device=hidden.device) if mask is None \
            else mask.to(hidden.dtype)
        hidden = (hidden * weights.unsqueeze(-1)).sum(1) / weights.sum(1, keepdim=True).clamp(min=1.0)
    if hidden.dim() != 2:
        raise DataError(f"the contrastive task needs embeddings of shape (B, D); the model returned "
                        f"{tuple(hidden.shape)} (return last_hidden_state, or pool to (B, D) in the model)")
    return hidden


def _sides(batch: Any) -> tuple[Any, Any, Any]:
    if not isinstance(batch, Mapping):
        raise DataError(f"a contrastive batch is a mapping with keys {list(_SIDES)}; got {type(batch).__name__}")
    if "negatives" not in batch and {"anchor", "positive"} <= set(batch):
        raise DataError("a contrastive batch needs 'negatives' (B, m, ...): m negatives per example. In-batch "
                        "negatives are not supported: they make each example's loss depend on the rest of the "
                        "batch, which per-example gradients cannot see; sample or mine m negatives per anchor")
    missing = [side for side in _SIDES if side not in batch]
    if missing:
        raise DataError(f"a contrastive batch needs the keys {list(_SIDES)}; {missing} missing from {sorted(batch)}")
    return batch["anchor"], batch["positive"], batch["negatives"]


def _leading(inputs: Any, name: str, ndim: int) -> tuple[int, ...]:
    """The first ``ndim`` dims shared by the tensors of one side, e.g. (B,) or (B, m)."""
    tensors = [t for t in tree_leaves(inputs) if isinstance(t, torch.Tensor)]
    if not tensors:
        raise DataError(f"contrastive {name} holds no tensor")
    shapes = {tuple(t.shape[:ndim]) for t in tensors}
    if len(shapes) > 1 or any(len(shape) < ndim for shape in shapes):
        what = "(B, m, ...)" if ndim == 2 else "(B, ...)"
        raise DataError(f"contrastive {name} tensors must share the leading shape {what}; got "
                        f"{[tuple(t.shape) for t in tensors]}")
    return shapes.pop()
