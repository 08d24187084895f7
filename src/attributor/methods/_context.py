"""Helpers for methods that read a TrainingContext instead of (or besides) a FeatureStore.

They load one checkpoint into a float64 copy of the model (the context's model is shared
and keeps its dtype), iterate a split in collated batches, compute exact per-example
gradients of the Task (``attributor.features.gradients.per_example_gradients``) and
validate the arguments every such method shares (checkpoint index, damping, batch size).

Per-example gradients of a whole split are streamed batch by batch; they are kept in
memory only when n x p float64 numbers fit in :data:`GRADIENT_CACHE_BYTES`, so memory stays
bounded for large models (the gradients are then recomputed on every pass).
"""

from __future__ import annotations

import copy
import hashlib
import math
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils._pytree import tree_leaves, tree_map
from torch.utils.data import Dataset, default_collate

from attributor.errors import ConfigError
from attributor.features.gradients import per_example_gradients
from attributor.models.checkpoints import load_checkpoint
from attributor.tasks import Task

__all__ = ["GRADIENT_CACHE_BYTES", "GradientStream", "batches", "check_checkpoint", "check_damping",
           "check_positive_int", "dataset_fingerprint", "model_at"]

#: Largest n x p float64 gradient matrix a GradientStream keeps in memory (256 MiB).
GRADIENT_CACHE_BYTES = 256 * 2**20


def check_checkpoint(method: str, index: Any, n_checkpoints: int) -> int:
    """A checkpoint index in [-n, n) (Python style) as a non-negative index, or ConfigError."""
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not -n_checkpoints <= index < n_checkpoints:
        raise ConfigError(f"{method} checkpoint must be an index in [-{n_checkpoints}, {n_checkpoints}) "
                          f"of the {n_checkpoints} checkpoints, got {index!r}")
    return int(index) % n_checkpoints


def check_damping(method: str, damping: Any, name: str = "damping") -> float:
    if isinstance(damping, bool) or not isinstance(damping, (int, float)) or not math.isfinite(damping) or damping < 0:
        raise ConfigError(f"{method} {name} must be a finite number >= 0, got {damping!r}")
    return float(damping)


def check_positive_int(method: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{method} {name} must be an integer >= 1, got {value!r}")
    return int(value)


def model_at(model: torch.nn.Module, checkpoint: Any, dtype: torch.dtype = torch.float64) -> torch.nn.Module:
    """A copy of ``model`` with ``checkpoint`` loaded, cast to ``dtype``, in eval mode."""
    copied = copy.deepcopy(model)
    load_checkpoint(copied, checkpoint)
    return copied.to(dtype).eval()


def cast_batch(batch: Any, dtype: torch.dtype) -> Any:
    """Floating-point tensors of ``batch`` cast to ``dtype``; integer tensors (labels) kept."""
    return tree_map(lambda t: t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t, batch)


def collate(dataset: Dataset, indices: Sequence[int], dtype: torch.dtype = torch.float64) -> Any:
    return cast_batch(default_collate([dataset[int(i)] for i in indices]), dtype)


def batches(dataset: Dataset, batch_size: int, dtype: torch.dtype = torch.float64) -> Iterator[tuple[int, int, Any]]:
    """Yield ``(start, stop, batch)`` over ``dataset`` in order."""
    n = len(dataset)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        yield start, stop, collate(dataset, range(start, stop), dtype)


def dataset_fingerprint(dataset: Dataset, batch_size: int = 256) -> str:
    """sha256 of every tensor of every example: tells whether cached statistics still apply."""
    digest = hashlib.sha256(str(len(dataset)).encode())
    for _, _, batch in batches(dataset, batch_size, dtype=torch.float64):
        for leaf in tree_leaves(batch):
            if isinstance(leaf, torch.Tensor):
                digest.update(leaf.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:32]


class GradientStream:
    """Per-example gradients of ``task.<function>`` over a dataset, batch by batch.

    Iterating yields ``(start, stop, grads)`` with ``grads`` of shape (stop - start, p), in
    float64, flattened over ``names`` in that order. The first full pass keeps the
    gradients when n x p fits in ``cache_bytes``; later passes then reuse them.
    """

    def __init__(self, model: torch.nn.Module, task: Task, dataset: Dataset, names: list[str],
                 function: str = "train_loss", batch_size: int = 64, cache_bytes: int = GRADIENT_CACHE_BYTES):
        self.model, self.task, self.dataset, self.names = model, task, dataset, names
        self.function, self.batch_size = function, batch_size
        n_params = sum(p.numel() for n, p in model.named_parameters() if n in set(names))
        self._cacheable = len(dataset) * n_params * 8 <= cache_bytes
        self._cache: list[tuple[int, int, torch.Tensor]] | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self) -> Iterator[tuple[int, int, torch.Tensor]]:
        if self._cache is not None:
            yield from self._cache
            return
        kept = []
        for start, stop, batch in batches(self.dataset, self.batch_size):
            grads = per_example_gradients(self.model, self.task, batch, self.names, function=self.function).detach()
            if self._cacheable:
                kept.append((start, stop, grads))
            yield start, stop, grads
        if self._cacheable:
            self._cache = kept

    def squared_norms(self) -> torch.Tensor:
        """(n,) squared norms of the per-example gradients."""
        return torch.cat([(grads**2).sum(dim=1) for _, _, grads in self])
