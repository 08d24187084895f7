"""Ray scale-out: featurize shards and LDS retrains on 1 vs 2 Ray workers, checked against serial.

    python benchmarks/ray_scaling.py --out runs/bench-ray

writes runs/bench-ray/ray_scaling.csv (columns stage, executor, workers, wall_s,
identical_to_serial), prints it as a Markdown table, then notes with the per-task costs
and the arithmetic for N machines. Needs ``pip install 'attributor[ray]'``. The recorded
table is in benchmarks/RESULTS.md.

Stages (the data, the checkpoints and the Ray start are prepared outside the timings):

* ``featurize``: the digits run (1,347 train + 450 test examples, the MLP 64-128-10,
  ``--checkpoints`` checkpoints (4), gaussian projection to k = ``--proj-dim`` (2048) from
  exact per-example gradients, chunks of 128 rows), featurized into ``OUT/featurize-*/store``: serially in
  this process (the reference), then as ``--shards`` shard tasks on Ray
  (:func:`attributor.executors.featurize_on_executor`: shard stores, then ``store merge``).
  identical_to_serial: every chunk checksum of the merged manifest equals the serial one.
* ``lds-retrain``: ``--retrains`` (50) retrains of the bench's digits-mlp recipe (``--suite
  full``: 1,347 training examples, hidden 128, 40 epochs of Adam, 100 queries; ``quick``:
  300 examples, hidden 32, 20 epochs, 30 queries) on random half subsets, serial
  (``LocalExecutor()``, in-process) then one Ray task per subset, each into a fresh
  cache. identical_to_serial: the same cache files and every output (measurement, loss,
  prediction) bit-equal, hence the same LDS for any scores.

Threads: every task, and the serial reference, runs torch with one thread (a Ray task
gets ``num_cpus_per_task`` = 1 thread); BLAS reductions with another thread count can
differ in the last bit, so bit-identity is defined at equal threads per task. The machine
has 2 cores shared with other jobs: 2 workers cannot reach 2x when a neighbour is busy.
For each worker count a fresh local Ray (``num_cpus=workers``) is started and warmed up
(one task per worker featurizes one chunk and trains one subset: a worker's first call
pays ~1.5 s of one-off set-up) before the clock starts.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from attributor.config import load_config
from attributor.data import load_dataset
from attributor.evaluation.retrain import ClassificationRecipe, LocalExecutor, random_subsets, retrain
from attributor.executors import RayExecutor, featurize_on_executor
from attributor.pipelines import Run
from attributor.pipelines.bench_tasks import SUITES

COLUMNS = ["stage", "executor", "workers", "wall_s", "identical_to_serial"]


def _run_settings(checkpoints: int, proj_dim: int) -> list[str]:
    epochs = list(range(10, 10 * checkpoints + 1, 10))
    return [f"train.epochs={epochs[-1]}", f"train.checkpoint_epochs={json.dumps(epochs)}", "featurize.projection=gaussian",
            f"featurize.proj_dim={proj_dim}", "featurize.chunk_size=128", "featurize.batch_size=64"]


def _checksums(store_path: Path) -> dict:
    manifest = json.loads((store_path / "manifest.json").read_text())
    return {split: entry["chunks"] for split, entry in manifest["splits"].items()}


def _copy_inputs(source: Path, target: Path) -> None:
    """A fresh run directory with the reference run's data, checkpoints and config (not its store)."""
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for name in ("data.npz", "config.json"):
        shutil.copy2(source / name, target / name)
    shutil.copytree(source / "checkpoints", target / "checkpoints")


def _recipe(suite: str) -> ClassificationRecipe:
    """The bench suite's digits-mlp retrain recipe (its clean data: no flipped labels)."""
    task = next(t for t in SUITES[suite].tasks if t.name == "digits-mlp")
    return task.recipe(load_dataset(task.dataset, max_train=task.max_train, seed=task.seed))


def _warm_up(item) -> int:
    """One small piece of each stage (a 1-chunk featurize shard, one retrain): a worker's first
    featurize and first training pay one-off costs (imports, torch.func set-up) of about 1.5 s."""
    from attributor.executors.featurize import featurize_shard

    scratch, config, shard, recipe, mask = item
    featurize_shard((scratch, config, shard))
    recipe.run(mask)
    time.sleep(0.5)  # keeps the warm-up tasks on different workers
    return 0


def _equal_outputs(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[key], b[key]) for key in a)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Ray worker counts to measure")
    parser.add_argument("--retrains", type=int, default=50, help="LDS retrains (random half subsets)")
    parser.add_argument("--shards", type=int, default=4, help="featurize shard tasks")
    parser.add_argument("--checkpoints", type=int, default=4, help="checkpoints of the featurized run")
    parser.add_argument("--proj-dim", type=int, default=2048, help="projected dimension k of the featurized run")
    parser.add_argument("--suite", choices=["quick", "full"], default="full", help="whose digits-mlp recipe the retrains use")
    args = parser.parse_args(argv)
    import ray

    torch.set_num_threads(1)
    out = args.out.absolute()
    out.mkdir(parents=True, exist_ok=True)
    config = load_config(None, _run_settings(args.checkpoints, args.proj_dim))
    rows, notes = [], []

    reference = out / "featurize-serial"
    shutil.rmtree(reference, ignore_errors=True)
    run = Run(reference, config, progress=False)
    run.data(), run.checkpoints()
    start = time.perf_counter()
    serial_store = run.store()
    rows.append(["featurize", "local", 1, time.perf_counter() - start, True])
    serial_sums = _checksums(serial_store.path)
    n_chunks = sum(len(chunks) for split in serial_sums.values() for chunks in split.values())

    recipe = _recipe(args.suite)
    masks = random_subsets(len(recipe.y_train), args.retrains, seed=0)
    shutil.rmtree(out / "cache-serial", ignore_errors=True)
    start = time.perf_counter()
    serial_outputs = retrain(recipe, masks, out / "cache-serial", executor=LocalExecutor(), progress=False)
    rows.append(["lds-retrain", "local", 1, time.perf_counter() - start, True])
    serial_files = sorted(p.name for p in (out / "cache-serial").rglob("*.npz"))

    for workers in args.workers:
        start = time.perf_counter()
        executor = RayExecutor(num_cpus=workers)
        scratch = out / "warm-up"
        _copy_inputs(reference, scratch)
        warm = [(str(scratch), config.model_dump(mode="json"), (i, 64), recipe, masks[i]) for i in range(workers)]
        list(executor.map_unordered(_warm_up, warm))
        shutil.rmtree(scratch)
        notes.append(f"Ray start + warm-up with {workers} worker(s): {time.perf_counter() - start:.1f} s (not in the table)")

        target = out / f"featurize-ray-{workers}"
        _copy_inputs(reference, target)
        start = time.perf_counter()
        store = featurize_on_executor(config, target, args.shards, executor, progress=False)
        rows.append(["featurize", "ray", workers, time.perf_counter() - start, _checksums(store.path) == serial_sums])

        cache = out / f"cache-ray-{workers}"
        shutil.rmtree(cache, ignore_errors=True)
        start = time.perf_counter()
        outputs = retrain(recipe, masks, cache, executor=executor, progress=False)
        same = _equal_outputs(outputs, serial_outputs) and sorted(p.name for p in cache.rglob("*.npz")) == serial_files
        rows.append(["lds-retrain", "ray", workers, time.perf_counter() - start, same])
        ray.shutdown()

    with open(out / "ray_scaling.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        writer.writerows([[s, e, w, f"{t:.2f}", str(i).lower()] for s, e, w, t, i in rows])
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for stage, executor_name, workers, wall, same in rows:
        print(f"| {stage} | {executor_name} | {workers} | {wall:.2f} | {str(same).lower()} |")

    serial = {row[0]: row[3] for row in rows if row[1] == "local"}
    per_retrain = serial["lds-retrain"] / args.retrains
    per_chunk = serial["featurize"] / n_chunks
    print()
    for note in notes:
        print(f"- {note}")
    for stage in ("featurize", "lds-retrain"):
        by_workers = {row[2]: row[3] for row in rows if row[0] == stage and row[1] == "ray"}
        if 1 in by_workers and 2 in by_workers:
            print(f"- {stage}: 2 workers {by_workers[1] / by_workers[2]:.2f}x faster than 1 (ideal 2x on 2 free cores)")
    print(f"- serial costs: {per_retrain:.2f} s per retrain, {per_chunk:.2f} s per (checkpoint, chunk) of featurize "
          f"({n_chunks} of them)")
    print("- N machines of c cores, one task per core: wall ~= start + ceil(T / (N c)) x t_task + merge, for T tasks of "
          "t_task seconds each (retrains: T = number of subsets; featurize: T = shards, each ~(chunks / shards) x "
          "t_chunk; use shards >= N c, and at most the number of chunks)")
    for machines in (1, 4, 16, 64):
        for cores in (2, 32):
            waves = math.ceil(args.retrains / (machines * cores))
            print(f"  - {args.retrains} retrains on {machines} x {cores} cores: {waves} wave(s) x {per_retrain:.2f} s "
                  f"= {waves * per_retrain:.1f} s (+ Ray start)")
    print("- the featurize merge links chunk files (no copy) and reads each once for its checksum: it is O(store size) of "
          "disk reads on the driver, which must see every shard store (a shared filesystem)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
