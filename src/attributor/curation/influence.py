"""Influence of training examples and of clusters on a target validation loss.

The measured output is f(z) = -loss(z) on each validation example z, so with the sign
convention of DESIGN.md a positive score means the training example (or cluster) lowers
the validation loss: it helps the target. For a group G of training examples,

    I(G) = sum_{z in val} sum_{j in G} score(z, j) = |G| * sum_z score(z, mean gradient of G),

the first-order effect of removing G on the summed validation loss (sign flipped), computed
from each group's mean training gradient (:meth:`InfluenceFunction.score_groups`: one
inverse product per validation block, exact for a linear score). Methods: ``datainf``
(Kwon et al. 2024, closed-form layer-wise inverse) and ``if-ekfac`` (Grosse et al. 2023,
eigenvalue-corrected Kronecker factors).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from attributor.errors import ConfigError
from attributor.tasks import ClassificationTask, ContrastiveTask

__all__ = ["ValidationLossTask", "ContrastiveValidationLossTask", "InfluenceEstimate", "estimate_influence",
           "INFLUENCE_METHODS"]

INFLUENCE_METHODS = ("datainf", "if-ekfac")


class ValidationLossTask(ClassificationTask, key="validation-loss"):
    """Cross-entropy training; the measured output is the negative cross-entropy (f = -loss), so Q = 1."""

    def measurement(self, model: Any, batch: Any) -> torch.Tensor:
        logits, labels = self._logits(model, batch)
        return -F.cross_entropy(logits, labels, reduction="none")

    def out_to_loss(self, model: Any, batch: Any) -> torch.Tensor:
        return torch.ones_like(self.measurement(model, batch))  # grad loss = -1 * grad f

    def measure(self, model: Any, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        measurement = self.measurement(model, batch)
        return measurement, torch.ones_like(measurement.detach())


class ContrastiveValidationLossTask(ContrastiveTask, key="contrastive-validation-loss"):
    """InfoNCE training with explicit negatives; the measured output is the negative InfoNCE loss, so Q = 1."""

    def measurement(self, model: Any, batch: Any) -> torch.Tensor:
        return -self.train_loss(model, batch)

    def train_loss(self, model: Any, batch: Any) -> torch.Tensor:
        return F.softplus(-ContrastiveTask.measurement(self, model, batch))  # the InfoNCE loss of the positive's margin

    def out_to_loss(self, model: Any, batch: Any) -> torch.Tensor:
        return torch.ones_like(self.train_loss(model, batch))  # grad loss = -1 * grad f

    def measure(self, model: Any, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        measurement = self.measurement(model, batch)
        return measurement, torch.ones_like(measurement.detach())


@dataclass
class InfluenceEstimate:
    """Per-example influence (n_train,) and per-cluster influence (n_clusters,) on the summed validation loss."""

    method: str
    examples: np.ndarray
    clusters: np.ndarray


def estimate_influence(model: torch.nn.Module, checkpoint: str | Path, train: Any, validation: Any, clusters: np.ndarray,
                       method: str = "datainf", task: Any = None) -> InfluenceEstimate:
    """Influence of every training example and every cluster (ids 0..C-1) on the validation loss of ``model``.

    ``train`` and ``validation`` are map-style datasets of the task's examples ((input,
    label) pairs for the default :class:`ValidationLossTask`; anchor / positive / negatives
    mappings for :class:`ContrastiveValidationLossTask`).
    """
    from attributor.methods import get_method
    from attributor.methods.base import TrainingContext

    if method not in INFLUENCE_METHODS:
        raise ConfigError(f"influence method must be one of {', '.join(INFLUENCE_METHODS)}, got {method!r}")
    clusters = np.asarray(clusters, dtype=np.int64)
    context = TrainingContext(model=model, task=task or ValidationLossTask(), datasets={"train": train, "val": validation},
                              checkpoints=[checkpoint])
    options = {"labels": "true"} if method == "if-ekfac" and not isinstance(context.task, ClassificationTask) else {}
    fitted = get_method(method, **options).fit(split="train", context=context)
    per_example = fitted.score("val", dense=True, topk=1).values.sum(axis=0)
    sizes = np.bincount(clusters, minlength=int(clusters.max()) + 1)
    present = np.unique(clusters)
    group_means = fitted.score_groups("val", clusters).sum(axis=0)  # columns in the order of np.unique
    per_cluster = np.zeros(len(sizes))
    per_cluster[present] = group_means * sizes[present]
    return InfluenceEstimate(method, np.asarray(per_example, dtype=np.float64), per_cluster)
