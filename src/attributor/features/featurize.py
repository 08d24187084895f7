"""featurize: dataset + model checkpoints + Task -> FeatureStore.

For every checkpoint c and every chunk of the split not yet committed, the rows are
processed in batches: projected per-example gradients of ``task.measurement`` and TRAK's
``task.out_to_loss`` (both from ``task.measure``: one forward pass where the task can). The
chunk is then committed to the store by a writer thread while the next one is computed.
Work already committed is skipped, so a killed run resumes.

How the projected gradients are computed is the projector's declared need, not its name:
a projector with ``factored = True`` gets the :class:`~attributor.features.factored.FactoredFeaturizer`
(layer inputs and output gradients from one batched backward, Kronecker factors per
layer); every other one gets :class:`ExactFeaturizer` (torch.func per-example gradients,
then ``projector.project``).

Memory is bounded by two chunks: the dataset is read item by item (map-style, any size),
and features of at most ``chunk_size`` rows are computed while the previous chunk is written.
Besides, one copy of the model's own state dict is held while the checkpoints are loaded
into it, and put back at the end (also after an error): the caller's model comes back as it was.

Sharding: ``shard=(i, n)`` featurizes only shard i of n, the contiguous range of chunk
indices ``[i * C // n, (i + 1) * C // n)`` of each split of C chunks, into its own store
(same settings); :func:`attributor.features.merge.merge_stores` joins the shards into
a store equal to an unsharded run, chunk files linked with their checksums.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from attributor.errors import DataError
from attributor.features.gradients import count_parameters, per_example_gradients, tracked_parameter_names
from attributor.features.projection import Projector
from attributor.features.store import FeatureStore
from attributor.memory import require_memory
from attributor.models.checkpoints import checkpoint_id, load_checkpoint, restoring_state
from attributor.progress import progress_bar
from attributor.tasks import Task

__all__ = ["featurize", "store_settings", "ExactFeaturizer", "make_featurizer", "shard_chunks"]


class ExactFeaturizer:
    """Per-example gradients with torch.func (B x p), then ``projector.project`` to (B, k)."""

    def __init__(self, model: torch.nn.Module, task: Task, names: list[str], projector: Projector):
        self.model, self.task, self.names, self.projector = model, task, names, projector
        self.dim = projector.out_dim(count_parameters(model, names))

    def spec(self) -> dict[str, Any]:
        return self.projector.spec()

    def __enter__(self) -> "ExactFeaturizer":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def features(self, batch: Any, checkpoint: int) -> torch.Tensor:
        grads = per_example_gradients(self.model, self.task, batch, self.names)
        return self.projector.project(grads, checkpoint).detach()

    def features_and_out_to_loss(self, batch: Any, checkpoint: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (B, k) and TRAK's Q (B,) (one batched forward without gradients)."""
        with torch.no_grad():
            out_to_loss = self.task.out_to_loss(self.model, batch)
        return self.features(batch, checkpoint), out_to_loss.detach()


def make_featurizer(model: torch.nn.Module, task: Task, projector: Projector, names: list[str] | None = None):
    """The featurizer a projector asks for (``projector.factored``); use it as a context manager."""
    from attributor.features.factored import FactoredFeaturizer

    names = tracked_parameter_names(model, task) if names is None else names
    return (FactoredFeaturizer if projector.factored else ExactFeaturizer)(model, task, names, projector)


def store_settings(
    model: torch.nn.Module,
    task: Task,
    checkpoints: Sequence[str | os.PathLike[str]],
    projector: Projector,
    *,
    dtype: str = "float32",
    chunk_size: int = 1024,
    featurizer: Any = None,
) -> dict[str, Any]:
    """The settings a store is created with; two runs share a store only if these match."""
    names = tracked_parameter_names(model, task)
    n_params = count_parameters(model, names)
    featurizer = featurizer or make_featurizer(model, task, projector, names)
    return {
        "task": task.spec(),
        "model": {"class": type(model).__name__, "parameters": {n: list(p.shape) for n, p in model.named_parameters() if n in names}},
        "checkpoints": [checkpoint_id(path) for path in checkpoints],
        "projector": featurizer.spec(),
        "dtype": dtype,
        "chunk_size": int(chunk_size),
        "n_params": n_params,
        "dim": int(featurizer.dim),
    }


def shard_chunks(n_chunks: int, shard: tuple[int, int] | None) -> range:
    """Chunk indices of shard ``(i, n)``: the contiguous range ``[i * C // n, (i + 1) * C // n)``."""
    if shard is None:
        return range(n_chunks)
    index, count = shard
    if not (isinstance(index, int) and isinstance(count, int) and count >= 1 and 0 <= index < count):
        raise DataError(f"shard must be i/n with 0 <= i < n, got {index}/{count}")
    return range(index * n_chunks // count, (index + 1) * n_chunks // count)


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
    shard: tuple[int, int] | None = None,
) -> FeatureStore:
    """Featurize ``dataset`` into split ``split`` of the store at ``store_path``.

    Args:
        model: the architecture; weights are loaded from each checkpoint in turn, and the
            model's own weights and train/eval modes are put back when featurize returns or
            raises (a copy of its state dict is held meanwhile).
        task: what to differentiate (``task.measurement``) and TRAK's Q.
        dataset: map-style; ``dataset[i]`` is one example, collated with ``default_collate``.
        checkpoints: state-dict files (loaded with ``weights_only=True``), the ensemble.
        projector: seeded projection; block matrices are regenerated per checkpoint.
        data_id: optional content id of the dataset, checked when the split is reopened.
        dtype: storage dtype, ``float16``, ``float32`` or ``float64``.
        shard: ``(i, n)``: featurize only shard i of n (a contiguous range of chunks, see
            :func:`shard_chunks`); the store then holds that range only, to be merged.

    Returns the store; ``store.features(split, c)`` has shape (len(dataset), k).
    """
    if not checkpoints:
        raise DataError("featurize needs at least one checkpoint")
    if chunk_size < 1 or batch_size < 1:
        raise DataError(f"chunk_size and batch_size must be >= 1 (got {chunk_size}, {batch_size})")
    if len(dataset) == 0:
        raise DataError(f"split {split!r} of the dataset is empty (0 examples); featurize needs at least one example")
    featurizer = make_featurizer(model, task, projector)
    settings = store_settings(model, task, checkpoints, projector, dtype=dtype, chunk_size=chunk_size, featurizer=featurizer)
    _check_memory(projector, settings, min(chunk_size, len(dataset)))  # before anything is written
    store = FeatureStore.create(store_path, settings, overwrite=overwrite)
    store.add_split(split, len(dataset), data_id)
    mine = set(shard_chunks(len(store.chunk_bounds(split)), shard))

    def missing() -> list[tuple[int, tuple[int, int, int]]]:
        return [(c, bounds) for c in range(len(checkpoints)) for bounds in store.missing_chunks(split, c) if bounds[0] in mine]

    if not missing():
        return store  # complete: read only, no lock taken
    with restoring_state(model):  # the user's weights and train/eval modes come back, also on an error
        model.eval()
        with store.writing():
            todo = missing()  # again under the lock: another writer may have committed chunks meanwhile
            with featurizer, progress_bar(total=sum(b[2] - b[1] for _, b in todo), desc=f"featurize {split}", enabled=progress) as bar:
                _featurize_chunks(model, dataset, store, featurizer, checkpoints, split, todo, batch_size, bar)
    return store


def _check_memory(projector: Projector, settings: dict, rows: int) -> None:
    """Refuse in one line when one block of the projection matrix, or the features of two chunks
    (the one computed and the one being written), cannot fit in the memory available."""
    projector.check_memory(int(settings["n_params"]))
    k = int(settings["dim"])
    require_memory(f"the features of two chunks (2 x {rows} x {k} x 4 bytes)", 2 * rows * k * 4,
                   "use a smaller --proj-dim (featurize.proj_dim) or featurize.chunk_size; add --overwrite to reuse this --out")


def _featurize_chunks(model, dataset, store, featurizer, checkpoints, split, todo, batch_size, bar) -> None:
    """Compute and commit each ``(checkpoint, (index, start, stop))`` chunk of ``todo``.

    A writer thread saves, hashes and commits chunk i while chunk i + 1 is computed (file
    writes and sha256 release the GIL, so the disk work overlaps the model's). At most one
    write is in flight, so at most two chunks are in memory; chunks commit in order; an
    error in either thread stops the run after the write in flight has committed.
    """
    loaded = None
    in_flight: tuple[Future, int] | None = None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="attributor-store-writer") as writer:
        for c, (index, start, stop) in todo:
            if loaded != c:
                load_checkpoint(model, checkpoints[c])
                loaded = c
            features, out_to_loss = _featurize_rows(dataset, featurizer, c, start, stop, batch_size)
            bad = ~np.isfinite(features).all(axis=1) | ~np.isfinite(out_to_loss)
            if bad.any():
                rows = (np.flatnonzero(bad) + start)[:5].tolist()
                raise DataError(
                    f"non-finite gradients for examples {rows} of split {split!r} at checkpoint {c}; "
                    "check the inputs for NaN/inf and the checkpoint for diverged weights"
                )
            if in_flight is not None:
                _finish(in_flight, bar)
            in_flight = (writer.submit(store.write_chunk, split, c, index, features, out_to_loss), stop - start)
        if in_flight is not None:
            _finish(in_flight, bar)


def _finish(in_flight: tuple[Future, int], bar) -> None:
    """Wait for a chunk's write (re-raising its error) and count its rows as done."""
    future, rows = in_flight
    future.result()
    bar.update(rows)


def _featurize_rows(dataset, featurizer, checkpoint, start, stop, batch_size):
    features, out_to_loss = [], []
    for lo in range(start, stop, batch_size):
        batch = default_collate([dataset[i] for i in range(lo, min(lo + batch_size, stop))])
        # the task's cheap checks (keys, dtypes, label ranges) on every batch: a bad label anywhere gets the
        # task's message, not a torch indexing error (one extra forward of a single example per batch)
        featurizer.task.validate_batch(featurizer.model, batch)
        rows, q = featurizer.features_and_out_to_loss(batch, checkpoint)
        features.append(rows)
        out_to_loss.append(q)
    return torch.cat(features).numpy(), torch.cat(out_to_loss).numpy()


