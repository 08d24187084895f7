"""Small reference models, built by name from a config."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from attributor.errors import ConfigError, UnknownNameError

__all__ = ["MLP", "LogisticRegression", "SmallCNN", "build_model", "MODELS"]


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


class SmallCNN(nn.Module):
    """A small convolutional net on square one-channel images given as flat rows.

    (B, side*side) -> reshape (B, 1, side, side) -> conv3x3(``channels[0]``) -> ReLU ->
    2x2 average pool -> conv3x3(``channels[1]``) -> ReLU -> linear -> (B, n_classes) logits.
    Both convolutions keep the size (padding 1); pooling before the second one makes it
    4x cheaper (curvature products of the iterative influence functions dominate the
    bench's cost). On the 8x8 digits with the default channels (8, 16): 80 + 1,168 + 2,570
    = 3,818 parameters. Plain Conv2d / Linear layers, so torch.func per-example
    gradients, EK-FAC and the peers handle it as they are.
    """

    def __init__(self, n_features: int, n_classes: int, channels: Sequence[int] = (8, 16)):
        super().__init__()
        side = int(round(n_features**0.5))
        if side * side != n_features or side < 2:
            raise ConfigError(f"the cnn model reshapes each row to a square image; {n_features} features are not "
                              "side x side (use image data such as the 8x8 digits: 64 features)")
        if len(channels) != 2 or min(channels) < 1:
            raise ConfigError(f"cnn channels must be two positive integers, got {list(channels)}")
        self.side = side
        self.conv1 = nn.Conv2d(1, channels[0], 3, padding=1)
        self.conv2 = nn.Conv2d(channels[0], channels[1], 3, padding=1)
        self.pool = nn.AvgPool2d(2)
        self.linear = nn.Linear(channels[1] * (side // 2) ** 2, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.reshape(x.shape[0], 1, self.side, self.side)
        h = torch.relu(self.conv2(self.pool(torch.relu(self.conv1(h)))))
        return self.linear(h.flatten(1))


MODELS = {"mlp": MLP, "logreg": LogisticRegression, "cnn": SmallCNN}


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
