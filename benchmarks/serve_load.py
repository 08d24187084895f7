"""Load test of ``attributor serve``: throughput, p50/p99 latency and errors at 1, 8 and 32 clients.

The index: a 100k-row corpus folder (``--rows``) made by
:func:`attributor.gif.corpus.fingerprint_corpus` with the ``embedding`` fingerprinter
(all-MiniLM-L6-v2, 384-d) and an HNSW index (M=16, ef_construction=40, ef_search=64),
cached in ``OUT/corpus-<rows>-<texts>``. MiniLM over 100k texts takes about 25 min on
2 cores, so the rows are made as ``benchmarks/index_scale.py`` makes its vectors: the
real embeddings of ``--texts`` distinct base texts (windows of 6-30 words of
``pydoc_data.topics`` paragraphs), tiled with noise: row i is
``normalize(e(base[i mod T]) + eps_i)``, ``eps_i ~ N(0, noise^2 I)`` (a noisy copy has
cosine ~0.93 with its text at noise 0.02), and its text is the base text followed by
``#<copy>``. These rows are put into the embedding memo of this process before
``fingerprint_corpus`` runs, so it writes them in place of recomputing them; everything
else (items, offsets, checksummed store, manifest, index) is the ordinary code path.

The server: ``attributor serve --index CORPUS --port 0 --keys OUT/keys.json`` in its own
process on 127.0.0.1 (one process, the index loaded once, 4 query threads, a read key on
every request). ``server_rss_mb`` is the largest VmRSS of that process sampled every
0.5 s during the level.

The clients: ``--clients`` levels of N concurrent clients (asyncio tasks over one
``httpx.AsyncClient`` with N connections, in this process, on the same 2 cores as the
server), each sending one query, waiting for its answer, sending the next, for
``--duration`` s (or ``--max-requests``) per level, after 20 warm-up requests. Two query
modes (``--queries``):

* ``text``: one held-out pydoc window per request (none among the base texts, never
  repeated, so the server's embedding memo never answers): MiniLM embed + HNSW search.
* ``vector``: one 384-d fingerprint per request, a noisy copy (noise 0.02, another
  seed) of a random base embedding: HNSW search and the service around it.

Every request asks ``top_k`` = 10 (``--top-k``); an error is any answer but 200 or a
failed connection. Results: ``OUT/serve_load.csv`` (clients, requests, errors, rps, p50_ms,
p99_ms, server_rss_mb, then queries, duration_s, rows) and a markdown table on stdout.

    .venv/bin/python benchmarks/serve_load.py --out runs/bench-serve --duration 60 --clients 1,8,32
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

COLUMNS = ["clients", "requests", "errors", "rps", "p50_ms", "p99_ms", "server_rss_mb", "queries", "duration_s", "rows"]
INDEX_PARAMS = {"M": 16, "ef_construction": 40}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the corpus ------------------------------------------------------------------------------
def base_embeddings(out: Path, texts: list[str]) -> np.ndarray:
    """MiniLM embeddings (T, 384) of the base texts, cached in OUT."""
    cached = out / f"base_{len(texts)}.npy"
    if cached.is_file():
        return np.load(cached)
    from attributor.gif.fingerprints import make_fingerprinter

    encoder = make_fingerprinter("embedding", batch_size=128).fit(texts[:1])
    started, parts = time.perf_counter(), []
    for start in range(0, len(texts), 1000):
        parts.append(encoder.transform(texts[start:start + 1000]))
        log(f"encoded {start + len(parts[-1])} of {len(texts)} base texts")
    vectors = np.concatenate(parts)
    log(f"encoded {len(texts)} base texts in {time.perf_counter() - started:.0f} s")
    np.save(cached, vectors)
    return vectors


def noisy(x: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    y = x + rng.normal(scale=noise, size=x.shape).astype(np.float32)
    return (y / np.linalg.norm(y, axis=1, keepdims=True)).astype(np.float32)


def build_corpus(out: Path, rows: int, texts: list[str], base: np.ndarray, noise: float) -> Path:
    """The ``rows``-row corpus folder with an HNSW index (reused when complete)."""
    folder = out / f"corpus-{rows}-{len(texts)}"
    if (folder / "corpus.json").is_file() and (folder / "index" / "manifest.json").is_file():
        return folder
    from attributor.gif import fingerprints
    from attributor.gif.corpus import fingerprint_corpus

    encoder = fingerprints.make_fingerprinter("embedding").fit(texts[:1])
    key = (encoder._path(), encoder.max_length)
    items = [f"{texts[i % len(texts)]} #{i // len(texts)}" for i in range(rows)]
    started = time.perf_counter()
    for start in range(0, rows, 65536):  # the tiled rows go into the embedding memo (see the module docstring)
        stop = min(rows, start + 65536)
        vectors = noisy(base[np.arange(start, stop) % len(texts)], noise, np.random.default_rng([1, start]))
        fingerprints._EMBEDDINGS.update({(*key, items[i]): vectors[i - start] for i in range(start, stop)})
    fingerprint_corpus(items, folder, encoder, index="hnsw", index_params=INDEX_PARAMS, overwrite=True,
                       source={"benchmark": "serve_load", "base_texts": len(texts), "noise": noise}, progress=True)
    fingerprints.clear_embedding_cache()
    log(f"corpus of {rows} rows with its hnsw index in {time.perf_counter() - started:.0f} s: {folder}")
    return folder


# -- the server --------------------------------------------------------------------------------
class Server:
    """``attributor serve`` in a subprocess on 127.0.0.1 with a free port."""

    def __init__(self, corpus: Path, keys: Path):
        self.process = subprocess.Popen([sys.executable, "-m", "attributor.cli", "serve", "--index", str(corpus), "--port", "0",
                                         "--keys", str(keys)], stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(iter(self.process.stderr.readline, "")), daemon=True).start()
        deadline = time.monotonic() + 300
        while not (found := re.search(r"listening on (http://127\.0\.0\.1:\d+)/", "".join(self.lines))):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start: {''.join(self.lines)[-2000:]}")
            time.sleep(0.1)
        self.url = found.group(1)
        import httpx

        while True:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> int:
        self.process.terminate()
        return self.process.wait(timeout=60)


# -- the clients ---------------------------------------------------------------------------------
async def level(url: str, token: str, clients: int, duration: float, max_requests: int, next_body) -> dict:
    """``clients`` concurrent closed-loop clients for ``duration`` s; latencies (ms) and errors."""
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, limits=limits,
                                 timeout=120) as client:
        for _ in range(20):  # warm-up, not counted
            await client.post("/v1/query", json=next_body())
        deadline = time.perf_counter() + duration
        sent = 0

        async def one_client() -> None:
            nonlocal sent
            while time.perf_counter() < deadline and sent < max_requests:
                sent += 1
                started = time.perf_counter()
                try:
                    response = await client.post("/v1/query", json=next_body())
                    if response.status_code != 200:
                        errors.append(f"{response.status_code}: {response.text[:200]}")
                        continue
                except httpx.HTTPError as err:
                    errors.append(f"{type(err).__name__}: {err}")
                    continue
                latencies.append(1e3 * (time.perf_counter() - started))

        started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return {"latencies": latencies, "errors": errors, "elapsed": elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="Output folder (the corpus and base embeddings are cached there).")
    parser.add_argument("--rows", type=int, default=100_000, help="Rows of the served corpus.")
    parser.add_argument("--texts", type=int, default=5_000, help="Distinct base texts embedded with MiniLM (then tiled).")
    parser.add_argument("--noise", type=float, default=0.02, help="Std of the gaussian noise per dimension of a tiled row.")
    parser.add_argument("--duration", type=float, default=60, help="Seconds per level.")
    parser.add_argument("--max-requests", type=int, default=100_000, help="At most this many requests per level.")
    parser.add_argument("--clients", default="1,8,32", help="Concurrency levels, comma-separated.")
    parser.add_argument("--queries", default="text,vector", help="Query modes: text, vector or both.")
    parser.add_argument("--top-k", type=int, default=10)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    modes = [m.strip() for m in args.queries.split(",") if m.strip()]
    if not set(modes) <= {"text", "vector"}:
        raise SystemExit("--queries takes text, vector or text,vector")
    levels = [int(c) for c in args.clients.split(",")]

    from attributor.data.synthetic import pydoc_windows
    from attributor.service.keys import KeyStore

    n_held_out = 60_000
    windows = pydoc_windows(args.texts + n_held_out, seed=0)
    base_texts, held_out = windows[:args.texts], windows[args.texts:]
    base = base_embeddings(out, base_texts)
    corpus = build_corpus(out, args.rows, base_texts, base, args.noise)
    keys = KeyStore(out / "keys.json")
    if keys.exists():
        for key in keys.keys():
            keys.revoke(key.name)
    token = keys.add("load-test", "read")

    rng = np.random.default_rng(7)
    counter = {"text": 0}

    def text_body() -> dict:
        text = held_out[counter["text"] % len(held_out)]
        counter["text"] += 1
        return {"text": text, "top_k": args.top_k}

    def vector_body() -> dict:
        return {"vector": noisy(base[rng.integers(len(base))][None], args.noise, rng)[0].tolist(), "top_k": args.top_k}

    log(f"starting the server on {corpus}")
    started = time.perf_counter()
    server = Server(corpus, keys.path)
    log(f"server ready at {server.url} in {time.perf_counter() - started:.1f} s, RSS {server.rss_mb():.0f} MB")
    rows, load = [], {"before": os.getloadavg()}
    try:
        for mode in modes:
            for clients in levels:
                samples: list[float] = []
                stop = threading.Event()

                def sample() -> None:
                    while not stop.wait(0.5):
                        samples.append(server.rss_mb())

                sampler = threading.Thread(target=sample, daemon=True)
                sampler.start()
                result = asyncio.run(level(server.url, token, clients, args.duration, args.max_requests,
                                           text_body if mode == "text" else vector_body))
                stop.set()
                sampler.join()
                lat = np.asarray(result["latencies"]) if result["latencies"] else np.asarray([np.nan])
                done = len(result["latencies"]) + len(result["errors"])
                row = {"clients": clients, "requests": done, "errors": len(result["errors"]),
                       "rps": round(len(result["latencies"]) / result["elapsed"], 1),
                       "p50_ms": round(float(np.percentile(lat, 50)), 1), "p99_ms": round(float(np.percentile(lat, 99)), 1),
                       "server_rss_mb": round(max(samples + [server.rss_mb()])), "queries": mode,
                       "duration_s": round(result["elapsed"], 1), "rows": args.rows}
                rows.append(row)
                log(" ".join(f"{k}={v}" for k, v in row.items()) + (f"; first error: {result['errors'][0]}"
                                                                    if result["errors"] else ""))
                with (out / "serve_load.csv").open("w", newline="") as handle:
                    writer = csv.DictWriter(handle, COLUMNS)
                    writer.writeheader()
                    writer.writerows(rows)
    finally:
        code = server.stop()
        load["after"] = os.getloadavg()
    server_log = "".join(server.lines)
    log(f"server exited with {code} after SIGTERM{'; it logged a traceback' if 'Traceback' in server_log else ''}")
    info = {"rows": args.rows, "base_texts": args.texts, "noise": args.noise, "index": {"kind": "hnsw", **INDEX_PARAMS},
            "top_k": args.top_k, "duration_s": args.duration, "text_queries_sent": counter["text"],
            "distinct_text_queries": len(held_out), "cores": os.cpu_count(), "loadavg": load, "server_exit": code}
    (out / "serve_load.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"\n{args.rows:,}-row corpus (hnsw M=16), top_k={args.top_k}, {args.duration:g} s per level, "
          f"server and clients on the same {os.cpu_count()} cores\n")
    print("| queries | clients | requests | errors | rps | p50_ms | p99_ms | server_rss_mb |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['queries']} | {row['clients']} | {row['requests']:,} | {row['errors']} | {row['rps']} | "
              f"{row['p50_ms']} | {row['p99_ms']} | {row['server_rss_mb']} |")
    print(f"\nresults: {out / 'serve_load.csv'}")


if __name__ == "__main__":
    main()
