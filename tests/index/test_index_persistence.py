"""The index folder: atomic builds, refusal of corrupted files and of changed stores."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from index_support import make_store

import attributor.index.build as build_module
from attributor.errors import StoreCorruptedError, StoreError, StoreMismatchError
from attributor.index import build_index, open_index


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_manifest_records_the_build(built, store):
    manifest = built["ivf-pq"].manifest
    for key in ("schema_version", "kind", "params", "metric", "normalize", "n", "dim", "store", "split", "checkpoint",
                "store_fingerprint", "build_seconds", "created", "sha256"):
        assert key in manifest
    assert manifest["store"] == str(store.path.resolve()) and manifest["params"]["nprobe"] == 16
    assert sorted(os.listdir(built["ivf-pq"].path)) == ["index.faiss", "manifest.json"]


def test_an_error_inside_the_build_leaves_nothing(store, tmp_path, monkeypatch):
    calls = []

    def failing(*args):
        for item in original(*args):
            calls.append(item)
            if len(calls) == 2:
                raise RuntimeError("disk on fire")
            yield item

    original = build_module._chunks
    monkeypatch.setattr(build_module, "_chunks", failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        build_index(store, tmp_path / "idx", "flat", progress=False)
    assert _leftovers(tmp_path) == []


def test_a_failed_write_keeps_the_old_index(store, vectors, tmp_path, monkeypatch):
    old = build_index(store, tmp_path / "idx", "flat", progress=False)
    before = old.search(vectors[1], 5)
    monkeypatch.setattr("faiss.write_index", lambda *a: (_ for _ in ()).throw(OSError("no space left")))
    with pytest.raises(OSError, match="no space"):
        build_index(store, tmp_path / "idx", "hnsw", M=8, overwrite=True, progress=False)
    assert _leftovers(tmp_path) == ["idx"]
    again = open_index(tmp_path / "idx")
    assert again.kind == "flat"
    np.testing.assert_array_equal(again.search(vectors[1], 5)[1], before[1])


def test_a_killed_build_leaves_no_index_that_opens(store, tmp_path):
    script = textwrap.dedent(f"""
        import sys, time
        import attributor.index.build as b
        original = b._chunks
        def slow(*args):
            for i, item in enumerate(original(*args)):
                if i == 2:
                    print("adding", flush=True)
                    time.sleep(60)
                yield item
        b._chunks = slow
        b.build_index({str(store.path)!r}, {str(tmp_path / 'idx')!r}, "flat", progress=False)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "adding"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert not (tmp_path / "idx").exists()
    with pytest.raises(StoreError, match="no index at"):
        open_index(tmp_path / "idx")
    assert all(name.startswith(".idx.") for name in _leftovers(tmp_path))  # only the hidden temp folder
    build_index(store, tmp_path / "idx", "flat", progress=False)  # a new build is not blocked by it
    assert open_index(tmp_path / "idx").n == store.split_size("train")


def test_existing_folder_is_refused_unless_overwrite(store, tmp_path):
    build_index(store, tmp_path / "idx", "flat", progress=False)
    with pytest.raises(StoreError, match="already exists.*--overwrite"):
        build_index(store, tmp_path / "idx", "flat", progress=False)
    replaced = build_index(store, tmp_path / "idx", "ivf-sq8", nlist=8, overwrite=True, progress=False)
    assert open_index(tmp_path / "idx").kind == "ivf-sq8" == replaced.kind
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(StoreError, match="not an index"):
            build_index(store, tmp_path / "other", "flat", overwrite=overwrite, progress=False)
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def _copy(index, dest: Path) -> Path:
    dest.mkdir()
    for name in ("index.faiss", "manifest.json"):
        (dest / name).write_bytes((index.path / name).read_bytes())
    return dest


def test_corrupted_missing_and_foreign_files_are_refused(built, tmp_path):
    flipped = _copy(built["ivf-sq8"], tmp_path / "flipped")
    data = bytearray((flipped / "index.faiss").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (flipped / "index.faiss").write_bytes(bytes(data))
    with pytest.raises(StoreCorruptedError, match="does not match its checksum"):
        open_index(flipped)

    missing = _copy(built["flat"], tmp_path / "missing")
    (missing / "index.faiss").unlink()
    with pytest.raises(StoreCorruptedError, match="index.faiss is missing"):
        open_index(missing)

    schema = _copy(built["flat"], tmp_path / "schema")
    manifest = json.loads((schema / "manifest.json").read_text())
    (schema / "manifest.json").write_text(json.dumps(manifest | {"schema_version": 99}))
    with pytest.raises(StoreCorruptedError, match="schema version 99"):
        open_index(schema)

    (schema / "manifest.json").write_text("{not json")
    with pytest.raises(StoreCorruptedError, match="cannot read"):
        open_index(schema)

    truncated = _copy(built["flat"], tmp_path / "truncated")
    manifest = json.loads((truncated / "manifest.json").read_text())
    (truncated / "index.faiss").write_bytes(b"IxF2garbage")
    (truncated / "manifest.json").write_text(json.dumps(manifest | {"sha256": __import__("attributor._io", fromlist=["x"]).sha256_file(truncated / "index.faiss")}))
    with pytest.raises(StoreCorruptedError, match="FAISS cannot read"):
        open_index(truncated)

    with pytest.raises(StoreError, match="no index at"):
        open_index(tmp_path / "nowhere")


def test_a_store_whose_rows_changed_is_refused(vectors, tmp_path):
    rows = vectors[0][:600]
    store = make_store(tmp_path / "store", rows, chunk_size=256)
    build_index(store, tmp_path / "idx", "flat", progress=False)
    open_index(tmp_path / "idx", store=store)            # unchanged: fine
    open_index(tmp_path / "idx", store=tmp_path / "store")  # a path works too
    with store.writing():
        store.write_chunk("train", 0, 1, rows[256:512][::-1].copy(), np.zeros(256, np.float32))
    with pytest.raises(StoreMismatchError, match="other rows.*--overwrite"):
        open_index(tmp_path / "idx", store=store)
    with pytest.raises(StoreMismatchError):
        open_index(tmp_path / "idx").check_store(store)
    other = make_store(tmp_path / "other", rows[::-1].copy(), chunk_size=256)
    with pytest.raises(StoreMismatchError):
        open_index(tmp_path / "idx", store=other)


def test_incomplete_store_is_refused(vectors, tmp_path):
    from attributor.features.store import FeatureStore

    store = FeatureStore.create(tmp_path / "s", {"dtype": "float32", "dim": 8, "checkpoints": ["c0"], "chunk_size": 4})
    store.add_split("train", 10)
    with pytest.raises(StoreError, match="incomplete"):
        build_index(store, tmp_path / "idx", "flat", progress=False)
    assert not (tmp_path / "idx").exists()


def test_float16_store_is_indexed_as_float32(vectors, tmp_path):
    from attributor.features.store import FeatureStore

    rows = vectors[0][:300]
    store = FeatureStore.create(tmp_path / "s", {"dtype": "float16", "dim": rows.shape[1], "checkpoints": ["c0"], "chunk_size": 128})
    store.add_split("train", len(rows))
    with store.writing():
        for i, a, b in store.chunk_bounds("train"):
            store.write_chunk("train", 0, i, rows[a:b], np.zeros(b - a))
    _, ids = build_index(store, tmp_path / "idx", "flat", progress=False).search(rows[:5], 1)
    assert ids[:, 0].tolist() == list(range(5))
