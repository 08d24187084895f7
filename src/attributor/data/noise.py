"""Label corruption with known ground truth, for mislabel-detection experiments."""

from __future__ import annotations

import numpy as np

from attributor.errors import DataError

__all__ = ["flip_labels"]


def flip_labels(labels: np.ndarray, fraction: float, n_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Flip ``round(fraction * n)`` labels, each to a uniformly chosen *different* class.

    Returns ``(noisy_labels, flipped)`` where ``flipped`` is a boolean mask of shape (n,).
    """
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"label noise fraction must be in [0, 1), got {fraction}")
    if n_classes < 2:
        raise DataError("flipping labels needs at least two classes")
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    n_flip = int(round(fraction * len(labels)))
    chosen = rng.choice(len(labels), size=n_flip, replace=False)
    noisy = labels.copy()
    shift = rng.integers(1, n_classes, size=n_flip)  # never 0: the new class always differs
    noisy[chosen] = (labels[chosen] + shift) % n_classes
    flipped = np.zeros(len(labels), dtype=bool)
    flipped[chosen] = True
    return noisy, flipped
