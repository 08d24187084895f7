"""Scalar regression: f is the prediction, Q = y - f is signed.

Batch: ``(inputs, targets)`` (``inputs`` a tensor (B, ...) or a mapping of keyword
arguments) or a mapping holding ``"labels"`` (the targets; the other keys are the model's
keyword arguments). Targets are floating, shape (B,) or (B, 1). The model returns (B,) or
(B, 1), or an output with ``.logits`` / a dict with ``"logits"`` of that shape.

* train loss: L = 1/2 (f - y)^2.
* measurement: the prediction f itself.
* out-to-loss: TRAK's Q is -dL/df (Park et al., ICML 2023, section 3.2), so that
  grad L = (dL/df) grad f = -Q grad f. Here dL/df = f - y, hence

      Q = y - f   (signed).

  A gradient step on z moves theta by -eta grad L = eta (y - f) grad f: it raises the
  model's predictions along grad f(z) when z's target lies above the prediction and
  lowers them when below, so with this Q a positive score still means that the training
  example pushes the query's f up (DESIGN.md's sign convention).
"""

from __future__ import annotations

from typing import Any

import torch

from attributor.errors import DataError
from attributor.tasks.base import Model, Task, call_model, output_logits
from attributor.tasks.checks import check_float64_inputs, check_token_ids, forward_one, split_labelled

__all__ = ["RegressionTask"]


class RegressionTask(Task, key="regression"):
    """Squared error 1/2 (f - y)^2, f = the prediction, Q = y - f; see the module docstring."""

    def train_loss(self, model: Model, batch: Any) -> torch.Tensor:
        prediction, targets = self._predict(model, batch)
        return 0.5 * (prediction - targets) ** 2

    def measurement(self, model: Model, batch: Any) -> torch.Tensor:
        return self._predict(model, batch)[0]

    def out_to_loss(self, model: Model, batch: Any) -> torch.Tensor:
        prediction, targets = self._predict(model, batch)
        return targets - prediction

    def measure(self, model: Model, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """f and Q = y - f from one forward pass."""
        prediction, targets = self._predict(model, batch)
        return prediction, (targets - prediction).detach()

    def validate_batch(self, model: torch.nn.Module, batch: Any) -> None:
        """Floating targets (B,) or (B, 1), no float64 inputs to a lower-precision model, one
        output per example (checked on the first example), token ids in the vocabulary."""
        inputs, targets = split_labelled(batch, self.key, what="targets")
        _targets(targets)
        check_float64_inputs(model, inputs)
        check_token_ids(model, inputs)
        _prediction(output_logits(forward_one(model, inputs)), targets[:1])

    def _predict(self, model: Model, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, targets = split_labelled(batch, self.key, what="targets")
        targets = _targets(targets)
        prediction = _prediction(output_logits(call_model(model, inputs)), targets)
        return prediction, targets.to(prediction.dtype)


def _targets(targets: torch.Tensor) -> torch.Tensor:
    """Targets as (B,); floating (B,) or (B, 1) only."""
    if not targets.is_floating_point():
        raise DataError(f"regression targets must be floating, got {targets.dtype}: cast them with .float() "
                        "(or use the 'classification' task for class indices)")
    if targets.dim() == 2 and targets.shape[1] == 1:
        return targets[:, 0]
    if targets.dim() != 1:
        raise DataError(f"regression targets must have shape (B,) or (B, 1), got {tuple(targets.shape)}; a "
                        "multi-output model needs a Task that picks the output to attribute")
    return targets


def _prediction(output: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The model's output (B,) or (B, 1) as (B,)."""
    if output.dim() == 2 and output.shape[1] == 1:
        output = output[:, 0]
    if output.dim() != 1 or output.shape[0] != targets.shape[0]:
        raise DataError(f"regression expects one output per example, shape (B,) or (B, 1) with B = "
                        f"{targets.shape[0]}; the model returned {tuple(output.shape)}")
    return output
