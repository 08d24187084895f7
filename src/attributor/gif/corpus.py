"""A fingerprinted corpus on disk, and text search over it.

:func:`fingerprint_corpus` turns a user's training texts into one self-contained folder:

    CORPUS/
      corpus.json        what it holds: n, the fingerprinter's spec, the data source, checksums
      fingerprinter/     the fitted fingerprinter (JSON + safetensors; reloaded to fingerprint queries)
      items.jsonl        one line per training row: {"id", "text", "prompt"?, "label"?, "meta"?}
      items.offsets.npy  byte offset of each line (O(1) lookup of row i without reading the file)
      store/             the fingerprints, a FeatureStore (chunked, checksummed, resumable)
      index/             optional: an ANN index over store/ (:mod:`attributor.index`)

A killed run resumes: the fitted fingerprinter and the items are committed first (atomic
renames), then the store fills chunk by chunk. Rerunning with the same data and settings
finishes the missing chunks; other settings are refused unless ``overwrite``.

:class:`Searcher` answers text queries: it opens an index built over a corpus store (or
the corpus's own ``index/``, or exact search when there is none), reloads the
fingerprinter, and returns for each query the ranked training rows with their ids, text
and metadata, and the latency per stage (embed, gradient, search, refine), in ms.

Example:
    >>> corpus = fingerprint_corpus(["Ann was born in Paris.", ...], "runs/facts")   # doctest: +SKIP
    >>> searcher = Searcher.open("runs/facts")                                         # doctest: +SKIP
    >>> hits = searcher.query(["Where was Ann born? Paris"], k=5)[0]                    # doctest: +SKIP
    >>> hits.rows[0]["text"]                                                           # doctest: +SKIP
    'Ann was born in Paris.'
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from attributor._io import atomic_save_npy, atomic_write_bytes, atomic_write_json, sha256_file
from attributor.errors import ConfigError, DataError, StoreCorruptedError, StoreError, StoreMismatchError

__all__ = ["fingerprint_corpus", "Corpus", "Searcher", "Hits", "CORPUS_FILE", "load_query_items"]

CORPUS_FILE = "corpus.json"
ITEMS_FILE = "items.jsonl"
OFFSETS_FILE = "items.offsets.npy"
FORMAT = "attributor-corpus"
SCHEMA_VERSION = 1


def fingerprint_corpus(items: Sequence[Any], out: str | os.PathLike[str], fingerprinter: Any = "gif", *,
                       ids: Sequence[Any] | None = None, labels: Sequence[int] | None = None,
                       meta: Sequence[dict[str, Any]] | None = None, source: dict[str, Any] | None = None,
                       index: str | None = None, index_params: dict[str, Any] | None = None, chunk_size: int = 256,
                       overwrite: bool = False, progress: bool = False, **fingerprinter_args: Any) -> "Corpus":
    """Fit ``fingerprinter`` (a key or an unfitted instance) on ``items``, fingerprint them into ``out``.

    Args:
        items: training texts (strings, or ``{"prompt", "text"}`` mappings).
        ids: each row's own id (default: its position); unique, written as text.
        labels: per-row classes for the probe (default: k-means pseudo-labels).
        meta: per-row JSON metadata kept beside the text (shown with search results).
        source: where the items came from (recorded in corpus.json).
        index: also build an ANN index of this kind into ``out/index`` (``flat``, ``hnsw``, ...).
    """
    from attributor.features.store import FeatureStore
    from attributor.gif.fingerprints import Fingerprinter, item_texts, load_fingerprinter, make_fingerprinter
    from attributor.gif.store import write_fingerprints

    out = Path(out)
    items = list(items)
    if not items:
        raise DataError("no items to fingerprint: the corpus is empty")
    item_texts(items)
    ids = [str(i) for i in range(len(items))] if ids is None else [str(i) for i in ids]
    if len(ids) != len(items):
        raise DataError(f"{len(ids)} ids for {len(items)} items")
    duplicate = _first_duplicate(ids)
    if duplicate is not None:
        raise DataError(f"id {duplicate!r} is used by more than one row; ids must be unique")
    if labels is not None and len(labels) != len(items):
        raise DataError(f"{len(labels)} labels for {len(items)} items")
    if meta is not None and len(meta) != len(items):
        raise DataError(f"{len(meta)} metadata rows for {len(items)} items")
    lines = [_item_line(i, ids[i], items[i], None if labels is None else labels[i], None if meta is None else meta[i])
             for i in range(len(items))]
    items_digest = hashlib.sha256(b"".join(lines)).hexdigest()
    if isinstance(fingerprinter, str):
        fingerprinter = make_fingerprinter(fingerprinter, **fingerprinter_args)
    elif not isinstance(fingerprinter, Fingerprinter):
        raise ConfigError(f"fingerprinter must be a key or a Fingerprinter, got {type(fingerprinter).__name__}")
    elif fingerprinter_args:
        raise ConfigError("give fingerprinter arguments to the instance, not to fingerprint_corpus")
    requested = {"key": fingerprinter.key, "args": _json_args(fingerprinter)}
    fingerprinter.validate()  # bad arguments are refused before anything is written
    if index is not None:
        from attributor.index.kinds import IndexKind

        IndexKind.lookup(index)

    if out.exists() and not out.is_dir():
        raise StoreError(f"{out} is a file; give a folder for the corpus")
    if out.exists() and any(out.iterdir()):
        manifest = _read_manifest(out) if (out / CORPUS_FILE).is_file() else None
        if manifest is None and not (out / "fingerprinter").is_dir():
            raise StoreError(f"{out} exists and is not a fingerprinted corpus; refusing to write into it")
        same = manifest is not None and manifest["items_sha256"] == items_digest and manifest["request"] == requested
        if manifest is None:  # a run killed before its manifest: only resumable with the same request
            same = _read_request(out) == requested and _read_items_digest(out) == items_digest
        if not same:
            if not overwrite:
                raise StoreMismatchError(f"the corpus at {out} was fingerprinted from other items or settings; "
                                         "use another --out or pass --overwrite")
            shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)

    atomic_write_json(out / "request.json", {"request": requested, "items_sha256": items_digest})
    if not (out / ITEMS_FILE).is_file() or sha256_file(out / ITEMS_FILE) != items_digest:
        atomic_save_npy(out / OFFSETS_FILE, np.cumsum([0] + [len(line) for line in lines[:-1]]).astype(np.int64))
        atomic_write_bytes(out / ITEMS_FILE, lines)
    if (out / "fingerprinter").is_dir():
        fitted = load_fingerprinter(out / "fingerprinter")  # resume with the fit already made
    else:
        fitted = fingerprinter.fit(items, labels)
        fitted.save(out / "fingerprinter")
    train_labels = getattr(fitted, "labels_", None) if labels is None else labels
    store = write_fingerprints(fitted, items, out / "store", labels=train_labels, chunk_size=chunk_size,
                               overwrite=overwrite, progress=progress)
    FeatureStore.open(store.path).require_complete("train")
    manifest = {
        "format": FORMAT, "schema_version": SCHEMA_VERSION, "n": len(items), "dim": int(fitted.dim_),
        "fingerprinter": fitted.spec(), "request": requested, "items_sha256": items_digest,
        "source": source or {}, "labels": "given" if labels is not None else "pseudo (k-means)",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_json(out / CORPUS_FILE, manifest)
    (out / "request.json").unlink(missing_ok=True)
    if index is not None:
        from attributor.index import build_index

        build_index(store, out / "index", kind=index, metric="ip", normalize=False, overwrite=True, progress=progress,
                    **(index_params or {}))
    return Corpus.open(out)


class Corpus:
    """An opened corpus folder (see the module docstring). Rows are looked up by position or id."""

    def __init__(self, path: Path, manifest: dict[str, Any]):
        self.path = Path(path)
        self.manifest = manifest
        self._offsets: np.ndarray | None = None
        self._ids: dict[str, int] | None = None

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> "Corpus":
        path = Path(path)
        manifest = _read_manifest(path)
        for name in (ITEMS_FILE, OFFSETS_FILE):
            if not (path / name).is_file():
                raise StoreCorruptedError(f"{path / name} is missing; fingerprint the corpus again with --overwrite")
        return cls(path, manifest)

    @classmethod
    def of_store(cls, store_path: str | os.PathLike[str]) -> "Corpus | None":
        """The corpus whose ``store/`` is ``store_path``, or None for a store made otherwise."""
        parent = Path(store_path).resolve().parent
        return cls.open(parent) if (parent / CORPUS_FILE).is_file() else None

    @property
    def n(self) -> int:
        return int(self.manifest["n"])

    @property
    def store_path(self) -> Path:
        return self.path / "store"

    def fingerprinter(self) -> Any:
        from attributor.gif.fingerprints import load_fingerprinter

        fitted = load_fingerprinter(self.path / "fingerprinter")
        if fitted.spec()["fit_digest"] != self.manifest["fingerprinter"].get("fit_digest"):
            raise StoreMismatchError(f"{self.path / 'fingerprinter'} is not the fingerprinter that wrote {self.store_path}")
        return fitted

    def row(self, i: int) -> dict[str, Any]:
        """Training row ``i`` (its position in the store): ``{"row", "id", "text", ...}``."""
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < self.n:
            raise DataError(f"row must be in 0..{self.n - 1}, got {i!r}")
        offsets = self._load_offsets()
        with (self.path / ITEMS_FILE).open("rb") as handle:
            handle.seek(int(offsets[i]))
            line = handle.readline()
        try:
            record = json.loads(line)
        except ValueError:
            raise StoreCorruptedError(f"{self.path / ITEMS_FILE} is damaged at row {i}; fingerprint the corpus again") from None
        if not isinstance(record, dict) or record.get("row") != i:
            raise StoreCorruptedError(f"{self.path / ITEMS_FILE} does not hold row {i} where its offsets say; "
                                      "fingerprint the corpus again")
        return record

    def rows(self, positions: Sequence[int]) -> list[dict[str, Any]]:
        return [self.row(int(i)) for i in positions]

    def position(self, item_id: str) -> int:
        """The row of the training example whose id is ``item_id``; DataError if there is none."""
        if self._ids is None:
            ids: dict[str, int] = {}
            with (self.path / ITEMS_FILE).open("rb") as handle:
                for i, line in enumerate(handle):
                    ids[json.loads(line)["id"]] = i
            self._ids = ids
        try:
            return self._ids[str(item_id)]
        except KeyError:
            raise DataError(f"no training example with id {item_id!r}") from None

    def _load_offsets(self) -> np.ndarray:
        if self._offsets is None:
            offsets = np.load(self.path / OFFSETS_FILE, mmap_mode="r", allow_pickle=False)
            if offsets.shape != (self.n,):
                raise StoreCorruptedError(f"{self.path / OFFSETS_FILE} has {offsets.shape} entries for {self.n} rows")
            self._offsets = offsets
        return self._offsets


@dataclass
class Hits:
    """One query's answer: the ranked training rows and the latency of each stage (ms).

    ``rows``: ``{"rank", "row", "id", "score", "text", ...}`` best first; ``score`` is the
    final score (the index's inner product, or the refiner's), ``index_score`` the index's.
    """

    query: Any
    rows: list[dict[str, Any]]
    latency_ms: dict[str, float] = field(default_factory=dict)


class Searcher:
    """Text (or vector) queries over a fingerprinted corpus: fingerprint, search, optionally refine.

    Open with :meth:`open` from a corpus folder or an index folder built over a corpus store.
    """

    def __init__(self, corpus: Corpus, index: Any = None, refiner: Any = None, candidates: int = 100, mix: float = 1.0):
        from attributor.features.store import FeatureStore
        from attributor.gif.retriever import GifRetriever

        self.corpus = corpus
        self.index = index
        store = FeatureStore.open(corpus.store_path)
        if index is not None:
            index.check_store(store)
        self.fingerprinter = corpus.fingerprinter()
        self.retriever = GifRetriever(self.fingerprinter, store, refiner=refiner, candidates=candidates, mix=mix,
                                      index=index).fit()

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, verify: bool = True, **kwargs: Any) -> "Searcher":
        """``path``: a corpus folder (its ``index/`` if built, else exact search) or an index folder over a corpus store."""
        from attributor.index import open_index

        path = Path(path)
        if (path / CORPUS_FILE).is_file():
            corpus = Corpus.open(path)
            index = open_index(path / "index", verify=verify) if (path / "index" / "manifest.json").is_file() else None
            return cls(corpus, index, **kwargs)
        if not (path / "manifest.json").is_file():
            raise StoreError(f"{path} is neither a fingerprinted corpus nor an index "
                             "(make one with `attributor gif fingerprint` or `attributor index build`)")
        index = open_index(path, verify=verify)
        corpus = Corpus.of_store(index.manifest["store"])
        if corpus is None:
            raise ConfigError(f"the index at {path} is built over {index.manifest['store']}, which is not a fingerprinted "
                              "corpus; text queries need one made by `attributor gif fingerprint` (or give --vectors)")
        return cls(corpus, index, **kwargs)

    @property
    def dim(self) -> int:
        return int(self.fingerprinter.dim_)

    def query(self, items: Sequence[Any], k: int = 10) -> list[Hits]:
        """The top ``k`` training rows for each text item (string or ``{"prompt", "text"}``)."""
        from attributor.gif.fingerprints import item_texts

        items = list(items)
        item_texts(items)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise DataError(f"k must be a positive integer, got {k!r}")
        return [self._hits(item, r) for item, r in zip(items, self.retriever.query(items, int(k)))]

    def query_vectors(self, vectors: np.ndarray, k: int = 10) -> list[Hits]:
        """The top ``k`` rows for fingerprint vectors (q, dim) given directly (no refinement)."""
        import time

        vectors = np.asarray(vectors)
        if vectors.ndim == 1:
            vectors = vectors[None]
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or not np.issubdtype(vectors.dtype, np.number):
            raise DataError(f"vectors must be numeric with shape (q, {self.dim}), got {vectors.shape}")
        if not np.isfinite(vectors).all():
            raise DataError("vectors contain NaN or inf")
        start = time.perf_counter()
        scores, ids = self.retriever.index_.search(np.ascontiguousarray(vectors, dtype=np.float32), int(k))
        search = 1e3 * (time.perf_counter() - start) / max(len(vectors), 1)
        latency = {"embed": 0.0, "gradient": 0.0, "search": search, "refine": 0.0, "total": search}
        return [Hits(None, self._rows(ids[i], scores[i], scores[i]), dict(latency)) for i in range(len(vectors))]

    def _hits(self, item: Any, retrieved: Any) -> Hits:
        return Hits(item, self._rows(retrieved.ids, retrieved.scores, retrieved.ann_scores), retrieved.latency_ms)

    def _rows(self, ids: np.ndarray, scores: np.ndarray, index_scores: np.ndarray) -> list[dict[str, Any]]:
        rows = []
        for rank, (i, score, index_score) in enumerate(zip(ids, scores, index_scores)):
            if i < 0:  # an IVF slot the probes could not fill
                continue
            record = self.corpus.row(int(i))
            rows.append({"rank": rank + 1, **record, "score": float(score), "index_score": float(index_score)})
        return rows


def load_query_items(path: str | os.PathLike[str]) -> list[Any]:
    """Queries from a JSONL file: each line a JSON string or an object with ``text`` (and optional ``prompt``)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no such file: {path}")
    items = []
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except ValueError as err:
                raise DataError(f"{path} line {number} is not JSON: {err}") from None
            if isinstance(value, dict) and isinstance(value.get("text"), str):
                items.append({"prompt": str(value.get("prompt") or ""), "text": value["text"]} if value.get("prompt")
                             else value["text"])
            elif isinstance(value, str):
                items.append(value)
            else:
                raise DataError(f"{path} line {number} must be a JSON string or an object with a 'text' string")
    if not items:
        raise DataError(f"{path} holds no queries")
    return items


# -- helpers -----------------------------------------------------------------------------
def _item_line(row: int, item_id: str, item: Any, label: Any, meta: Any) -> bytes:
    record: dict[str, Any] = {"row": row, "id": item_id}
    if isinstance(item, str):
        record["text"] = item
    else:
        record["text"] = item["text"]
        if item.get("prompt"):
            record["prompt"] = str(item["prompt"])
    if label is not None:
        record["label"] = int(label)
    if meta:
        record["meta"] = meta
    try:
        return (json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n").encode()
    except (TypeError, ValueError) as err:
        raise DataError(f"row {row} (id {item_id!r}) cannot be written as JSON: {err}") from None


def _json_args(fingerprinter: Any) -> dict[str, Any]:
    args = fingerprinter.init_args()
    try:
        return json.loads(json.dumps(args))
    except TypeError:
        raise ConfigError(f"fingerprinter {fingerprinter.key!r} cannot be saved with a corpus (its arguments are not "
                          "JSON); use embedding, probe-gradient or gif") from None


def _first_duplicate(values: Sequence[str]) -> str | None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            return value
        seen.add(value)
    return None


def _read_manifest(path: Path) -> dict[str, Any]:
    file = path / CORPUS_FILE
    if not file.is_file():
        raise StoreError(f"no fingerprinted corpus at {path} (make one with `attributor gif fingerprint`)")
    try:
        manifest = json.loads(file.read_text())
    except (OSError, ValueError) as err:
        raise StoreCorruptedError(f"cannot read {file}: {err}") from None
    required = ("n", "dim", "fingerprinter", "request", "items_sha256")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or any(key not in manifest for key in required):
        raise StoreCorruptedError(f"{file} is not an attributor corpus manifest; fingerprint the corpus again")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise StoreCorruptedError(f"{file} has corpus schema version {manifest.get('schema_version')!r}; "
                                  f"this attributor reads version {SCHEMA_VERSION}")
    return manifest


def _read_request(path: Path) -> Any:
    try:
        return json.loads((path / "request.json").read_text())["request"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _read_items_digest(path: Path) -> Any:
    try:
        return json.loads((path / "request.json").read_text())["items_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
