"""Why our LDS differed from the peers' on the full bench (issue 20): one factor at a time.

Every row is one method with one setting changed, on the bench's own checkpoints, features
and retrains (``attributor bench --suite full --out runs/bench`` first, or this script
trains and retrains what is missing into the same cache):

* ``trak-d``: our TRAK at relative damping d (lambda = d * trace(K)/k), per checkpoint;
  ``trak-shared-d`` one ridge for the ensemble; ``trak-auto`` the GCV choice
  (``damping="auto"``, no ground truth read); ``trak-noQ`` without the out-to-loss term.
* ``trak-bench``: our TRAK with the bench's arguments (on convex tasks the training l2 on
  the kernel's scale, ``bench.trak_damping_for_l2``).
* ``dattri-trak-old`` / ``-matched-D``: dattri's TRAK with the ridge the bench gave it before
  (d * trace(K)/p, traker's units: k times ours) and the converted one (d * trace(K)/(p k)),
  D = 0.01 or the bench's TRAK damping; ``traker-trak-matched-D`` likewise.
* ``if-explicit-d`` (Gauss-Newton, exact solve), ``if-cg-exact-it`` (exact Hessian, CG
  truncated at ``it`` iterations, as dattri's IF runs): the influence function's curvature,
  damping and truncation on the MLPs; ``dattri-if-*`` dattri's IF at other ridges.

    python benchmarks/lds_gaps.py --bench runs/bench --out runs/lds-gaps [--tasks cancer-logreg ...] [--quick]

Writes ``DIR/lds_gaps.csv`` (task, experiment, lds, lds_low, lds_high, note) and prints it.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
import torch

from attributor.evaluation.lds import lds
from attributor.methods import get_method
from attributor.methods.trak import select_damping
from attributor.pipelines.bench import (attribute, influence_damping_unit, lds_ground_truth, load_variant, method_args,
                                        peer_damping, select_tasks)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, default=Path("runs/bench"), help="bench output folder (its cache is reused)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--suite", default="full")
    parser.add_argument("--tasks", nargs="*", default=None)
    parser.add_argument("--parts", nargs="*", default=["trak", "peers", "if", "alpha"],
                        help="trak, peers, if, alpha, cgstart (dattri's CG starting point), ensemble (IF over checkpoints; both on networks)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    suite = select_tasks(args.suite, args.tasks)
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for task in suite.tasks:
        variant = load_variant(task, "clean", args.bench, suite)
        masks, actual = lds_ground_truth(task, variant, suite, args.bench)

        def record(experiment: str, scores: np.ndarray | None, note: str = "") -> None:
            if scores is None:
                rows.append({"task": task.name, "experiment": experiment, "note": note})
                return
            result = lds(scores, masks, actual, seed=task.seed)
            rows.append({"task": task.name, "experiment": experiment, "lds": result["lds"], "lds_low": result["lds_low"],
                         "lds_high": result["lds_high"], "note": note})
            print(f"{task.name:14s} {experiment:28s} {result['lds']:.4f} [{result['lds_low']:.3f}, {result['lds_high']:.3f}] {note}",
                  flush=True)

        store = variant.store
        p, k = int(store.settings["n_params"]), store.dim
        if "trak" in args.parts:
            auto = select_damping(store, "train")
            for scale in ("checkpoint", "shared"):
                for d in (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0):
                    if scale == "shared" and store.n_checkpoints == 1:
                        continue
                    method = get_method("trak", damping=d, damping_scale=scale).fit(store, "train")
                    record(f"trak-{'shared-' if scale == 'shared' else ''}{d:g}", method.score("query", topk=1).values)
            bench_args = method_args("trak", task, variant)
            if bench_args:
                record("trak-bench", get_method("trak", **bench_args).fit(store, "train").score("query", topk=1).values,
                       f"the bench's arguments {bench_args}")
            method = get_method("trak", damping="auto").fit(store, "train")
            scores = method.score("query", topk=1).values
            record("trak-auto", scores, f"GCV chose d={auto:g}")
            q = method.out_to_loss_[None, :]
            record("trak-auto-noQ", np.divide(scores, q, out=np.zeros_like(scores), where=q > 0), "Q divided out")
            record("trak-old-dattri-ridge", get_method("trak", damping=1e-2 * k, damping_scale="shared").fit(store, "train")
                   .score("query", topk=1).values, f"our TRAK at d = 0.01 k = {1e-2 * k:.3g}: the ridge dattri got before")
        if "peers" in args.parts:
            for d, label in ((1e-2, "0.01"), (None, "bench")):
                for name in ("dattri-trak", "traker-trak"):
                    ridge = peer_damping(name, task, variant, d)
                    record(f"{name}-matched-{label}", attribute(name, task, variant, suite, args.bench, args={"damping": ridge}).scores,
                           f"ridge {ridge:.4g}")
            old = peer_damping("traker-trak", task, variant, 1e-2)  # d * trace/p: what dattri-trak got before (k times ours)
            record("dattri-trak-old", attribute("dattri-trak", task, variant, suite, args.bench, args={"damping": old}).scores,
                   f"ridge {old:.4g} (traker's units)")
        if "if" in args.parts:
            _influence_rows(task, variant, suite, args, record)
        if "ensemble" in args.parts and not task.convex:
            _ensemble_rows(task, variant, record)
        if "cgstart" in args.parts and not task.convex:
            _cg_start_rows(task, variant, record)
        if "alpha" in args.parts and task.convex:
            _subset_fraction_rows(task, variant, record)
    with open(args.out / "lds_gaps.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["task", "experiment", "lds", "lds_low", "lds_high", "note"])
        writer.writeheader()
        writer.writerows(rows)
    return 0


def _subset_fraction_rows(task, variant, record, alpha: float = 0.5) -> None:
    """The ridge for LDS at subset fraction alpha: a model retrained on alpha n examples has
    the data curvature alpha H, so the effect of one example there is (alpha H + l2 I)^{-1} g
    = (H + l2/alpha I)^{-1} g / alpha: lambda = l2 / alpha (2 l2 for LDS's halves), against
    lambda = l2 for leave-one-out."""
    from attributor.pipelines.bench import trak_damping_for_l2

    store = variant.store
    d = trak_damping_for_l2(task, variant, fraction=None)
    for label, value in (("l2", d), ("l2/alpha", d / alpha)):
        record(f"trak-{label}", get_method("trak", damping=value).fit(store, "train").score("query", topk=1).values, f"d={value:.4g}")
    unit = method_args("if-explicit", task, variant)["damping"]  # lambda = l2
    for label, value in (("l2", unit), ("l2/alpha", unit / alpha)):
        method = get_method("if-explicit", damping=value).fit(None, "train", variant.context)
        record(f"if-explicit-{label}", method.score("query", topk=1).values, f"lambda {method.lambda_:.4g}")


def _ensemble_rows(task, variant, record) -> None:
    """dattri's IF averages its scores over every checkpoint of its task (dattri/algorithm/base.py,
    the running mean over ``task.get_checkpoints()``); ours used the last one. Each influence
    function at the last checkpoint and averaged over all (``checkpoint="all"``)."""
    for name, extra in (("if-explicit", {"damping": 1e-2}), ("if-explicit", {"damping": 10.0}), ("if-lissa", {}), ("if-ekfac", {})):
        for checkpoint in (-1, "all"):
            args = {**method_args(name, task, variant), **extra, "checkpoint": checkpoint}
            method = get_method(name, **args).fit(variant.store if name == "if-ekfac" else None, "train", variant.context)
            label = "-".join([name, *(f"d{v:g}" for v in extra.values()), "last" if checkpoint == -1 else "all"])
            record(label, method.score("query", topk=1).values, f"checkpoint {checkpoint}")


def _cg_start_rows(task, variant, record) -> None:
    """dattri's IF is 10 CG steps started at x0 = v on the mean-loss Hessian (dattri/func/hessian.py,
    ``ihvp_cg``); ours starts at 0. ``start="gradient"`` starts ours where dattri's does."""
    n = len(variant.prepared.train_set.labels)
    unit = influence_damping_unit(variant)
    damping = peer_damping("dattri-if", task, variant) * n / unit  # dattri's ridge, in our relative units
    for hessian in ("exact", "gauss-newton"):
        for start in ("zero", "gradient"):
            name = f"if-cg-{hessian}-10-start-{start}"
            try:
                method = get_method("if-cg", damping=damping, hessian=hessian, max_iter=10, start=start)
                record(name, method.fit(None, "train", variant.context).score("query", topk=1).values,
                       f"{hessian} curvature, dattri's ridge, 10 iterations from x0 = {'b/n' if start == 'gradient' else '0'}")
            except Exception as err:  # noqa: BLE001 - a diagnostic row
                record(name, None, f"failed: {err}")


def _influence_rows(task, variant, suite, args, record) -> None:
    """The IF family's damping, curvature and truncation (see the module docstring)."""
    bench_args = method_args("if-explicit", task, variant)
    base = bench_args.get("damping", 1e-2)
    start = time.perf_counter()
    method = get_method("if-explicit", **bench_args).fit(None, "train", variant.context)
    hessian, lam0 = method.hessian_, method.lambda_
    unit = lam0 / base  # sum_i |grad l_i|^2 / p
    print(f"  if-explicit curvature {time.perf_counter() - start:.0f} s", flush=True)
    for d in sorted({base, 1e-2, 1e-1, 1.0, 10.0, 30.0, 100.0}):
        method.lambda_ = d * unit
        method.cholesky_ = torch.linalg.cholesky(hessian + method.lambda_ * torch.eye(len(hessian), dtype=hessian.dtype))
        record(f"if-explicit-{d:g}", method.score("query", topk=1).values, f"Gauss-Newton, lambda {method.lambda_:.4g}")
    if task.convex:
        return
    n = len(variant.prepared.train_set.labels)
    for iterations in (10, 50):
        try:
            cg = get_method("if-cg", damping=peer_damping("dattri-if", task, variant) * n / unit, hessian="exact",
                            max_iter=iterations).fit(None, "train", variant.context)
            record(f"if-cg-exact-{iterations}", cg.score("query", topk=1).values, "exact Hessian, dattri's ridge, truncated CG")
        except Exception as err:  # noqa: BLE001 - a diagnostic row
            record(f"if-cg-exact-{iterations}", None, f"failed: {err}")
    for factor in (0.1, 10.0):
        ridge = peer_damping("dattri-if", task, variant) * factor
        record(f"dattri-if-x{factor:g}", attribute("dattri-if", task, variant, suite, args.bench, args={"damping": ridge}).scores,
               f"ridge {ridge:.4g}")


if __name__ == "__main__":
    sys.exit(main())
