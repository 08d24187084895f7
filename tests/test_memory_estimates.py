"""Memory estimates before large allocations (issue 19, 'what to build' 4; case 10's --proj-dim
200000000): the projection matrix, TRAK's kernels and dense scores are refused in one line with
the arithmetic when they cannot fit in the memory available (ATTRIBUTOR_MEMORY_LIMIT_MB in tests)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import yaml

from attributor.cli import main
from attributor.errors import AttributorError
from attributor.features.store import FeatureStore
from attributor.methods import TRAK
from zoo import TINY_RUN

SMALL = {**TINY_RUN, "data": {"name": "digits", "max_train": 96}, "train": {"epochs": 1, "checkpoint_epochs": [1]},
         "featurize": {"proj_dim": 16, "chunk_size": 16}}


def _store(path, n=40, m=30, k=64, checkpoints=2):
    settings = {"task": {"task": "classification"}, "checkpoints": [f"c{c}" for c in range(checkpoints)],
                "projector": {"kind": "gaussian", "dim": k, "seed": 0, "block_rows": 4096},
                "dtype": "float64", "chunk_size": 16, "n_params": 10, "dim": k}
    store = FeatureStore.create(path, settings)
    rng = np.random.default_rng(0)
    for split, rows in (("train", n), ("query", m)):
        store.add_split(split, rows)
        with store.writing():
            for c in range(checkpoints):
                for i, lo, hi in store.chunk_bounds(split):
                    store.write_chunk(split, c, i, rng.standard_normal((hi - lo, k)), rng.random(hi - lo))
    return store


def test_trak_kernels_that_do_not_fit_are_refused_before_fit(tmp_path, monkeypatch):
    store = _store(tmp_path / "s", k=64)  # 2 checkpoints x 64 x 64 x 8 bytes = 65,536 bytes of kernels
    monkeypatch.setenv("ATTRIBUTOR_MEMORY_LIMIT_MB", "0.05")  # 52,428 bytes
    with pytest.raises(AttributorError) as caught:
        TRAK().fit(store, "train")
    message = str(caught.value)
    assert "\n" not in message
    assert "2 x 64 x 64 x 8 bytes" in message and "GB" in message and "available" in message
    assert "--proj-dim" in message
    monkeypatch.setenv("ATTRIBUTOR_MEMORY_LIMIT_MB", "1")
    TRAK().fit(store, "train")  # fits now


def test_dense_scores_that_do_not_fit_are_refused_and_topk_only_still_works(tmp_path, monkeypatch):
    store = _store(tmp_path / "s", n=400, m=300, k=4)  # dense 300 x 400 x 8 bytes = 960,000 bytes
    method = TRAK().fit(store, "train")
    monkeypatch.setenv("ATTRIBUTOR_MEMORY_LIMIT_MB", "0.5")
    with pytest.raises(AttributorError) as caught:
        method.score("query", topk=3)
    message = str(caught.value)
    assert "\n" not in message and "300 x 400 x 8 bytes" in message and "dense=False" in message and "available" in message
    scores = method.score("query", topk=3, dense=False)
    assert scores.top_indices.shape == (300, 3)


def test_memory_limit_env_var_must_be_a_number(monkeypatch):
    from attributor.memory import available_bytes

    monkeypatch.setenv("ATTRIBUTOR_MEMORY_LIMIT_MB", "lots")
    with pytest.raises(AttributorError, match="ATTRIBUTOR_MEMORY_LIMIT_MB"):
        available_bytes()
    monkeypatch.delenv("ATTRIBUTOR_MEMORY_LIMIT_MB")
    assert available_bytes() > 0


@pytest.mark.parametrize("limit", [None, "200"])
def test_a_huge_proj_dim_is_refused_in_one_line_with_the_arithmetic(tmp_path, capsys, monkeypatch, limit):
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump(SMALL))
    dim = "200000000" if limit is None else "200000"  # 4096 x 200,000 x 4 bytes = 3.3 GB > 200 MB
    if limit is not None:
        monkeypatch.setenv("ATTRIBUTOR_MEMORY_LIMIT_MB", limit)
    code = main(["featurize", "-c", str(config), "-o", str(tmp_path / "r"), "-q", "--projection", "gaussian", "--proj-dim", dim])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "internal error" not in err
    assert re.search(rf"projection matrix \(\d+ x {dim} x 4 bytes\) = [\d.,]+ GB", err), err
    assert "available" in err and "--proj-dim" in err and "factored" in err
    assert not (tmp_path / "r" / "store" / "manifest.json").exists()  # refused before the store was written
