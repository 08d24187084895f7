"""Our TRAK against traker's TRAK over several projection seeds, on every full-suite task.

One full-suite run compares the two with one random projection each, so part of their LDS
gap is projection noise. This reruns both with ``--seeds`` projection seeds (same data,
checkpoints, damping and LDS retrains; only the projection matrices change) and reports
each one's mean LDS and its seed-to-seed standard deviation, and the gap of the means.
It also runs our TRAK with ``damping_scale="shared"``: one ridge for the whole checkpoint
ensemble (from the mean kernel trace), which is what traker's single ``lambda_reg`` does,
where our default damps each checkpoint's kernel by its own trace.

    python benchmarks/trak_vs_traker.py --cache runs/bench/cache --tasks runs/bench/tasks --out runs/bench-seeds --seeds 3

``--cache`` and ``--tasks`` reuse the retrains and trained checkpoints of an earlier
`attributor bench --suite full --out runs/bench` (both depend on the task seed only, not on
the projection); without them they are recomputed (~10 minutes).
Writes OUT/trak_vs_traker.csv; the recorded table is in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

import numpy as np

from attributor.evaluation.retrain import LocalExecutor
from attributor.pipelines import bench
from attributor.pipelines.bench import run_bench


def _link(target: Path | None, link: Path) -> None:
    if target is not None and not link.exists():
        os.symlink(target.resolve(), link)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench-seeds"))
    parser.add_argument("--cache", type=Path, default=None, help="retrain cache of an earlier full bench")
    parser.add_argument("--tasks", type=Path, default=None,
                        help="prepared tasks (trained checkpoints) of an earlier full bench, e.g. runs/bench/tasks; "
                             "their feature stores are rewritten with each projection seed")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    lds: dict[tuple[str, str], list[float]] = {}
    for seed in range(args.seeds):
        out = args.out / f"seed-{seed}"
        out.mkdir(parents=True, exist_ok=True)
        _link(args.cache, out / "cache")
        _link(args.tasks, out / "tasks")
        rows = run_bench("full", out, methods=["trak", "traker-trak"], executor=LocalExecutor(args.workers),
                         progress=False, projection_seed=1000 + seed)
        shared_out = args.out / f"seed-{seed}-shared"
        shared_out.mkdir(parents=True, exist_ok=True)
        _link(args.cache, shared_out / "cache")
        _link(args.tasks, shared_out / "tasks")
        bench.METHOD_ARGS["trak"] = {"damping_scale": "shared"}
        try:
            shared = run_bench("full", shared_out, methods=["trak"], executor=LocalExecutor(args.workers),
                               progress=False, projection_seed=1000 + seed)
        finally:
            bench.METHOD_ARGS.pop("trak")
        rows += [{**row, "method": "trak-shared"} for row in shared]
        for row in rows:
            lds.setdefault((row["task"], row["method"]), []).append(float(row["lds"]))
        print(f"seed {seed}: " + ", ".join(f"{r['task']}/{r['method']} {float(r['lds']):.4f}" for r in rows), flush=True)
    tasks = list(dict.fromkeys(task for task, _ in lds))
    with open(args.out / "trak_vs_traker.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["task", "trak_lds_mean", "trak_lds_std", "trak_shared_lds_mean", "trak_shared_lds_std",
                         "traker_lds_mean", "traker_lds_std", "gap_trak_traker", "gap_trak_shared_traker", "seeds"])
        for task in tasks:
            ours, shared, theirs = (np.array(lds[task, m]) for m in ("trak", "trak-shared", "traker-trak"))
            writer.writerow([task, f"{ours.mean():.4f}", f"{ours.std(ddof=1):.4f}", f"{shared.mean():.4f}",
                             f"{shared.std(ddof=1):.4f}", f"{theirs.mean():.4f}", f"{theirs.std(ddof=1):.4f}",
                             f"{ours.mean() - theirs.mean():+.4f}", f"{shared.mean() - theirs.mean():+.4f}", len(ours)])
    print((args.out / "trak_vs_traker.csv").read_text())


if __name__ == "__main__":
    main()
