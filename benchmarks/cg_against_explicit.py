"""if-cg against if-explicit at one relative damping: the same damped Gauss-Newton system,
solved iteratively and by Cholesky, so on one checkpoint their scores must agree once CG has
converged; the LDS gap to if-explicit over the checkpoint ensemble is then the ensemble's.

    python benchmarks/cg_against_explicit.py --bench runs/ridge-selection/cg --task digits-mlp --damping 10

``--bench``: a bench folder (its tasks/ and cache/ are reused; the retrains are the full
suite's). Prints each method's LDS with its interval and seconds, then the largest
difference between the two single-checkpoint score matrices relative to their largest score.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from attributor.evaluation.lds import lds
from attributor.evaluation.retrain import LocalExecutor
from attributor.pipelines.bench import attribute, lds_ground_truth, load_variant, method_args, select_tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, required=True)
    parser.add_argument("--task", default="digits-mlp", help="a full-suite task")
    parser.add_argument("--damping", type=float, default=10.0, help="relative damping d > 0 of both methods")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if not args.damping > 0:
        parser.error("--damping must be > 0")
    suite = replace(select_tasks("full", [args.task]), brittleness_queries=0)
    task = suite.tasks[0]
    variant = load_variant(task, "clean", args.bench, suite)
    masks, actual = lds_ground_truth(task, variant, suite, args.bench, executor=LocalExecutor(args.workers))
    scores = {}
    for name, checkpoint in (("if-cg", -1), ("if-explicit", -1), ("if-explicit", "all")):
        method = {**method_args(name, task, variant), "checkpoint": checkpoint, "damping": args.damping}
        start = time.perf_counter()
        result = attribute(name, task, variant, suite, args.bench, args=method)
        if result.scores is None:
            raise SystemExit(f"{name} did not run: {result.note}")
        value = lds(result.scores, masks, actual, seed=task.seed)
        scores[name, checkpoint] = result.scores
        print(f"{task.name} {name} checkpoint={checkpoint} d={args.damping:g}: LDS {value['lds']:.3f} "
              f"[{value['lds_low']:.3f}, {value['lds_high']:.3f}] in {time.perf_counter() - start:.0f} s", flush=True)
    cg, exact = scores["if-cg", -1], scores["if-explicit", -1]
    print(f"if-cg against if-explicit on the last checkpoint: largest difference {np.abs(cg - exact).max() / np.abs(exact).max():.2e} "
          f"of the largest score, correlation {np.corrcoef(cg.ravel(), exact.ravel())[0, 1]:.6f}")


if __name__ == "__main__":
    main()
