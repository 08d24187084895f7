"""The user's own model: a Tanh MLP that standardises raw features itself.

`attributor` builds it from `model.entry_point: model.py:build` and fills n_features and
n_classes from the data; the checkpoints in work/checkpoints/ fit it (and no other model).
"""

import torch
from torch import nn


class TanhClassifier(nn.Module):
    def __init__(self, n_features: int, n_classes: int, hidden: int = 32):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("scale", torch.ones(n_features))
        self.body = nn.Sequential(nn.Linear(n_features, hidden), nn.Tanh(), nn.Linear(hidden, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((x - self.mean) / self.scale)


def build(n_features: int, n_classes: int, hidden: int = 32) -> nn.Module:
    return TanhClassifier(n_features, n_classes, hidden)
