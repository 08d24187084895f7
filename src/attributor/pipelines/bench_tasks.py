"""Bench tasks and suites: fixed data, models, recipes and checkpoints every method shares.

A :class:`BenchTask` fixes a dataset, a model and its training recipe. ``prepare`` trains
the full-data model once (saving its checkpoints) for a clean variant, used for LDS and
leave-one-out, and a label-noise variant, used for mislabel detection, so every method,
ours and the peers', sees the same checkpoints, queries and ground truth.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attributor._io import atomic_write_text
from attributor.data import ArrayDataset, DatasetSplits, load_dataset
from attributor.errors import ConfigError, UnknownNameError
from attributor.evaluation.retrain import ClassificationRecipe
from attributor.models import save_checkpoint
from attributor.models.training import fit_lbfgs, train
from attributor.tasks import ClassificationTask

__all__ = ["BenchTask", "Suite", "SUITES", "PreparedTask", "prepare", "load_task_data", "hold_out"]


@dataclass(frozen=True)
class BenchTask:
    """One bench problem.

    ``trainer="lbfgs"`` trains to the optimum of an l2-regularised convex objective (one
    checkpoint, deterministic retrains); ``trainer="adam"`` trains for ``epochs`` and saves
    ``checkpoint_epochs`` (the TRAK / TracIn ensemble). ``hidden``: the MLP's hidden widths,
    or the CNN's two channel counts (default (8, 16)).
    """

    name: str
    dataset: str
    model: str
    hidden: tuple[int, ...] = ()
    trainer: str = "adam"
    l2: float = 1.0  # scikit-learn's default (C = 1): sum of losses + 1/2 |theta|^2
    epochs: int = 40
    lr: float = 1e-3
    checkpoint_epochs: tuple[int, ...] = (10, 20, 30, 40)
    max_train: int | None = None
    n_queries: int = 100
    label_noise: float = 0.1
    dtype: str = "float32"
    seed: int = 0
    test_fraction: float = 0.25  # share of the dataset held out as the test split (queries come from it)
    #: (method, reason) pairs: methods the bench does not run on this task, each with the
    #: reason written into the run's notes (the row stays, without numbers)
    skip_methods: tuple[tuple[str, str], ...] = ()
    #: training rows held out of the training set and made the whole test split (so the
    #: queries): the validation task on which ``bench.select_damping_heldout`` picks a
    #: ridge without the task's own queries. 0: none.
    holdout: int = 0

    @property
    def convex(self) -> bool:
        return self.trainer == "lbfgs"

    def train_args(self) -> dict[str, Any]:
        if self.convex:
            return {"l2": self.l2}
        return {"epochs": self.epochs, "lr": self.lr}

    def model_args(self) -> dict[str, Any]:
        """The model builder's arguments (part of the recipe's fingerprint, so the retrain cache follows them)."""
        if self.model == "mlp":
            return {"hidden": list(self.hidden)}
        if self.model == "cnn":
            return {"channels": list(self.hidden or (8, 16))}
        return {}

    def recipe(self, data: DatasetSplits) -> ClassificationRecipe:
        """The recipe retrains use; the full-data model of :func:`prepare` is the same recipe."""
        return ClassificationRecipe(
            X_train=data.X_train, y_train=data.y_train, X_query=data.X_test[: self.n_queries],
            y_query=data.y_test[: self.n_queries], model=self.model,
            model_args=self.model_args(), trainer=self.trainer,
            train_args=self.train_args(), n_classes=data.n_classes, seed=self.seed, dtype=self.dtype,
        )


@dataclass(frozen=True)
class Suite:
    """Which tasks, how many LDS subsets, the projection dimension, which extras run."""

    tasks: tuple[BenchTask, ...]
    n_subsets: int
    proj_dim: int
    n_loo: int = 20
    brittleness_queries: int = 5
    brittleness_ks: tuple[int, ...] = (10, 20, 40, 80)
    peers: bool = True


SUITES = {
    "quick": Suite(
        tasks=(
            BenchTask("digits-logreg", "digits", "logreg", trainer="lbfgs", max_train=300, n_queries=30, dtype="float64"),
            BenchTask("digits-mlp", "digits", "mlp", hidden=(32,), epochs=20, checkpoint_epochs=(10, 20), max_train=300, n_queries=30),
        ),
        n_subsets=12, proj_dim=256, n_loo=8, brittleness_queries=2, brittleness_ks=(10, 40),
    ),
    "full": Suite(
        tasks=(
            BenchTask("digits-logreg", "digits", "logreg", trainer="lbfgs", dtype="float64"),
            BenchTask("digits-mlp", "digits", "mlp", hidden=(128,)),
            BenchTask("mnist1d-mlp", "mnist1d", "mlp", hidden=(128,), epochs=30, checkpoint_epochs=(10, 20, 30)),
            BenchTask("cancer-logreg", "breast_cancer", "logreg", trainer="lbfgs", dtype="float64"),
            # a small CNN on the 8x8 digit images (3,818 parameters; test accuracy 0.97)
            BenchTask("digits-cnn", "digits", "cnn", skip_methods=(
                ("if-cg", "200 Gauss-Newton CG iterations through the two convolutions cost over 670 CPU-s at 100 "
                          "queries (about 3x the digits MLP's per product), and on the digits MLP the same cap "
                          "leaves every query unconverged (LDS 0.15)"),)),
            # a linear probe on frozen MiniLM embeddings of Python's documentation paragraphs,
            # five topic groups (537 training rows, 384 features; test accuracy 0.69)
            BenchTask("pydoc-logreg", "pydoc_minilm", "logreg", trainer="lbfgs", dtype="float64"),
        ),
        n_subsets=50, proj_dim=1024,
    ),
}


@dataclass
class PreparedTask:
    """A task's data, full-data model checkpoints and the objects methods consume."""

    task: BenchTask
    variant: str
    data: DatasetSplits
    checkpoints: list[Path]
    learning_rates: list[float] | None
    folder: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def queries(self) -> ArrayDataset:
        return ArrayDataset(self.data.X_test[: self.task.n_queries].astype(self.task.dtype), self.data.y_test[: self.task.n_queries])

    @property
    def train_set(self) -> ArrayDataset:
        return ArrayDataset(self.data.X_train.astype(self.task.dtype), self.data.y_train)

    def model(self) -> torch.nn.Module:
        return self.task.recipe(self.data).build()


def prepare(task: BenchTask, variant: str, root: Path) -> PreparedTask:
    """Load the data (``variant`` is ``clean`` or ``noisy``) and train the full model once."""
    if variant not in ("clean", "noisy"):
        raise UnknownNameError("bench variant", variant, ["clean", "noisy"])
    data = load_task_data(task, variant)
    folder = root / task.name / variant
    recipe = task.recipe(data)
    # skip_methods is not part of the data; holdout = 0 is left out so that earlier runs' models stay valid
    settings = {key: value for key, value in asdict(task).items()
                if key != "skip_methods" and not (key == "holdout" and value == 0)}
    spec = json.dumps({"task": settings, "variant": variant, "recipe": recipe.fingerprint()}, sort_keys=True)
    marker = folder / "checkpoints" / "recipe.json"
    if task.convex:
        paths = [folder / "checkpoints" / "optimum.pt"]
    else:
        paths = [folder / "checkpoints" / f"epoch_{e:04d}.pt" for e in task.checkpoint_epochs]
    if not (marker.is_file() and marker.read_text() == spec and all(p.is_file() for p in paths)):
        model = recipe.build()
        dataset = ArrayDataset(data.X_train.astype(task.dtype), data.y_train)
        if task.convex:
            fit_lbfgs(model, ClassificationTask(), dataset, l2=task.l2)
            save_checkpoint(model, paths[0])
        else:
            train(model, ClassificationTask(), dataset, folder / "checkpoints", epochs=task.epochs, lr=task.lr,
                  checkpoint_epochs=task.checkpoint_epochs, seed=task.seed, progress=False)
        atomic_write_text(marker, spec)
    rates = None if task.convex else [task.lr] * len(paths)
    return PreparedTask(task, variant, data, paths, rates, folder)


def load_task_data(task: BenchTask, variant: str = "clean") -> DatasetSplits:
    """The data of ``task``'s ``variant`` (``noisy``: ``task.label_noise`` of the training labels
    flipped), with ``task.holdout`` training rows held out as the test split."""
    noise = task.label_noise if variant == "noisy" else 0.0
    data = load_dataset(task.dataset, test_fraction=task.test_fraction, label_noise=noise, max_train=task.max_train, seed=task.seed)
    return hold_out(data, task.holdout, seed=task.seed) if task.holdout else data


def hold_out(data: DatasetSplits, n: int, seed: int = 0) -> DatasetSplits:
    """``data`` with ``n`` random training rows (seeded) moved out of the training set; they
    become the whole test split. The original test split is dropped, so nothing of it is seen."""
    n_train = len(data.y_train)
    if not 0 < n < n_train:
        raise ConfigError(f"cannot hold out {n} of {n_train} training rows; choose 0 < holdout < {n_train}")
    held = np.zeros(n_train, dtype=bool)
    held[np.random.default_rng([seed, 20]).choice(n_train, size=n, replace=False)] = True
    keep = ~held
    return replace(
        data, X_train=data.X_train[keep], y_train=data.y_train[keep], y_train_clean=data.y_train_clean[keep],
        flipped=data.flipped[keep], X_test=data.X_train[held], y_test=data.y_train[held],
        extra_train={key: value[keep] for key, value in data.extra_train.items()},
        extra_test={key: value[held] for key, value in data.extra_train.items()},
        texts_train=None if data.texts_train is None else data.texts_train[keep],
        texts_test=None if data.texts_train is None else data.texts_train[held],
        source={**data.source, "held_out": {"rows": n, "seed": seed}},
    )


