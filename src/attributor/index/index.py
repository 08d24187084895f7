"""An opened index: search, check it against its store, describe it.

``scores, ids = index.search(queries, k)``: queries ``(q, dim)``, scores ``(q, k')``
float32 and ids ``(q, k')`` int64 with ``k' = min(k, n)``. ``ids`` are row indices of
the store split the index was built from; ``scores`` are inner products (metric
``"ip"``) or negative squared L2 distances (metric ``"l2"``), so larger is always
closer. A slot the index could not fill (an IVF search that probed too few lists) has id
-1 and score -inf.

``open_index`` verifies the manifest and the sha256 of ``index.faiss`` (one sequential
read of the file: about 1 s per GB) before FAISS reads it, memory-mapped where FAISS
allows (flat and IVF kinds).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from attributor._io import sha256_file
from attributor.errors import DataError, StoreCorruptedError, StoreError, StoreMismatchError
from attributor.index.kinds import IndexKind

__all__ = ["Index", "open_index", "SCHEMA_VERSION", "INDEX_FILE", "MANIFEST"]

SCHEMA_VERSION = 1
INDEX_FILE = "index.faiss"
MANIFEST = "manifest.json"


class Index:
    """A persisted FAISS index over the rows of one FeatureStore split. Use :func:`open_index` or :func:`build_index`."""

    def __init__(self, path: Path, manifest: dict[str, Any], faiss_index: Any):
        self.path = Path(path)
        self.manifest = manifest
        self._faiss = faiss_index
        self._kind = IndexKind.lookup(manifest["kind"])

    # -- description ----------------------------------------------------------------
    @property
    def n(self) -> int:
        return int(self.manifest["n"])

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def kind(self) -> str:
        return str(self.manifest["kind"])

    @property
    def metric(self) -> str:
        return str(self.manifest["metric"])

    @property
    def normalize(self) -> bool:
        return bool(self.manifest["normalize"])

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.manifest["params"])

    @property
    def faiss_index(self) -> Any:
        """The underlying ``faiss.Index`` (for what this class does not wrap)."""
        return self._faiss

    def spec(self) -> dict[str, Any]:
        """JSON-able description: kind, params, metric, normalize, n, dim and the store it indexes."""
        keys = ("kind", "params", "metric", "normalize", "n", "dim", "store", "split", "checkpoint", "store_fingerprint")
        return {key: self.manifest[key] for key in keys} | {"path": str(self.path)}

    def __repr__(self) -> str:
        return f"Index(kind={self.kind!r}, n={self.n}, dim={self.dim}, metric={self.metric!r}, path={str(self.path)!r})"

    # -- checks ---------------------------------------------------------------------
    def check_store(self, store: Any) -> None:
        """Refuse (StoreMismatchError) a store whose rows of this split changed since the build."""
        from attributor.index.build import store_fingerprint

        found = store_fingerprint(store, self.manifest["split"], self.manifest["checkpoint"])
        if found != self.manifest["store_fingerprint"]:
            raise StoreMismatchError(
                f"the index at {self.path} was built from other rows than split {self.manifest['split']!r} "
                f"(checkpoint {self.manifest['checkpoint']}) of the store at {store.path} now holds; "
                "rebuild it with `attributor index build ... --overwrite`"
            )

    # -- search ---------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int, **search_params: Any) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows for each query; ``search_params`` (``nprobe``, ``ef_search``) override the saved ones for this call.

        Returns ``(scores, ids)``, both ``(q, min(k, n))``; see the module docstring.
        """
        queries = np.asarray(queries)
        if queries.ndim == 1:
            raise DataError(f"queries must be 2-d (q, {self.dim}); got shape {queries.shape} (use queries[None] for one)")
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise DataError(f"queries have dimension {queries.shape[-1] if queries.ndim else None} (shape {queries.shape}); "
                            f"the index at {self.path} holds {self.dim}-dimensional rows")
        if not np.issubdtype(queries.dtype, np.number):
            raise DataError(f"queries must be numeric, got dtype {queries.dtype}")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise DataError(f"k must be a positive integer, got {k!r}")
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if not np.isfinite(queries).all():
            raise DataError("queries contain NaN or inf")
        if self.normalize:
            queries = normalize_rows(queries)
        k = int(min(k, self.n))
        params = self._search_params(search_params)
        if len(queries) == 0:
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
        distances, ids = self._faiss.search(queries, k, params=self._kind.search_parameters(params)) \
            if params else self._faiss.search(queries, k)
        scores = distances if self.metric == "ip" else -distances
        scores = np.where(ids < 0, -np.inf, scores).astype(np.float32)
        return scores, ids.astype(np.int64, copy=False)

    def _search_params(self, given: dict[str, Any]) -> dict[str, Any]:
        known = self._kind.search_params
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise DataError(f"index kind {self.kind!r} has no search parameter {', '.join(map(repr, unknown))}; "
                            f"it takes: {', '.join(sorted(known)) or 'none'}")
        params = {name: self.manifest["params"].get(name, default) for name, default in known.items()}
        for name, value in given.items():
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                    raise DataError(f"search parameter {name} must be a positive integer, got {value!r}")
                params[name] = int(value)
        return params


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), float32."""
    x = np.array(x, dtype=np.float32, copy=True)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, norms, out=x, where=norms > 0)
    return x


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of the index folder ``path``, checked for schema and keys."""
    file = path / MANIFEST
    if not file.is_file():
        raise StoreError(f"no index at {path} (no {MANIFEST}); build one with `attributor index build`")
    try:
        manifest = json.loads(file.read_text())
    except (OSError, ValueError) as err:
        raise StoreCorruptedError(f"cannot read {file}: {err}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != "attributor-index":
        raise StoreCorruptedError(f"{file} is not an attributor index manifest")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise StoreCorruptedError(f"{file} has index schema version {manifest.get('schema_version')!r}; "
                                  f"this attributor reads version {SCHEMA_VERSION} (rebuild the index)")
    required = ("kind", "params", "metric", "normalize", "n", "dim", "store", "split", "checkpoint",
                "store_fingerprint", "sha256")
    missing = [key for key in required if key not in manifest]
    if missing:
        raise StoreCorruptedError(f"{file} lacks {', '.join(missing)}; rebuild the index")
    IndexKind.lookup(manifest["kind"])
    return manifest


def open_index(path: str | os.PathLike[str], *, store: Any = None, verify: bool = True) -> Index:
    """Open the index folder ``path``; with ``store`` (a FeatureStore or its path), also refuse it if that store's rows changed.

    ``verify=False`` skips the sha256 of ``index.faiss`` (a sequential read, ~1 s/GB).
    """
    import faiss

    path = Path(path)
    manifest = read_manifest(path)
    file = path / INDEX_FILE
    if not file.is_file():
        raise StoreCorruptedError(f"{file} is missing; rebuild the index with `attributor index build ... --overwrite`")
    if verify and sha256_file(file) != manifest["sha256"]:
        raise StoreCorruptedError(f"{file} does not match its checksum; the index is corrupted, rebuild it with --overwrite")
    kind = IndexKind.lookup(manifest["kind"])
    try:
        faiss_index = faiss.read_index(str(file), faiss.IO_FLAG_MMAP if kind.mmap else 0)
    except RuntimeError as err:
        raise StoreCorruptedError(f"FAISS cannot read {file}: {str(err).splitlines()[0]}") from None
    if faiss_index.ntotal != manifest["n"] or faiss_index.d != manifest["dim"]:
        raise StoreCorruptedError(f"{file} holds {faiss_index.ntotal} rows of dimension {faiss_index.d}; "
                                  f"its manifest says {manifest['n']} x {manifest['dim']}")
    index = Index(path, manifest, faiss_index)
    if store is not None:
        index.check_store(_as_store(store))
    return index


def _as_store(store: Any) -> Any:
    from attributor.features.store import FeatureStore

    return store if isinstance(store, FeatureStore) else FeatureStore.open(store)
