"""The classification variant of the curation benchmark, and the weighted trainer it retrains with.

Data (:func:`corrupted_digits`, from scikit-learn's bundled 8x8 digits, seeded): a stratified
split into a training pool, a clean validation set and a test set. Ground-truth corruptions
of the pool only:

* **label noise**: a fraction ``noise`` of the pool's labels replaced by another class;
* **off-target domain**: ``shift`` x |pool| extra examples from another domain (the images
  transposed, their labels kept), absent from validation and test;
* **minority group**: a fraction ``minority`` of every split drawn in another style (the
  intensities inverted), group 1; the worst-group accuracy and the gap between the groups
  measure what a selection does to it (fairness).

``corrupted`` marks the label-noise examples (what a curation method should remove);
``domain`` marks the off-target ones.

:func:`train_weighted` trains an MLP by full-batch Adam on the weighted mean loss
sum_i w_i l_i / sum_i w_i (weights 0/1 prune; real weights reweight), seeded and
deterministic, so a retrain on the same selection gives the same model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from attributor.errors import ConfigError

__all__ = ["CurationData", "corrupted_digits", "train_weighted", "evaluate_groups", "penultimate"]


@dataclass
class CurationData:
    """Arrays of one benchmark draw. ``*_group``: 0 standard, 1 minority."""

    x_train: np.ndarray
    y_train: np.ndarray
    train_group: np.ndarray
    corrupted: np.ndarray
    domain: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    val_group: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    test_group: np.ndarray
    n_classes: int


def corrupted_digits(seed: int = 0, *, noise: float = 0.25, shift: float = 0.25, minority: float = 0.15,
                     val_fraction: float = 0.15, test_fraction: float = 0.3, max_pool: int | None = None) -> CurationData:
    """One seeded draw of the corrupted digits data (see the module docstring)."""
    for name, value in (("noise", noise), ("shift", shift), ("minority", minority)):
        if not 0 <= value < 1:
            raise ConfigError(f"curation {name} must be a fraction in [0, 1), got {value!r}")
    x, y, pool, val, test, rng = digit_splits(seed, val_fraction=val_fraction, test_fraction=test_fraction,
                                              max_pool=max_pool)

    def styled(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return minority_style(x, ids, rng, minority)

    x_pool, pool_group = styled(pool)
    y_pool = y[pool].copy()
    corrupted = rng.random(len(pool)) < noise
    y_pool[corrupted] = (y_pool[corrupted] + rng.integers(1, 10, corrupted.sum())) % 10
    n_shift = int(round(shift * len(pool)))
    shifted = rng.choice(pool, size=n_shift, replace=True)
    x_shift = np.transpose(x[shifted], (0, 2, 1))  # transposed digits: an off-target domain, labels kept
    x_train = np.concatenate([x_pool, x_shift]).reshape(-1, 64)
    y_train = np.concatenate([y_pool, y[shifted]])
    train_group = np.concatenate([pool_group, np.zeros(n_shift, dtype=np.int64)])
    domain = np.concatenate([np.zeros(len(pool), bool), np.ones(n_shift, bool)])
    corrupted = np.concatenate([corrupted, np.zeros(n_shift, bool)])
    x_val, val_group = styled(val)
    x_test, test_group = styled(test)
    return CurationData(x_train, y_train, train_group, corrupted, domain, x_val.reshape(-1, 64), y[val], val_group,
                        x_test.reshape(-1, 64), y[test], test_group, 10)


def digit_splits(seed: int, *, val_fraction: float, test_fraction: float,
                 max_pool: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.random.Generator]:
    """scikit-learn's digits as (n, 8, 8) images in [0, 1] and labels, split stratified into pool / validation / test
    row ids (the pool subsampled to ``max_pool``); returns the seeded generator the caller's draws continue."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images, labels = digits.images.astype(np.float64) / 16.0, digits.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    index = np.arange(len(labels))
    rest, test = train_test_split(index, test_size=test_fraction, stratify=labels, random_state=seed)
    pool, val = train_test_split(rest, test_size=val_fraction / (1 - test_fraction), stratify=labels[rest],
                                 random_state=seed)
    if max_pool is not None and len(pool) > max_pool:
        pool = rng.choice(pool, size=max_pool, replace=False)
    return images, labels, pool, val, test, rng


def minority_style(images: np.ndarray, ids: np.ndarray, rng: np.random.Generator,
                   minority: float) -> tuple[np.ndarray, np.ndarray]:
    """``images[ids]`` with a ``minority`` fraction drawn in another style (inverted intensities), and each row's group."""
    group = (rng.random(len(ids)) < minority).astype(np.int64)
    out = images[ids].copy()
    out[group == 1] = 1.0 - out[group == 1]  # another style of the same digit
    return out, group


def _mlp(n_features: int, n_classes: int, hidden: int, seed: int) -> torch.nn.Module:
    from attributor.models import build_model

    return build_model("mlp", n_features, n_classes, seed=seed, hidden=(hidden,)).double()


def train_weighted(x: np.ndarray, y: np.ndarray, weights: np.ndarray, n_classes: int, *, hidden: int = 64,
                   steps: int = 300, lr: float = 1e-2, weight_decay: float = 1e-4, seed: int = 0) -> torch.nn.Module:
    """An MLP trained on sum_i w_i l_i / sum_i w_i by full-batch Adam (float64, deterministic)."""
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (len(x),) or not np.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
        raise ConfigError("training weights must be finite, non-negative, one per example, and not all zero")
    keep = weights > 0
    inputs, labels = torch.as_tensor(x[keep]), torch.as_tensor(y[keep])
    w = torch.as_tensor(weights[keep] / weights[keep].sum())
    model = _mlp(x.shape[1], n_classes, hidden, seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        optimizer.zero_grad()
        (F.cross_entropy(model(inputs), labels, reduction="none") * w).sum().backward()
        optimizer.step()
    return model.eval()


def evaluate_groups(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, group: np.ndarray) -> dict[str, float]:
    """Accuracy, accuracy per group, the worst group's, and the gap between the best and worst group."""
    with torch.no_grad():
        correct = (model(torch.as_tensor(x)).argmax(1).numpy() == y)
    per_group = {int(g): float(correct[group == g].mean()) for g in np.unique(group)}
    return {"accuracy": float(correct.mean()), "worst_group_accuracy": min(per_group.values()),
            "group_gap": max(per_group.values()) - min(per_group.values()),
            **{f"group_{g}_accuracy": value for g, value in per_group.items()}}


def penultimate(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    """The model's own features: the activations before its last layer."""
    with torch.no_grad():
        return model.net[:-1](torch.as_tensor(x)).numpy()


def per_example_loss(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return F.cross_entropy(model(torch.as_tensor(x)), torch.as_tensor(y), reduction="none").numpy()
