"""FeatureStore: manifest, settings checks, locking, done mask, corruption detection."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from attributor.errors import StoreCorruptedError, StoreError, StoreMismatchError
from attributor.features.store import SCHEMA_VERSION, FeatureStore


def _settings(**changes):
    settings = {
        "task": {"task": "classification"},
        "checkpoints": ["aaaa", "bbbb"],
        "projector": {"kind": "gaussian", "dim": 3, "seed": 0, "block_rows": 4096},
        "dtype": "float64",
        "chunk_size": 4,
        "n_params": 10,
        "dim": 3,
    }
    for key, value in changes.items():
        if "." in key:
            outer, inner = key.split(".")
            settings[outer] = {**settings[outer], inner: value}
        else:
            settings[key] = value
    return settings


def _chunk(store, split, index, seed=0):
    _, start, stop = store.chunk_bounds(split)[index]
    rng = np.random.default_rng(seed + 100 * index)
    return rng.normal(size=(stop - start, store.dim)), rng.uniform(size=stop - start)


def _filled(path: Path, n=10, dtype="float64", chunks=None):
    """A store with split 'train' of n rows; writes ``chunks`` (default all) at both checkpoints."""
    store = FeatureStore.create(path, _settings(dtype=dtype))
    store.add_split("train", n)
    written = {}
    with store.writing():
        for c in range(store.n_checkpoints):
            for index, _, _ in store.chunk_bounds("train"):
                if chunks is None or index in chunks:
                    written[c, index] = _chunk(store, "train", index, seed=c)
                    store.write_chunk("train", c, index, *written[c, index])
    return store, written


def _chunk_file(store: FeatureStore, name: str, checkpoint: int, index: int) -> Path:
    files = [f for f in (store.path / "train").rglob(f"{name}_*.npy")
             if int(f.stem.split("_")[-1]) == index and int(f.parent.name.removeprefix("ckpt")) == checkpoint]
    assert len(files) == 1, files
    return files[0]


def test_create_open_round_trip(tmp_path):
    store, written = _filled(tmp_path / "s")
    reopened = FeatureStore.open(tmp_path / "s")
    assert reopened.settings == _settings()
    assert reopened.splits == ["train"] and reopened.split_size("train") == 10
    assert reopened.dim == 3 and reopened.n_checkpoints == 2 and reopened.chunk_size == 4
    assert reopened.dtype == np.float64
    assert reopened.chunk_bounds("train") == [(0, 0, 4), (1, 4, 8), (2, 8, 10)]
    for c in range(2):
        features = np.concatenate([written[c, i][0] for i in range(3)])
        q = np.concatenate([written[c, i][1] for i in range(3)])
        assert np.array_equal(reopened.features("train", c), features)
        assert np.array_equal(reopened.out_to_loss("train", c), q)
    reopened.verify()


def test_manifest_records_schema_settings_and_checksums(tmp_path):
    store, _ = _filled(tmp_path / "s")
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["schema_version"] == SCHEMA_VERSION
    assert manifest["settings"] == _settings()
    chunks = manifest["splits"]["train"]["chunks"]
    assert sorted(chunks) == ["0", "1"] and sorted(chunks["1"]) == ["0", "1", "2"]
    for c in range(2):
        for i in range(3):
            for name in ("features", "out_to_loss"):
                digest = hashlib.sha256(_chunk_file(store, name, c, i).read_bytes()).hexdigest()
                assert chunks[str(c)][str(i)][name] == digest


def test_add_split_is_idempotent_but_refuses_another_size(tmp_path):
    store, _ = _filled(tmp_path / "s")
    store.add_split("train", 10)
    assert store.is_complete("train")
    with pytest.raises(StoreMismatchError):
        store.add_split("train", 11)
    with pytest.raises(StoreMismatchError):
        FeatureStore.open(tmp_path / "s").add_split("train", 10, data_id="other-data")
    assert FeatureStore.open(tmp_path / "s").split_size("train") == 10


@pytest.mark.parametrize("name", ["", "a/b", ".hidden"])
def test_invalid_split_names(tmp_path, name):
    store = FeatureStore.create(tmp_path / "s", _settings())
    with pytest.raises(StoreError):
        store.add_split(name, 3)


def test_same_settings_reopen_and_resume(tmp_path):
    _filled(tmp_path / "s", chunks={0})
    again = FeatureStore.create(tmp_path / "s", _settings())
    assert again.done_mask("train", 0).tolist() == [True] * 4 + [False] * 6


def test_other_settings_are_refused_naming_the_key(tmp_path):
    _filled(tmp_path / "s")
    with pytest.raises(StoreMismatchError) as info:
        FeatureStore.create(tmp_path / "s", _settings(**{"projector.dim": 5}))
    message = str(info.value)
    assert "projector.dim" in message and "--overwrite" in message
    assert "chunk_size" not in message  # only the differing key is named
    assert FeatureStore.open(tmp_path / "s").is_complete("train")  # nothing was touched


def test_overwrite_replaces_the_store(tmp_path):
    _filled(tmp_path / "s")
    store = FeatureStore.create(tmp_path / "s", _settings(**{"projector.dim": 5}), overwrite=True)
    assert store.splits == []
    reopened = FeatureStore.open(tmp_path / "s")
    assert reopened.settings["projector"]["dim"] == 5 and reopened.splits == []
    assert not (tmp_path / "s" / "train").exists()


def test_invalid_dtype_is_refused(tmp_path):
    with pytest.raises(StoreError):
        FeatureStore.create(tmp_path / "s", _settings(dtype="int8"))


def test_write_chunk_needs_the_write_lock(tmp_path):
    store = FeatureStore.create(tmp_path / "s", _settings())
    store.add_split("train", 10)
    with pytest.raises(StoreError, match="writing"):
        store.write_chunk("train", 0, 0, *_chunk(store, "train", 0))
    assert store.missing_chunks("train", 0) == store.chunk_bounds("train")


def test_a_second_writer_is_refused(tmp_path):
    store = FeatureStore.create(tmp_path / "s", _settings())
    store.add_split("train", 10)
    other = FeatureStore.open(tmp_path / "s")
    with store.writing():
        with pytest.raises(StoreError, match="another process"):
            with store.writing():
                pass
        with pytest.raises(StoreError, match="another process"):
            with other.writing():
                pass
        store.write_chunk("train", 0, 0, *_chunk(store, "train", 0))  # the first writer still works
    with other.writing():  # and the lock is free again afterwards
        pass


def test_write_chunk_checks_shapes(tmp_path):
    store = FeatureStore.create(tmp_path / "s", _settings())
    store.add_split("train", 10)
    features, q = _chunk(store, "train", 2)  # 2 rows
    with store.writing():
        with pytest.raises(StoreError):
            store.write_chunk("train", 0, 0, features, q)
    assert store.missing_chunks("train", 0) == store.chunk_bounds("train")


def test_done_mask_and_missing_chunks_follow_written_chunks(tmp_path):
    store = FeatureStore.create(tmp_path / "s", _settings())
    store.add_split("train", 10)
    assert not store.done_mask("train", 0).any()
    with store.writing():
        store.write_chunk("train", 0, 2, *_chunk(store, "train", 2))
        store.write_chunk("train", 1, 0, *_chunk(store, "train", 0))
    for s in (store, FeatureStore.open(tmp_path / "s")):
        assert s.done_mask("train", 0).tolist() == [False] * 8 + [True] * 2
        assert s.done_mask("train", 1).tolist() == [True] * 4 + [False] * 6
        assert s.missing_chunks("train", 0) == [(0, 0, 4), (1, 4, 8)]
        assert s.missing_chunks("train", 1) == [(1, 4, 8), (2, 8, 10)]
        assert not s.is_complete("train")
        with pytest.raises(StoreError, match="incomplete"):
            s.features("train", 0)
        with pytest.raises(StoreError):
            s.read_chunk("train", 0, 0)


def test_flipped_byte_is_detected(tmp_path):
    store, _ = _filled(tmp_path / "s")
    file = _chunk_file(store, "features", 1, 1)
    data = bytearray(file.read_bytes())
    data[-3] ^= 0x01  # inside the array data: still a valid .npy file
    file.write_bytes(bytes(data))
    reopened = FeatureStore.open(tmp_path / "s")
    reopened.read_chunk("train", 0, 1)  # other chunks are fine
    with pytest.raises(StoreCorruptedError, match="checksum"):
        reopened.read_chunk("train", 1, 1)
    with pytest.raises(StoreCorruptedError):
        reopened.verify()


def test_deleted_chunk_is_detected(tmp_path):
    store, _ = _filled(tmp_path / "s")
    _chunk_file(store, "out_to_loss", 0, 2).unlink()
    reopened = FeatureStore.open(tmp_path / "s")
    with pytest.raises(StoreCorruptedError, match="missing"):
        reopened.read_chunk("train", 0, 2)
    with pytest.raises(StoreCorruptedError):
        reopened.out_to_loss("train", 0)


@pytest.mark.parametrize("content", [b"{\"schema_version\": 1, \"settings\": {", b"[1, 2]", b"{}",
                                     b"{\"schema_version\": 1, \"settings\": {}, \"splits\": []}"])
def test_malformed_manifest_is_reported_as_corruption(tmp_path, content):
    _filled(tmp_path / "s")
    (tmp_path / "s" / "manifest.json").write_bytes(content)
    with pytest.raises(StoreCorruptedError):
        FeatureStore.open(tmp_path / "s")


def test_non_utf8_manifest_is_reported_as_corruption(tmp_path):
    _filled(tmp_path / "s")
    (tmp_path / "s" / "manifest.json").write_bytes(b"\xff\xfe{garbage")
    with pytest.raises(StoreCorruptedError):
        FeatureStore.open(tmp_path / "s")


def test_opening_a_directory_that_is_not_a_store(tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(StoreError, match="no feature store"):
        FeatureStore.open(tmp_path / "plain")
    with pytest.raises(StoreError):
        FeatureStore.open(tmp_path / "does-not-exist")
    assert not FeatureStore.exists(tmp_path / "plain")


def test_creating_in_a_non_empty_foreign_directory_is_refused(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "thesis.tex").write_text("precious")
    with pytest.raises(StoreError, match="not a feature store"):
        FeatureStore.create(folder, _settings())
    with pytest.raises(StoreError):
        FeatureStore.create(folder, _settings(), overwrite=True)
    assert (folder / "thesis.tex").read_text() == "precious"
    assert not (folder / "manifest.json").exists()


def test_creating_in_an_empty_directory_is_fine(tmp_path):
    (tmp_path / "empty").mkdir()
    FeatureStore.create(tmp_path / "empty", _settings())
    assert FeatureStore.exists(tmp_path / "empty")


def test_reads_are_memory_mapped_and_exact(tmp_path):
    store, written = _filled(tmp_path / "s")
    features, q = FeatureStore.open(tmp_path / "s").read_chunk("train", 1, 1)
    assert isinstance(features, np.memmap) and isinstance(q, np.memmap)
    assert np.array_equal(features, written[1, 1][0]) and np.array_equal(q, written[1, 1][1])
    direct = np.load(_chunk_file(store, "features", 1, 1), mmap_mode="r", allow_pickle=False)
    assert isinstance(direct, np.memmap) and direct.dtype == np.float64
    assert np.array_equal(direct, written[1, 1][0])


def test_float16_storage_round_trips_within_float16_precision(tmp_path):
    store, written = _filled(tmp_path / "s", dtype="float16")
    features = store.features("train", 0)
    assert features.dtype == np.float16
    expected = np.concatenate([written[0, i][0] for i in range(3)])
    np.testing.assert_allclose(features.astype(np.float64), expected, rtol=1e-3, atol=1e-4)
    assert not np.array_equal(features.astype(np.float64), expected)  # it really is float16
    q = store.out_to_loss("train", 0)
    np.testing.assert_allclose(q, np.concatenate([written[0, i][1] for i in range(3)]), rtol=1e-6)


def test_a_store_object_sees_splits_added_through_another(tmp_path):
    """featurize returns a new store object per split; an earlier object must not go stale."""
    first = FeatureStore.create(tmp_path / "s", _settings())
    second = FeatureStore.open(tmp_path / "s")
    second.add_split("test", 3)
    assert first.split_size("test") == 3
