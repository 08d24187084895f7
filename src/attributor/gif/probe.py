"""The GIF probe: a small MLP on sentence embeddings, its per-example gradients, and P.

* :class:`ProbeNetwork`: logits = W2 dropout(relu(W1 e + b1)) + b2, e (d,), hidden h, C classes.
* :func:`train_probe`: AdamW (lr 1e-3), seeded shuffling, dropout and initialisation.
* :func:`kmeans_labels`: seeded Lloyd k-means (k-means++ start) when the user has no labels.
* :func:`probe_gradients`: g_x = d CE(probe(e_x), y_x) / d theta for every example at once
  (closed form, eval mode), y_x the probe's own prediction unless labels are given:

      r = softmax(z) - onehot(y)                (C,)
      dW2 = r a^T, db2 = r,  a = relu(W1 e + b1)
      s = (W2^T r) * 1[W1 e + b1 > 0]            (h,)
      dW1 = s e^T, db1 = s

  flattened in ``named_parameters`` order (W1, b1, W2, b2): p = h d + h + C h + C.
* :func:`projection_matrix`: P (m, p), seeded gaussian with unit-norm rows; c_x = P g_x.

Cost: O(n (d h + h C)) for the gradients, O(n p m) for the projection.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["ProbeNetwork", "train_probe", "kmeans_labels", "probe_gradients", "projection_matrix"]


class ProbeNetwork(nn.Module):
    """d -> hidden (ReLU, dropout) -> n_classes."""

    def __init__(self, d: int, hidden: int, n_classes: int, dropout: float = 0.1):
        super().__init__()
        self.hidden = nn.Linear(d, hidden)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(torch.relu(self.hidden(x))))


def train_probe(embeddings: np.ndarray, labels: np.ndarray, n_classes: int, *, hidden: int = 128, dropout: float = 0.1,
                lr: float = 1e-3, epochs: int = 5, batch_size: int = 32, seed: int = 0) -> ProbeNetwork:
    """A :class:`ProbeNetwork` trained with AdamW on cross-entropy; returned in eval mode."""
    x = torch.from_numpy(np.asarray(embeddings, dtype=np.float32))
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        probe = ProbeNetwork(x.shape[1], hidden, n_classes, dropout)
        optimizer = torch.optim.AdamW(probe.parameters(), lr=lr)
        generator = torch.Generator().manual_seed(seed)
        probe.train()
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=generator)
            for start in range(0, len(x), batch_size):
                rows = order[start:start + batch_size]
                optimizer.zero_grad()
                nn.functional.cross_entropy(probe(x[rows]), y[rows]).backward()
                optimizer.step()
    return probe.eval()


def kmeans_labels(x: np.ndarray, k: int, *, seed: int = 0, iterations: int = 50) -> np.ndarray:
    """Cluster ids (n,) of k-means on rows of ``x`` (k-means++ start, Lloyd iterations), seeded."""
    x = np.asarray(x, dtype=np.float64)
    rng = np.random.default_rng(seed)
    centers = [x[rng.integers(len(x))]]
    for _ in range(1, k):
        dist = np.min([((x - c) ** 2).sum(1) for c in centers], axis=0)
        total = dist.sum()
        centers.append(x[rng.choice(len(x), p=dist / total)] if total > 0 else x[rng.integers(len(x))])
    centers = np.array(centers)
    assign = np.zeros(len(x), dtype=np.int64)
    for _ in range(iterations):
        dist = ((x[:, None, :] - centers[None]) ** 2).sum(-1)
        new = dist.argmin(1)
        if _ and np.array_equal(new, assign):
            break
        assign = new
        for j in range(k):
            if (assign == j).any():
                centers[j] = x[assign == j].mean(0)
    return assign


def probe_gradients(probe: ProbeNetwork, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Per-example cross-entropy gradients (n, p) in the probe's parameter order (eval mode).

    ``labels`` default to the probe's prediction (argmax of the logits). Computed in the
    dtype of ``embeddings`` (pass float64 for a reference).
    """
    dtype = embeddings.dtype
    w1, b1 = probe.hidden.weight.detach().to(dtype), probe.hidden.bias.detach().to(dtype)
    w2, b2 = probe.out.weight.detach().to(dtype), probe.out.bias.detach().to(dtype)
    pre = embeddings @ w1.T + b1  # (n, h)
    act = torch.relu(pre)
    logits = act @ w2.T + b2  # (n, C)
    targets = logits.argmax(1) if labels is None else labels
    residual = torch.softmax(logits, dim=1)
    residual[torch.arange(len(targets)), targets] -= 1
    back = (residual @ w2) * (pre > 0).to(dtype)  # (n, h)
    n = len(embeddings)
    return torch.cat([
        (back[:, :, None] * embeddings[:, None, :]).reshape(n, -1), back,
        (residual[:, :, None] * act[:, None, :]).reshape(n, -1), residual,
    ], dim=1)


def projection_matrix(n_params: int, dim: int, *, seed: int = 0) -> torch.Tensor:
    """P (dim, n_params): seeded standard gaussian entries, each row scaled to unit norm."""
    generator = torch.Generator().manual_seed(seed)
    matrix = torch.randn(dim, n_params, generator=generator)
    return matrix / matrix.norm(dim=1, keepdim=True)
