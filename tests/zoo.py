"""A zoo of tiny, deterministic problems shared by the tests."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, TensorDataset

from attributor.models import MLP, save_checkpoint


def classification_data(n: int, d: int = 6, n_classes: int = 3, seed: int = 0,
                        dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian blobs: inputs (n, d) and integer labels (n,)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, n_classes, (n,), generator=generator)
    centres = torch.randn(n_classes, d, generator=generator, dtype=torch.float64)
    inputs = centres[labels] + 0.8 * torch.randn(n, d, generator=generator, dtype=torch.float64)
    return inputs.to(dtype), labels


def mlp(d: int = 6, n_classes: int = 3, hidden: Sequence[int] = (8,), seed: int = 0,
        dtype: torch.dtype = torch.float64) -> MLP:
    torch.manual_seed(seed)
    return MLP(d, n_classes, hidden=hidden).to(dtype)


def train_and_save(model: torch.nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
                   folder: Path, n_checkpoints: int = 2, steps: int = 5, lr: float = 0.3) -> list[Path]:
    """Full-batch gradient descent; a checkpoint after every ``steps`` steps."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    paths = []
    for c in range(n_checkpoints):
        for _ in range(steps):
            optimizer.zero_grad()
            F.cross_entropy(model(inputs), labels).backward()
            optimizer.step()
        paths.append(save_checkpoint(model, Path(folder) / f"ckpt{c}.pt"))
    return paths


def dataset(inputs: torch.Tensor, labels: torch.Tensor) -> Dataset:
    return TensorDataset(inputs, labels)


class FailingDataset(Dataset):
    """Serves ``inner`` but raises after ``fail_after`` items were read (a crash mid-run)."""

    def __init__(self, inner: Dataset, fail_after: int):
        self.inner, self.fail_after, self.reads = inner, fail_after, 0

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int):
        if self.reads >= self.fail_after:
            raise RuntimeError("simulated crash")
        self.reads += 1
        return self.inner[index]


class ForbiddenDataset(Dataset):
    """Has a length, but any read fails: proves that no work is done."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        raise AssertionError(f"example {index} was read although the store is complete")


#: A run config small enough for end-to-end CLI tests (digits, 240 training examples, 2 checkpoints).
TINY_RUN = {
    "data": {"name": "digits", "max_train": 240, "label_noise": 0.1},
    "model": {"hidden": [32]},
    "train": {"epochs": 6, "checkpoint_epochs": [3, 6]},
    "featurize": {"proj_dim": 64, "chunk_size": 64},
    "score": {"topk": 5},
}
