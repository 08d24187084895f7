"""TRAK's LDS over its ridge, against what GCV chooses without the ground truth (issue 20, item 2).

For each bench task: our TRAK at relative dampings d in 1e-3..1e3 (lambda = d * trace(K)/k),
over all of the task's checkpoints and, on networks, the last checkpoint alone (a model
trained to near-zero loss, as the curve's independent models are); beside it the d that
generalised cross-validation picks from the training features (``trak.gcv_curve``) with
its default target Q and with the margins f = log((1 - Q)/Q) as the target. The
checkpoints, features (k = 1024) and 50 retrains are the full bench's (a missing one is
trained into ``--bench``'s cache).

    python benchmarks/trak_ridge.py --bench runs/bench --out runs/trak-ridge --tasks cancer-logreg digits-mlp

Writes ``DIR/trak_ridge.csv`` (task, checkpoints, d, lds, lds_low, lds_high) and
``DIR/trak_ridge.md`` (one row per task and checkpoint set: LDS by d, the best d, GCV's picks).
"""

from __future__ import annotations

import argparse
import csv
from dataclasses import replace
from pathlib import Path

import numpy as np

from attributor.evaluation.lds import lds
from attributor.methods.trak import gcv_curve
from attributor.pipelines.bench import attribute, lds_ground_truth, load_variant, select_tasks

GRID = tuple(float(x) for x in np.logspace(-3, 3, 13))
TARGETS = {
    "Q": lambda q: q,
    "margin": lambda q: np.log(np.clip(1 - q, 1e-12, None)) - np.log(np.clip(q, 1e-12, None)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, default=Path("runs/bench"), help="bench folder whose cache/ holds the retrains")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tasks", nargs="+", default=None, help="full-suite tasks (default: all)")
    args = parser.parse_args()
    suite = replace(select_tasks("full", args.tasks), brittleness_queries=0)
    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.out / "cache"
    if not cache.exists():
        cache.symlink_to((args.bench / "cache").resolve())
    rows, summary = [], []
    for task in suite.tasks:
        variant = load_variant(task, "clean", args.out, suite)
        masks, actual = lds_ground_truth(task, variant, suite, args.out)
        n = variant.store.n_checkpoints
        for label, checkpoints in [("all", None)] + ([("last", [n - 1])] if n > 1 else []):
            by_d = {}
            for d in GRID:
                method_args = {"damping": d} if checkpoints is None else {"damping": d, "checkpoints": checkpoints}
                result = lds(attribute("trak", task, variant, suite, args.out, args=method_args).scores, masks, actual,
                             seed=task.seed)
                by_d[d] = result["lds"]
                rows.append({"task": task.name, "checkpoints": label, "d": d, "lds": result["lds"],
                             "lds_low": result["lds_low"], "lds_high": result["lds_high"]})
            picks = {name: GRID[int(np.argmin(gcv_curve(variant.store, "train", checkpoints, GRID, target=fn)))]
                     for name, fn in TARGETS.items()}
            best = max(by_d, key=by_d.get)
            summary.append((task.name, label, by_d, best, picks))
            print(f"{task.name} {label}: best d {best:g} ({by_d[best]:.3f}); "
                  + "; ".join(f"GCV[{t}] d {p:g} ({by_d[p]:.3f})" for t, p in picks.items()), flush=True)
    with open(args.out / "trak_ridge.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| task | checkpoints | " + " | ".join(f"d={d:g}" for d in GRID) + " | best d | GCV (Q) | GCV (margin) |",
             "|---|---|" + "---|" * (len(GRID) + 3)]
    for name, label, by_d, best, picks in summary:
        cells = " | ".join(f"**{by_d[d]:.3f}**" if d == best else f"{by_d[d]:.3f}" for d in GRID)
        lines.append(f"| {name} | {label} | {cells} | {best:g} | {picks['Q']:g} ({by_d[picks['Q']]:.3f}) | "
                     f"{picks['margin']:g} ({by_d[picks['margin']]:.3f}) |")
    (args.out / "trak_ridge.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
