"""The Ray executor: same results as the local one, retries, resumption, featurize shards.

One local Ray instance (num_cpus=2) serves the whole module; the tests skip when ray is
not installed (pip install 'attributor[ray]').
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from attributor.cli import main
from attributor.config import load_config
from attributor.data import load_dataset
from attributor.errors import ConfigError, DataError
from attributor.evaluation.retrain import ClassificationRecipe, LocalExecutor, Recipe, random_subsets, retrain
from attributor.executors import RayExecutor, make_executor

RUN_SETTINGS = ["data.max_train=200", "train.epochs=2", "train.checkpoint_epochs=[1,2]", "featurize.proj_dim=32",
                "featurize.chunk_size=48", "featurize.projection=factored"]


@pytest.fixture(scope="module")
def ray_executor():
    ray = pytest.importorskip("ray")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    executor = RayExecutor(num_cpus=2, max_retries=2)
    executor.connect()
    yield executor
    ray.shutdown()


@pytest.fixture(scope="module")
def recipe():
    data = load_dataset("digits", max_train=150, seed=0)
    return ClassificationRecipe(data.X_train, data.y_train, data.X_test[:12], data.y_test[:12], model="logreg",
                                trainer="lbfgs", train_args={"l2": 1e-1}, n_classes=data.n_classes, dtype="float64")


@dataclass(frozen=True, eq=False)
class CountingRecipe(Recipe):
    """``base`` (same fingerprint, so the same cache), leaving one file in ``folder`` per run."""

    base: Recipe
    folder: str

    def fingerprint(self) -> str:
        return self.base.fingerprint()

    def run(self, mask: np.ndarray) -> dict[str, np.ndarray]:
        Path(self.folder, uuid.uuid4().hex).touch()
        return self.base.run(mask)


def _dies_once(folder: str):
    def task(item: int) -> int:
        marker = Path(folder, f"attempt-{item}")
        if not marker.exists():
            marker.touch()
            os._exit(1)  # the worker process dies: Ray restarts it and retries the task
        return item * item
    return task


def _fails_once(folder: str):
    def task(item: int) -> int:
        marker = Path(folder, f"attempt-{item}")
        if not marker.exists():
            marker.touch()
            raise RuntimeError("transient failure")
        return -item
    return task


def _always_bad(item: int) -> int:
    raise DataError(f"item {item} is bad")


def test_a_missing_ray_is_a_config_error_with_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ConfigError, match=r"pip install 'attributor\[ray\]'"):
        list(RayExecutor(num_cpus=1).map_unordered(abs, [1]))


def test_make_executor_and_its_refusals():
    assert isinstance(make_executor("local", 3), LocalExecutor) and make_executor("local", 3).workers == 3
    executor = make_executor("ray", 2, max_retries=1)
    assert isinstance(executor, RayExecutor) and executor.num_cpus == 2 and executor.max_retries == 1
    assert make_executor("ray", 2, "auto").num_cpus is None  # a cluster decides its own resources
    for bad in [lambda: make_executor("spark"), lambda: make_executor("local", 1, "auto"), lambda: RayExecutor(max_retries=-1)]:
        with pytest.raises(ConfigError):
            bad()


def test_retrain_on_ray_equals_local(ray_executor, recipe, tmp_path):
    masks = random_subsets(150, 6, seed=0)
    on_ray = retrain(recipe, masks, tmp_path / "ray", executor=ray_executor, progress=False)
    local = retrain(recipe, masks, tmp_path / "local", executor=LocalExecutor(), progress=False)
    assert on_ray.keys() == local.keys()
    for key in local:
        np.testing.assert_array_equal(on_ray[key], local[key])
    names = lambda root: sorted(p.relative_to(root).as_posix() for p in root.rglob("*.npz"))  # noqa: E731
    assert names(tmp_path / "ray") == names(tmp_path / "local") and len(names(tmp_path / "local")) == 6


def test_a_task_whose_worker_dies_is_retried(ray_executor, tmp_path):
    assert sorted(ray_executor.map_unordered(_dies_once(str(tmp_path)), [2, 3])) == [(0, 4), (1, 9)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["attempt-2", "attempt-3"]


def test_a_task_that_raises_once_is_retried_and_a_persistent_error_comes_back_as_itself(ray_executor, tmp_path):
    assert sorted(ray_executor.map_unordered(_fails_once(str(tmp_path)), [1, 5])) == [(0, -1), (1, -5)]
    with pytest.raises(DataError, match="item 7 is bad"):
        list(RayExecutor(max_retries=1).map_unordered(_always_bad, [7]))


class _Interrupted(Exception):
    pass


class _KilledAfter(RayExecutor):
    """A driver that dies (here: raises) after ``after`` results have been committed."""

    def __init__(self, after: int):
        super().__init__()
        self.after = after

    def map_unordered(self, fn, items):
        for count, pair in enumerate(super().map_unordered(fn, items)):
            if count == self.after:
                raise _Interrupted
            yield pair


def test_a_killed_driver_resumes_without_recomputing_committed_work(ray_executor, recipe, tmp_path):
    masks = random_subsets(150, 6, seed=1)
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    with pytest.raises(_Interrupted):
        retrain(CountingRecipe(recipe, str(first)), masks, tmp_path / "cache", executor=_KilledAfter(3), progress=False)
    committed = len(list((tmp_path / "cache").rglob("*.npz")))
    assert committed == 3
    resumed = retrain(CountingRecipe(recipe, str(second)), masks, tmp_path / "cache", executor=ray_executor, progress=False)
    assert len(list(second.iterdir())) == 6 - committed  # only the uncommitted masks are trained again
    expected = retrain(recipe, masks, tmp_path / "fresh", progress=False)
    np.testing.assert_array_equal(resumed["measurement"], expected["measurement"])


def _chunk_checksums(store_path: Path) -> dict:
    manifest = json.loads((store_path / "manifest.json").read_text())
    return {split: entry["chunks"] for split, entry in manifest["splits"].items()}


def test_featurize_on_ray_is_bit_identical_to_the_serial_store(ray_executor, tmp_path):
    from attributor.pipelines import Run

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a Ray task runs torch with num_cpus_per_task (1) threads; BLAS sums depend on it
    try:
        serial = Run(tmp_path / "serial", load_config(None, RUN_SETTINGS), progress=False).store()
        # a driver killed after shard 0 of 3 was committed: that shard store is on disk
        committed = Run(tmp_path / "ray", load_config(None, RUN_SETTINGS), progress=False).store(shard=(0, 3))
    finally:
        torch.set_num_threads(threads)
    inodes = {f.relative_to(committed.path): f.stat().st_ino for f in committed.path.rglob("*.npy")}
    args = [item for setting in RUN_SETTINGS for item in ("--set", setting)]
    assert main(["featurize", "-o", str(tmp_path / "ray"), "-q", "--executor", "ray", "--workers", "2",
                 "--set", "executor.shards=3", *args]) == 0
    assert _chunk_checksums(tmp_path / "ray" / "store") == _chunk_checksums(serial.path)
    merged = tmp_path / "ray" / "store"
    assert inodes and all((merged / name).stat().st_ino == inode for name, inode in inodes.items())  # linked, not recomputed
    assert len(_chunk_checksums(serial.path)["train"]["0"]) == 5  # 200 rows in chunks of 48: shards of 1, 2, 2 chunks
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == [".lock", "checkpoints", "config.json", "data.npz", "store"]
    saved = json.loads((tmp_path / "ray" / "config.json").read_text())
    assert saved["executor"]["kind"] == "ray"
    # the executor settings never make a run recompute: the serial config reopens the Ray-made run as is
    assert main(["featurize", "-o", str(tmp_path / "ray"), "-q", "--executor", "local", *args]) == 0


def test_bench_on_ray_gives_the_same_lds_as_local(ray_executor, tmp_path):
    from attributor.pipelines.bench import run_bench
    from attributor.pipelines.bench_tasks import BenchTask, Suite

    task = BenchTask("digits-mlp", "digits", "mlp", hidden=(8,), epochs=2, checkpoint_epochs=(1, 2), max_train=80, n_queries=5)
    suite = Suite(tasks=(task,), n_subsets=6, proj_dim=16, peers=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a Ray task
    try:
        local = run_bench(suite, tmp_path / "local", methods=["trak"], executor=LocalExecutor(), progress=False)
    finally:
        torch.set_num_threads(threads)
    on_ray = run_bench(suite, tmp_path / "ray", methods=["trak"], executor=ray_executor, progress=False)
    keys = ("lds", "lds_low", "lds_high", "lds_random", "auc")
    assert [[row[k] for k in keys] for row in on_ray] == [[row[k] for k in keys] for row in local]


def test_the_executor_config_section_is_checked_and_flags_refuse_bad_combinations(tmp_path, capsys):
    assert load_config(None, ["executor.kind=ray", "executor.address=auto"]).executor.address == "auto"
    with pytest.raises(ConfigError, match="executor.address needs executor.kind=ray"):
        load_config(None, ["executor.address=auto"])
    assert main(["featurize", "-o", str(tmp_path / "a"), "--executor", "local", "--ray-address", "auto"]) == 2
    assert "--ray-address needs --executor ray" in capsys.readouterr().err
    assert main(["bench", "--executor", "spark", "--out", str(tmp_path / "b"), "-q"]) == 2
    assert "unknown executor 'spark'" in capsys.readouterr().err
