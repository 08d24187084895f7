"""Retrain harness: run a training recipe on many training subsets, cached on disk.

A :class:`Recipe` trains a model on the training examples selected by a boolean mask and
returns its outputs on a fixed set of queries. :func:`retrain` runs a recipe on many masks
through an :class:`Executor` (in-process, or a local process pool; a cluster executor
implements the same two-method interface) and caches every result under
``cache_dir/<recipe fingerprint>/<mask hash>.npz``, so a rerun costs nothing and an
interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from abc import ABC, abstractmethod
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from attributor._io import atomic_write_bytes
from attributor.errors import DataError

__all__ = ["Recipe", "ClassificationRecipe", "Executor", "LocalExecutor", "retrain", "random_subsets"]

#: Bump when what a recipe computes changes, so stale cached results are not reused.
RECIPE_VERSION = 1


class Recipe(ABC):
    """A deterministic training recipe; must be picklable (it is sent to worker processes)."""

    @abstractmethod
    def fingerprint(self) -> str:
        """A stable hash of everything that determines the trained model and its outputs."""

    @abstractmethod
    def run(self, mask: np.ndarray) -> dict[str, np.ndarray]:
        """Train on the examples where ``mask`` (n_train,) is True; return named (n_query,) outputs."""


@dataclass(frozen=True, eq=False)
class ClassificationRecipe(Recipe):
    """Train a reference classifier on a subset and report the query outputs.

    Outputs: ``measurement`` (the task's measured output, TRAK's margin), ``loss`` and
    ``prediction`` for every query. ``trainer`` is ``"adam"`` (epochs of
    :func:`attributor.models.training.train`) or ``"lbfgs"`` (full-batch L-BFGS to the
    optimum of the l2-regularised objective, :func:`~attributor.models.training.fit_lbfgs`).
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_query: np.ndarray
    y_query: np.ndarray
    model: str = "mlp"
    model_args: dict[str, Any] = field(default_factory=dict)
    trainer: str = "adam"
    train_args: dict[str, Any] = field(default_factory=dict)
    n_classes: int = 10
    seed: int = 0
    dtype: str = "float32"

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for array in (self.X_train, self.y_train, self.X_query, self.y_query):
            array = np.ascontiguousarray(array)
            digest.update(f"{array.dtype}{array.shape}".encode())
            digest.update(array.tobytes())
        settings = {"model": self.model, "model_args": self.model_args, "trainer": self.trainer,
                    "train_args": self.train_args, "n_classes": self.n_classes, "seed": self.seed,
                    "dtype": self.dtype, "version": RECIPE_VERSION}
        digest.update(json.dumps(settings, sort_keys=True).encode())
        return digest.hexdigest()[:20]

    def build(self) -> torch.nn.Module:
        from attributor.models import build_model

        model = build_model(self.model, self.X_train.shape[1], self.n_classes, seed=self.seed, **self.model_args)
        return model.to(getattr(torch, self.dtype))

    def train_on(self, mask: np.ndarray) -> torch.nn.Module:
        from attributor.data import ArrayDataset
        from attributor.models.training import fit_lbfgs, train
        from attributor.tasks import ClassificationTask

        mask = np.asarray(mask, dtype=bool)
        dtype = np.dtype(self.dtype)
        subset = ArrayDataset(self.X_train[mask].astype(dtype), self.y_train[mask])
        model = self.build()
        if self.trainer == "lbfgs":
            fit_lbfgs(model, ClassificationTask(), subset, **self.train_args)
        elif self.trainer == "adam":
            train(model, ClassificationTask(), subset, seed=self.seed, progress=False, **self.train_args)
        else:
            raise DataError(f"unknown trainer {self.trainer!r}; use 'adam' or 'lbfgs'")
        return model

    def run(self, mask: np.ndarray) -> dict[str, np.ndarray]:
        from attributor.tasks import ClassificationTask

        model = self.train_on(mask)
        task = ClassificationTask()
        batch = (torch.as_tensor(self.X_query.astype(np.dtype(self.dtype))), torch.as_tensor(self.y_query, dtype=torch.long))
        with torch.no_grad():
            return {
                "measurement": task.measurement(model, batch).double().numpy(),
                "loss": task.train_loss(model, batch).double().numpy(),
                "prediction": model(batch[0]).argmax(dim=1).numpy(),
            }


class Executor(ABC):
    """Runs ``fn(item)`` for many items; yields ``(position, result)`` as they finish."""

    @abstractmethod
    def map_unordered(self, fn: Callable[[Any], Any], items: list[Any]) -> Iterator[tuple[int, Any]]:
        ...


class LocalExecutor(Executor):
    """In-process when ``workers == 1``; otherwise a pool of ``workers`` processes (spawned)."""

    def __init__(self, workers: int = 1):
        self.workers = workers

    def map_unordered(self, fn: Callable[[Any], Any], items: list[Any]) -> Iterator[tuple[int, Any]]:
        if self.workers <= 1 or len(items) <= 1:
            for position, item in enumerate(items):
                yield position, fn(item)
            return
        import multiprocessing

        context = multiprocessing.get_context("spawn")  # fork is unsafe once torch has started threads
        with ProcessPoolExecutor(self.workers, mp_context=context, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            futures = {pool.submit(fn, item): position for position, item in enumerate(items)}
            for future in as_completed(futures):
                yield futures[future], future.result()


def random_subsets(n: int, m: int, fraction: float = 0.5, seed: int = 0) -> np.ndarray:
    """``m`` boolean masks over ``n`` examples, each selecting exactly ``round(fraction * n)``."""
    if not 0 < fraction < 1:
        raise DataError(f"subset fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    size = int(round(fraction * n))
    masks = np.zeros((m, n), dtype=bool)
    for row in masks:
        row[rng.choice(n, size=size, replace=False)] = True
    return masks


def retrain(
    recipe: Recipe,
    masks: np.ndarray,
    cache_dir: str | os.PathLike[str],
    *,
    executor: Executor | None = None,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Run ``recipe`` on every row of ``masks`` (m, n_train); return outputs stacked to (m, n_query).

    Results already in the cache are loaded, the others computed and cached one by one
    as they finish.
    """
    from attributor.progress import progress_bar

    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 2:
        raise DataError(f"masks must be (m, n_train), got shape {masks.shape}")
    folder = Path(cache_dir) / recipe.fingerprint()
    paths = [folder / f"{_mask_hash(mask)}.npz" for mask in masks]
    results: list[dict[str, np.ndarray] | None] = [_load(path) for path in paths]
    todo = [i for i, result in enumerate(results) if result is None]
    with progress_bar(total=len(todo), desc="retrain", enabled=progress and bool(todo)) as bar:
        for position, result in (executor or LocalExecutor()).map_unordered(recipe.run, [masks[i] for i in todo]):
            index = todo[position]
            _save(paths[index], result)
            results[index] = result
            bar.update(1)
    keys = results[0].keys() if results else []
    return {key: np.stack([result[key] for result in results]) for key in keys}  # type: ignore[index]


def _mask_hash(mask: np.ndarray) -> str:
    return hashlib.sha256(np.packbits(mask).tobytes() + str(mask.size).encode()).hexdigest()[:24]


def _load(path: Path) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError):
        return None  # a damaged cache entry is recomputed


def _save(path: Path, result: dict[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **result)
    atomic_write_bytes(path, buffer.getvalue())


