"""Our best method against the best peer, and our TRAK against the peers' TRAK, from bench results.

Reads one or more ``results.csv`` written by ``attributor bench`` (e.g. one per task, run with
``--task``) and prints a Markdown table per task: our best LDS and the best peer's, each with
its bootstrap 95% interval, and the differences (ours minus the peer's; our TRAK against
traker's and dattri's TRAK) with a paired bootstrap 95% interval over queries, read from the
``lds_per_query.csv`` beside each ``results.csv`` (written by the bench since issue 20).

    python benchmarks/bench_summary.py runs/full/*/results.csv
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from attributor.evaluation.lds import paired_difference
from attributor.evaluation.peers import PEERS

TRAK_PEERS = ("traker-trak", "dattri-trak")


def _cell(row: dict[str, str] | None) -> str:
    if row is None or not row.get("lds"):
        return "-"
    return f"{row['method']} {float(row['lds']):.3f} [{float(row['lds_low']):.3f}, {float(row['lds_high']):.3f}]"


def _lds(row: dict[str, str] | None) -> float | None:
    return float(row["lds"]) if row is not None and row.get("lds") else None


def _per_query(paths: list[Path]) -> dict[tuple[str, str], np.ndarray]:
    found: dict[tuple[str, str], dict[int, float]] = {}
    for path in paths:
        beside = path.with_name("lds_per_query.csv")
        if beside.is_file():
            with open(beside, newline="") as handle:
                for row in csv.DictReader(handle):
                    value = float(row["spearman"]) if row["spearman"] not in ("", "nan") else np.nan
                    found.setdefault((row["task"], row["method"]), {})[int(row["query"])] = value
    return {key: np.array([values[q] for q in sorted(values)]) for key, values in found.items()}


def _difference(per_query, task: str, ours: dict[str, str] | None, theirs: dict[str, str] | None) -> str:
    if ours is None or theirs is None:
        return "-"
    a, b = per_query.get((task, ours["method"])), per_query.get((task, theirs["method"]))
    if a is None or b is None or a.shape != b.shape:
        return f"{_lds(ours) - _lds(theirs):+.3f}"
    mean, low, high = paired_difference(a, b)
    return f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]"


def summary(paths: list[Path]) -> str:
    by_task: dict[str, list[dict[str, str]]] = {}
    for path in paths:
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                by_task.setdefault(row["task"], []).append(row)
    per_query = _per_query(paths)
    lines = ["| task | our best | best peer | ours - peer | our TRAK | traker-trak (ours - it) | dattri-trak (ours - it) | LDS of random scores |",
             "|---|---|---|---|---|---|---|---|"]
    for task, rows in by_task.items():
        scored = [r for r in rows if r.get("lds")]
        ours = [r for r in scored if r["method"] not in PEERS and r["method"] != "random"]
        peers = [r for r in scored if r["method"] in PEERS]
        best = max(ours, key=lambda r: float(r["lds"]), default=None)
        best_peer = max(peers, key=lambda r: float(r["lds"]), default=None)
        named = {r["method"]: r for r in scored}
        diff = _difference(per_query, task, best, best_peer)
        peer_traks = [f"{_lds(named[p]):.3f} ({_difference(per_query, task, named.get('trak'), named[p])})" if p in named else "-"
                      for p in TRAK_PEERS]
        chance = next((f"{float(r['lds_random']):.3f}" for r in rows if r.get("lds_random")), "-")
        lines.append(f"| {task} | {_cell(best)} | {_cell(best_peer)} | {diff} | {_cell(named.get('trak'))} | "
                     f"{' | '.join(peer_traks)} | {chance} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="results.csv files of attributor bench")
    print(summary(parser.parse_args().results))


if __name__ == "__main__":
    main()
