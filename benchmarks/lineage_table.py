"""Markdown table of `attributor provenance lineage` runs, one row per method (benchmarks/RESULTS.md).

Usage: ``python benchmarks/lineage_table.py RUN_DIR [METHOD]`` where RUN_DIR holds the
``calibration.json`` and one ``METHOD/lineage.json`` per calibrated method (each from a zoo
whose model_info knows the parents); with METHOD, also that method's parent accuracy per
model type (top-1 / exact).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _f(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def table(run: Path) -> list[str]:
    calibration = json.loads((run / "calibration.json").read_text())["methods"]
    lines = ["| method | metric | threshold | calibration balanced acc. | parent top-1 | parents exact | "
             "top-1 without Distilled | roots right | derived precision / recall | edges precision / recall | "
             "merges exact |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for method in sorted(calibration):
        e = json.loads((run / method / "lineage.json").read_text())["evaluation"]
        rows = [r for kind, r in e["by_type"].items() if kind != "Distilled" and r["with_parent"]]
        top1 = sum(r["parent_top1"] * r["with_parent"] for r in rows) / sum(r["with_parent"] for r in rows)
        c = calibration[method]
        lines.append(f"| {method} | {c['metric']} | {c['threshold']:.4f} | {c['balanced_accuracy']:.3f} | "
                     f"{_f(e['parent_top1'])} | {_f(e['parent_exact'])} | {top1:.3f} | {_f(e['root_accuracy'])} | "
                     f"{_f(e['derived_precision'])} / {_f(e['derived_recall'])} | "
                     f"{_f(e['edge_precision'])} / {_f(e['edge_recall'])} | {_f(e['merges_exact'])} |")
    return lines


def by_type(run: Path, method: str) -> str:
    rows = json.loads((run / method / "lineage.json").read_text())["evaluation"]["by_type"]
    return f"{method}, top-1 / exact per type: " + ", ".join(
        f"{kind} {r['parent_top1']:.2f} / {r['parent_exact']:.2f}" for kind, r in rows.items() if r["with_parent"])


if __name__ == "__main__":
    folder = Path(sys.argv[1])
    print("\n".join(table(folder)))
    if len(sys.argv) > 2:
        print("\n" + by_type(folder, sys.argv[2]))
