"""Featurize a run's store as shard tasks on an executor, then merge the shards.

The driver prepares what every task reads (``data.npz`` and the checkpoints, trained once
if the run trains them), then submits one task per shard: ``Run(out, config).store(shard=(i, n))``
writes ``OUT/store-shard-i-of-n/`` (a contiguous range of each split's chunks, see
:func:`attributor.features.featurize.shard_chunks`). When every shard is done,
:func:`attributor.features.merge.merge_stores` joins them into ``OUT/store`` (chunk files
hard-linked, checksums verified) and the shard stores are removed. The merged store is
bit-identical to a serial ``featurize`` (same chunk checksums in the manifest).

Resuming: each shard store commits chunk by chunk, so a rerun after a killed driver (or a
lost worker) recomputes only the chunks that were not committed. On a cluster, ``out``
(and the run's data and checkpoint paths) must be on a filesystem every worker sees.

Example::

    config = load_config("examples/digits_trak.yaml")
    store = featurize_on_executor(config, "runs/digits", shards=4, executor=RayExecutor(address="auto"))
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from attributor.config import RunConfig
from attributor.errors import ConfigError
from attributor.evaluation.retrain import Executor
from attributor.features import FeatureStore, merge_stores
from attributor.progress import progress_bar

__all__ = ["featurize_on_executor"]


def featurize_on_executor(config: RunConfig, out: str | os.PathLike[str], shards: int, executor: Executor, *,
                          overwrite: bool = False, progress: bool = True) -> FeatureStore:
    """Featurize the run in ``out`` as ``shards`` shard tasks on ``executor``; return ``OUT/store``."""
    from attributor.pipelines.run import Run

    if not isinstance(shards, int) or shards < 1:
        raise ConfigError(f"shards must be a positive integer, got {shards!r}")
    out = Path(out).absolute()
    run = Run(out, config, overwrite=overwrite, progress=progress)
    path = out / "store"
    if FeatureStore.exists(path):
        return run.store()  # checks the settings; finishes serially a store a serial run left unfinished
    run.data()
    run.checkpoints()  # train once here, not in every task
    items = [(str(out), config.model_dump(mode="json"), (i, shards)) for i in range(shards)]
    paths: list[str | None] = [None] * shards
    with progress_bar(total=shards, desc="featurize shards", enabled=progress) as bar:
        for position, shard_path in executor.map_unordered(featurize_shard, items):
            paths[position] = shard_path
            bar.update(1)
    store = merge_stores(paths, path)  # type: ignore[arg-type]
    for shard_path in paths:
        shutil.rmtree(shard_path, ignore_errors=True)  # the merged store holds its own links to the chunk files
    return store


def featurize_shard(item: tuple[str, dict[str, Any], tuple[int, int]]) -> str:
    """One task: featurize shard ``(i, n)`` of the run in ``out``; return the shard store's path."""
    from attributor.pipelines.run import Run

    out, config, shard = item
    run = Run(out, RunConfig.model_validate(config), progress=False)
    return str(run.store(shard=shard).path)
