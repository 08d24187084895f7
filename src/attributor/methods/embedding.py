"""Embedding similarity: cosine of penultimate-layer features, a representation baseline.

For a query z and a training example z_j at one checkpoint,

    score(z, z_j) = cos(e(z), e(z_j)),

where e(x) is the input of the model's LAST ``nn.Linear`` module (in ``named_modules``
order), captured with a forward hook while the Task computes its measurement, flattened
per example: the penultimate-layer representation of a classifier. This is the
representation-similarity baseline of the attribution literature (e.g. Hanawa et al.,
"Evaluation of Similarity-based Explanations", ICLR 2021; the feature part of
representer points, Yeh et al. 2018). It ignores labels and losses, so it cannot tell a
proponent from an opponent: a copy of the query with a flipped label scores as high as an
exact duplicate. Scores lie in [-1, 1].

Self-influence (an atypicality score, >= 0): 1 - max cos(e(z_j), e(z_k)) over the other
training examples z_k with the same label (labels are read from ``(inputs, labels)``
batches; without labels, over all other examples), in [0, 2]; 2 when z_j is alone in its
class. A mislabelled example sits among examples of another class, far from its own
label's examples, and scores high.

Cost: one forward pass over the training and query splits; O(n_train d) memory for the
training embeddings (d: penultimate width) and O(n_query n_train d) to score.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from attributor.errors import ConfigError
from attributor.methods._context import batches, check_checkpoint, check_positive_int, model_at
from attributor.methods.base import Method

__all__ = ["EmbeddingSimilarity"]

_TRAIN_BLOCK = 4096


class EmbeddingSimilarity(Method, key="embedding"):
    """Cosine similarity of penultimate-layer features (the input of the last nn.Linear).

    Args:
        checkpoint: index of the context's checkpoint (default -1, the last).
        batch_size: examples per forward pass.
    """

    requires_features = False
    requires_context = True

    def __init__(self, checkpoint: int = -1, batch_size: int = 256):
        self.checkpoint = checkpoint
        self.batch_size = batch_size

    def _fit(self) -> None:
        check_positive_int(self.key, "batch_size", self.batch_size)
        self.checkpoint_ = check_checkpoint(self.key, self.checkpoint, len(self.context_.checkpoints))
        self.model_ = model_at(self.context_.model, self.context_.checkpoints[self.checkpoint_])
        linears = [module for module in self.model_.modules() if isinstance(module, nn.Linear)]
        if not linears:
            raise ConfigError("embedding needs a model with an nn.Linear layer (its input is the embedding)")
        self.layer_ = linears[-1]
        self.train_embeddings_, self.train_labels_ = self._embed(self.split_)

    def _embed(self, split: str) -> tuple[torch.Tensor, np.ndarray | None]:
        """Unit-norm embeddings (n, d) of ``split`` (zero rows stay zero) and its labels, if any."""
        captured: list[torch.Tensor] = []
        handle = self.layer_.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0].detach()))
        rows, labels = [], []
        try:
            for _, _, batch in batches(self.context_.dataset(split), self.batch_size):
                captured.clear()
                with torch.no_grad():
                    self.context_.task.measurement(self.model_, batch)
                if not captured:
                    raise ConfigError("embedding: the task's measurement did not run the model's last nn.Linear")
                features = captured[-1].reshape(captured[-1].shape[0], -1)
                rows.append(features / features.norm(dim=1, keepdim=True).clamp_min(1e-30))
                labels.append(_labels(batch))
        finally:
            handle.remove()
        return torch.cat(rows), None if any(y is None for y in labels) else np.concatenate(labels)

    def score_blocks(self, queries: str) -> Iterator[tuple[slice, int, np.ndarray]]:
        self._fitted()
        embeddings, _ = self._embed(queries)
        for q_start in range(0, len(embeddings), self.batch_size):
            left = embeddings[q_start : q_start + self.batch_size]
            rows = slice(q_start, q_start + len(left))
            for t_start in range(0, len(self.train_embeddings_), _TRAIN_BLOCK):
                yield rows, t_start, (left @ self.train_embeddings_[t_start : t_start + _TRAIN_BLOCK].T).numpy()

    def self_influence(self) -> np.ndarray:
        self._fitted()
        e, labels = self.train_embeddings_, self.train_labels_
        n = len(e)
        nearest = np.full(n, -np.inf)
        for start in range(0, n, self.batch_size):
            stop = min(start + self.batch_size, n)
            for t_start in range(0, n, _TRAIN_BLOCK):
                t_stop = min(t_start + _TRAIN_BLOCK, n)
                cos = (e[start:stop] @ e[t_start:t_stop].T).numpy()
                same = np.arange(start, stop)[:, None] != np.arange(t_start, t_stop)[None, :]
                if labels is not None:
                    same &= labels[start:stop, None] == labels[None, t_start:t_stop]
                cos = np.where(same, cos, -np.inf)
                nearest[start:stop] = np.maximum(nearest[start:stop], cos.max(axis=1, initial=-np.inf))
        return np.where(np.isfinite(nearest), np.clip(1.0 - nearest, 0.0, 2.0), 2.0)


def _labels(batch: Any) -> np.ndarray | None:
    """Integer labels of an ``(inputs, labels)`` batch, else None."""
    if isinstance(batch, (tuple, list)) and len(batch) == 2 and isinstance(batch[1], torch.Tensor):
        labels = batch[1]
        if labels.ndim == 1 and not labels.is_floating_point():
            return labels.numpy()
    return None
