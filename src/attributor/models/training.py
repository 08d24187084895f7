"""A plain, seeded training loop for classifiers that saves checkpoints along the way."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from attributor.errors import DataError
from attributor.models.checkpoints import save_checkpoint
from attributor.progress import progress_bar
from attributor.task import Task

__all__ = ["train", "evaluate_accuracy"]


def train(
    model: torch.nn.Module,
    task: Task,
    dataset: Dataset,
    checkpoint_dir: str | os.PathLike[str],
    *,
    epochs: int,
    checkpoint_epochs: Sequence[int],
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
) -> list[Path]:
    """Train with Adam on ``task.train_loss``; save a checkpoint after each listed epoch.

    Returns the checkpoint paths in epoch order (``epoch_0010.pt``, ...). Shuffling is
    seeded, so the same call gives the same checkpoints bit for bit.
    """
    if not checkpoint_epochs or any(not 1 <= e <= epochs for e in checkpoint_epochs):
        raise DataError(f"checkpoint epochs must be in [1, {epochs}], got {list(checkpoint_epochs)}")
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    paths = []
    model.train()
    with progress_bar(total=epochs, desc="train", enabled=progress) as bar:
        for epoch in range(1, epochs + 1):
            for batch in loader:
                optimizer.zero_grad()
                loss = task.train_loss(model, batch).mean()
                if not torch.isfinite(loss):
                    raise DataError(f"training diverged at epoch {epoch} (loss {loss.item()}); lower the learning rate")
                loss.backward()
                optimizer.step()
            if epoch in checkpoint_epochs:
                paths.append(save_checkpoint(model, Path(checkpoint_dir) / f"epoch_{epoch:04d}.pt"))
            bar.update(1)
    model.eval()
    return paths


@torch.no_grad()
def evaluate_accuracy(model: torch.nn.Module, inputs: np.ndarray, labels: np.ndarray) -> float:
    model.eval()
    logits = model(torch.as_tensor(inputs))
    return float((logits.argmax(dim=1).numpy() == labels).mean())
