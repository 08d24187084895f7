"""Sharded featurize + merge equals the unsharded store; merge refuses what does not fit."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from zoo import classification_data, dataset, mlp, train_and_save

from attributor.errors import DataError, StoreError, StoreMismatchError
from attributor.features import FeatureStore, featurize, make_projector, merge_stores
from attributor.features.featurize import shard_chunks
from attributor.tasks import ClassificationTask

N_TRAIN, N_TEST, CHUNK = 45, 13, 8  # 6 and 2 chunks


@pytest.fixture(scope="module")
def problem(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shards")
    inputs, labels = classification_data(N_TRAIN + N_TEST, d=6, n_classes=3, seed=0)
    model = mlp(d=6, n_classes=3, hidden=(8,), seed=0)
    checkpoints = train_and_save(model, inputs, labels, folder / "ckpts", n_checkpoints=2)
    splits = {"train": dataset(inputs[:N_TRAIN], labels[:N_TRAIN]), "test": dataset(inputs[N_TRAIN:], labels[N_TRAIN:])}
    return folder, model, splits, checkpoints


def _featurize(problem, path, shard=None, kind="factored", seed=0):
    _, model, splits, checkpoints = problem
    for split, data in splits.items():
        store = featurize(model, ClassificationTask(), data, checkpoints, path, make_projector(kind, 24, seed=seed),
                          split=split, data_id=f"{split}-v1", chunk_size=CHUNK, batch_size=5, progress=False,
                          shard=shard)
    return store


def test_shard_ranges_are_contiguous_and_cover_every_chunk():
    assert [list(shard_chunks(6, (i, 3))) for i in range(3)] == [[0, 1], [2, 3], [4, 5]]
    assert [list(shard_chunks(2, (i, 3))) for i in range(3)] == [[], [0], [1]]
    assert sum((list(shard_chunks(7, (i, 4))) for i in range(4)), []) == list(range(7))
    for bad in [(3, 3), (-1, 2), (0, 0)]:
        with pytest.raises(DataError):
            shard_chunks(5, bad)


@pytest.mark.parametrize("kind", ["factored", "gaussian"])
def test_sharded_featurize_and_merge_equal_the_unsharded_store(problem, kind):
    folder = problem[0]
    full = _featurize(problem, folder / f"full-{kind}", kind=kind)
    shards = [_featurize(problem, folder / f"{kind}-shard-{i}-of-3", shard=(i, 3), kind=kind) for i in range(3)]
    for store in shards:
        assert not store.is_complete("train")
    assert shards[1].done_mask("train", 0).tolist() == [False] * 16 + [True] * 16 + [False] * 13
    merged = merge_stores([s.path for s in shards], folder / f"merged-{kind}")
    merged.verify()
    assert merged.settings == full.settings
    assert merged.splits == full.splits == ["test", "train"]
    for split in ("train", "test"):
        assert merged._split(split)["data_id"] == f"{split}-v1"
        for c in range(2):
            assert np.array_equal(merged.features(split, c), full.features(split, c))
            assert np.array_equal(merged.out_to_loss(split, c), full.out_to_loss(split, c))
    manifest = json.loads((merged.path / "manifest.json").read_text())
    assert manifest["splits"] == json.loads((full.path / "manifest.json").read_text())["splits"]  # same checksums
    chunk = "train/ckpt001/features_000003.npy"
    assert os.path.samefile(merged.path / chunk, shards[1].path / chunk)  # hard-linked, not rewritten


def test_merge_refuses_gaps_overlaps_and_other_settings(problem, tmp_path):
    shards = [_featurize(problem, tmp_path / f"shard-{i}", shard=(i, 3)) for i in range(3)]
    with pytest.raises(StoreError, match="in no source") as info:
        merge_stores([shards[0].path, shards[2].path], tmp_path / "gap")
    assert "split 'test', checkpoint 0, chunk 0" in str(info.value)  # shard 1 held test chunk 0
    with pytest.raises(StoreError, match="more than one source"):
        merge_stores([s.path for s in shards] + [shards[1].path], tmp_path / "overlap")
    other = _featurize(problem, tmp_path / "other-seed", shard=(1, 3), seed=1)
    with pytest.raises(StoreMismatchError, match="projector.seed"):
        merge_stores([shards[0].path, other.path, shards[2].path], tmp_path / "mismatch")
    for name in ("gap", "overlap", "mismatch"):
        assert not (tmp_path / name).exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left
    merge_stores([s.path for s in shards], tmp_path / "ok")
    with pytest.raises(StoreError, match="already exists"):
        merge_stores([s.path for s in shards], tmp_path / "ok")
    assert merge_stores([s.path for s in shards], tmp_path / "ok", overwrite=True).is_complete("train")
