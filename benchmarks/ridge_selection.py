"""Ridges chosen on held-out training rows, against the bench's fixed rules (issue 20, item 2).

For each full-suite task and method: ``bench.select_damping_heldout`` picks the relative
damping (TRAK: lambda = d trace(K)/k; the influence family: lambda = d sum_i |grad l_i|^2 / p;
DataInf: its lambda_scale) from 1e-2..1e2 by the LDS of 10% of the training rows (at most
100) held out of a validation model, against 16 retrains on halves of the rest: nothing of
the task's test split is read. Then, on the task's own queries and its 50 retrains (the
full bench's ground truth): the LDS at the selected ridge, at the bench's rule
(``bench.method_args``: TRAK d = 1 on networks and the l2 rule on convex tasks; the
influence functions at the l2 ridge on convex tasks and their default 1e-2 on networks)
and, with ``--oracle``, the best d of the grid measured on the queries themselves (what a
selection could reach at best). The paired difference selected - rule comes with a
bootstrap 95% interval over queries.

    python benchmarks/ridge_selection.py --bench runs/bench --out runs/ridge-selection --oracle trak

``--oracle`` measures the listed methods at every d of the grid on the queries (if-explicit
through ``bench.damping_sweep``: one fit, re-damped). ``--at if-cg=10`` measures a method at
a given d without a selection of its own (the bench gives if-cg if-explicit's choice):

    python benchmarks/ridge_selection.py --bench runs/bench --out runs/ridge-selection/cg --tasks digits-mlp \
        --methods --oracle --at if-cg=10

Writes ``DIR/ridge_selection.csv`` (one row per task and method), ``DIR/ridge_selection.md``
and ``DIR/heldout_curves.csv`` (the held-out LDS at every d, as the bench's damping.csv).
"""

from __future__ import annotations

import argparse
import csv
import time
from dataclasses import replace
from pathlib import Path

from attributor.evaluation.lds import lds, paired_difference
from attributor.evaluation.retrain import LocalExecutor
from attributor.methods import get_method
from attributor.pipelines.bench import (HELDOUT_GRID, HELDOUT_RETRAINS, attribute, damping_sweep, lds_ground_truth,
                                        load_variant, method_args, ridge_arg, select_damping_heldout, select_tasks)

METHODS = ("trak", "if-explicit", "if-lissa", "if-ekfac", "datainf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, default=Path("runs/bench"), help="bench folder whose cache/ and tasks/ are reused")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tasks", nargs="+", default=None, help="full-suite tasks (default: all)")
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    parser.add_argument("--oracle", nargs="*", default=["trak"], help="methods whose whole grid is also measured on the queries")
    parser.add_argument("--retrains", type=int, default=HELDOUT_RETRAINS)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--at", nargs="*", default=[], metavar="METHOD=D",
                        help="measure METHOD at relative damping D instead of selecting one (e.g. if-cg at the d that "
                             "if-explicit's selection made, as the bench does): its held-out columns stay empty")
    parser.add_argument("--own-tasks", action="store_true",
                        help="train and featurize the tasks under --out (not --bench's tasks/): safe beside another run")
    args = parser.parse_args()
    fixed = {}
    for item in args.at:
        name, sep, value = item.partition("=")
        try:
            fixed[name] = float(value)
        except ValueError:
            parser.error(f"--at takes METHOD=D, got {item!r}")
        if not sep or fixed[name] <= 0:
            parser.error(f"--at takes METHOD=D with D > 0, got {item!r}")
    suite = replace(select_tasks("full", args.tasks), brittleness_queries=0)
    args.out.mkdir(parents=True, exist_ok=True)
    for folder in ("cache",) if args.own_tasks else ("cache", "tasks"):  # the bench's retrains (and models, stores)
        link = args.out / folder
        if not link.exists():
            link.symlink_to((args.bench / folder).resolve())
    executor = LocalExecutor(args.workers)
    rows, curves = [], []
    for task in suite.tasks:
        names = [m for m in dict.fromkeys([*args.methods, *fixed]) if m not in dict(task.skip_methods)]
        start = time.perf_counter()
        to_select = [m for m in names if m not in fixed]
        selected = select_damping_heldout(to_select, task, suite, args.out, retrains=args.retrains, executor=executor) if to_select else {}
        select_s = time.perf_counter() - start
        for selection in selected.values():
            curves += selection.rows(task.name)
        variant = load_variant(task, "clean", args.out, suite)
        masks, actual = lds_ground_truth(task, variant, suite, args.out, executor=executor)
        for name in names:
            if name not in selected and name not in fixed:
                print(f"{task.name} / {name}: no damping could be scored on the validation task", flush=True)
                continue
            d = fixed[name] if name in fixed else selected[name].damping
            heldout = None if name in fixed else selected[name].lds[selected[name].grid.index(d)]
            arg = ridge_arg(name)
            rule_d = method_args(name, task, variant).get(arg, getattr(get_method(name), arg))
            at_rule = lds(attribute(name, task, variant, suite, args.out).scores, masks, actual, seed=task.seed)
            at_choice = lds(attribute(name, task, variant, suite, args.out, damping=d).scores, masks, actual, seed=task.seed)
            difference = paired_difference(at_choice["per_query"], at_rule["per_query"])
            row = {"task": task.name, "method": name, "rule_d": f"{float(rule_d):.3g}", "rule_lds": at_rule["lds"],
                   "selected_d": d, "heldout_lds": heldout,
                   "selected_lds": at_choice["lds"], "selected_low": at_choice["lds_low"], "selected_high": at_choice["lds_high"],
                   "difference": difference[0], "difference_low": difference[1], "difference_high": difference[2],
                   "oracle_d": None, "oracle_lds": None, "selection_s": round(select_s, 1)}
            if name in (args.oracle or []):
                by_d = {d: lds(scores, masks, actual, seed=task.seed)["lds"]
                        for d, scores in zip(HELDOUT_GRID, damping_sweep(name, task, variant, suite, args.out, HELDOUT_GRID))
                        if scores is not None}
                if by_d:
                    row["oracle_d"] = max(by_d, key=by_d.get)
                    row["oracle_lds"] = by_d[row["oracle_d"]]
            rows.append(row)
            print(" ".join(f"{key}={_fmt(value)}" for key, value in row.items()), flush=True)
    if not rows:
        raise SystemExit("no rows: nothing could be selected")
    with open(args.out / "ridge_selection.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({key: _fmt(value) for key, value in row.items()} for row in rows)
    if curves:  # none when every method was measured --at a given d
        with open(args.out / "heldout_curves.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(curves[0]))
            writer.writeheader()
            writer.writerows({key: _fmt(value) for key, value in row.items()} for row in curves)
    lines = ["| task | method | rule: d, LDS | held-out: d (held-out LDS) | LDS at the held-out d | held-out - rule | best d on the queries (LDS) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        oracle = "" if r["oracle_d"] is None else f"{r['oracle_d']:g} ({r['oracle_lds']:.3f})"
        heldout = "given by --at" if r["heldout_lds"] is None else f"{r['heldout_lds']:.3f}"
        lines.append(f"| {r['task']} | {r['method']} | {r['rule_d']}, {r['rule_lds']:.3f} | {r['selected_d']:g} ({heldout}) | "
                     f"{r['selected_lds']:.3f} [{r['selected_low']:.3f}, {r['selected_high']:.3f}] | "
                     f"{r['difference']:+.3f} [{r['difference_low']:+.3f}, {r['difference_high']:+.3f}] | {oracle} |")
    (args.out / "ridge_selection.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _fmt(value: object) -> object:
    return round(value, 4) if isinstance(value, float) else value


if __name__ == "__main__":
    main()
