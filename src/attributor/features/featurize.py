"""featurize: dataset + model checkpoints + Task -> FeatureStore.

For every checkpoint c and every chunk of the split not yet committed, the rows are
processed in batches: per-example gradients of ``task.measurement`` (torch.func), projected
by the seeded projector for checkpoint c, and TRAK's ``task.out_to_loss``. The chunk is
then committed to the store. Work already committed is skipped, so a killed run resumes.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from attributor.errors import DataError
from attributor.features.gradients import count_parameters, per_example_gradients, tracked_parameter_names
from attributor.features.projection import Projector
from attributor.features.store import FeatureStore
from attributor.models.checkpoints import checkpoint_id, load_checkpoint
from attributor.progress import progress_bar
from attributor.task import Task

__all__ = ["featurize", "store_settings"]


def store_settings(
    model: torch.nn.Module,
    task: Task,
    checkpoints: Sequence[str | os.PathLike[str]],
    projector: Projector,
    *,
    dtype: str = "float32",
    chunk_size: int = 1024,
) -> dict[str, Any]:
    """The settings a store is created with; two runs share a store only if these match."""
    names = tracked_parameter_names(model, task)
    n_params = count_parameters(model, names)
    return {
        "task": task.spec(),
        "model": {"class": type(model).__name__, "parameters": {n: list(p.shape) for n, p in model.named_parameters() if n in names}},
        "checkpoints": [checkpoint_id(path) for path in checkpoints],
        "projector": projector.spec(),
        "dtype": dtype,
        "chunk_size": int(chunk_size),
        "n_params": n_params,
        "dim": projector.out_dim(n_params),
    }


def featurize(
    model: torch.nn.Module,
    task: Task,
    dataset: Dataset,
    checkpoints: Sequence[str | os.PathLike[str]],
    store_path: str | os.PathLike[str],
    projector: Projector,
    *,
    split: str = "train",
    data_id: str | None = None,
    dtype: str = "float32",
    chunk_size: int = 1024,
    batch_size: int = 64,
    overwrite: bool = False,
    progress: bool = True,
) -> FeatureStore:
    """Featurize ``dataset`` into split ``split`` of the store at ``store_path``.

    Args:
        model: the architecture; weights are loaded from each checkpoint in turn.
        task: what to differentiate (``task.measurement``) and TRAK's Q.
        dataset: map-style; ``dataset[i]`` is one example, collated with ``default_collate``.
        checkpoints: state-dict files (loaded with ``weights_only=True``), the ensemble.
        projector: seeded projection; block matrices are regenerated per checkpoint.
        data_id: optional content id of the dataset, checked when the split is reopened.
        dtype: storage dtype, ``float16``, ``float32`` or ``float64``.

    Returns the store; ``store.features(split, c)`` has shape (len(dataset), k).
    """
    if not checkpoints:
        raise DataError("featurize needs at least one checkpoint")
    if chunk_size < 1 or batch_size < 1:
        raise DataError(f"chunk_size and batch_size must be >= 1 (got {chunk_size}, {batch_size})")
    settings = store_settings(model, task, checkpoints, projector, dtype=dtype, chunk_size=chunk_size)
    store = FeatureStore.create(store_path, settings, overwrite=overwrite)
    store.add_split(split, len(dataset), data_id)
    names = tracked_parameter_names(model, task)
    todo = [(c, bounds) for c in range(len(checkpoints)) for bounds in store.missing_chunks(split, c)]
    if not todo:
        return store
    was_training = model.training
    model.eval()
    try:
        with store.writing(), progress_bar(total=sum(b[2] - b[1] for _, b in todo), desc=f"featurize {split}", enabled=progress) as bar:
            _featurize_chunks(model, task, dataset, store, names, projector, checkpoints, split, todo, batch_size, bar)
    finally:
        model.train(was_training)
    return store


def _featurize_chunks(model, task, dataset, store, names, projector, checkpoints, split, todo, batch_size, bar) -> None:
    """Compute and commit each ``(checkpoint, (index, start, stop))`` chunk of ``todo``."""
    loaded = None
    for c, (index, start, stop) in todo:
        if loaded != c:
            load_checkpoint(model, checkpoints[c])
            loaded = c
        features, out_to_loss = _featurize_rows(model, task, dataset, names, projector, c, start, stop, batch_size)
        bad = ~np.isfinite(features).all(axis=1) | ~np.isfinite(out_to_loss)
        if bad.any():
            rows = (np.flatnonzero(bad) + start)[:5].tolist()
            raise DataError(
                f"non-finite gradients for examples {rows} of split {split!r} at checkpoint {c}; "
                "check the inputs for NaN/inf and the checkpoint for diverged weights"
            )
        store.write_chunk(split, c, index, features, out_to_loss)
        bar.update(stop - start)


def _featurize_rows(model, task, dataset, names, projector, checkpoint, start, stop, batch_size):
    features, out_to_loss = [], []
    for lo in range(start, stop, batch_size):
        batch = default_collate([dataset[i] for i in range(lo, min(lo + batch_size, stop))])
        grads = per_example_gradients(model, task, batch, names)
        features.append(projector.project(grads, checkpoint).detach())
        with torch.no_grad():
            out_to_loss.append(task.out_to_loss(model, batch).detach())
    return torch.cat(features).numpy(), torch.cat(out_to_loss).numpy()


