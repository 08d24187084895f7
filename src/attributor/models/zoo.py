"""Small reference models, built by name from a config."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from attributor.errors import UnknownNameError

__all__ = ["MLP", "LogisticRegression", "build_model", "MODELS"]


class LogisticRegression(nn.Module):
    """Multinomial logistic regression: one linear layer, logits of shape (B, n_classes)."""

    def __init__(self, n_features: int, n_classes: int):
        super().__init__()
        self.linear = nn.Linear(n_features, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class MLP(nn.Module):
    """A ReLU multi-layer perceptron: (B, n_features) -> (B, n_classes) logits."""

    def __init__(self, n_features: int, n_classes: int, hidden: Sequence[int] = (128,)):
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, n_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


MODELS = {"mlp": MLP, "logreg": LogisticRegression}


def build_model(name: str, n_features: int, n_classes: int, seed: int = 0, **kwargs: Any) -> nn.Module:
    """Build a reference model with seeded initial weights."""
    if name not in MODELS:
        raise UnknownNameError("model", name, list(MODELS))
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return MODELS[name](n_features, n_classes, **kwargs)
    finally:
        torch.random.set_rng_state(generator_state)
