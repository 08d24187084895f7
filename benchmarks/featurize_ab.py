"""Before/after: ``featurize()`` into a FeatureStore at two commits, same machine, same runs.

    python benchmarks/featurize_ab.py --before 007fc8a --out runs/featurize-ab

checks the ``--before`` commit out into a temporary git worktree, then runs
``benchmarks/featurize.py --featurizers fwd+bwd,ours-factored+store`` alternately with
that commit's package (PYTHONPATH) and with the working tree's, ``--reps`` times per
clock (``cpu``: the process's CPU time, all threads; ``wall``: elapsed time, where the
store's writer thread may use the second core), and prints the median ratio to a plain
forward+backward and the median examples/s per model. Each run's CSV stays under
``--out/<before|after>-<clock>-<rep>/``; the summary is ``--out/summary.md``.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(tree: Path, out: Path, clock: str, models: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    subprocess.run([sys.executable, str(tree / "benchmarks" / "featurize.py"), "--out", str(out), "--clock", clock,
                    "--featurizers", "fwd+bwd,ours-factored+store", "--models", models],
                   check=True, env=env, stdout=subprocess.DEVNULL)


def summary(out: Path) -> str:
    rows: dict[tuple[str, str, str], list[tuple[float, float]]] = {}
    for path in sorted(out.glob("*/featurize.csv")):
        version, clock, _ = path.parent.name.split("-")
        for row in csv.DictReader(path.open()):
            if row["featurizer"] == "ours-factored+store":
                rows.setdefault((row["model"], clock, version), []).append(
                    (float(row["ratio_to_fwd_bwd"]), float(row["examples_per_s"])))
    lines = ["| model | clock | before: ratio to fwd+bwd | after: ratio to fwd+bwd | before: examples/s | after: examples/s |",
             "|---|---|---|---|---|---|"]
    for model, clock in sorted({(m, c) for m, c, _ in rows}):
        cells = []
        for index, form in ((0, "{:.2f}"), (1, "{:.0f}")):  # ratio, examples/s
            for version in ("before", "after"):
                values = [v[index] for v in rows.get((model, clock, version), [])]
                cells.append(form.format(statistics.median(values)) if values else "")
        lines.append(f"| {model} | {clock} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="git commit of the 'before' version")
    parser.add_argument("--out", type=Path, default=Path("runs/featurize-ab"))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--models", default="mlp,cnn,lm")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="featurize-ab-") as tmp:
        before = Path(tmp) / "before"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(before), args.before], check=True)
        try:
            for rep in range(1, args.reps + 1):
                for clock in ("cpu", "wall"):
                    for version, tree in (("before", before), ("after", ROOT)):
                        print(f"rep {rep} {clock} {version}", flush=True)
                        run(tree, args.out / f"{version}-{clock}-{rep}", clock, args.models)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)], check=False)
    table = summary(args.out)
    (args.out / "summary.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
