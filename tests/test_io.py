"""atomic_save_npy: the file np.save would write, its sha256, nothing left half-written."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest

from attributor._io import atomic_save_npy, sha256_file


@pytest.mark.parametrize("array", [
    np.arange(12, dtype=np.float32).reshape(3, 4),
    np.random.default_rng(0).random((5, 3)).T,  # not C-contiguous
    np.zeros((0, 7), dtype=np.float16),
    np.arange(5, dtype=np.int64),
], ids=["float32", "transposed", "empty", "int64"])
def test_atomic_save_npy_writes_what_np_save_writes_and_returns_its_hash(tmp_path, array):
    path = tmp_path / "a.npy"
    digest = atomic_save_npy(path, array)
    expected = io.BytesIO()
    np.save(expected, np.ascontiguousarray(array), allow_pickle=False)
    assert path.read_bytes() == expected.getvalue()
    assert digest == sha256_file(path) == hashlib.sha256(expected.getvalue()).hexdigest()
    back = np.load(path, mmap_mode="r")
    assert back.dtype == array.dtype and back.shape == array.shape and np.array_equal(back, array)
    assert [p.name for p in tmp_path.iterdir()] == ["a.npy"]


def test_atomic_save_npy_refuses_object_arrays_and_leaves_no_file(tmp_path):
    with pytest.raises(TypeError, match="numeric"):
        atomic_save_npy(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object))
    assert list(tmp_path.iterdir()) == []
