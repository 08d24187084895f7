"""Multi-class classification: TRAK's margin and Q = 1 - p_y.

Batch: ``(inputs, labels)`` where ``inputs`` is a tensor (B, ...) or a mapping of tensors
(passed to the model as keyword arguments), or one mapping holding ``"labels"`` (the
Hugging Face convention: the other keys are the model's keyword arguments). Labels are
class indices (B,) of an integer dtype. The model returns logits (B, C), or an output
with ``.logits`` (HF ``ModelOutput``) or a dict with ``"logits"``.

* train loss: cross-entropy L = -log p_y.
* measurement: the margin f = log(p_y / (1 - p_y)) of the labelled class (Park et al.,
  "TRAK: Attributing Model Behavior at Scale", ICML 2023, eq. 14), computed stably as
  ``logit_y - logsumexp(logits without y)``.
* out-to-loss: L = log(1 + exp(-f)), so dL/df = -(1 - p_y) and Q = -dL/df = 1 - p_y
  (TRAK, section 3.2): grad L = -Q grad f.

Inputs must share the model's floating dtype; float64 inputs to a float32 model are
refused by :meth:`ClassificationTask.validate_batch` (not cast: a silent cast would hide
numpy's float64 default leaking into a pipeline).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from attributor.errors import DataError
from attributor.tasks.base import Model, Task, call_model, output_logits
from attributor.tasks.checks import (check_float64_inputs, check_integer_labels, check_logits, check_token_ids,
                                     forward_one, split_labelled)

__all__ = ["ClassificationTask", "margin", "one_minus_p"]


class ClassificationTask(Task, key="classification"):
    """Cross-entropy training, TRAK's margin as f, Q = 1 - p_y; see the module docstring."""

    def train_loss(self, model: Model, batch: Any) -> torch.Tensor:
        logits, labels = self._logits(model, batch)
        return F.cross_entropy(logits, labels, reduction="none")

    def measurement(self, model: Model, batch: Any) -> torch.Tensor:
        return margin(*self._logits(model, batch))

    def out_to_loss(self, model: Model, batch: Any) -> torch.Tensor:
        return one_minus_p(*self._logits(model, batch))

    def measure(self, model: Model, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Margin and Q from one forward pass."""
        logits, labels = self._logits(model, batch)
        return margin(logits, labels), one_minus_p(logits.detach(), labels)

    def validate_batch(self, model: torch.nn.Module, batch: Any) -> None:
        """Labels: integer class indices in [0, C) (C from one example's logits); token ids in
        the model's vocabulary; no float64 inputs to a lower-precision model."""
        inputs, labels = split_labelled(batch, self.key)
        check_integer_labels(labels, self.key)
        check_float64_inputs(model, inputs)
        check_token_ids(model, inputs)
        logits = output_logits(forward_one(model, inputs))
        check_logits(logits, labels[:1], self.key)
        n_classes = logits.shape[-1]
        bad = ((labels < 0) | (labels >= n_classes)).nonzero().flatten()
        if bad.numel():
            raise DataError(f"{self.key} labels must lie in [0, {n_classes}) for a model with {n_classes} outputs; "
                            f"examples {bad[:5].tolist()} of the batch have labels {labels[bad[:5]].tolist()}: "
                            "re-encode the labels as 0..C-1 or give the model C outputs")

    def _logits(self, model: Model, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, labels = split_labelled(batch, self.key)
        check_integer_labels(labels, self.key)
        logits = output_logits(call_model(model, inputs))
        check_logits(logits, labels, self.key)
        return logits, labels


def margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log(p_y / (1 - p_y)) = logit_y - logsumexp(other logits); logits (B, C), labels (B,) -> (B,)."""
    correct = logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    is_label = torch.arange(logits.shape[-1], device=logits.device) == labels.unsqueeze(-1)
    others = torch.logsumexp(logits.masked_fill(is_label, float("-inf")), dim=-1)
    return correct - others


def one_minus_p(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Q = 1 - p_y; logits (B, C), labels (B,) -> (B,)."""
    probs = torch.softmax(logits, dim=-1)
    return 1.0 - probs.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
