"""A plain, seeded training loop for classifiers that saves checkpoints along the way."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from attributor.errors import DataError
from attributor.models.checkpoints import save_checkpoint
from attributor.progress import progress_bar
from attributor.tasks import Task

__all__ = ["train", "fit_lbfgs", "evaluate_accuracy", "evaluate"]


def train(
    model: torch.nn.Module,
    task: Task,
    dataset: Dataset,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    *,
    epochs: int,
    checkpoint_epochs: Sequence[int] = (),
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
) -> list[Path]:
    """Train with Adam on ``task.train_loss``; save a checkpoint after each listed epoch.

    Returns the checkpoint paths in epoch order (``epoch_0010.pt``, ...), none when
    ``checkpoint_dir`` is None. Shuffling and dropout are seeded (the global generator is
    restored afterwards), so the same call gives the same checkpoints bit for bit.
    """
    if any(not 1 <= e <= epochs for e in checkpoint_epochs):
        raise DataError(f"checkpoint epochs must be in [1, {epochs}], got {list(checkpoint_epochs)}")
    if checkpoint_epochs and checkpoint_dir is None:
        raise DataError("checkpoint_epochs were given without a checkpoint_dir")
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator)
    if len(dataset):  # bad input (label range, dtypes, keys) gets the task's message, not a torch error mid-epoch
        task.validate_batch(model, default_collate([dataset[i] for i in range(min(len(dataset), batch_size))]))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    paths = []
    model.train()
    # dropout draws from torch's global generator: seed it for this run only
    with torch.random.fork_rng(devices=[]), progress_bar(total=epochs, desc="train", enabled=progress) as bar:
        torch.manual_seed(seed)
        for epoch in range(1, epochs + 1):
            for batch in loader:
                if epoch == 1:  # every example is seen once: a bad label in any batch gets the task's message
                    task.validate_batch(model, batch)
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


def fit_lbfgs(
    model: torch.nn.Module,
    task: Task,
    dataset: Dataset,
    *,
    l2: float,
    max_iter: int = 500,
    tolerance: float = 1e-9,
) -> torch.nn.Module:
    """Minimise sum_i loss_i + l2/2 ||theta||^2 with full-batch L-BFGS (strong Wolfe).

    For a convex model (logistic regression) this converges to the unique optimum, so
    retrains are deterministic and the Hessian of the objective is H_sum + l2 * I: an
    influence function with absolute damping ``l2`` is then exact. The objective is
    divided by n internally for conditioning; that does not move the optimum.
    """
    batch = default_collate([dataset[i] for i in range(len(dataset))])
    n = len(dataset)
    optimizer = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=max_iter, tolerance_grad=tolerance,
                                  tolerance_change=tolerance * 1e-3, history_size=50, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        objective = task.train_loss(model, batch).sum() + 0.5 * l2 * sum((p**2).sum() for p in model.parameters())
        objective = objective / n
        objective.backward()
        return objective

    model.train()
    loss = optimizer.step(closure)
    if not torch.isfinite(loss):
        raise DataError("L-BFGS diverged; check the inputs and the l2 coefficient")
    model.eval()
    return model


@torch.no_grad()
def evaluate_accuracy(model: torch.nn.Module, inputs: np.ndarray, labels: np.ndarray) -> float:
    model.eval()
    logits = model(torch.as_tensor(inputs))
    return float((logits.argmax(dim=1).numpy() == labels).mean())


@torch.no_grad()
def evaluate(model: torch.nn.Module, task: Task, dataset: Dataset, target_kind: str = "class",
             batch_size: int = 256) -> dict[str, float]:
    """Mean per-example task loss on ``dataset``, plus accuracy (classes) or mse (regression).

    Works for any batch form a task accepts: ``(inputs, labels)`` pairs or Hugging Face
    style mappings with ``"labels"``.
    """
    from attributor.tasks.base import call_model, output_logits
    from attributor.tasks.checks import split_labelled

    model.eval()
    losses, correct, squared, n = 0.0, 0, 0.0, 0
    for batch in DataLoader(dataset, batch_size=batch_size):
        losses += float(task.train_loss(model, batch).sum())
        n += len(next(iter(batch.values())) if isinstance(batch, dict) else batch[0])
        if target_kind in ("class", "value"):
            inputs, labels = split_labelled(batch, task.key)
            output = output_logits(call_model(model, inputs))
            if target_kind == "class":
                correct += int((output.argmax(dim=-1) == labels).sum())
            else:
                squared += float(((output.reshape(labels.shape) - labels) ** 2).sum())
    metrics = {"loss": losses / max(n, 1)}
    if target_kind == "class":
        metrics["accuracy"] = correct / max(n, 1)
    elif target_kind == "value":
        metrics["mse"] = squared / max(n, 1)
    return metrics
