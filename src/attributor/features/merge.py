"""Merge shard stores into one store equal to an unsharded run.

``featurize(..., shard=(i, n))`` writes a contiguous range of each split's chunks into its
own store. :func:`merge_stores` checks that the sources were made with the same settings
(task, model, checkpoints, projector spec, dtype, chunk size, dimensions) and hold the same
splits (same n and data id), that every chunk of every split and checkpoint is committed
in exactly one source (no gaps, no overlaps), verifies each chunk file against its
checksum, and hard-links it (copying across file systems) into the new store, whose
manifest then lists the same checksums. The store is built under a temporary name and
renamed into place, so a failed merge leaves nothing behind.

Example::

    attributor featurize --shard 0/2 -o RUN     # -> RUN/store-shard-0-of-2
    attributor featurize --shard 1/2 -o RUN     # -> RUN/store-shard-1-of-2
    attributor store merge RUN/store-shard-0-of-2 RUN/store-shard-1-of-2 --out RUN/store
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Sequence

from attributor._compare import differences
from attributor._io import atomic_directory, sha256_file
from attributor.errors import StoreCorruptedError, StoreError, StoreMismatchError
from attributor.features.store import FeatureStore

__all__ = ["merge_stores"]


def merge_stores(sources: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *,
                 overwrite: bool = False) -> FeatureStore:
    """Join the stores at ``sources`` into a new store at ``out``; return it."""
    if not sources:
        raise StoreError("store merge needs at least one source store")
    out = Path(out)
    stores = [FeatureStore.open(path) for path in sources]
    if any(out.resolve() == s.path.resolve() for s in stores):
        raise StoreError(f"the merged store {out} cannot be one of its sources")
    if out.exists() and not overwrite:
        raise StoreError(f"{out} already exists; choose another --out or pass --overwrite")
    if out.exists() and not FeatureStore.exists(out):
        raise StoreError(f"{out} exists and is not a feature store; refusing to replace it")
    first = stores[0]
    for other in stores[1:]:
        diff = differences(first.settings, other.settings)
        if diff:
            shown = "; ".join(f"{key}: {change}" for key, change in diff[:4])
            raise StoreMismatchError(f"cannot merge {other.path} into {first.path}: other settings ({shown})")
        if _split_table(other) != _split_table(first):
            raise StoreMismatchError(f"cannot merge {other.path} into {first.path}: other splits "
                                     f"({_split_table(other)} vs {_split_table(first)})")
    owners = _owners(stores)
    with atomic_directory(out) as tmp:
        merged = FeatureStore.create(tmp, first.settings)
        for split, (n, data_id) in _split_table(first).items():
            merged.add_split(split, n, data_id)
        for (split, checkpoint, index), source in owners.items():
            entry = source._split(split)["chunks"][str(checkpoint)][str(index)]
            folder = f"{split}/ckpt{checkpoint:03d}"
            for name in ("features", "out_to_loss"):
                relative = f"{folder}/{name}_{index:06d}.npy"
                file = source.path / relative
                if not file.is_file() or sha256_file(file) != entry[name]:
                    raise StoreCorruptedError(f"{file} is missing or does not match its checksum; re-run that shard")
                _link(file, tmp / relative)
            merged._split(split)["chunks"][str(checkpoint)][str(index)] = dict(entry)
        merged.save()
    return FeatureStore.open(out)


def _split_table(store: FeatureStore) -> dict[str, tuple[int, str | None]]:
    return {name: (store.split_size(name), store._split(name).get("data_id")) for name in store.splits}


def _owners(stores: list[FeatureStore]) -> dict[tuple[str, int, int], FeatureStore]:
    """Which source holds each (split, checkpoint, chunk); one error listing gaps and overlaps."""
    owners: dict[tuple[str, int, int], FeatureStore] = {}
    overlaps, gaps = [], []
    first = stores[0]
    for split in first.splits:
        for checkpoint in range(first.n_checkpoints):
            for index, _, _ in first.chunk_bounds(split):
                holders = [s for s in stores if str(index) in s._split(split)["chunks"][str(checkpoint)]]
                key = (split, checkpoint, index)
                if not holders:
                    gaps.append(key)
                elif len(holders) > 1:
                    overlaps.append((key, [str(s.path) for s in holders]))
                else:
                    owners[key] = holders[0]
    if gaps or overlaps:
        parts = []
        if gaps:
            parts.append(f"{len(gaps)} chunks are in no source (first: split {gaps[0][0]!r}, checkpoint "
                         f"{gaps[0][1]}, chunk {gaps[0][2]}); featurize the missing shards first")
        if overlaps:
            (split, checkpoint, index), paths = overlaps[0]
            parts.append(f"{len(overlaps)} chunks are in more than one source (first: split {split!r}, checkpoint "
                         f"{checkpoint}, chunk {index} in {', '.join(paths)}); pass each shard once")
        raise StoreError("cannot merge: " + "; ".join(parts))
    return owners


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(source, target)
