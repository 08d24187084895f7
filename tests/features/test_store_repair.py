"""FeatureStore.check and FeatureStore.repair: list every problem, drop exactly the damaged chunks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from attributor._io import atomic_save_npy
from attributor.errors import StoreCorruptedError, StoreError
from attributor.features.store import FeatureStore

SETTINGS = {"task": {"task": "classification"}, "checkpoints": ["aaaa", "bbbb"], "dtype": "float64",
            "chunk_size": 4, "dim": 3}


def _chunk(store: FeatureStore, index: int, checkpoint: int) -> tuple[np.ndarray, np.ndarray]:
    _, start, stop = store.chunk_bounds("train")[index]
    rng = np.random.default_rng(10 * checkpoint + index)
    return rng.normal(size=(stop - start, store.dim)), rng.uniform(size=stop - start)


def _filled(path: Path, n: int = 10) -> FeatureStore:
    """A store with split 'train' of n rows (chunks of 4), every chunk written at both checkpoints."""
    store = FeatureStore.create(path, SETTINGS)
    store.add_split("train", n)
    with store.writing():
        for c in range(store.n_checkpoints):
            for index, _, _ in store.chunk_bounds("train"):
                store.write_chunk("train", c, index, *_chunk(store, index, c))
    return store


def _file(store: FeatureStore, name: str, checkpoint: int, index: int) -> Path:
    return store.path / "train" / f"ckpt{checkpoint:03d}" / f"{name}_{index:06d}.npy"


def _edit_manifest(path: Path, edit) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    edit(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_an_intact_store_has_no_problems_and_nothing_to_repair(tmp_path):
    store = _filled(tmp_path / "s")
    before = (tmp_path / "s" / "manifest.json").read_bytes()
    assert store.check() == []
    assert store.n_committed() == (6, 6)
    assert store.repair() == []
    assert (tmp_path / "s" / "manifest.json").read_bytes() == before


def test_check_lists_every_problem_and_repair_drops_exactly_those_chunks(tmp_path):
    store = _filled(tmp_path / "s")
    truncated = _file(store, "features", 1, 1)
    truncated.write_bytes(truncated.read_bytes()[:-8])
    flipped = _file(store, "out_to_loss", 0, 2)
    data = bytearray(flipped.read_bytes())
    data[-1] ^= 0x01
    flipped.write_bytes(bytes(data))
    _file(store, "features", 0, 0).unlink()

    problems = FeatureStore.open(tmp_path / "s").check()
    assert len(problems) == 3, problems
    assert any(str(truncated) in p and "checksum" in p for p in problems)
    assert any(str(flipped) in p and "checksum" in p for p in problems)
    assert any("features_000000.npy" in p and "missing" in p for p in problems)

    dropped = FeatureStore.open(tmp_path / "s").repair()
    assert len(dropped) == 3 and all(line.startswith("dropped chunk") for line in dropped)
    reopened = FeatureStore.open(tmp_path / "s")
    assert reopened.check() == []
    assert reopened.missing_chunks("train", 0) == [(0, 0, 4), (2, 8, 10)]
    assert reopened.missing_chunks("train", 1) == [(1, 4, 8)]
    assert reopened.done_mask("train", 1).tolist() == [True] * 4 + [False] * 4 + [True] * 2
    assert reopened.n_committed() == (3, 6)
    assert not list(reopened.path.rglob("*.tmp")) and not list(reopened.path.rglob(".*.tmp"))

    # rewriting the dropped chunks makes the store whole again (what featurize does)
    with reopened.writing():
        for c in range(2):
            for index, _, _ in reopened.missing_chunks("train", c):
                reopened.write_chunk("train", c, index, *_chunk(reopened, index, c))
    assert reopened.check() == [] and reopened.is_complete("train")
    assert np.array_equal(reopened.features("train", 1)[4:8], _chunk(reopened, 1, 1)[0])


def test_a_file_with_the_wrong_shape_or_dtype_is_a_problem_even_with_a_matching_checksum(tmp_path):
    store = _filled(tmp_path / "s")
    file = _file(store, "features", 0, 1)
    checksum = atomic_save_npy(file, np.zeros((4, 3), dtype=np.float32))  # right shape, wrong dtype
    _edit_manifest(tmp_path / "s", lambda m: m["splits"]["train"]["chunks"]["0"]["1"].update(features=checksum))
    problems = FeatureStore.open(tmp_path / "s").check()
    assert len(problems) == 1 and "float32" in problems[0] and "float64" in problems[0] and str(file) in problems[0]
    assert FeatureStore.open(tmp_path / "s").repair()[0].startswith("dropped chunk 1 of split 'train' at checkpoint 0")


def test_done_entries_that_name_no_chunk_or_checkpoint_are_problems_and_repaired(tmp_path):
    store = _filled(tmp_path / "s")
    entry = json.loads((store.path / "manifest.json").read_text())["splits"]["train"]["chunks"]["0"]["0"]

    def damage(manifest):
        chunks = manifest["splits"]["train"]["chunks"]
        chunks["0"]["7"] = entry  # the split has chunks 0..2
        chunks["1"]["2"] = {"features": 5}  # malformed entry
        chunks["5"] = {"0": entry}  # the store has 2 checkpoints

    _edit_manifest(tmp_path / "s", damage)
    problems = FeatureStore.open(tmp_path / "s").check()
    assert len(problems) == 3, problems
    assert any("'7'" in p and "chunks 0..2" in p for p in problems)
    assert any("malformed" in p for p in problems)
    assert any("checkpoint '5'" in p for p in problems)
    assert len(FeatureStore.open(tmp_path / "s").repair()) == 3
    reopened = FeatureStore.open(tmp_path / "s")
    assert reopened.check() == [] and reopened.missing_chunks("train", 1) == [(2, 8, 10)]
    assert sorted(json.loads((store.path / "manifest.json").read_text())["splits"]["train"]["chunks"]) == ["0", "1"]


def test_repair_takes_the_write_lock(tmp_path):
    store = _filled(tmp_path / "s")
    _file(store, "features", 0, 0).unlink()
    with store.writing():
        with pytest.raises(StoreError, match="another process is writing"):
            FeatureStore.open(tmp_path / "s").repair()
    assert len(FeatureStore.open(tmp_path / "s").check()) == 1  # nothing was dropped


def test_the_corruption_error_names_store_repair_as_the_fix(tmp_path):
    store = _filled(tmp_path / "s")
    file = _file(store, "features", 1, 2)
    file.write_bytes(file.read_bytes()[:-4])
    with pytest.raises(StoreCorruptedError) as err:
        FeatureStore.open(tmp_path / "s").verify()
    message = str(err.value)
    assert "checksum" in message and f"attributor store repair {store.path}" in message and "--overwrite" not in message
    _file(store, "out_to_loss", 0, 0).unlink()
    with pytest.raises(StoreCorruptedError, match="missing.*attributor store repair"):
        FeatureStore.open(tmp_path / "s").read_chunk("train", 0, 0)


@pytest.mark.parametrize("edit", [
    lambda m: m["splits"]["train"].update(chunks=[]),
    lambda m: m["splits"]["train"].update(chunks="0,1,2"),
    lambda m: m["splits"]["train"]["chunks"].update({"0": [0, 1]}),
    lambda m: m["splits"].update(train=[1, 2]),
    lambda m: m["splits"]["train"].update(n="10"),
    lambda m: m["settings"].update(chunk_size=True),
    lambda m: m["settings"].update(checkpoints="aaaa"),
])
def test_a_manifest_with_wrong_types_is_reported_as_corruption(tmp_path, edit):
    _filled(tmp_path / "s")
    _edit_manifest(tmp_path / "s", edit)
    with pytest.raises(StoreCorruptedError, match="manifest.json is damaged"):
        FeatureStore.open(tmp_path / "s")
