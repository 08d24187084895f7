"""Independently trained models: TRAK's ensemble in the paper's setting.

TRAK (Park et al., ICML 2023, section 3, eq. (16)) averages its estimator over M models
trained independently (different seeds) on the full training set. Our bench ensembles
over the checkpoints of one training run instead (the trajectory). :func:`train_models`
trains the M models through the retrain harness: the same :class:`ClassificationRecipe`
as the LDS retrains, with seeds ``recipe.seed + i`` (i = 0..M-1; member 0 is the recipe's
own seed, the model the bench attributes), an all-ones mask, run by an
:class:`~attributor.evaluation.retrain.Executor` (local processes or Ray). Each model's
weights (``torch.save`` state dict) and its training seconds are cached under
``folder/<fingerprint of the seeded recipe>/``, so a rerun trains nothing and still reports
the training cost. Their paths are the checkpoints of a FeatureStore (``featurize``), and
every checkpoint-ensembling method (TRAK, TracIn, the peers) then averages over models.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from attributor._io import atomic_write_text
from attributor.errors import ConfigError
from attributor.evaluation.retrain import ClassificationRecipe, Executor, LocalExecutor

__all__ = ["train_models", "member_recipe"]


def member_recipe(recipe: ClassificationRecipe, member: int) -> ClassificationRecipe:
    """The recipe of ensemble member ``member``: the same data and settings, seed ``recipe.seed + member``."""
    return dataclasses.replace(recipe, seed=recipe.seed + member)


def train_models(
    recipe: ClassificationRecipe,
    n_models: int,
    folder: str | Path,
    *,
    executor: Executor | None = None,
) -> tuple[list[Path], list[float]]:
    """Train (or reload) ``n_models`` independent full-data models; return their checkpoint
    paths and per-model training seconds (as measured when each was trained)."""
    if isinstance(n_models, bool) or not isinstance(n_models, int) or n_models < 1:
        raise ConfigError(f"n_models must be a positive integer, got {n_models!r}")
    folder = Path(folder)
    members = [member_recipe(recipe, i) for i in range(n_models)]
    paths = [folder / member.fingerprint() / "model.pt" for member in members]
    todo = [i for i, path in enumerate(paths) if not (path.is_file() and path.with_name("train.json").is_file())]
    jobs = [(members[i], paths[i]) for i in todo]
    for _ in (executor or LocalExecutor()).map_unordered(_train_one, jobs):
        pass
    seconds = [float(json.loads(path.with_name("train.json").read_text())["train_s"]) for path in paths]
    return paths, seconds


def _train_one(job: tuple[ClassificationRecipe, Path]) -> Path:
    """Train one member on every training example and save its weights and training time."""
    from attributor.models import save_checkpoint

    recipe, path = job
    start = time.perf_counter()
    model = recipe.train_on(np.ones(len(recipe.y_train), dtype=bool))
    seconds = time.perf_counter() - start
    save_checkpoint(model, path)
    atomic_write_text(path.with_name("train.json"), json.dumps({"train_s": seconds, "seed": recipe.seed}))
    return path
