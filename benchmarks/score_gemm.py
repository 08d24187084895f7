"""TRAK scoring from a FeatureStore against one raw float32 GEMM of the same shapes.

Issue 20, item 5: scoring n_query queries against n_train training rows at projection
width k should cost at most 1.5x the one GEMM (n_query, k) x (k, n_train) it is built
around. This benchmark builds a synthetic one-checkpoint float32 FeatureStore (Gaussian
features, Q uniform in [0.05, 1), seeded), fits TRAK on it (timed, but not counted), then
times in one process:

  * ``score``: ``TRAK.score("query", topk=...)`` with ``dense=False`` (the streaming
    top-k proponents and opponents only) and with ``dense=True`` (the full matrix kept as
    well); this includes reading the store chunk by chunk, the query-side solves, the block
    GEMMs, the Q scaling and both streaming top-k reductions;
  * ``gemm``: ``torch.mm(queries, train.T, out=...)`` on the same features already in
    memory, in float32, into a preallocated and touched output: the floor, which every
    ratio divides by; and ``queries @ train.T`` into a fresh output, which adds the page
    faults of a new (n_query, n_train) array (as ``dense=True`` has them too).

Every stage runs ``--reps`` times, interleaved (fit once; then per repetition: the score
rows, the floor, the fresh GEMM). The machine is shared, so a repetition counts as quiet
when other processes used at most QUIET_CORES cores (from /proc/stat) while both the stage
and that repetition's floor ran; ``seconds`` is the median over the quiet repetitions
(over all when none was quiet: ``quiet_reps`` says how many), ``ratio_to_gemm`` the median
of the stage's time over the floor's in the same repetition, and ``others_cores`` the
most other processes used in the repetitions counted.
``peak_rss_mb`` is the process's high-water mark (ru_maxrss) after the stage's first run,
so a later row's peak includes the earlier ones' (the score rows run before the GEMM
inputs are loaded into memory).
``topk_check`` (dense rows): the streamed top-k and bottom-k of the first 256 queries
against a stable argsort of their dense scores.

    .venv/bin/python benchmarks/score_gemm.py --out runs/bench-score-gemm

writes score_gemm.csv and score_gemm.json in --out (the store goes to --out/store and is
reused by a rerun with the same sizes) and prints a Markdown table; the recorded table is
in benchmarks/RESULTS.md. The default sizes (10,000 x 100,000, k = 1,024) need about 1 GB
of disk and 5 GB of memory with ``dense=True``; ``--quick`` is 1,000 x 20,000.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from attributor.features.store import FeatureStore
from attributor.methods import TRAK


#: Cores that other processes may use during a repetition that still counts as quiet.
QUIET_CORES = 0.25


def peak_rss_mb() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # KiB on Linux


def build_store(path: Path, n_query: int, n_train: int, k: int, chunk_size: int, seed: int) -> FeatureStore:
    """A one-checkpoint float32 store with splits ``train`` and ``query``; existing chunks are kept."""
    settings = {"dtype": "float32", "dim": k, "checkpoints": ["synthetic"], "chunk_size": chunk_size,
                "rows": f"gaussian features / sqrt(k), Q uniform [0.05, 1), seed {seed}",
                "n_train": n_train, "n_query": n_query}
    store = FeatureStore.create(path, settings, overwrite=True)
    for number, (split, n) in enumerate((("train", n_train), ("query", n_query))):
        store.add_split(split, n, data_id=f"synthetic-{split}-{seed}")
        with store.writing():
            for index, start, stop in store.missing_chunks(split, 0):
                rng = np.random.default_rng([seed, number, index])
                features = rng.standard_normal((stop - start, k), dtype=np.float32) / np.float32(np.sqrt(k))
                out_to_loss = rng.uniform(0.05, 1.0, stop - start).astype(np.float32)
                store.write_chunk(split, 0, index, features, out_to_loss)
    return store


def check_topk(scores, n_rows: int = 256) -> str:
    """Whether the streamed top-k of the first ``n_rows`` queries equal a stable sort of the dense rows."""
    values = np.asarray(scores.values[:n_rows], dtype=np.float64)
    k = scores.top_indices.shape[1]
    top = np.argsort(-values, axis=1, kind="stable")[:, :k]
    bottom = np.argsort(values, axis=1, kind="stable")[:, :k]
    same = (np.array_equal(top, scores.top_indices[:n_rows]) and np.array_equal(bottom, scores.bottom_indices[:n_rows])
            and np.array_equal(np.take_along_axis(values, top, 1), scores.top_values[:n_rows]))
    return f"exact on {len(values)} rows" if same else "MISMATCH"


def cpu_snapshot() -> tuple[float, float, float]:
    """(wall seconds, CPU seconds of the whole machine, CPU seconds of this process)."""
    ticks = os.sysconf("SC_CLK_TCK")
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    machine = (sum(fields[:8]) - fields[3] - fields[4]) / ticks  # all but idle and iowait
    return time.perf_counter(), machine, time.process_time()


def timed(function) -> tuple[float, object, float]:
    """Wall seconds of one call, its result, and the cores other processes used meanwhile."""
    before = cpu_snapshot()
    result = function()
    after = cpu_snapshot()
    others = ((after[1] - before[1]) - (after[2] - before[2])) / max(after[0] - before[0], 1e-9)
    return after[0] - before[0], result, max(0.0, others)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (score_gemm.csv/json, store/); default: a temporary folder, deleted afterwards")
    parser.add_argument("--queries", type=int, default=10_000, help="query rows")
    parser.add_argument("--train", type=int, default=100_000, help="training rows")
    parser.add_argument("--k", type=int, default=1024, help="feature width (projection dimension)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--topk", type=int, default=10, help="proponents and opponents kept per query")
    parser.add_argument("--chunk-size", type=int, default=1024, help="store chunk rows (featurize's default)")
    parser.add_argument("--reps", type=int, default=1,
                        help="repetitions of every stage but fit, interleaved (medians are reported)")
    parser.add_argument("--dense", choices=("both", "no", "yes"), default="both", help="which score(dense=...) rows to run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="1,000 queries x 20,000 training rows")
    args = parser.parse_args()
    if args.quick:
        args.queries, args.train = 1_000, 20_000
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as scratch:
        out = args.out or Path(scratch)
        run(args, out)


def run(args: argparse.Namespace, out: Path) -> None:
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    build_start = time.perf_counter()
    store = build_store(out / "store", args.queries, args.train, args.k, args.chunk_size, args.seed)
    build_s = time.perf_counter() - build_start
    shape = {"queries": args.queries, "train": args.train, "k": args.k, "threads": args.threads, "topk": args.topk}
    rows = []

    times: dict[str, list[tuple[float, float]]] = {}  # stage -> (seconds, others_cores) per repetition
    peaks: dict[str, int] = {}  # stage -> the process's peak RSS after its first run
    checks: dict[str, str] = {}

    def record(stage: str, measured: tuple[float, object, float]) -> object:
        times.setdefault(stage, []).append((measured[0], measured[2]))
        peaks.setdefault(stage, peak_rss_mb())
        return measured[1]

    trak = record("TRAK fit (not counted)", timed(lambda: TRAK().fit(store, "train")))
    floor = "raw float32 GEMM (floor)"
    train = queries = None
    for rep in range(args.reps):  # interleaved, so that every repetition sees the same load on the shared machine
        for dense in {"both": (False, True), "no": (False,), "yes": (True,)}[args.dense]:
            stage = f"TRAK.score(topk={args.topk}, dense={dense})"
            scores = record(stage, timed(lambda: trak.score("query", topk=args.topk, dense=dense)))
            if dense and rep == 0:
                checks[stage] = check_topk(scores)
            scores = None
        if train is None:
            train = torch.from_numpy(store.features("train", 0))
            queries = torch.from_numpy(store.features("query", 0))
            torch.mm(queries[:64], train[:4096].T)  # warm the BLAS
        product = torch.ones(args.queries, args.train)  # allocated and touched before timing
        record(floor, timed(lambda: torch.mm(queries, train.T, out=product)))
        product = None
        # ``.shape``: the fresh (n_query, n_train) result is freed as soon as it is timed
        record("GEMM into a fresh output (queries @ train.T)", timed(lambda: torch.mm(queries, train.T).shape))
    for stage, measured in times.items():
        pairs = list(zip(measured, times[floor]))
        clean = [(m, f) for m, f in pairs if max(m[1], f[1]) <= QUIET_CORES]
        used = clean or pairs
        rows.append({"stage": stage, **shape, "seconds": round(statistics.median(m[0] for m, _ in used), 3),
                     "ratio_to_gemm": round(statistics.median(m[0] / f[0] for m, f in used), 2),
                     "quiet_reps": f"{len(clean)}/{len(pairs)}", "others_cores": round(max(max(m[1], f[1]) for m, f in used), 2),
                     "peak_rss_mb": peaks[stage], "topk_check": checks.get(stage, "")})

    with open(out / "score_gemm.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    meta = {"loadavg_at_end": os.getloadavg(), "torch": torch.__version__, "numpy": np.__version__,
            "cpu_count": os.cpu_count(), "reps": args.reps,
            "chunk_size": args.chunk_size, "seed": args.seed, "store_build_s": round(build_s, 1),
            "seconds": round(time.perf_counter() - started, 1), "argv": sys.argv[1:], "rows": rows,
            "repetitions": {stage: [{"seconds": round(s, 3), "others_cores": round(o, 2)} for s, o in measured]
                            for stage, measured in times.items()}}
    (out / "score_gemm.json").write_text(json.dumps(meta, indent=2))
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in columns) + " |")
    print(f"store build {meta['store_build_s']} s, total {meta['seconds']} s")


if __name__ == "__main__":
    main()
