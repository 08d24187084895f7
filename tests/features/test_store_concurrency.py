"""Two writers on one store (issue 19, case 9): the store's lock covers every manifest write,
the temp-file sweep spares a live writer's files, and the loser gets one message."""

from __future__ import annotations

import fcntl
import subprocess
import sys

import pytest

from attributor.errors import StoreError
from attributor.features.store import FeatureStore

ONE_MESSAGE = r"another process is writing the feature store at .*; wait for it to finish or use another --out"


def _settings(**changes):
    settings = {"task": {"task": "classification"}, "checkpoints": ["aaaa"], "dtype": "float64", "chunk_size": 4,
                "projector": {"kind": "gaussian", "dim": 3, "seed": 0, "block_rows": 4096}, "n_params": 10, "dim": 3}
    return {**settings, **changes}


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_sweep_spares_a_live_writers_temp_file(tmp_path):
    store = FeatureStore.create(tmp_path / "s", _settings())
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = store.path / f".manifest.json.{sleeper.pid}.abcd.tmp"
        dead = store.path / f".manifest.json.{_dead_pid()}.efgh.tmp"
        for file in (live, dead):
            file.write_text("{}")
        with store.writing():
            pass
        assert live.exists(), "the temp file of a live process was deleted"
        assert not dead.exists(), "the temp file of a dead process was kept"
    finally:
        sleeper.kill()
        sleeper.wait()


def test_temp_files_are_named_with_the_writers_pid(tmp_path, monkeypatch):
    import os

    import attributor._io as io_module

    seen = []
    real_replace = os.replace
    monkeypatch.setattr(io_module.os, "replace", lambda src, dst: (seen.append(str(src)), real_replace(src, dst))[1])
    FeatureStore.create(tmp_path / "s", _settings())
    assert seen and all(f".{os.getpid()}." in name for name in seen)


def _hold_lock(path):
    path.mkdir(parents=True, exist_ok=True)
    handle = open(path / ".lock", "w")
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return handle


def test_add_split_waits_for_no_one_and_writes_nothing_under_anothers_lock(tmp_path):
    store = FeatureStore.create(tmp_path / "s", _settings())
    before = (store.path / "manifest.json").read_bytes()
    handle = _hold_lock(store.path)  # another writer (another open file description)
    try:
        with pytest.raises(StoreError, match=ONE_MESSAGE):
            store.add_split("train", 10)
        assert (store.path / "manifest.json").read_bytes() == before
    finally:
        handle.close()
    store.add_split("train", 10)  # once the lock is free
    assert FeatureStore.open(store.path).splits == ["train"]


def test_create_in_a_store_another_process_is_creating(tmp_path):
    handle = _hold_lock(tmp_path / "s")  # the other process made the folder and holds the lock, no manifest yet
    try:
        with pytest.raises(StoreError, match=ONE_MESSAGE):
            FeatureStore.create(tmp_path / "s", _settings())
    finally:
        handle.close()
    assert FeatureStore.create(tmp_path / "s", _settings()).check() == []


def test_overwrite_under_anothers_lock_is_refused_and_keeps_the_store(tmp_path):
    FeatureStore.create(tmp_path / "s", _settings())
    handle = _hold_lock(tmp_path / "s")
    try:
        with pytest.raises(StoreError, match=ONE_MESSAGE):
            FeatureStore.create(tmp_path / "s", _settings(dim=5), overwrite=True)
    finally:
        handle.close()
    assert FeatureStore.open(tmp_path / "s").dim == 3


def test_writing_sees_what_another_writer_committed(tmp_path):
    import numpy as np

    store = FeatureStore.create(tmp_path / "s", _settings())
    store.add_split("train", 8)
    other = FeatureStore.open(tmp_path / "s")
    with other.writing():
        other.write_chunk("train", 0, 0, np.zeros((4, 3)), np.zeros(4))
    with store.writing():  # an object opened before the other's commit
        store.write_chunk("train", 0, 1, np.ones((4, 3)), np.ones(4))
    reopened = FeatureStore.open(tmp_path / "s")
    assert reopened.is_complete("train") and reopened.check() == []
