"""Build an index from one split of a FeatureStore, streaming its chunks.

Data flow and memory:

1. IVF kinds first gather a training sample: ``train_size`` row indices drawn without
   replacement by ``numpy.random.default_rng(seed)``, read chunk by chunk (only the
   sampled rows of each memory-mapped chunk are copied), then k-means (and the PQ
   codebooks) are trained on it with FAISS's seed set to ``seed``.
2. Rows are added chunk by chunk (one chunk, cast to float32 and normalised if asked,
   in memory at a time): peak memory is the index itself + the sample + one chunk.
3. The index is written into a temporary folder beside ``out_dir`` with its
   ``manifest.json``; the folder is renamed into place only at the end
   (:func:`attributor._io.atomic_directory`), so a killed build leaves nothing that opens,
   and an existing index is replaced only when ``overwrite`` is true.

Reproducibility: flat and IVF builds are bit-identical across runs with the same seed.
HNSW insertion runs on several threads, so its graph (not its recall) can differ from
run to run unless FAISS runs on one thread (``faiss.omp_set_num_threads(1)``).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from attributor._io import atomic_directory, atomic_write_json, sha256_file
from attributor.errors import ConfigError, StoreError
from attributor.index.index import INDEX_FILE, MANIFEST, SCHEMA_VERSION, Index, normalize_rows, open_index, read_manifest
from attributor.index.kinds import IndexKind
from attributor.progress import progress_bar

__all__ = ["build_index", "store_fingerprint", "METRICS"]

METRICS = ("ip", "l2")


def store_fingerprint(store: Any, split: str, checkpoint: int) -> str:
    """sha256 over the store's settings, the split's size and the checksums of its feature chunks at ``checkpoint``."""
    entry = store._split(split)  # the manifest entry: size and per-chunk checksums (no public accessor yet)
    chunks = entry["chunks"].get(str(checkpoint))
    if chunks is None:
        raise StoreError(f"the feature store at {store.path} has no checkpoint {checkpoint} (it has {store.n_checkpoints})")
    payload = {"settings": store.settings, "split": split, "n": entry["n"], "checkpoint": checkpoint,
               "chunks": {index: chunk["features"] for index, chunk in sorted(chunks.items())}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def build_index(store: Any, out_dir: str | os.PathLike[str], kind: str = "hnsw", *, split: str = "train",
                checkpoint: int = 0, metric: str = "ip", normalize: bool = False, overwrite: bool = False,
                progress: bool = True, seed: int = 0, **params: Any) -> Index:
    """Build a ``kind`` index over ``split`` at ``checkpoint`` of ``store`` (a FeatureStore or its path) into ``out_dir``.

    ``params`` are the kind's build and search parameters (see :mod:`attributor.index.kinds`);
    search parameters saved here are the defaults of :meth:`Index.search`.

    Example:
        >>> index = build_index("runs/demo/store", "runs/demo/index", kind="flat")  # doctest: +SKIP
        >>> scores, ids = index.search(queries, k=10)                               # doctest: +SKIP
    """
    import faiss

    from attributor.features.store import FeatureStore

    store = store if isinstance(store, FeatureStore) else FeatureStore.open(store)
    kind_cls = IndexKind.lookup(kind)
    if metric not in METRICS:
        raise ConfigError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if isinstance(checkpoint, bool) or not isinstance(checkpoint, int) or not 0 <= checkpoint < store.n_checkpoints:
        raise ConfigError(f"checkpoint must be in 0..{store.n_checkpoints - 1} for the store at {store.path}, got {checkpoint!r}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise StoreError(f"{out_dir} is a file, not an index folder; give a folder for the index")
    if out_dir.exists() and not overwrite:
        if (out_dir / MANIFEST).is_file():
            raise StoreError(f"an index already exists at {out_dir}; use another folder or pass --overwrite")
        if any(out_dir.iterdir()):
            raise StoreError(f"{out_dir} exists and is not an index; refusing to write into it")
    if out_dir.exists() and overwrite and any(out_dir.iterdir()) and not (out_dir / MANIFEST).is_file():
        raise StoreError(f"{out_dir} exists and is not an index; refusing to replace it")
    store.require_complete(split)
    n, dim = store.split_size(split), store.dim
    if n == 0:
        raise StoreError(f"split {split!r} of the store at {store.path} is empty; nothing to index")
    resolved = kind_cls.resolve(n, dim, dict(params))
    fingerprint = store_fingerprint(store, split, checkpoint)
    faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2

    started = time.perf_counter()
    index = kind_cls.make(dim, faiss_metric, resolved)
    train_rows = kind_cls.train_size(n, resolved)
    if kind_cls.needs_training:
        sample = _sample_rows(store, split, checkpoint, train_rows, seed, normalize, progress)
        _seed_training(index, seed)
        index.train(sample)
        del sample
    with progress_bar(n, f"index {kind}", progress) as bar:
        for _, start, stop, features, _ in _chunks(store, split, checkpoint):
            rows = np.ascontiguousarray(features, dtype=np.float32)
            if not np.isfinite(rows).all():
                raise StoreError(f"rows {start}..{stop} of split {split!r} in {store.path} contain NaN or inf; cannot index them")
            index.add(normalize_rows(rows) if normalize else rows)
            bar.update(stop - start)
    build_s = time.perf_counter() - started

    with atomic_directory(out_dir) as tmp:
        faiss.write_index(index, str(tmp / INDEX_FILE))
        manifest = {
            "format": "attributor-index",
            "schema_version": SCHEMA_VERSION,
            "kind": kind_cls.key,
            "params": resolved,
            "metric": metric,
            "normalize": bool(normalize),
            "seed": seed,
            "n": n,
            "dim": dim,
            "store": str(store.path.resolve()),
            "split": split,
            "checkpoint": checkpoint,
            "store_fingerprint": fingerprint,
            "train_rows": train_rows,
            "build_seconds": round(build_s, 3),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "faiss_version": faiss.__version__,
            "sha256": sha256_file(tmp / INDEX_FILE),
        }
        atomic_write_json(tmp / MANIFEST, manifest)
        read_manifest(tmp)  # what we wrote is what open_index accepts
    del index
    return open_index(out_dir, verify=False)


def _chunks(store: Any, split: str, checkpoint: int):
    for index, start, stop in store.chunk_bounds(split):
        features, out_to_loss = store.read_chunk(split, checkpoint, index)
        yield index, start, stop, features, out_to_loss


def _sample_rows(store: Any, split: str, checkpoint: int, size: int, seed: int, normalize: bool,
                 progress: bool) -> np.ndarray:
    """``size`` rows drawn without replacement (seeded), gathered chunk by chunk, float32 (size, dim)."""
    n = store.split_size(split)
    picked = np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False)) if size < n else np.arange(n)
    sample = np.empty((len(picked), store.dim), dtype=np.float32)
    filled = 0
    with progress_bar(len(picked), "index training sample", progress) as bar:
        for _, start, stop, features, _ in _chunks(store, split, checkpoint):
            lo, hi = np.searchsorted(picked, [start, stop])
            if hi > lo:
                sample[filled:filled + hi - lo] = features[picked[lo:hi] - start]
                filled += hi - lo
                bar.update(hi - lo)
    if not np.isfinite(sample).all():
        raise StoreError(f"split {split!r} of the store at {store.path} contains NaN or inf; cannot index it")
    return normalize_rows(sample) if normalize else sample


def _seed_training(index: Any, seed: int) -> None:
    """Seed FAISS's k-means (coarse quantizer) and PQ codebook training."""
    import faiss

    ivf = faiss.extract_index_ivf(index)
    pq = getattr(index, "pq", None)
    for params in (ivf.cp, pq.cp if pq is not None else None):
        if params is not None:
            params.seed = seed
            params.min_points_per_centroid = 1  # small training sets are the caller's choice: no stderr warning
