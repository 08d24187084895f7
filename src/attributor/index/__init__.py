"""Index: approximate nearest-neighbour search over the rows of any FeatureStore split.

Every fixed-width per-example vector (projected gradients, sentence embeddings, GIF
fingerprints) lives in a FeatureStore, so an index is built from a store, chunk by chunk,
and persisted in its own folder (``index.faiss`` + ``manifest.json``) that names the store
and fingerprints the rows it was built from.

    >>> from attributor.index import build_index, open_index, index_kinds
    >>> index_kinds()
    ['flat', 'hnsw', 'ivf-pq', 'ivf-sq8']

``build_index(store, out_dir, kind="hnsw", ...) -> Index``; ``open_index(out_dir) -> Index``;
``index.search(queries, k, nprobe=..., ef_search=...) -> (scores, ids)``. FAISS is imported
only when an index is built or opened.
"""

from __future__ import annotations

from attributor.index.build import build_index, store_fingerprint
from attributor.index.index import Index, open_index
from attributor.index.kinds import IndexKind, index_kinds

__all__ = ["build_index", "open_index", "Index", "IndexKind", "index_kinds", "store_fingerprint"]
