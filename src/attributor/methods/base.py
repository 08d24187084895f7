"""The Method contract and its registry.

A method is registered by subclassing: ``class TRAK(Method, key="trak")``. Its
``__init__`` only stores its arguments under the same names (scikit-learn style);
``fit(store, split)`` learns what it needs from a FeatureStore and sets attributes ending
in ``_``; ``score(queries)`` returns :class:`~attributor.scores.Scores` for a query split
of the same store; ``self_influence()`` returns one non-negative number per training
example.

Subclasses implement ``fit``, ``score_blocks`` and ``self_influence``; blockwise
accumulation, the streaming top-k and the dense matrix are handled here once.
"""

from __future__ import annotations

import inspect
from abc import abstractmethod
from typing import Any, Iterator

import numpy as np

from attributor.errors import NotFittedError
from attributor.features.store import FeatureStore
from attributor.progress import progress_bar
from attributor.registry import Registered
from attributor.scores import Scores, StreamingTopK

__all__ = ["Method", "get_method", "method_names"]


class Method(Registered, kind="method"):
    """Base class of every attribution method."""

    #: Whether ``fit`` reads projected gradient features from a FeatureStore.
    requires_features: bool = True

    def get_params(self) -> dict[str, Any]:
        """The constructor arguments, read back from attributes of the same names."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {name: getattr(self, name) for name in names}

    def spec(self) -> dict[str, Any]:
        return {"method": self.key, **self.get_params()}

    @abstractmethod
    def fit(self, store: FeatureStore, split: str = "train") -> "Method":
        """Learn from the training split of ``store``; returns self."""

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
        store, split = self._fitted()
        n_queries, n_train = store.split_size(queries), store.split_size(split)
        k = max(1, min(topk, n_train))
        top, bottom = StreamingTopK(n_queries, k, largest=True), StreamingTopK(n_queries, k, largest=False)
        values = None  # allocated at the first block, in the method's output dtype
        with progress_bar(total=n_queries * n_train, desc=f"score {queries}", enabled=progress) as bar:
            for rows, offset, block in self.score_blocks(queries):
                top.update(rows, offset, block)
                bottom.update(rows, offset, block)
                if dense:
                    if values is None:
                        values = np.zeros((n_queries, n_train), dtype=np.result_type(block.dtype, np.float32))
                    values[rows, offset : offset + block.shape[1]] = block
                bar.update(block.size)
        top_indices, top_values = top.result()
        bottom_indices, bottom_values = bottom.result()
        meta = {**self.spec(), "queries": queries, "train": split, "n_queries": n_queries, "n_train": n_train}
        return Scores(top_indices, top_values, bottom_indices, bottom_values, values, meta)

    def _fitted(self) -> tuple[FeatureStore, str]:
        if not hasattr(self, "store_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit(store) first")
        return self.store_, self.split_


def get_method(name: str, **kwargs: Any) -> Method:
    """Build a registered method by name, e.g. ``get_method("trak", damping=1e-3)``."""
    import attributor.methods  # noqa: F401  (registers the built-in methods)

    return Method.lookup(name)(**kwargs)


def method_names() -> list[str]:
    import attributor.methods  # noqa: F401

    return Method.names()
