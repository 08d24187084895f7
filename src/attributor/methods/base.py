"""The Method contract and its registry.

A method is registered by subclassing: ``class TRAK(Method, key="trak")``. Its
``__init__`` only stores its arguments under the same names (scikit-learn style).
``fit(store, split, context)`` learns what it needs and sets attributes ending in ``_``;
``score(queries)`` returns :class:`~attributor.scores.Scores` for a query split;
``self_influence()`` returns one non-negative number per training example.

A method declares what it needs, and the orchestrator provides it:

* ``requires_features``: it reads projected gradients from a :class:`FeatureStore`
  (complete for the training split and every query split it scores);
* ``requires_context``: it needs a :class:`TrainingContext`: the model, the Task, the
  datasets by split name and the checkpoint files (influence functions that build a
  Hessian, methods that run forward passes such as Forward-INF, embedding similarity);
* ``holds_kernels``: ``fit`` holds one k x k float64 matrix (an after-kernel or its
  factor) per checkpoint it uses; ``fit`` refuses in one line when those cannot fit in
  the memory available, as ``score`` does for the dense (n_query, n_train) matrix
  (:mod:`attributor.memory`).

Subclasses implement ``_fit``, ``score_blocks`` and ``self_influence``; validation,
blockwise accumulation, the streaming top-k and the dense matrix are handled here once.
"""

from __future__ import annotations

import inspect
import os
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from attributor.errors import ConfigError, DataError, NotFittedError
from attributor.features.store import FeatureStore
from attributor.memory import require_memory
from attributor.progress import progress_bar
from attributor.registry import Registered
from attributor.scores import Scores, StreamingTopK
from attributor.tasks import Task

__all__ = ["Method", "TrainingContext", "get_method", "method_names"]


@dataclass
class TrainingContext:
    """What methods beyond stored features need.

    Attributes:
        model: the architecture, often the user's own object: methods leave it as they
            found it, loading checkpoints into a copy (``_context.model_at``) or inside
            ``attributor.models.checkpoints.restoring_state``.
        task: the Task the features were computed with.
        datasets: split name -> map-style dataset (``dataset[i]`` is one example, collated
            with ``default_collate``); holds the training split and every query split.
        checkpoints: checkpoint files, in the same order as the store's checkpoints.
        learning_rates: the learning rate in effect at each checkpoint (TracIn-CP), or None.
    """

    model: torch.nn.Module
    task: Task
    datasets: dict[str, Dataset]
    checkpoints: Sequence[str | os.PathLike[str]]
    learning_rates: Sequence[float] | None = None

    def dataset(self, split: str) -> Dataset:
        try:
            return self.datasets[split]
        except KeyError:
            raise ConfigError(f"the training context has no split {split!r} (it has: {', '.join(sorted(self.datasets))})") from None


class Method(Registered, kind="method"):
    """Base class of every attribution method."""

    #: Whether ``fit`` reads projected gradient features from a FeatureStore.
    requires_features: bool = True
    #: Whether ``fit`` needs a TrainingContext (model, task, datasets, checkpoints).
    requires_context: bool = False
    #: Whether the method uses a store's folder when one is given (e.g. to cache factors).
    uses_store_folder: bool = False
    #: Whether ``fit`` holds one k x k float64 kernel (or its factor) per checkpoint it uses.
    holds_kernels: bool = False

    def get_params(self) -> dict[str, Any]:
        """The constructor arguments, read back from attributes of the same names."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {name: getattr(self, name) for name in names}

    def spec(self) -> dict[str, Any]:
        return {"method": self.key, **self.get_params()}

    def fit_info(self) -> dict[str, Any]:
        """Facts learned in ``fit`` worth recording beside the scores (e.g. a damping chosen
        from data); saved in :attr:`Scores.meta`. Default: none."""
        return {}

    def fit(self, store: FeatureStore | None = None, split: str = "train", context: TrainingContext | None = None) -> "Method":
        """Learn from training split ``split`` (of ``store`` and/or ``context``); returns self."""
        if self.requires_features and store is None:
            raise ConfigError(f"method {self.key!r} reads gradient features: pass a FeatureStore (run featurize first)")
        if self.requires_context and context is None:
            raise ConfigError(f"method {self.key!r} needs a TrainingContext (model, task, datasets, checkpoints)")
        if store is not None and self.requires_features:
            store.require_complete(split)
            if store.split_size(split) == 0:
                raise DataError(f"method {self.key!r}: split {split!r} is empty in the store {store.path}; "
                                "featurize a dataset with examples into it")
        if context is not None:
            dataset = context.dataset(split)
            if hasattr(dataset, "__len__") and len(dataset) == 0:
                raise DataError(f"method {self.key!r}: split {split!r} is empty in the training context; give it examples")
        if store is not None and self.requires_features and self.holds_kernels:
            chosen = getattr(self, "checkpoints", None)
            m, k = len(chosen) if chosen else store.n_checkpoints, store.dim
            require_memory(f"method {self.key!r}: the kernels of {m} checkpoints ({m} x {k} x {k} x 8 bytes)", m * k * k * 8,
                           "featurize with a smaller --proj-dim (featurize.proj_dim), or use fewer checkpoints "
                           "(score.checkpoints)")
        self.store_, self.split_, self.context_ = store, split, context
        self._fit()
        return self

    def n_examples(self, split: str) -> int:
        """Number of examples in ``split``, from the store if there is one, else the context."""
        store, _ = self._fitted()
        if store is not None and split in store.splits:
            return store.split_size(split)
        if self.context_ is not None:
            return len(self.context_.dataset(split))
        return store.split_size(split)  # raises the store's "no split" error

    @abstractmethod
    def _fit(self) -> None:
        """Learn from ``self.store_`` / ``self.context_`` (set by ``fit``) for split ``self.split_``."""

    @abstractmethod
    def score_blocks(self, queries: str) -> Iterator[tuple[slice, int, np.ndarray]]:
        """Yield ``(query_rows, train_offset, block)`` covering the (n_query, n_train) matrix."""

    @abstractmethod
    def self_influence(self) -> np.ndarray:
        """Score of each training example on itself, shape (n_train,), non-negative."""

    def score(self, queries: str, *, topk: int = 10, dense: bool = True, progress: bool = False) -> Scores:
        """Scores of every query in split ``queries`` against every training example.

        Args:
            topk: how many proponents and opponents to keep per query.
            dense: keep the full (n_query, n_train) matrix as well (float32, or float64
                when the method computes in float64).
        """
        _, split = self._fitted()
        n_queries, n_train = self.n_examples(queries), self.n_examples(split)
        k = max(1, min(topk, n_train))
        top, bottom = StreamingTopK(n_queries, k, largest=True), StreamingTopK(n_queries, k, largest=False)
        values = None  # allocated at the first block, in the method's output dtype
        covered = 0  # entries written into ``values``: score_blocks must cover the matrix once
        if dense:  # refused before any work when it cannot fit (float64 assumed; checked again at the allocation)
            self._check_dense(n_queries, n_train, np.dtype(np.float64))
        with progress_bar(total=n_queries * n_train, desc=f"score {queries}", enabled=progress) as bar:
            for rows, offset, block in self.score_blocks(queries):
                top.update(rows, offset, block)
                bottom.update(rows, offset, block)
                if dense:
                    if values is None:
                        dtype = np.result_type(block.dtype, np.float32)
                        self._check_dense(n_queries, n_train, dtype)
                        values = _uninitialised((n_queries, n_train), dtype)
                    values[rows, offset : offset + block.shape[1]] = block
                    covered += block.size
                bar.update(block.size)
        if values is not None and covered != n_queries * n_train:
            raise RuntimeError(f"{type(self).__name__}.score_blocks covered {covered} of {n_queries * n_train} scores")
        top_indices, top_values = top.result()
        bottom_indices, bottom_values = bottom.result()
        meta = {**self.spec(), **self.fit_info(), "queries": queries, "train": split, "n_queries": n_queries, "n_train": n_train}
        return Scores(top_indices, top_values, bottom_indices, bottom_values, values, meta)

    def _check_dense(self, n_queries: int, n_train: int, dtype: np.dtype) -> None:
        require_memory(f"the dense scores ({n_queries} x {n_train} x {dtype.itemsize} bytes)", n_queries * n_train * dtype.itemsize,
                       "keep the top-k only: dense=False (--set score.dense=false), or score fewer queries")

    def _fitted(self) -> tuple[FeatureStore | None, str]:
        if not hasattr(self, "split_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit(store) first")
        return self.store_, self.split_


def _uninitialised(shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
    """An uninitialised array from torch's allocator (every entry is written by the caller).

    numpy backs large arrays with transparent huge pages; on the VMs we measured, faulting
    those in made filling a fresh 4 GB score matrix take 1.2-9.1 s against 1.7-2.0 s for the
    same array from torch's allocator (benchmarks/score_gemm.py, RESULTS.md).
    """
    return torch.empty(shape, dtype=torch.float64 if dtype == np.float64 else torch.float32).numpy()


def get_method(name: str, **kwargs: Any) -> Method:
    """Build a registered method by name, e.g. ``get_method("trak", damping=1e-3)``."""
    import attributor.methods  # noqa: F401  (registers the built-in methods)

    return Method.lookup(name)(**kwargs)


def method_names() -> list[str]:
    import attributor.methods  # noqa: F401

    return Method.names()
