"""The Task: the one contract every attribution method consumes.

A Task says, for a model and a batch, how to compute

* ``train_loss``   the per-example training loss L,                    shape (B,)
* ``measurement``  the measured output f whose change is attributed,     shape (B,)
* ``out_to_loss``  TRAK's out-to-loss term Q (optional, default 1),      shape (B,)
* ``measure``      ``(f, Q)``; override it to take both from one forward pass
  (featurizers call it once per batch; the default runs the two methods)
* ``tracked_parameters``  which parameters gradients are taken of (default: all
  parameters that require grad)
* ``validate_batch``  cheap checks of a concrete batch, run once before featurizing
  (default: none); raise :class:`~attributor.errors.DataError` saying what to change.

``model`` is anything callable like the ``nn.Module`` (the featurizer passes a functional
view of the module so that it can take per-example gradients with ``torch.func``);
``batch`` is whatever the data loader yields. Every method must work with batches of any
size, including 1, and example i's values must depend on example i only: per-example
gradients run the task under ``vmap``, one example at a time, where value-dependent
Python control flow (``if labels.max() > ...``) is impossible; put such checks in
``validate_batch``, which sees the concrete batch.

Q and the sign convention (DESIGN.md: a positive score means the training example pushes
f up). TRAK (Park et al., ICML 2023, section 3.2) writes the loss gradient through the
measurement, grad L = (dL/df) grad f, and Q = -dL/df, so that

    grad L(z) = -Q(z) grad f(z)                                                    (*)

A gradient step on z moves theta by -eta grad L(z) = eta Q(z) grad f(z), which changes a
query's f by eta Q(z) <grad f(query), grad f(z)>: positive when z pushes it up. Every
built-in task satisfies (*) exactly (tests/tasks/test_task_conformance.py checks it).

A subclass registers under ``key=`` or, without one, under its class name:
``class MyTask(Task): ...`` is ``get_task("MyTask")``; running its definition again (a
notebook cell) replaces the registration with a warning.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from typing import Any, Callable

import torch

from attributor.errors import DataError
from attributor.registry import Registered

__all__ = ["Task", "get_task", "call_model", "output_logits", "batch_size"]

Model = Callable[..., Any]


class Task(Registered, kind="task", auto_key=True):
    """Abstract task: implement :meth:`train_loss` and :meth:`measurement` (shapes (B,))."""

    @abstractmethod
    def train_loss(self, model: Model, batch: Any) -> torch.Tensor:
        """Per-example training loss, shape (B,)."""

    @abstractmethod
    def measurement(self, model: Model, batch: Any) -> torch.Tensor:
        """Per-example measured output f, shape (B,)."""

    def out_to_loss(self, model: Model, batch: Any) -> torch.Tensor:
        """TRAK's Q term, shape (B,). The default of ones leaves scores unweighted."""
        return torch.ones(batch_size(batch))

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

    def validate_batch(self, model: torch.nn.Module, batch: Any) -> None:
        """Check a concrete batch (keys, dtypes, label ranges) before any gradient is taken.

        Featurizers call it on the first batch. Raise :class:`~attributor.errors.DataError`
        saying what to change. The default checks nothing.
        """

    def spec(self) -> dict[str, Any]:
        """A JSON-able description recorded in stores and run metadata (key + constructor args)."""
        return {"task": self.key}


def get_task(name: str, **kwargs: Any) -> Task:
    """Build a registered task by name (e.g. ``"classification"``), passing ``kwargs`` to it."""
    return Task.lookup(name)(**kwargs)


def call_model(model: Model, inputs: Any) -> Any:
    """``model(**inputs)`` for a mapping of keyword arguments (HF style), else ``model(inputs)``."""
    if isinstance(inputs, Mapping):
        return model(**inputs)
    return model(inputs)


def output_logits(output: Any) -> torch.Tensor:
    """The logits tensor of a model output: ``.logits`` (HF ModelOutput), ``["logits"]``, or the tensor."""
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if logits is None and isinstance(output, Mapping):
        logits = output.get("logits")
    if not isinstance(logits, torch.Tensor):
        raise DataError(f"the model returned {type(output).__name__}; a task expects a tensor of logits, a dict with "
                        "'logits', or an output object with a .logits tensor (wrap the model to return one of those)")
    return logits


def batch_size(batch: Any) -> int:
    """B, the leading dimension of the first tensor in ``batch``."""
    leaves = torch.utils._pytree.tree_leaves(batch)
    tensors = [leaf for leaf in leaves if isinstance(leaf, torch.Tensor) and leaf.dim() > 0]
    if not tensors:
        raise DataError("a batch must contain at least one tensor with a batch dimension; got "
                        f"{type(batch).__name__} (collate examples into tensors of shape (B, ...))")
    return tensors[0].shape[0]
