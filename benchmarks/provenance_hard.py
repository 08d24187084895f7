"""The hard zoo's report beyond `provenance eval`: combinations of methods, and same data vs same weights.

1. Per derivation (AUC / top-1, as ``by_derivation`` in metrics.json) for combinations of
   methods named with ``--combine a,b,c`` (repeatable), computed from the saved similarity
   matrices of an eval folder (nothing is fingerprinted again).
2. The confusable pairs are two families of one architecture pretrained on the same corpus
(gpt2-a and gpt2-b in every zoo preset: same config, other seed): every pair of a gpt2-a
model and a gpt2-b model, merges and distilled students left out. The derived pairs are each
model's (parent, model) pairs, distilled students left out. A method separates "trained on
the same data" from "derived from the same weights" when the highest confusable pair scores
below the lowest derived pair.

Usage (after ``attributor provenance eval --zoo ZOO --out EVAL``)::

    .venv/bin/python benchmarks/provenance_hard.py --eval EVAL --zoo ZOO --combine weight_invariants,hidden_cka
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from attributor.provenance.evaluate import COMBINED, combine_matrices, method_metrics, pair_auc
from attributor.provenance.experiment import read_model_info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval", type=Path, required=True, help="folder written by `provenance eval`")
    parser.add_argument("--zoo", type=Path, required=True, help="the zoo folder")
    parser.add_argument("--families", nargs=2, default=["gpt2-a", "gpt2-b"], help="the two confusable families")
    parser.add_argument("--combine", action="append", default=[], help="comma-separated methods to combine (repeatable)")
    args = parser.parse_args()
    models = read_model_info(args.zoo / "model_info.json")
    saved = json.loads((args.eval / "similarity_matrices.json").read_text())
    report = json.loads((args.eval / "metrics.json").read_text())
    index = {m: i for i, m in enumerate(saved["models"])}
    order = [index[m.model_id] for m in models]
    matrices = {}
    for name, row in report.items():
        if name == COMBINED:
            continue
        raw = saved["results"][name][row["metric"]]
        matrices[name] = np.array([[np.nan if v is None else v for v in raw[i]] for i in order], dtype=float)[:, order]
    if COMBINED in report:
        matrices[COMBINED] = combine_matrices([matrices[n] for n in report[COMBINED]["methods"]])
    for combo in args.combine:
        names = combo.split(",")
        matrices["+".join(names)] = combine_matrices([matrices[n] for n in names])
    rows = {name: method_metrics(matrix, models)["by_derivation"] for name, matrix in matrices.items()}
    kinds = sorted({k for row in rows.values() for k in row})
    print("| derivation | n | " + " | ".join(rows) + " |")
    print("|---|---|" + "---|" * len(rows))
    for kind in kinds:
        cells = [f"{row[kind]['auc']:.3f} / {row[kind]['top1']:.2f}" for row in rows.values()]
        print(f"| {kind} | {next(iter(rows.values()))[kind]['n']} | " + " | ".join(cells) + " |")
    print()
    a, b = args.families
    plain = [i for i, m in enumerate(models) if m.model_type not in ("Merge", "Distilled")]
    confusable = [(i, j) for i in plain for j in plain if models[i].family == a and models[j].family == b]
    ids = {m.model_id: i for i, m in enumerate(models)}
    derived = [(ids[p], i) for i, m in enumerate(models) if m.model_type not in ("Base", "Distilled")
               for p in m.parents if p in ids]
    no_merge = [(p, i) for p, i in derived if models[i].model_type != "Merge"]
    print(f"| method | highest confusable pair ({a} x {b}, {len(confusable)} pairs) | lowest (parent, derived) pair "
          f"({len(derived)} pairs, no Distilled) | separated | AUC derived ({len(no_merge)} pairs, no Merge) vs confusable |")
    print("|---|---|---|---|---|")
    for name, matrix in matrices.items():
        hi_pair = max(confusable, key=lambda p: matrix[p])
        lo_pair = min(derived, key=lambda p: matrix[p])
        hi, lo = matrix[hi_pair], matrix[lo_pair]
        name_of = lambda p: f"{models[p[0]].model_id} ~ {models[p[1]].model_id}"  # noqa: E731
        auc = pair_auc(np.array([matrix[p] for p in no_merge]), np.array([matrix[p] for p in confusable]))
        print(f"| {name} | {hi:.3f} ({name_of(hi_pair)}) | {lo:.3f} ({name_of(lo_pair)}) | {'yes' if hi < lo else 'no'} | {auc:.3f} |")


if __name__ == "__main__":
    main()
