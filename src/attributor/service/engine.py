"""The index being served: loaded once, shared by every worker thread, swapped atomically.

:class:`Engine` holds one :class:`~attributor.gif.corpus.Searcher` (a corpus folder, or an
index folder over a corpus store). Each request reads ``engine.searcher`` once and works
on that object to the end, so :meth:`Engine.reload` can open the new searcher completely
(checksums verified, fingerprinter loaded) and then replace the reference in one
assignment: requests in flight finish on the old searcher, later ones get the new one,
none sees a half-loaded index. Reloads are serialised; a failed reload keeps the old one.

Threads: text queries run the sentence encoder, whose Hugging Face fast tokenizer is not
safe to call from two threads at once ("Already borrowed") and whose model and
embedding memo are shared by every searcher of the process, so text queries take one
process-wide lock (``ENCODER_LOCK``); torch already spreads one forward pass over the
cores. Vector queries skip the encoder and search the FAISS index concurrently (FAISS
searches are thread-safe).
"""

from __future__ import annotations

import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from attributor.errors import StoreError

__all__ = ["Engine", "ENCODER_LOCK"]

#: one lock for every text query of the process (see the module docstring)
ENCODER_LOCK = threading.Lock()


class Engine:
    """The searcher being served and how it got there.

    Args:
        path: a corpus folder (``attributor gif fingerprint --out``) or an index folder over a corpus store.
        verify: check the index file against its sha256 when opening (also on reload).
    """

    def __init__(self, path: str | os.PathLike[str], verify: bool = True):
        self.verify = verify
        self.path = Path(path).resolve()
        self._reload_lock = threading.Lock()
        self.current: tuple[Any, int] = (None, 0)  # (searcher, generation), replaced in one assignment
        self.loaded_at = ""
        self.load_seconds = 0.0
        self._swap(*self._open(self.path))

    # -- loading ---------------------------------------------------------------------
    def _open(self, path: Path) -> tuple[Path, Any, float]:
        from attributor.gif.corpus import Searcher

        started = time.perf_counter()
        searcher = Searcher.open(path, verify=self.verify)
        return path, searcher, time.perf_counter() - started

    def _swap(self, path: Path, searcher: Any, seconds: float) -> None:
        self.path, self.load_seconds = path, seconds
        self.loaded_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.current = (searcher, self.generation + 1)  # last: one reference assignment is the swap

    def reload(self, path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
        """Open ``path`` (default: the folder being served) fully, then swap it in; raises and keeps the old one on failure."""
        target = self.path if path is None else Path(path).resolve()
        if not self._reload_lock.acquire(blocking=False):
            raise StoreError("another reload is in progress; retry when it has finished")
        try:
            opened = self._open(target)
            self._swap(*opened)
            return {"path": str(self.path), "generation": self.generation, "rows": self.rows,
                    "seconds": round(opened[2], 3)}
        finally:
            self._reload_lock.release()

    @property
    def searcher(self) -> Any:
        return self.current[0]

    @property
    def generation(self) -> int:
        return self.current[1]

    @property
    def rows(self) -> int:
        return int(self.searcher.corpus.n)

    # -- queries (run in worker threads) -----------------------------------------------
    def query_texts(self, items: Sequence[Any], k: int) -> tuple[list[Any], int]:
        """Hits of text items from the searcher current at the call, and its generation."""
        searcher, generation = self.current
        with ENCODER_LOCK:
            return searcher.query(list(items), k), generation

    def query_vectors(self, vectors: np.ndarray, k: int) -> tuple[list[Any], int]:
        """Hits of fingerprint vectors (q, dim) and the generation that answered."""
        searcher, generation = self.current
        return searcher.query_vectors(vectors, k), generation

    def example(self, item_id: str) -> dict[str, Any]:
        """The training example with this id (DataError if there is none)."""
        corpus = self.current[0].corpus
        return corpus.row(corpus.position(item_id))

    # -- description -------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """What is served: the corpus, the index spec and build info, when it was loaded."""
        searcher, generation = self.current
        manifest = searcher.corpus.manifest
        corpus = {key: manifest.get(key) for key in ("n", "dim", "fingerprinter", "source", "labels", "created")}
        if searcher.index is None:
            index: dict[str, Any] = {"kind": "exact", "n": searcher.corpus.n, "dim": searcher.dim,
                                     "note": "no index folder: exact inner-product search over the corpus store"}
        else:
            built = searcher.index.manifest
            index = searcher.index.spec() | {key: built.get(key) for key in ("created", "build_seconds", "faiss_version")}
        return {"path": str(self.path), "rows": searcher.corpus.n, "dim": searcher.dim, "generation": generation,
                "loaded_at": self.loaded_at, "load_seconds": round(self.load_seconds, 3), "corpus": corpus,
                "index": index, "refine": ["none"]}
