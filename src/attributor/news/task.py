"""The recommendation Task: softmax cross-entropy over an impression's candidates.

A sample is one user (history) with C candidates and the index of the clicked one,
``label`` (0 for training samples: the click first, then K sampled negatives). With the
model's click scores s (B, C) and p = softmax(s):

* train loss: L = -log p_label, the negative-sampling loss of NRMS / NAML / LSTUR
  (Wu et al. 2019: "predict the clicked news among K + 1");
* measurement: the clicked (or queried) candidate's margin over the rest,
  f = s_label - logsumexp_{j != label} s_j = log(p_label / (1 - p_label));
* out-to-loss: L = log(1 + exp(-f)), so dL/df = -sigmoid(-f) = -(1 - p_label) and
  Q = 1 - p_label, with grad L = -Q grad f exactly (TRAK's multi-class margin, Park et al.
  2023 section 3.2, with the candidates as classes).

For a query (user, candidate) the candidate's margin against the rest of its impression
(K of them, sampled) is what TRAK attributes: a positive score means the training
sample pushes that candidate up in that user's ranking.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from attributor.errors import DataError
from attributor.tasks.base import Task
from attributor.tasks.classification import margin, one_minus_p

__all__ = ["RecommendationTask"]

_KEYS = ("history", "history_mask", "candidates", "label")


class RecommendationTask(Task, key="recommendation"):
    """Cross-entropy over the candidates; f = the label candidate's margin; Q = 1 - p_label."""

    def _scores(self, model: Any, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(batch, Mapping):
            raise DataError(f"a recommendation batch is a mapping with keys {list(_KEYS)}; got {type(batch).__name__}")
        inputs = {key: value for key, value in batch.items() if key != "label"}  # history, history_mask, candidates, user?
        return model(**inputs), batch["label"]

    def train_loss(self, model: Any, batch: Any) -> torch.Tensor:
        scores, label = self._scores(model, batch)
        return F.cross_entropy(scores, label, reduction="none")

    def measurement(self, model: Any, batch: Any) -> torch.Tensor:
        return margin(*self._scores(model, batch))

    def out_to_loss(self, model: Any, batch: Any) -> torch.Tensor:
        return one_minus_p(*self._scores(model, batch))

    def measure(self, model: Any, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        scores, label = self._scores(model, batch)
        return margin(scores, label), one_minus_p(scores.detach(), label)

    def validate_batch(self, model: torch.nn.Module, batch: Any) -> None:
        missing = [k for k in _KEYS if not isinstance(batch, Mapping) or k not in batch]
        if missing:
            raise DataError(f"a recommendation batch needs the keys {list(_KEYS)}; missing {missing}")
        c = batch["candidates"].shape[1]
        label = batch["label"]
        if label.dtype not in (torch.int64, torch.int32) or (label < 0).any() or (label >= c).any():
            raise DataError(f"recommendation labels must be candidate indices in [0, {c})")
