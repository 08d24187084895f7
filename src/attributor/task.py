"""The Task: the one contract every attribution method consumes.

A Task says, for a model and a batch, how to compute

* ``train_loss``   the per-example training loss,                      shape (B,)
* ``measurement``  the measured output f whose change is attributed,     shape (B,)
* ``out_to_loss``  TRAK's out-to-loss term Q (optional, default 1),      shape (B,)
* ``measure``      both of the above; override it to take them from one forward pass
  (featurizers call it once per batch; the default runs the two methods)
* ``tracked_parameters``  which parameters gradients are taken of (default: all
  parameters that require grad).

``model`` is anything callable like the ``nn.Module`` (the featurizer passes a functional
view of the module so that it can take per-example gradients with ``torch.func``);
``batch`` is whatever the data loader yields, usually ``(inputs, targets)``. Every method
must work with batches of any size, including 1.

Sign convention (DESIGN.md): a positive attribution score means the training example
pushes ``measurement`` up.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, Callable

import torch
import torch.nn.functional as F

from attributor.registry import Registered

__all__ = ["Task", "ClassificationTask", "get_task"]

Model = Callable[..., torch.Tensor]


class Task(Registered, kind="task"):
    """Abstract task. Subclass with ``class MyTask(Task, key="my-task")`` to register it."""

    @abstractmethod
    def train_loss(self, model: Model, batch: Any) -> torch.Tensor:
        """Per-example training loss, shape (B,)."""

    @abstractmethod
    def measurement(self, model: Model, batch: Any) -> torch.Tensor:
        """Per-example measured output f, shape (B,)."""

    def out_to_loss(self, model: Model, batch: Any) -> torch.Tensor:
        """TRAK's Q term, shape (B,). The default of ones leaves scores unweighted."""
        return torch.ones(_batch_size(batch))

    def measure(self, model: Model, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``(measurement, out_to_loss)``, shapes (B,) and (B,); Q carries no gradient.

        The default calls :meth:`measurement`, then :meth:`out_to_loss` without gradients (a
        second forward pass). A task whose Q comes from the same outputs as f overrides this
        to run the model once; the result must equal the two methods'.
        """
        measurement = self.measurement(model, batch)
        with torch.no_grad():
            out_to_loss = self.out_to_loss(model, batch)
        return measurement, out_to_loss.detach()

    def tracked_parameters(self, model: torch.nn.Module) -> list[str] | None:
        """Names of the parameters to take gradients of; ``None`` means all trainable."""
        return None

    def spec(self) -> dict[str, Any]:
        """A JSON-able description recorded in stores and run metadata."""
        return {"task": self.key}


class ClassificationTask(Task, key="classification"):
    """Multi-class classification with ``batch = (inputs, labels)`` and logits output.

    * train loss: cross-entropy.
    * measurement: TRAK's margin f = log(p_y / (1 - p_y)) of the labelled class
      (Park et al., "TRAK: Attributing Model Behavior at Scale", ICML 2023, eq. 14),
      computed stably as ``logit_y - logsumexp(logits without y)``.
    * out-to-loss: Q = 1 - p_y, the derivative of the cross-entropy with respect to the
      margin, up to sign (TRAK, section 3.2).
    """

    def train_loss(self, model: Model, batch: Any) -> torch.Tensor:
        inputs, labels = batch
        return F.cross_entropy(model(inputs), labels, reduction="none")

    def measurement(self, model: Model, batch: Any) -> torch.Tensor:
        inputs, labels = batch
        return _margin(model(inputs), labels)

    def out_to_loss(self, model: Model, batch: Any) -> torch.Tensor:
        inputs, labels = batch
        return _one_minus_p(model(inputs), labels)

    def measure(self, model: Model, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Margin and Q from one forward pass."""
        inputs, labels = batch
        logits = model(inputs)
        return _margin(logits, labels), _one_minus_p(logits.detach(), labels)


def _margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log(p_y / (1 - p_y)) = logit_y - logsumexp(other logits), shape (B,)."""
    correct = logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    is_label = torch.arange(logits.shape[-1], device=logits.device) == labels.unsqueeze(-1)
    others = torch.logsumexp(logits.masked_fill(is_label, float("-inf")), dim=-1)
    return correct - others


def _one_minus_p(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Q = 1 - p_y, shape (B,)."""
    probs = torch.softmax(logits, dim=-1)
    return 1.0 - probs.gather(-1, labels.unsqueeze(-1)).squeeze(-1)


def get_task(name: str, **kwargs: Any) -> Task:
    """Build a registered task by name (e.g. ``"classification"``)."""
    return Task.lookup(name)(**kwargs)


def _batch_size(batch: Any) -> int:
    leaves = torch.utils._pytree.tree_leaves(batch)
    tensors = [leaf for leaf in leaves if isinstance(leaf, torch.Tensor)]
    if not tensors:
        raise TypeError("a batch must contain at least one tensor")
    return tensors[0].shape[0]
